//! The API server's own floor: what the calls vigil makes cost when nothing but the bench makes
//! them, in a namespace no operator watches.

use crate::{
    cluster::{self, MANAGER},
    playbooks,
    stats::Summary,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde::Serialize;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use vigil_api::Run;

/// The floor figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Floor {
    /// Creating a ConfigMap the size of a step's input ConfigMap, one client.
    pub create_config_map: Summary,
    /// Creating a Run, one client.
    pub create_run: Summary,
    /// Creating a ConfigMap and then a (suspended) Job shaped like a step's: the calls the
    /// operator makes between one step's end and the next Job's existence.
    pub create_step_objects: Summary,
    /// A server-side-apply patch of a Run's status the size of the operator's, one client.
    pub patch_status: Summary,
    /// Creating Runs with `clients` clients at once.
    pub concurrent_create: Summary,
    pub clients: usize,
    /// Runs created per second with `clients` clients.
    pub create_rate: f64,
}

/// Measures the floor in namespace `ns` with `samples` sequential calls per operation and
/// `total` Runs created by `clients` concurrent clients.
pub async fn measure(
    client: &Client,
    ns: &str,
    samples: usize,
    clients: usize,
    total: usize,
) -> anyhow::Result<Floor> {
    cluster::create_namespace(client, ns).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let runs: Api<Run> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();

    // Warm the connection and the API server's caches for these types.
    cms.create(&pp, &config_map("warm")).await?;
    runs.create(
        &pp,
        &cluster::run_object(ns, "warm", "floor", json!({"username": "warm"}))?,
    )
    .await?;

    let mut create_config_map = Vec::with_capacity(samples);
    let mut create_run = Vec::with_capacity(samples);
    let mut create_step_objects = Vec::with_capacity(samples);
    let mut patch_status = Vec::with_capacity(samples);
    let status = run_status();
    let ssa = PatchParams::apply(MANAGER).force();
    for i in 0..samples {
        let t = Instant::now();
        cms.create(&pp, &config_map(&format!("cm-{i}"))).await?;
        create_config_map.push(t.elapsed());

        let name = format!("run-{i}");
        let t = Instant::now();
        runs.create(
            &pp,
            &cluster::run_object(ns, &name, "floor", json!({"username": "jdoe"}))?,
        )
        .await?;
        create_run.push(t.elapsed());

        let t = Instant::now();
        runs.patch_status(&name, &ssa, &Patch::Apply(&status))
            .await?;
        patch_status.push(t.elapsed());

        let t = Instant::now();
        cms.create(&pp, &config_map(&format!("step-{i}-in")))
            .await?;
        jobs.create(&pp, &suspended_job(&format!("step-{i}"))?)
            .await?;
        create_step_objects.push(t.elapsed());
    }

    let (concurrent, wall) = concurrent_creates(client, ns, "burst", clients, total).await?;
    Ok(Floor {
        create_config_map: Summary::of(&create_config_map),
        create_run: Summary::of(&create_run),
        create_step_objects: Summary::of(&create_step_objects),
        patch_status: Summary::of(&patch_status),
        concurrent_create: Summary::of(&concurrent),
        clients,
        create_rate: total as f64 / wall.as_secs_f64(),
    })
}

/// Creates `total` Runs named `<prefix>-<i>` from `clients` tasks sharing one client (as the
/// gateway does); returns each call's latency and the wall time of the whole.
pub async fn concurrent_creates(
    client: &Client,
    ns: &str,
    prefix: &str,
    clients: usize,
    total: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (client, ns, next, prefix) = (
            client.clone(),
            ns.to_string(),
            next.clone(),
            prefix.to_string(),
        );
        tasks.spawn(async move {
            let runs: Api<Run> = Api::namespaced(client, &ns);
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(took);
                }
                let inputs = json!({"username": format!("user-{i}"), "ip": "192.0.2.7", "hostname": "ws-17"});
                let run = cluster::run_object(&ns, &format!("{prefix}-{i}"), "floor", inputs)?;
                let t = Instant::now();
                runs.create(&PostParams::default(), &run).await?;
                took.push(t.elapsed());
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok((all, started.elapsed()))
}

/// A ConfigMap like a step's input ConfigMap.
fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"vigil.dev/run": "floor", "vigil.dev/step": "s0"}},
        "data": {"inputs.json": r#"{"username":"jdoe","ip":"192.0.2.7"}"#, "script": playbooks::NOOP},
    }))
    .expect("a ConfigMap")
}

