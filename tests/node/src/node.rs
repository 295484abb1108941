//! The Node object: registration, a Ready condition kept fresh, and the Lease heartbeat.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{Ctx, fields::node_ip, status::ts};

pub const CPU_CAPACITY: &str = "8";
pub const MEMORY_CAPACITY: &str = "16Gi";
pub const MEMORY_CAPACITY_BYTES: u64 = 16 * 1024 * 1024 * 1024;
pub const PODS_CAPACITY: &str = "500";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Status heartbeats every this many lease renewals.
const STATUS_EVERY: u32 = 3;

const READY_MESSAGE: &str = "vigil process node is posting ready status";

/// The Go name of this machine's architecture.
fn arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    }
}

/// The labels the node registers with; pod `nodeSelector`s are matched against them.
pub fn labels(node_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
        (
            "node.kubernetes.io/instance-type".to_string(),
            "vigil-process-node".to_string(),
        ),
    ])
}

/// Registers the node, then renews its lease and status forever, retrying on errors.
pub async fn run(ctx: Arc<Ctx>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let since = Utc::now();

    let uid = loop {
        match register(&ctx, &nodes, since).await {
            Ok(uid) => break uid,
            Err(error) => {
                warn!(%error, "Registering node");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    info!(node = %ctx.node_name, "Registered");

    let mut tick = tokio::time::interval(LEASE_RENEW);
    let mut count: u32 = 0;
    loop {
        tick.tick().await;
        if let Err(error) = renew_lease(&ctx, &leases, &uid).await {
            warn!(%error, "Renewing node lease");
        }
        count = count.wrapping_add(1);
        if count.is_multiple_of(STATUS_EVERY)
            && let Err(error) = patch_status(&ctx, &nodes, since).await
        {
            warn!(%error, "Updating node status");
        }
    }
}

async fn register(
    ctx: &Ctx,
    nodes: &Api<Node>,
    since: chrono::DateTime<Utc>,
) -> Result<String, kube::Error> {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": ctx.node_name,
            "labels": labels(&ctx.node_name),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error),
    }
    let node = patch_status(ctx, nodes, since).await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    since: &str,
    now: &str,
) -> Value {
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": since,
    })
}

async fn patch_status(
    ctx: &Ctx,
    nodes: &Api<Node>,
    since: chrono::DateTime<Utc>,
) -> Result<Node, kube::Error> {
    let (now, since) = (ts(&Utc::now()), ts(&since));
    let capacity = json!({
        "cpu": CPU_CAPACITY,
        "memory": MEMORY_CAPACITY,
        "pods": PODS_CAPACITY,
        "ephemeral-storage": "100Gi",
    });
    let healthy = |kind, reason, message| condition(kind, "False", reason, message, &since, &now);
    let status = json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            healthy("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            healthy("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            healthy("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", READY_MESSAGE, &since, &now),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip()},
            {"type": "Hostname", "address": ctx.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": ctx.port}},
        "nodeInfo": {
            "architecture": arch(),
            "bootID": "",
            "containerRuntimeVersion": concat!("vigil-node://", env!("CARGO_PKG_VERSION")),
            "kernelVersion": kernel_version(),
            "kubeProxyVersion": "",
            "kubeletVersion": ctx.kubelet_version,
            "machineID": "",
            "operatingSystem": "linux",
            "osImage": "vigil process node",
            "systemUUID": "",
        },
    });
    nodes
        .patch_status(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn renew_lease(ctx: &Ctx, leases: &Api<Lease>, node_uid: &str) -> Result<(), kube::Error> {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let spec = json!({
        "holderIdentity": ctx.node_name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": now,
    });
    match leases
        .patch(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": ctx.node_name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": ctx.node_name, "uid": node_uid,
                    }],
                },
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(error) => Err(error),
    }
}
