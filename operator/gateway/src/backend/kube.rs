//! The Kubernetes [`Backend`]: Playbooks and Secrets from reflectors, Runs created through the
//! API server.
//!
//! Secrets are watched, not fetched per request: a rotated secret is used as soon as the watch
//! delivers it, and a request never waits on the API server to authenticate. The watch is
//! restricted to the configured namespaces (all of them when none are configured) and skips
//! service-account tokens and Helm release Secrets. Annotations and managed fields are dropped
//! before caching (`last-applied-configuration` would hold a second copy of the value).
//!
//! Known limitation: every other Secret of the served namespaces is held in memory, webhook
//! secret or not, and the gateway needs `list`/`watch` on Secrets there. Restricting the
//! namespaces (`GatewayConfig::namespaces`) bounds both; an opt-in label selector on webhook
//! Secrets would bound them further.

use super::{Backend, BackendError, Created};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::{NamespaceResourceScope, api::core::v1::Secret};
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::task::JoinHandle;
use vigil_api::{Playbook, Run};

/// Secret types never cached: they are not webhook secrets and can be large or numerous.
const SECRET_FIELDS: &str = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1";

/// Reflector stores, one for the whole cluster or one per served namespace.
struct Scoped<K: Resource<DynamicType = ()> + Clone + 'static> {
    all: Option<Store<K>>,
    by_namespace: HashMap<String, Store<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Scoped<K> {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let store = self.all.as_ref().or_else(|| self.by_namespace.get(namespace))?;
        store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Reads Playbooks and Secrets from watches, creates Runs with the client.
pub struct KubeBackend {
    client: Client,
    playbooks: Scoped<Playbook>,
    secrets: Scoped<Secret>,
    synced: Arc<AtomicUsize>,
    stores: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeBackend {
    /// Starts the watches; [`Backend::ready`] turns true once each has listed once.
    /// `namespaces: None` watches every namespace.
    pub fn start(client: Client, namespaces: Option<&[String]>) -> Self {
        let synced = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let playbooks = scoped(&client, namespaces, "", &synced, &mut tasks, |p: &mut Playbook| {
            p.metadata.managed_fields = None;
        });
        let secrets = scoped(&client, namespaces, SECRET_FIELDS, &synced, &mut tasks, strip_secret);
        let stores = tasks.len() / 2;
        Self { client, playbooks, secrets, synced, stores, tasks }
    }
}

impl Drop for KubeBackend {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

fn strip_secret(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = None;
    secret.string_data = None;
}

/// Starts one watch per namespace (or one for all) and a task marking each store synced.
fn scoped<K, F>(
    client: &Client,
    namespaces: Option<&[String]>,
    fields: &str,
    synced: &Arc<AtomicUsize>,
    tasks: &mut Vec<JoinHandle<()>>,
    strip: F,
) -> Scoped<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(&mut K) + Clone + Send + 'static,
{
    let mut start = |api: Api<K>, scope: String| {
        let (reader, writer) = reflector::store();
        let mut config = watcher::Config::default();
        if !fields.is_empty() {
            config = config.fields(fields);
        }
        let kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or("object");
        let stream = watcher(api, config).default_backoff().modify(strip.clone()).reflect(writer);
        tasks.push(tokio::spawn(async move {
            stream
                .for_each(|event| async {
                    if let Err(error) = event {
                        let error = &error as &dyn std::error::Error;
                        tracing::warn!(error, kind, %scope, "Watch failed");
                    }
                })
                .await;
        }));
        let (waiting, synced) = (reader.clone(), synced.clone());
        tasks.push(tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                synced.fetch_add(1, Ordering::Relaxed);
            }
        }));
        reader
    };
    match namespaces {
        None => Scoped {
            all: Some(start(Api::all(client.clone()), "*".into())),
            by_namespace: HashMap::new(),
        },
        Some(list) => Scoped {
            all: None,
            by_namespace: list
                .iter()
                .map(|ns| (ns.clone(), start(Api::namespaced(client.clone(), ns), ns.clone())))
                .collect(),
        },
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) >= self.stores
    }

    async fn playbook(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Playbook>>, BackendError> {
        Ok(self.playbooks.get(namespace, name))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let Some(secret) = self.secrets.get(namespace, name) else {
            return Ok(None);
        };
        Ok(secret.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.clone()))
    }

    async fn create_run(&self, run: &Run) -> Result<Created, BackendError> {
        let namespace = run.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Run> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), run).await {
            Ok(_) => Ok(Created::New),
            Err(kube::Error::Api(status))
                if status.code == 409 && status.reason == "AlreadyExists" =>
            {
                Ok(Created::AlreadyExists)
            }
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
                Err(BackendError::Invalid(status.message.clone()))
            }
            Err(error) => Err(BackendError::Unavailable(error.to_string())),
        }
    }
}