/// A Job shaped like a step's (init container, four volumes, restricted security context),
/// suspended so that no pod starts.
fn suspended_job(name: &str) -> anyhow::Result<Job> {
    let mount = |n: &str, p: &str| json!({"name": n, "mountPath": p});
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"vigil.dev/run": "floor", "vigil.dev/step": "s0"}},
        "spec": {
            "suspend": true,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3630,
            "template": {"spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                },
                "initContainers": [{
                    "name": "vigil-step", "image": "vigil-operator:dev",
                    "command": ["vigil-step", "install", "/vigil/bin"],
                    "volumeMounts": [mount("vigil-bin", "/vigil/bin")],
                }],
                "containers": [{
                    "name": "step", "image": playbooks::NOOP_IMAGE,
                    "command": ["/vigil/bin/vigil-step", "run", "--", "/bin/sh", "/vigil/in/script"],
                    "env": [
                        {"name": "VIGIL_RUN", "value": "floor"}, {"name": "VIGIL_STEP", "value": "s0"},
                        {"name": "VIGIL_INPUTS_FILE", "value": "/vigil/in/inputs.json"},
                        {"name": "VIGIL_OUTPUTS", "value": "/vigil/out/outputs.json"},
                    ],
                    "volumeMounts": [
                        mount("vigil-bin", "/vigil/bin"),
                        mount("vigil-in", "/vigil/in"),
                        mount("vigil-out", "/vigil/out"),
                    ],
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                }],
                "volumes": [
                    {"name": "vigil-bin", "emptyDir": {}},
                    {"name": "vigil-out", "emptyDir": {}},
                    {"name": "vigil-in", "configMap": {"name": format!("{name}-in")}},
                ],
            }},
        },
    }))?)
}

/// A Run status like the operator's while a six-step chain runs: the frozen playbook, the
/// inputs, every step.
fn run_status() -> Value {
    let frozen = playbooks::chain("floor", 6);
    let mut steps = serde_json::Map::new();
    for i in 0..6 {
        let (phase, unit) = match i {
            0..=2 => (
                "Succeeded",
                json!({"phase": "Succeeded", "attempt": 1, "job": format!("run-s{i}-1"), "result": {}}),
            ),
            3 => (
                "Running",
                json!({"phase": "Running", "attempt": 1, "job": "run-s3-1"}),
            ),
            _ => ("Pending", json!(null)),
        };
        let mut step = json!({"phase": phase, "attempts": i32::from(i <= 3)});
        if !unit.is_null() {
            step["unit"] = unit;
            step["startedAt"] = json!(chrono::Utc::now());
        }
        steps.insert(format!("s{i}"), step);
    }
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Run",
        "status": {
            "phase": "Running",
            "reason": "Started",
            "message": "the playbook is frozen and running",
            "progress": "3/6",
            "startedAt": chrono::Utc::now(),
            "frozen": {"generation": 1, "uid": "bench", "spec": frozen["spec"]},
            "inputs": {"username": "jdoe"},
            "steps": steps,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Started",
                "message": "the playbook is frozen and running", "lastTransitionTime": chrono::Utc::now(),
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_objects_are_valid_kubernetes_objects() {
        assert!(suspended_job("j").is_ok());
        let _ = config_map("c");
        let status: vigil_api::RunStatus =
            serde_json::from_value(run_status()["status"].clone()).expect("a RunStatus");
        assert_eq!(status.steps.len(), 6);
    }
}
