//! Reconciles one Run: start it (queue, freeze, validate), then plan and act until it ends, then
//! apply its retention.

use super::{Context, Error, MANAGER, actions, observe, queue};
use chrono::Utc;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use vigil_api::{
    Playbook, Run, RunPhase, RunStatus,
    condition::{Condition, set_condition},
    run::FrozenPlaybook,
};
use vigil_engine::{Observed, compile, inputs};

/// How often a running Run is looked at even when nothing happens.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a Run waiting for its playbook, or in the queue, is looked at again.
const WAIT: Duration = Duration::from_secs(10);

pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let trace_id = vigil_audit::record::run_trace_id(&run).unwrap_or_default();
    let span = tracing::info_span!("run", trace_id = %trace_id);
    let result = reconcile_inner(&run, &ctx).instrument(span).await;
    ctx.metrics.observe_reconcile(started.elapsed(), result.is_err());
    result
}

async fn reconcile_inner(run: &Run, ctx: &Context) -> Result<Action, Error> {
    if run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = current_status(ctx, run).await;
    if status.phase.is_finished() {
        return retention(ctx, run, &status).await;
    }
    if status.frozen.is_none() {
        return start(ctx, run, status).await;
    }
    advance(ctx, run, status).await
}

/// The Run's status, or the one this operator last wrote if the store has not caught up.
async fn current_status(ctx: &Context, run: &Run) -> RunStatus {
    let uid = run.metadata.uid.clone().unwrap_or_default();
    let seen_rv: u64 = run.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let written = ctx.written.lock().await;
    match written.get(&uid) {
        Some((rv, status)) if rv.parse::<u64>().unwrap_or(0) > seen_rv => status.clone(),
        _ => run.status.clone().unwrap_or_default(),
    }
}

/// Takes a new Run out of Pending: checks the playbook and inputs, waits for a concurrency
/// slot, and freezes the playbook into status.
async fn start(ctx: &Context, run: &Run, mut status: RunStatus) -> Result<Action, Error> {
    let ns = run.namespace().unwrap_or_default();
    let pb_name = &run.spec.playbook_ref.name;
    let Some(playbook) = ctx.playbooks.get(&ObjectRef::<Playbook>::new(pb_name).within(&ns)) else {
        let msg = format!("playbook {pb_name} not found in namespace {ns}");
        set_phase(&mut status, RunPhase::Pending, "PlaybookNotFound", &msg);
        write_status(ctx, run, &status).await?;
        warn(ctx, run, "PlaybookNotFound", &msg).await;
        return Ok(Action::requeue(WAIT));
    };

    let compiled = match compile(&playbook.spec) {
        Ok(c) => c,
        Err(issues) => {
            let msg = issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return fail_at_start(ctx, run, status, "InvalidPlaybook", &msg).await;
        }
    };
    let inputs = match inputs::validate(&compiled.spec.inputs, run.spec.inputs.as_ref()) {
        Ok(v) => v,
        Err(errors) => {
            let msg = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return fail_at_start(ctx, run, status, "InvalidInputs", &msg).await;
        }
    };

    let max = playbook.spec.concurrency.as_ref().map(|c| c.max);
    if let Err(ahead) = queue::admit(ctx, run, max).await {
        let msg = format!("waiting for a concurrency slot ({} max); {ahead} queued ahead", max.unwrap_or(0));
        if status.phase != RunPhase::Queued || status.message.as_deref() != Some(msg.as_str()) {
            set_phase(&mut status, RunPhase::Queued, "ConcurrencyLimit", &msg);
            write_status(ctx, run, &status).await?;
        }
        return Ok(Action::requeue(WAIT));
    }

    status.frozen = Some(FrozenPlaybook {
        generation: playbook.metadata.generation.unwrap_or(0),
        uid: playbook.metadata.uid.clone().unwrap_or_default(),
        spec: playbook.spec.clone(),
    });
    status.inputs = Some(inputs);
    status.started_at = Some(Utc::now());
    set_phase(&mut status, RunPhase::Running, "Started", "the playbook is frozen and running");
    ctx.metrics.run_started(pb_name);
    advance(ctx, run, status).await
}

async fn fail_at_start(ctx: &Context, run: &Run, mut status: RunStatus, reason: &'static str, msg: &str) -> Result<Action, Error> {
    set_phase(&mut status, RunPhase::Failed, reason, msg);
    status.finished_at = Some(Utc::now());
    write_status(ctx, run, &status).await?;
    warn(ctx, run, reason, msg).await;
    ctx.metrics.run_finished(&run.spec.playbook_ref.name, RunPhase::Failed, None);
    Ok(Action::requeue(WAIT))
}

