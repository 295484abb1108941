//! The records between statuses of an incident-response Run, as the reconciler would see them.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use std::collections::BTreeMap;
use vigil_api::{
    Run, RunPhase, RunSpec, RunStatus, StepPhase,
    run::{PlaybookRef, StepStatus, UnitStatus},
};
use vigil_audit::{Kind, records_for};

const ENRICHMENT: [&str; 5] = ["siem", "threat-intel", "identity", "malware-scan", "compliance"];
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 14, 30, 0).unwrap() + Duration::seconds(secs)
}

fn run() -> Run {
    let spec = RunSpec { playbook_ref: PlaybookRef { name: "incident-response".into() }, ..Default::default() };
    let mut run = Run::new("incident-response-7f3a", spec);
    run.metadata.namespace = Some("soc".into());
    run.metadata.annotations =
        Some(BTreeMap::from([(vigil_api::labels::TRACEPARENT.to_string(), TRACEPARENT.to_string())]));
    run
}

fn running(at: i64, attempt: u32) -> StepStatus {
    StepStatus {
        phase: StepPhase::Running,
        attempts: attempt,
        started_at: Some(t(at)),
        unit: Some(UnitStatus { phase: StepPhase::Running, attempt, attempt_started_at: Some(t(at)), ..Default::default() }),
        ..Default::default()
    }
}

fn succeeded(mut s: StepStatus, at: i64, secret_outputs: bool) -> StepStatus {
    s.phase = StepPhase::Succeeded;
    s.reason = Some("Succeeded".into());
    s.finished_at = Some(t(at));
    let unit = s.unit.get_or_insert_with(Default::default);
    unit.phase = StepPhase::Succeeded;
    unit.exit_code = Some(0);
    if secret_outputs {
        let outputs = json!({"token": "tok-SECRET-1", "api_password": "pw-SECRET-2", "client_secret": "cs-SECRET-3", "severity": "high"});
        unit.result = Some(outputs.clone());
        s.outputs = Some(outputs);
    }
    s
}

/// The statuses an incident-response Run goes through, as the reconciler writes them.
fn sequence() -> Vec<RunStatus> {
    let mut s = RunStatus { inputs: Some(json!({"username": "alice", "token": "in-SECRET-4"})), ..Default::default() };
    let names = ENRICHMENT.iter().chain(&["score", "log-low", "approve-quarantine", "quarantine-high"]);
    let step = |name: &&str| vigil_api::playbook::Step { name: name.to_string(), ..Default::default() };
    let spec = vigil_api::PlaybookSpec {
        steps: names.map(step).collect(),
        finally: vec![step(&"audit")],
        ..Default::default()
    };
    s.frozen = Some(vigil_api::run::FrozenPlaybook { generation: 1, uid: "u".into(), spec });
    let mut out = vec![s.clone()];

    s.phase = RunPhase::Running;
    s.reason = Some("Started".into());
    s.started_at = Some(t(0));
    for name in ENRICHMENT {
        s.steps.insert(name.into(), running(0, 1));
    }
    out.push(s.clone());

    // siem fails its first attempt and retries.
    let siem = s.steps.get_mut("siem").unwrap();
    let unit = siem.unit.as_mut().unwrap();
    unit.phase = StepPhase::Retrying;
    unit.exit_code = Some(1);
    unit.next_attempt_at = Some(t(4));
    for name in &ENRICHMENT[1..] {
        let done = succeeded(s.steps[*name].clone(), 3, true);
        s.steps.insert(name.to_string(), done);
    }
    out.push(s.clone());

    s.steps.insert("siem".into(), running(0, 2));
    out.push(s.clone());

    let done = succeeded(s.steps["siem"].clone(), 6, true);
    s.steps.insert("siem".into(), done);
    s.steps.insert("score".into(), running(6, 1));
    out.push(s.clone());

    let done = succeeded(s.steps["score"].clone(), 8, true);
    s.steps.insert("score".into(), done);
    s.steps.insert(
        "approve-quarantine".into(),
        StepStatus {
            phase: StepPhase::AwaitingApproval,
            started_at: Some(t(8)),
            approval: Some("incident-response-7f3a-approve-quarantine".into()),
            ..Default::default()
        },
    );
    s.steps.insert("log-low".into(), StepStatus { phase: StepPhase::Skipped, reason: Some("WhenFalse".into()), ..Default::default() });
    out.push(s.clone());

    let approval = s.steps.get_mut("approve-quarantine").unwrap();
    approval.phase = StepPhase::Succeeded;
    approval.finished_at = Some(t(68));
    approval.outputs = Some(json!({"decision": "approved", "decidedBy": "bob@example.com", "reason": "confirmed compromise"}));
    s.steps.insert("quarantine-high".into(), running(68, 1));
    out.push(s.clone());

    let done = succeeded(s.steps["quarantine-high"].clone(), 70, true);
    s.steps.insert("quarantine-high".into(), done);
    s.steps.insert("audit".into(), running(70, 1));
    out.push(s.clone());

    let done = succeeded(s.steps["audit"].clone(), 71, false);
    s.steps.insert("audit".into(), done);
    s.phase = RunPhase::Succeeded;
    s.reason = Some("Succeeded".into());
    s.finished_at = Some(t(71));
    out.push(s);
    out
}

