//! Turns what the cluster shows (Jobs, their pods, Approvals) into the engine's observations.

use super::Context;
use k8s_openapi::api::{batch::v1::Job, core::v1::{ConfigMap, Pod}};
use kube::{Api, runtime::reflector::ObjectRef};
use serde_json::Value;
use std::collections::BTreeMap;
use vigil_api::{
    Run,
    approval::Approval,
    run::{OutputsRef, RunStatus, StepPhase},
};
use vigil_engine::{ApprovalOutcome, JobState, names};

/// What a step's termination message says, per the `vigil-step` protocol.
#[derive(Debug, PartialEq)]
pub enum Report {
    Outputs(Value),
    Stored { digest: String, bytes: u64 },
    Error(String),
    Missing,
}

/// Parses a termination message written by `vigil-step`.
pub fn parse_report(message: Option<&str>) -> Report {
    let Some(text) = message.map(str::trim).filter(|t| !t.is_empty()) else {
        return Report::Missing;
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Report::Error(format!("unreadable termination message: {}", truncate(text, 200)));
    };
    if let Some(outputs) = map.get("outputs") {
        return Report::Outputs(outputs.clone());
    }
    if let Some(digest) = map.get("digest").and_then(Value::as_str) {
        let bytes = map.get("bytes").and_then(Value::as_u64).unwrap_or(0);
        return Report::Stored { digest: digest.to_string(), bytes };
    }
    let error = map.get("error").and_then(Value::as_str).unwrap_or("step failed");
    Report::Error(error.to_string())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The Job names the Run's status refers to.
fn job_names(status: &RunStatus) -> Vec<String> {
    let mut out = Vec::new();
    for step in status.steps.values() {
        if !matches!(step.phase, StepPhase::Running | StepPhase::Retrying) {
            continue;
        }
        let units = step.items.iter().flatten().chain(step.unit.iter());
        out.extend(units.filter(|u| u.phase == StepPhase::Running).filter_map(|u| u.job.clone()));
    }
    out
}

/// Observes the Jobs of the Run's running units.
pub async fn jobs(ctx: &Context, run: &Run, status: &RunStatus) -> BTreeMap<String, JobState> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for name in job_names(status) {
        let Some(job) = ctx.jobs.get(&ObjectRef::<Job>::new(&name).within(&ns)) else { continue };
        let state = job_state(ctx, &ns, &job).await;
        out.insert(name, state);
    }
    out
}

async fn job_state(ctx: &Context, ns: &str, job: &Job) -> JobState {
    let name = job.metadata.name.clone().unwrap_or_default();
    let conditions = job.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
    let complete = has("Complete") || has("SuccessCriteriaMet");
    let failed = has("Failed") || has("FailureTarget");
    if !complete && !failed {
        return JobState::Active;
    }

    let terminated = step_termination(ctx, ns, &name);
    let exit_code = terminated.as_ref().map(|t| t.0);
    let report = parse_report(terminated.as_ref().and_then(|t| t.1.as_deref()));
    if failed {
        let reason = conditions
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .map(|c| format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()));
        let message = match report {
            Report::Error(e) => e,
            _ => reason.unwrap_or_else(|| "the Job failed".into()),
        };
        return JobState::Failed { exit_code, message };
    }
    match report {
        Report::Outputs(outputs) => JobState::Succeeded { outputs, stored: None },
        Report::Missing => JobState::Succeeded { outputs: serde_json::json!({}), stored: None },
        Report::Error(message) => JobState::Failed { exit_code, message },
        Report::Stored { digest, bytes } => {
            let cm = names::job_outputs_name(&name);
            match load_stored(ctx, ns, &cm, &digest).await {
                Ok(outputs) => JobState::Succeeded {
                    outputs,
                    stored: Some(OutputsRef { config_map: cm, bytes, digest }),
                },
                Err(message) => JobState::Failed { exit_code, message },
            }
        }
    }
}

/// The exit code and termination message of the `step` container of the Job's pod.
fn step_termination(ctx: &Context, ns: &str, job: &str) -> Option<(i32, Option<String>)> {
    let pods = ctx.pods.state();
    let pod = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .find(|p| step_terminated(p).is_some())?;
    step_terminated(pod)
}

fn step_terminated(pod: &Pod) -> Option<(i32, Option<String>)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let step = statuses.iter().find(|c| c.name == "step")?;
    let t = step.state.as_ref()?.terminated.as_ref()?;
    Some((t.exit_code, t.message.clone()))
}

use kube::ResourceExt;

/// Loads large outputs stored beside the Run and checks their digest.
pub async fn load_stored(ctx: &Context, ns: &str, cm: &str, digest: &str) -> Result<Value, String> {
    let key = format!("{ns}/{cm}@{digest}");
    if let Some(v) = ctx.outputs_cache.lock().await.get(&key) {
        return Ok(v.clone());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let config_map = api.get_opt(cm).await.map_err(|e| format!("cannot read outputs {cm}: {e}"))?;
    let text = config_map
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove("outputs.json"))
        .ok_or_else(|| format!("outputs {cm} were never stored"))?;
    let actual = crate::outputs::digest(text.as_bytes());
    if actual != digest {
        return Err(format!("outputs {cm} do not match their digest"));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("outputs {cm}: {e}"))?;
    let mut cache = ctx.outputs_cache.lock().await;
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(key, value.clone());
    Ok(value)
}

/// Large outputs the engine's expressions may read, by ConfigMap name.
pub async fn stored_outputs(ctx: &Context, run: &Run, status: &RunStatus) -> BTreeMap<String, Value> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for step in status.steps.values() {
        for unit in step.items.iter().flatten().chain(step.unit.iter()) {
            if let Some(r) = &unit.outputs_ref {
                if let Ok(v) = load_stored(ctx, &ns, &r.config_map, &r.digest).await {
                    out.insert(r.config_map.clone(), v);
                }
            }
        }
    }
    out
}

/// Decisions of the Run's approval steps.
pub fn approvals(ctx: &Context, run: &Run, status: &RunStatus) -> BTreeMap<String, ApprovalOutcome> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (step, st) in &status.steps {
        let Some(name) = st.approval.as_ref().filter(|_| st.phase == StepPhase::AwaitingApproval) else {
            continue;
        };
        let Some(approval) = ctx.approvals.get(&ObjectRef::<Approval>::new(name).within(&ns)) else {
            continue;
        };
        let Some(s) = approval.status.as_ref() else { continue };
        if let Some(decision) = s.decision {
            out.insert(step.clone(), ApprovalOutcome {
                decision,
                decided_by: s.decided_by.clone().unwrap_or_default(),
                reason: s.reason.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_report() {
        assert_eq!(parse_report(Some(r#"{"v":1,"outputs":{"a":1}}"#)), Report::Outputs(serde_json::json!({"a":1})));
        assert_eq!(
            parse_report(Some(r#"{"v":1,"digest":"sha256:ab","bytes":9}"#)),
            Report::Stored { digest: "sha256:ab".into(), bytes: 9 }
        );
        assert_eq!(parse_report(Some(r#"{"v":1,"error":"boom"}"#)), Report::Error("boom".into()));
        assert_eq!(parse_report(None), Report::Missing);
        assert!(matches!(parse_report(Some("not json")), Report::Error(_)));
    }
}