/// Plans and acts on a running Run.
async fn advance(ctx: &Context, run: &Run, status: RunStatus) -> Result<Action, Error> {
    let frozen = status.frozen.clone().ok_or_else(|| Error::Invalid("no frozen playbook".into()))?;
    let compiled = compile(&frozen.spec).map_err(|issues| {
        Error::Invalid(issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    let observed = Observed {
        now: Utc::now(),
        cancel: run.cancel_requested(),
        jobs: observe::jobs(ctx, run, &status).await,
        approvals: observe::approvals(ctx, run, &status),
        stored_outputs: observe::stored_outputs(ctx, run, &status).await,
    };
    let inputs = status.inputs.clone().unwrap_or_else(|| json!({}));
    let plan = vigil_engine::plan(&compiled, &run.name_any(), &inputs, &status, &observed);

    actions::apply(ctx, run, &frozen.spec, &plan.actions).await?;

    let mut next = plan.status;
    if next.phase.is_finished() {
        let ok = next.phase == RunPhase::Succeeded;
        let reason = next.reason.clone().unwrap_or_default();
        let message = next.message.clone().unwrap_or_default();
        set_condition(&mut next.conditions, generation(run, Condition::new("Succeeded", ok, &reason, message)));
        let took = next.started_at.zip(next.finished_at).and_then(|(s, f)| (f - s).to_std().ok());
        ctx.metrics.run_finished(&run.spec.playbook_ref.name, next.phase, took);
    }
    for (name, step) in &next.steps {
        let before = status.steps.get(name).map(|s| s.phase);
        if before != Some(step.phase) && step.phase.is_finished() {
            let took = step.started_at.zip(step.finished_at).and_then(|(s, f)| (f - s).to_std().ok());
            ctx.metrics.step_finished(step.phase, took);
        }
    }
    if next != status {
        write_status(ctx, run, &next).await?;
    }
    if next.phase.is_finished() {
        wake_queue(ctx, run);
        return Ok(Action::requeue(WAIT));
    }
    Ok(Action::requeue(plan.requeue_after.map_or(RESYNC, |d| d.min(RESYNC) + Duration::from_millis(50))))
}

/// Deletes a finished Run once it is older than its TTL or beyond its playbook's history limit.
async fn retention(ctx: &Context, run: &Run, status: &RunStatus) -> Result<Action, Error> {
    let history = status.frozen.as_ref().and_then(|f| f.spec.history.clone()).unwrap_or_default();
    let ttl = history.ttl_after_finished.map_or(ctx.settings.run_ttl, |d| d.0);
    let finished = status.finished_at.unwrap_or_else(Utc::now);
    let age = (Utc::now() - finished).to_std().unwrap_or_default();
    let api: Api<Run> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());

    let over_limit = history.limit.is_some_and(|limit| {
        let ns = run.namespace();
        let mut done: Vec<Arc<Run>> = ctx
            .runs
            .state()
            .into_iter()
            .filter(|r| r.namespace() == ns && r.spec.playbook_ref.name == run.spec.playbook_ref.name)
            .filter(|r| r.phase().is_finished())
            .collect();
        done.sort_by_key(|r| std::cmp::Reverse(r.status.as_ref().and_then(|s| s.finished_at)));
        done.iter().skip(limit as usize).any(|r| r.metadata.uid == run.metadata.uid)
    });
    if age >= ttl || over_limit {
        tracing::info!(run = %run.name_any(), over_limit, "Deleting finished run");
        match api.delete(&run.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    Ok(Action::requeue((ttl - age).min(Duration::from_secs(3600)) + Duration::from_secs(1)))
}

/// Writes the whole status with server-side apply under [`MANAGER`].
pub async fn write_status(ctx: &Context, run: &Run, status: &RunStatus) -> Result<(), Error> {
    // The status this write replaces: the audit records describe the change.
    let before = if ctx.audit.is_some() { Some(current_status(ctx, run).await) } else { None };
    let api: Api<Run> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mut status = status.clone();
    status.observed_generation = run.metadata.generation;
    let patch = json!({
        "apiVersion": format!("{}/{}", vigil_api::GROUP, vigil_api::VERSION),
        "kind": "Run",
        "status": status,
    });
    let updated = api
        .patch_status(&run.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    let rv = updated.metadata.resource_version.clone().unwrap_or_default();
    let mut written = ctx.written.lock().await;
    if status.phase.is_finished() {
        written.remove(&run.metadata.uid.clone().unwrap_or_default());
    } else {
        written.insert(run.metadata.uid.clone().unwrap_or_default(), (rv, status.clone()));
    }
    drop(written);
    if let (Some(sink), Some(before)) = (&ctx.audit, before) {
        for record in vigil_audit::records_for(&before, &status, run) {
            vigil_audit::AuditHook::emit(sink, record);
        }
    }
    Ok(())
}

fn set_phase(status: &mut RunStatus, phase: RunPhase, reason: &str, message: &str) {
    status.phase = phase;
    status.reason = Some(reason.to_string());
    status.message = Some(message.to_string());
    let ready = matches!(phase, RunPhase::Running | RunPhase::Succeeded);
    set_condition(&mut status.conditions, Condition::new("Ready", ready, reason, message));
}

fn generation(run: &Run, mut c: Condition) -> Condition {
    c.observed_generation = run.metadata.generation;
    c
}

async fn warn(ctx: &Context, run: &Run, reason: &'static str, message: &str) {
    let action = vigil_engine::Action::Event { warning: true, reason, message: message.to_string() };
    let spec = vigil_api::PlaybookSpec::default();
    let _ = actions::apply(ctx, run, &spec, &[action]).await;
}

/// Asks for the Runs waiting behind a finished one to be looked at now.
fn wake_queue(ctx: &Context, run: &Run) {
    let ns = run.namespace().unwrap_or_default();
    for name in queue::waiting(ctx, &ns, &run.spec.playbook_ref.name) {
        let _ = ctx.wake.try_send(ObjectRef::<Run>::new(&name).within(&ns));
    }
}

/// What the controller does with a failed reconcile: report it, and retry with a delay.
pub fn error_policy(run: Arc<Run>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(run = %run.name_any(), error = %error, "Reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.reason().into() }).inc();
    Action::requeue(Duration::from_secs(5))
}
