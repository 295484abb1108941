//! The operator's memory and CPU time with many active and finished Runs.
//!
//! Active Runs wait on an approval nobody decides: each is `Running` and holds an Approval, but
//! starts no pod. Finished Runs are copies of a real finished Run (the orchestration-tax one),
//! created while the operator is stopped; the operator is then restarted, so the last figure is
//! also a cold start over every Run. The copies have no Jobs or pods, so the Job and pod caches
//! stay small here; the transitions figure reports an operator whose caches hold real ones.

use crate::{
    cluster::{self, Bench, MANAGER, Operator, Parts, ProcSample},
    playbooks,
};
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
use vigil_api::{Run, RunPhase, StepPhase};

const PLAYBOOK: &str = "hold";

/// The operator in one state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    pub label: String,
    pub active: usize,
    pub finished: usize,
    /// VmRSS once settled, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS) of this process so far, bytes.
    pub hwm: u64,
    /// Operator CPU time spent reaching this state, seconds.
    pub cpu_s: f64,
    /// kube-apiserver CPU time over the same interval, seconds (0 when its pid is unknown).
    pub apiserver_cpu_s: f64,
    /// How long reaching this state took, seconds.
    pub took_s: f64,
}

/// How many Runs of each kind, and how many clients create them.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub active: usize,
    pub finished: usize,
    pub clients: usize,
}

/// The memory figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    pub states: Vec<State>,
    /// The size of one active and one finished Run as the API server serves it (JSON,
    /// managedFields included), bytes.
    pub active_run_bytes: usize,
    pub finished_run_bytes: usize,
}

/// Measures the operator for `ns`: idle, with `active` active Runs, then restarted with
/// `finished` finished Runs added.
pub async fn measure(
    b: &Bench,
    ns: &str,
    sizes: Sizes,
    template: Option<&Run>,
) -> anyhow::Result<Memory> {
    let Sizes {
        active,
        finished,
        clients,
    } = sizes;
    let client = &b.client;
    cluster::create_namespace(client, ns).await?;
    let api_cpu = || b.apiserver_cpu();
    let mut out = Memory::default();

    let t = Instant::now();
    let (api0, operator) = (api_cpu(), b.operator(ns, Parts::All).await?);
    cluster::apply_playbook(client, ns, &playbooks::hold(PLAYBOOK)).await?;
    cluster::wait_playbook_ready(client, ns, PLAYBOOK).await?;
    let s = settle(&operator).await?;
    out.states
        .push(state("idle", 0, 0, s, s.cpu, api_cpu() - api0, t));

    let (t, api0, cpu0) = (Instant::now(), api_cpu(), s.cpu);
    create_many(client, ns, active, clients, |i| {
        (format!("active-{i}"), None)
    })
    .await?;
    let timeout = Duration::from_secs(120 + active as u64 / 2);
    cluster::wait_runs(client, ns, timeout, "awaiting approval", |r| {
        let hold = r
            .status
            .as_ref()
            .and_then(|s| s.steps.get("hold"))
            .map(|s| s.phase);
        hold == Some(StepPhase::AwaitingApproval)
    })
    .await?;
    let s = settle(&operator).await?;
    out.states.push(state(
        "active",
        active,
        0,
        s,
        s.cpu - cpu0,
        api_cpu() - api0,
        t,
    ));
    operator.stop();

    let status = finished_status(template);
    let playbook = template.map_or(PLAYBOOK.to_string(), |r| r.spec.playbook_ref.name.clone());
    create_many(client, ns, finished, clients, move |i| {
        (
            format!("done-{i}"),
            Some((playbook.clone(), status.clone())),
        )
    })
    .await?;

    let runs: Api<Run> = Api::namespaced(client.clone(), ns);
    let size = |run: Option<Run>| {
        run.and_then(|r| serde_json::to_vec(&r).ok())
            .map_or(0, |v| v.len())
    };
    out.active_run_bytes = size(runs.get_opt("active-0").await?);
    out.finished_run_bytes = size(runs.get_opt("done-0").await?);

    let (t, api0) = (Instant::now(), api_cpu());
    let operator = b.operator(ns, Parts::All).await?;
    let s = settle(&operator).await?;
    out.states.push(state(
        "restarted",
        active,
        finished,
        s,
        s.cpu,
        api_cpu() - api0,
        t,
    ));
    operator.stop();
    Ok(out)
}

fn state(
    label: &str,
    active: usize,
    finished: usize,
    s: ProcSample,
    cpu_s: f64,
    apiserver_cpu_s: f64,
    since: Instant,
) -> State {
    State {
        label: label.into(),
        active,
        finished,
        rss: s.rss,
        hwm: s.hwm,
        cpu_s,
        apiserver_cpu_s,
        took_s: since.elapsed().as_secs_f64(),
    }
}

/// Waits until the operator has used less than 20 ms of CPU over two seconds (or 120 s have
/// passed), then samples it.
async fn settle(operator: &Operator) -> anyhow::Result<ProcSample> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = operator.sample()?;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = operator.sample()?;
        if now.cpu - last.cpu < 0.02 || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Creates `count` Runs of the hold playbook from `clients` concurrent clients. `make` gives
/// each its name and, for a finished Run, its playbook and the status to write.
async fn create_many<F>(
    client: &Client,
    ns: &str,
    count: usize,
    clients: usize,
    make: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> (String, Option<(String, Value)>) + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (client, ns, next, make) = (client.clone(), ns.to_string(), next.clone(), make.clone());
        tasks.spawn(async move {
            let runs: Api<Run> = Api::namespaced(client, &ns);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let (name, done) = make(i);
                let playbook = done.as_ref().map_or(PLAYBOOK, |(p, _)| p.as_str());
                let run = cluster::run_object(
                    &ns,
                    &name,
                    playbook,
                    json!({"username": format!("user-{i}")}),
                )?;
                runs.create(&PostParams::default(), &run).await?;
                if let Some((_, status)) = done {
                    runs.patch_status(
                        &name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&status),
                    )
                    .await?;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// The status patch that makes a Run look finished: the template's status, or a minimal one.
fn finished_status(template: Option<&Run>) -> Value {
    let status = match template.and_then(|r| r.status.as_ref()) {
        Some(s) if s.phase == RunPhase::Succeeded => serde_json::to_value(s).unwrap_or_default(),
        _ => json!({
            "phase": "Succeeded", "reason": "Succeeded", "message": "every step succeeded",
            "startedAt": chrono::Utc::now(), "finishedAt": chrono::Utc::now(),
            "frozen": {"generation": 1, "uid": "", "spec": playbooks::hold(PLAYBOOK)["spec"]},
            "steps": {"hold": {"phase": "Succeeded", "outputs": {"decision": "approved"}}},
        }),
    };
    json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Run", "status": status})
}