fn all_records() -> Vec<vigil_audit::Record> {
    let run = run();
    sequence().windows(2).flat_map(|w| records_for(&w[0], &w[1], &run)).collect()
}

#[test]
fn an_incident_response_run_gives_its_records_in_order() {
    let kinds: Vec<(&str, Option<String>)> =
        all_records().iter().map(|r| (r.kind.as_str(), r.step.clone().or(r.phase.clone()))).collect();
    let step = |k: &'static str, s: &str| (k, Some(s.to_string()));
    let mut expected = vec![step("run.transition", "Running")];
    expected.extend(ENRICHMENT.map(|n| step("step.started", n)));
    expected.push(step("step.finished", "siem"));
    expected.extend(ENRICHMENT[1..].iter().map(|n| step("step.finished", n)));
    expected.extend([
        step("step.started", "siem"),
        step("step.finished", "siem"),
        step("step.started", "score"),
        step("step.finished", "score"),
        step("step.finished", "log-low"),
        step("approval.requested", "approve-quarantine"),
        step("approval.decided", "approve-quarantine"),
        step("step.finished", "approve-quarantine"),
        step("step.started", "quarantine-high"),
        step("step.finished", "quarantine-high"),
        step("step.started", "audit"),
        step("step.finished", "audit"),
        step("run.transition", "Succeeded"),
    ]);
    assert_eq!(kinds, expected);
}

#[test]
fn step_records_carry_attempt_exit_code_duration_and_phase() {
    let records = all_records();
    let siem: Vec<_> = records.iter().filter(|r| r.step.as_deref() == Some("siem")).collect();
    let shape: Vec<_> =
        siem.iter().map(|r| (r.kind, r.attempt, r.exit_code, r.phase.as_deref(), r.duration_ms)).collect();
    assert_eq!(
        shape,
        [
            (Kind::StepStarted, Some(1), None, Some("Running"), None),
            (Kind::StepFinished, Some(1), Some(1), Some("Retrying"), None),
            (Kind::StepStarted, Some(2), None, Some("Running"), None),
            (Kind::StepFinished, Some(2), Some(0), Some("Succeeded"), Some(6000)),
        ]
    );
    let end = records.last().unwrap();
    assert_eq!((end.duration_ms, end.reason.as_deref()), (Some(71_000), Some("Succeeded")));
}

#[test]
fn the_decision_records_who_decided_and_why() {
    let records = all_records();
    let decided = records.iter().find(|r| r.kind == Kind::ApprovalDecided).unwrap();
    assert_eq!(decided.decision.as_deref(), Some("approved"));
    assert_eq!(decided.actor.as_deref(), Some("bob@example.com"));
    assert_eq!(decided.reason.as_deref(), Some("confirmed compromise"));
    assert_eq!(decided.duration_ms, Some(60_000));
}

#[test]
fn every_record_names_the_run_and_carries_the_trace_id() {
    for r in all_records() {
        assert_eq!(r.namespace, "soc");
        assert_eq!(r.run.as_deref(), Some("incident-response-7f3a"));
        assert_eq!(r.playbook.as_deref(), Some("incident-response"));
        assert_eq!(r.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}

#[test]
fn records_never_contain_secrets_inputs_or_outputs() {
    let text = serde_json::to_string(&all_records()).unwrap();
    for needle in ["SECRET", "severity", "alice", "token", "password", "outputs", "inputs", "result"] {
        assert!(!text.contains(needle), "{needle} leaked into {text}");
    }
}

#[test]
fn an_unchanged_status_gives_no_records() {
    let run = run();
    for s in sequence() {
        assert!(records_for(&s, &s, &run).is_empty());
    }
}

#[test]
fn a_run_without_traceparent_has_no_trace_id() {
    let mut run = run();
    run.metadata.annotations = None;
    let seq = sequence();
    let records = records_for(&seq[0], &seq[1], &run);
    assert!(records.iter().all(|r| r.trace_id.is_none()));
}
