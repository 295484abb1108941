//! The records between two statuses of one Run: a pure function, called by the reconciler
//! after every status write.

use crate::record::{Kind, Record};
use chrono::{DateTime, Utc};
use vigil_api::{Run, RunStatus, StepPhase, run::StepStatus};

/// The audit records for a Run whose status went from `before` to `after`, in the order they
/// happened: the Run's start first; then the steps that only ended, in playbook order; then
/// the steps that started (and perhaps ended) in this change, in playbook order; the Run's end
/// last. A dependency thus always ends before its dependents start.
///
/// Reads names, phases, attempts, exit codes, times and approval decisions only; never inputs,
/// outputs or messages written by steps.
pub fn records_for(before: &RunStatus, after: &RunStatus, run: &Run) -> Vec<Record> {
    let mut records = Vec::new();
    let transition = (before.phase != after.phase).then(|| run_transition(before, after, run));
    let ends = after.phase.is_finished();
    if !ends {
        records.extend(transition.clone());
    }

    let idle = StepStatus::default();
    let (mut ended, mut started) = (Vec::new(), Vec::new());
    for name in step_order(after) {
        let Some(now) = after.steps.get(&name) else { continue };
        let was = before.steps.get(&name).unwrap_or(&idle);
        let mut step = step_records(run, &name, was, now);
        step.sort_by_key(|(key, _)| *key);
        let starts = step.iter().any(|(_, r)| matches!(r.kind, Kind::StepStarted | Kind::ApprovalRequested));
        let group = if starts { &mut started } else { &mut ended };
        group.extend(step.into_iter().map(|(_, r)| r));
    }
    records.extend(ended);
    records.extend(started);

    if ends {
        records.extend(transition);
    }
    records
}

fn run_transition(before: &RunStatus, after: &RunStatus, run: &Run) -> Record {
    let (from, to) = (before.phase.as_str(), after.phase.as_str());
    let mut r = Record::for_run(Kind::RunTransition, run, format!("run {from} -> {to}"));
    r.phase = Some(to.to_string());
    r.reason = after.reason.clone();
    if after.phase.is_finished() {
        r.duration_ms = millis(after.started_at, after.finished_at);
    }
    r
}

/// Step names in playbook order (steps, then finally), then any the frozen spec does not list.
fn step_order(status: &RunStatus) -> Vec<String> {
    let mut names: Vec<String> = match &status.frozen {
        Some(f) => f.spec.steps.iter().chain(&f.spec.finally).map(|s| s.name.clone()).collect(),
        None => Vec::new(),
    };
    for name in status.steps.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The records of one step's change, each with its place in time: (attempt, order within it).
fn step_records(run: &Run, name: &str, was: &StepStatus, now: &StepStatus) -> Vec<((u32, u8), Record)> {
    let mut out = Vec::new();
    let last = u32::MAX;
    let step = |kind, message: String| {
        let mut r = Record::for_run(kind, run, message);
        r.step = Some(name.to_string());
        r
    };

    if now.phase == StepPhase::AwaitingApproval && was.phase != StepPhase::AwaitingApproval {
        let object = now.approval.as_deref().unwrap_or("?");
        let mut r = step(Kind::ApprovalRequested, format!("step {name} waits for approval {object}"));
        r.phase = Some(now.phase.as_str().to_string());
        out.push(((0, 0), r));
    }

    for attempt in was.attempts + 1..=now.attempts {
        let mut r = step(Kind::StepStarted, format!("step {name} attempt {attempt} started"));
        r.attempt = Some(attempt);
        r.phase = Some(StepPhase::Running.as_str().to_string());
        out.push(((attempt, 0), r));
    }

    let unit_retrying = |s: &StepStatus| s.unit.as_ref().is_some_and(|u| u.phase == StepPhase::Retrying);
    if unit_retrying(now) && !unit_retrying(was) {
        let unit = now.unit.as_ref().expect("retrying unit");
        let mut r = step(Kind::StepFinished, format!("step {name} attempt {} failed; retrying", unit.attempt));
        r.attempt = Some(unit.attempt);
        r.exit_code = unit.exit_code;
        r.phase = Some(StepPhase::Retrying.as_str().to_string());
        r.reason = Some("AttemptFailed".into());
        out.push(((unit.attempt, 1), r));
    }

    if was.phase == StepPhase::AwaitingApproval && now.phase != StepPhase::AwaitingApproval {
        out.push(((0, 1), decision(step(Kind::ApprovalDecided, String::new()), name, now)));
    }

    if now.phase.is_finished() && !was.phase.is_finished() {
        let phase = now.phase.as_str();
        let mut r = step(Kind::StepFinished, format!("step {name} {phase}"));
        r.attempt = (now.attempts > 0).then_some(now.attempts);
        r.exit_code = now.unit.as_ref().and_then(|u| u.exit_code);
        r.duration_ms = millis(now.started_at, now.finished_at);
        r.phase = Some(phase.to_string());
        r.reason = now.reason.clone();
        out.push(((last, 2), r));
    }
    out
}

/// Fills decision, actor and reason from an approval step's outputs; nothing else of them.
fn decision(mut r: Record, name: &str, now: &StepStatus) -> Record {
    let outputs = now.outputs.as_ref();
    let text = |key: &str| outputs.and_then(|o| o.get(key)).and_then(|v| v.as_str()).map(str::to_string);
    r.decision = text("decision");
    r.actor = text("decidedBy").or_else(|| {
        let list = outputs.and_then(|o| o.get("decidedBy")).and_then(|v| v.as_array())?;
        let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
        Some(names.join(","))
    });
    r.reason = text("reason").or_else(|| now.reason.clone());
    r.phase = Some(now.phase.as_str().to_string());
    r.duration_ms = millis(now.started_at, now.finished_at);
    let what = r.decision.clone().unwrap_or_else(|| now.phase.as_str().to_lowercase());
    let who = r.actor.clone().unwrap_or_else(|| "nobody".into());
    r.message = format!("approval of step {name} {what} by {who}");
    r
}

fn millis(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<i64> {
    start.zip(end).map(|(s, e)| (e - s).num_milliseconds().max(0))
}
