//! A container's environment: service variables, `envFrom`, `env` and `$(VAR)` expansion.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, Client};

use crate::fields;

/// Why a container's environment could not be built (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapMissing(String),
    #[error("secret {0:?} not found")]
    SecretMissing(String),
    #[error("couldn't find key {key} in {kind} {name:?}")]
    KeyMissing {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported field path {0:?}")]
    FieldPath(String),
    #[error("reading {kind} {name:?}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the API server is, as pods should see it.
#[derive(Debug, Clone)]
pub struct ApiEndpoint {
    pub host: String,
    pub port: u16,
}

/// Reads ConfigMaps and Secrets of one namespace, remembering what it already read.
pub struct Sources {
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
    cm_cache: HashMap<String, Option<BTreeMap<String, String>>>,
    secret_cache: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    pub fn new(client: Client, namespace: &str) -> Self {
        Sources {
            configmaps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            cm_cache: HashMap::new(),
            secret_cache: HashMap::new(),
        }
    }

    /// The string data of a ConfigMap (`binaryData` decoded lossily), `None` when absent.
    pub async fn configmap(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(hit) = self.cm_cache.get(name) {
            return Ok(hit.clone());
        }
        let found = self
            .configmaps
            .get_opt(name)
            .await
            .map_err(|source| EnvError::Api {
                kind: "configmap",
                name: name.to_string(),
                source,
            })?;
        let data = found.map(|cm| {
            let mut data = cm.data.unwrap_or_default();
            for (key, bytes) in cm.binary_data.unwrap_or_default() {
                data.insert(key, String::from_utf8_lossy(&bytes.0).into_owned());
            }
            data
        });
        self.cm_cache.insert(name.to_string(), data.clone());
        Ok(data)
    }

    /// The decoded data of a Secret (`stringData` is merged by the API server), `None` when absent.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(hit) = self.secret_cache.get(name) {
            return Ok(hit.clone());
        }
        let found = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|source| EnvError::Api {
                kind: "secret",
                name: name.to_string(),
                source,
            })?;
        let data = found.map(|secret| {
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        self.secret_cache.insert(name.to_string(), data.clone());
        Ok(data)
    }

    /// Raw bytes of a ConfigMap for volumes: `data` and `binaryData` together.
    pub async fn configmap_bytes(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
        Ok(self.configmaps.get_opt(name).await?.map(|cm| {
            let mut out: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            out.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            out
        }))
    }

    /// Raw bytes of a Secret for volumes.
    pub async fn secret_bytes(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
        Ok(self.secrets.get_opt(name).await?.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }
}

/// Builds the environment of `container`, in the order the kubelet does: service variables,
/// then `envFrom`, then `env` (each later entry wins), `$(VAR)` expanded against what came before.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    api: &ApiEndpoint,
    sources: &mut Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };

    let name = pod.metadata.name.clone().unwrap_or_default();
    set(
        &mut env,
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    set(&mut env, "HOSTNAME".into(), name);
    set(&mut env, "KUBERNETES_SERVICE_HOST".into(), api.host.clone());
    set(
        &mut env,
        "KUBERNETES_SERVICE_PORT".into(),
        api.port.to_string(),
    );
    set(
        &mut env,
        "KUBERNETES_SERVICE_PORT_HTTPS".into(),
        api.port.to_string(),
    );
    set(
        &mut env,
        "KUBERNETES_PORT".into(),
        format!("tcp://{}:{}", api.host, api.port),
    );

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            match sources.configmap(&cm.name).await? {
                Some(data) => data,
                None if cm.optional == Some(true) => continue,
                None => return Err(EnvError::ConfigMapMissing(cm.name.clone())),
            }
        } else if let Some(secret) = &from.secret_ref {
            match sources.secret(&secret.name).await? {
                Some(data) => data,
                None if secret.optional == Some(true) => continue,
                None => return Err(EnvError::SecretMissing(secret.name.clone())),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            set(&mut env, format!("{prefix}{key}"), value);
        }
    }

    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, container, var, &env, sources).await? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

async fn env_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    env: &[(String, String)],
    sources: &mut Sources,
) -> Result<Option<String>, EnvError> {
    let Some(from) = &var.value_from else {
        let lookup: HashMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), &lookup)));
    };
    if let Some(field) = &from.field_ref {
        return fields::pod_field(pod, &field.field_path)
            .map(Some)
            .ok_or_else(|| EnvError::FieldPath(field.field_path.clone()));
    }
    if let Some(resource) = &from.resource_field_ref {
        return Ok(Some(fields::resource_field(container, &resource.resource)));
    }
    if let Some(sel) = &from.config_map_key_ref {
        let optional = sel.optional == Some(true);
        return match sources.configmap(&sel.name).await? {
            Some(data) => match data.get(&sel.key) {
                Some(value) => Ok(Some(value.clone())),
                None if optional => Ok(None),
                None => Err(EnvError::KeyMissing {
                    kind: "configmap",
                    name: sel.name.clone(),
                    key: sel.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapMissing(sel.name.clone())),
        };
    }
    if let Some(sel) = &from.secret_key_ref {
        let optional = sel.optional == Some(true);
        return match sources.secret(&sel.name).await? {
            Some(data) => match data.get(&sel.key) {
                Some(value) => Ok(Some(value.clone())),
                None if optional => Ok(None),
                None => Err(EnvError::KeyMissing {
                    kind: "secret",
                    name: sel.name.clone(),
                    key: sel.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(EnvError::SecretMissing(sel.name.clone())),
        };
    }
    Ok(None)
}

/// Expands `$(VAR)` references like the kubelet: `$$` escapes, unknown references stay as written.
pub fn expand(input: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_should_replace_known_references_and_keep_unknown_ones() {
        let env = HashMap::from([("POD", "p1"), ("NS", "soc")]);
        assert_eq!(expand("$(POD).$(NS) $(NOPE)", &env), "p1.soc $(NOPE)");
    }

    #[test]
    fn expand_should_treat_double_dollar_as_an_escape() {
        let env = HashMap::from([("POD", "p1")]);
        assert_eq!(expand("$$(POD) $$ $x $(", &env), "$(POD) $ $x $(");
    }
}
