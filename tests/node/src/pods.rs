//! Watches all pods: binds unscheduled ones to this node and gives each pod bound here a worker.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Ctx, node, worker};

type Workers = HashMap<String, watch::Sender<Option<Arc<Pod>>>>;

/// Runs until the watch stream ends (it does not: the watcher retries with back-off).
pub async fn run(ctx: Arc<Ctx>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers = Workers::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;

    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                listed.insert(pod.uid().unwrap_or_default());
                handle(&ctx, &mut workers, pod);
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down: their workers learn it now.
                workers.retain(|uid, tx| {
                    let keep = listed.contains(uid);
                    if !keep {
                        let _ = tx.send(None);
                    }
                    keep
                });
                if first_list {
                    remove_orphan_dirs(&ctx, &listed);
                    first_list = false;
                }
            }
            Ok(Event::Apply(pod)) => handle(&ctx, &mut workers, pod),
            Ok(Event::Delete(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                match workers.remove(&uid) {
                    Some(tx) => {
                        let _ = tx.send(None);
                    }
                    None => remove_dir(&ctx, &pod),
                }
            }
            Err(error) => warn!(%error, "Pod watch"),
        }
    }
}

fn handle(ctx: &Arc<Ctx>, workers: &mut Workers, pod: Pod) {
    let spec = pod.spec.as_ref();
    let node_name = spec.and_then(|s| s.node_name.as_deref());
    match node_name {
        None => {
            if schedulable(ctx, &pod) {
                tokio::spawn(bind(ctx.clone(), pod));
            }
        }
        Some(name) if name == ctx.node_name => run_here(ctx, workers, pod),
        Some(_) => {}
    }
}

fn run_here(ctx: &Arc<Ctx>, workers: &mut Workers, pod: Pod) {
    let uid = pod.uid().unwrap_or_default();
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Some(Arc::new(pod))).is_ok() {
            return;
        }
        workers.remove(&uid);
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded" | "Failed"));
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting {
        // Never started here (or by a previous node process whose processes are gone).
        tokio::spawn(delete_now(ctx.clone(), pod));
        return;
    }
    if terminal {
        return;
    }
    let (tx, rx) = watch::channel(Some(Arc::new(pod)));
    workers.insert(uid, tx);
    tokio::spawn(worker::run(ctx.clone(), rx));
}

/// The scheduler's part, reduced: the default scheduler's pods that fit the node's labels.
fn schedulable(ctx: &Ctx, pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if !matches!(
        spec.scheduler_name.as_deref(),
        None | Some("default-scheduler")
    ) {
        return false;
    }
    if spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty())
    {
        return false;
    }
    let labels: BTreeMap<String, String> = node::labels(&ctx.node_name);
    spec.node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

async fn bind(ctx: Arc<Ctx>, pod: Pod) {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": ctx.node_name},
    });
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => info!(pod = %format!("{namespace}/{name}"), "Bound"),
        // Already bound (a duplicate event) or gone.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => warn!(pod = %format!("{namespace}/{name}"), %error, "Binding"),
    }
}

async fn delete_now(ctx: Arc<Ctx>, pod: Pod) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => warn!(pod = %pod.name_any(), %error, "Deleting pod"),
    }
    remove_dir(&ctx, &pod);
}

fn remove_dir(ctx: &Ctx, pod: &Pod) {
    let layout = crate::volumes::PodLayout::new(&ctx.pods_dir, pod);
    if layout.root.exists()
        && let Err(error) = fs::remove_dir_all(&layout.root)
    {
        warn!(pod = %pod.name_any(), %error, "Removing pod directory");
    }
}

/// Directories of pods that no longer exist (the node was down when they were deleted).
fn remove_orphan_dirs(ctx: &Ctx, live: &HashSet<String>) {
    let Ok(entries) = fs::read_dir(&ctx.pods_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let uid = name.rsplit('_').next().unwrap_or_default();
        if !live.contains(uid) {
            info!(dir = %name, "Removing directory of a deleted pod");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
