//! Downward API field paths, shared by environment variables and downwardAPI volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use std::sync::OnceLock;

static NODE_IP: OnceLock<String> = OnceLock::new();

/// Sets the address every pod reports (once, at start-up).
pub fn set_node_ip(ip: String) {
    let _ = NODE_IP.set(ip);
}

/// The node's address, which every pod reports as its own: pods share the host's network.
/// It is not a loopback address when the host has another one, because the API server refuses
/// loopback endpoints and Services would have none.
pub fn node_ip() -> &'static str {
    NODE_IP.get().map(String::as_str).unwrap_or("127.0.0.1")
}

/// The value of a downward API `fieldPath` for `pod`, `None` for an unsupported path.
pub fn pod_field(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
            node_ip().to_string()
        }
        _ => {
            let key = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("']"))
                    .map(str::to_string)
            };
            if let Some(label) = key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&label).cloned())
                    .unwrap_or_default()
            } else if let Some(annotation) = key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&annotation).cloned())
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    };
    Some(value)
}

/// `key="value"` lines, sorted by key, as the kubelet writes labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// A `resourceFieldRef` value: the container's own limit or request, else the node's capacity.
pub fn resource_field(container: &Container, resource: &str) -> String {
    let resources = container.resources.as_ref();
    let (which, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let declared = match which {
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => resources.and_then(|r| r.limits.as_ref()),
    };
    if let Some(quantity) = declared.and_then(|m| m.get(name)) {
        return quantity.0.clone();
    }
    match name {
        "cpu" => crate::node::CPU_CAPACITY.to_string(),
        "memory" => crate::node::MEMORY_CAPACITY_BYTES.to_string(),
        _ => "0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("soc".into()),
                labels: Some(BTreeMap::from([
                    ("b".into(), "2".into()),
                    ("a".into(), "1".into()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn labels_should_be_written_sorted_and_quoted() {
        assert_eq!(
            pod_field(&pod(), "metadata.labels").as_deref(),
            Some("a=\"1\"\nb=\"2\"")
        );
    }

    #[test]
    fn a_single_label_should_be_addressable_by_key() {
        assert_eq!(
            pod_field(&pod(), "metadata.labels['b']").as_deref(),
            Some("2")
        );
        assert_eq!(
            pod_field(&pod(), "metadata.namespace").as_deref(),
            Some("soc")
        );
        assert_eq!(pod_field(&pod(), "spec.bogus"), None);
    }
}
