//! Scenarios of whole Runs, driven through the planner by the simulated reconciler.

mod common;

use common::{Sim, compile_issues};
use serde_json::json;
use std::time::Duration;
use vigil_api::{
    approval::Decision,
    run::{RunPhase, StepPhase},
};
use vigil_engine::{Action, plan::reason};

const ENRICHMENTS: &str = r#"
steps:
  - name: siem
    inputs: {user: "inputs.username"}
  - name: ti
  - name: identity
  - name: malware
  - name: compliance
  - name: score
    dependsOn: [siem, ti, identity, malware, compliance]
    inputs: {hits: "steps.siem.outputs.hits + steps.ti.outputs.hits"}
"#;

#[test]
fn five_parallel_enrichments_start_together_and_join_before_score() {
    let mut sim = Sim::new(ENRICHMENTS).with_inputs(json!({"username": "jdoe"}));

    let first = sim.tick_creates();
    assert_eq!(first, ["r-siem-1", "r-ti-1", "r-identity-1", "r-malware-1", "r-compliance-1"]);
    assert_eq!(sim.job("r-siem-1").inputs, json!({"user": "jdoe"}));
    assert_eq!(sim.phase("score"), StepPhase::Pending);
    assert_eq!(sim.status.progress.as_deref(), Some("0/6"));

    sim.succeed("r-siem-1", json!({"hits": 3}));
    sim.succeed("r-ti-1", json!({"hits": 4}));
    sim.succeed("r-identity-1", json!({}));
    sim.succeed("r-malware-1", json!({}));
    assert!(sim.tick_creates().is_empty(), "score must wait for compliance");
    assert_eq!(sim.phase("score"), StepPhase::Pending);

    sim.succeed("r-compliance-1", json!({}));
    assert_eq!(sim.tick_creates(), ["r-score-1"]);
    assert_eq!(sim.job("r-score-1").inputs, json!({"hits": 7}));

    sim.succeed("r-score-1", json!({"severity": "high"}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Succeeded);
    assert_eq!(sim.reason(), Some(reason::SUCCEEDED));
    assert_eq!(sim.status.progress.as_deref(), Some("6/6"));
    assert!(sim.status.finished_at.is_some());
}

const BRANCHES: &str = r#"
steps:
  - name: score
  - name: contain
    dependsOn: [score]
    when: "steps.score.outputs.severity == 'high'"
  - name: report
    dependsOn: [score]
    when: "steps.score.outputs.severity != 'high'"
"#;

/// Runs the branch playbook with the given severity up to the branch's start.
fn branch_on(severity: &str) -> (Sim, Vec<String>) {
    let mut sim = Sim::new(BRANCHES);
    sim.tick();
    sim.succeed("r-score-1", json!({ "severity": severity }));
    let started = sim.tick_creates();
    (sim, started)
}

#[test]
fn high_severity_takes_the_containment_branch_and_skips_the_report() {
    let (sim, started) = branch_on("high");

    assert_eq!(started, ["r-contain-1"]);
    assert_eq!(sim.phase("report"), StepPhase::Skipped);
    assert_eq!(sim.step("report").reason.as_deref(), Some(reason::WHEN_FALSE));
    assert_eq!(sim.phase("contain"), StepPhase::Running);
}

#[test]
fn low_severity_takes_the_report_branch_and_skips_containment() {
    let (mut sim, started) = branch_on("low");

    assert_eq!(started, ["r-report-1"]);
    assert_eq!(sim.phase("contain"), StepPhase::Skipped);
    assert_eq!(sim.step("contain").reason.as_deref(), Some(reason::WHEN_FALSE));

    sim.succeed("r-report-1", json!({}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Succeeded);
}

#[test]
fn a_skip_propagates_to_dependents_but_not_to_steps_that_run_on_all_done() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: lookup
    when: "false"
  - name: enrich
    dependsOn: [lookup]
  - name: notify
    dependsOn: [enrich]
  - name: summary
    dependsOn: [notify]
    runPolicy: AllDone
    inputs: {lookup: "steps.lookup.phase"}
"#,
    );

    assert_eq!(sim.tick_creates(), ["r-summary-1"]);
    assert_eq!(sim.phase("lookup"), StepPhase::Skipped);
    for dependent in ["enrich", "notify"] {
        assert_eq!(sim.phase(dependent), StepPhase::Skipped, "{dependent}");
        let why = sim.step(dependent).reason.as_deref();
        assert_eq!(why, Some(reason::DEPENDENCY_NOT_SUCCEEDED), "{dependent}");
    }
    assert_eq!(sim.job("r-summary-1").inputs, json!({"lookup": "Skipped"}));

    sim.succeed("r-summary-1", json!({}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Succeeded);
}

#[test]
fn a_step_that_fails_twice_succeeds_on_the_third_attempt_after_waiting_two_then_four_seconds() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: siem
    retries: {limit: 3, backoff: {initial: 2s, factor: 2, max: 30s}}
"#,
    );
    let start = sim.obs.now;
    assert_eq!(sim.tick_creates(), ["r-siem-1"]);

    sim.fail("r-siem-1");
    assert!(sim.tick_creates().is_empty());
    assert_eq!(sim.phase("siem"), StepPhase::Retrying);
    let unit = sim.step("siem").unit.clone().unwrap();
    assert_eq!(unit.next_attempt_at, Some(start + chrono::Duration::seconds(2)));
    assert_eq!(sim.requeue_after, Some(Duration::from_secs(2)));
    assert!(sim.events.iter().any(|(warning, why, _)| !warning && *why == "StepRetrying"));

    sim.advance(1);
    assert!(sim.tick_creates().is_empty(), "the backoff has not ended");
    assert_eq!(sim.requeue_after, Some(Duration::from_secs(1)));
    sim.advance(1);
    assert_eq!(sim.tick_creates(), ["r-siem-2"]);

    sim.fail("r-siem-2");
    sim.tick();
    let unit = sim.step("siem").unit.clone().unwrap();
    assert_eq!(unit.next_attempt_at, Some(sim.obs.now + chrono::Duration::seconds(4)));
    assert_eq!(sim.requeue_after, Some(Duration::from_secs(4)));
    sim.advance(4);
    assert_eq!(sim.tick_creates(), ["r-siem-3"]);

    sim.succeed("r-siem-3", json!({"hits": 1}));
    sim.tick();
    assert_eq!(sim.phase("siem"), StepPhase::Succeeded);
    assert_eq!(sim.step("siem").attempts, 3);
    assert_eq!(sim.step("siem").outputs, Some(json!({"hits": 1})));
    assert_eq!(sim.run_phase(), RunPhase::Succeeded);
}

#[test]
fn backoff_is_capped_at_max_and_the_run_fails_once_retries_run_out() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: flaky
    retries: {limit: 3, backoff: {initial: 2s, factor: 10, max: 5s}}
"#,
    );
    sim.tick();

    let mut waits = Vec::new();
    for attempt in 1..=3 {
        sim.fail(&format!("r-flaky-{attempt}"));
        sim.tick();
        let wait = sim.requeue_after.expect("a requeue for the backoff");
        waits.push(wait.as_secs());
        sim.advance(wait.as_secs());
        assert_eq!(sim.tick_creates(), [format!("r-flaky-{}", attempt + 1)]);
    }
    assert_eq!(waits, [2, 5, 5]);

    sim.fail("r-flaky-4");
    assert!(sim.tick_creates().is_empty(), "no fifth attempt");
    assert_eq!(sim.phase("flaky"), StepPhase::Failed);
    assert_eq!(sim.step("flaky").attempts, 4);
    assert_eq!(sim.run_phase(), RunPhase::Failed);
    assert_eq!(sim.reason(), Some(reason::STEP_FAILED));
}

#[test]
fn an_attempt_past_its_timeout_deletes_the_job_and_counts_as_a_failed_attempt() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: scan
    timeout: 30s
    retries: {limit: 1, backoff: {initial: 1s}}
"#,
    );
    sim.tick();
    assert_eq!(sim.requeue_after, Some(Duration::from_secs(30)));

    sim.advance(29);
    sim.tick();
    assert!(sim.deleted.is_empty(), "not yet timed out");

    sim.advance(1);
    sim.tick();
    assert_eq!(sim.deleted, [("r-scan-1".to_string(), reason::TIMEOUT)]);
    assert_eq!(sim.phase("scan"), StepPhase::Retrying);
    let error = sim.step("scan").unit.clone().unwrap().error.unwrap();
    assert!(error.contains("timed out"), "{error}");

    sim.advance(1);
    assert_eq!(sim.tick_creates(), ["r-scan-2"]);
    sim.advance(30);
    sim.tick();
    assert_eq!(sim.deleted.last(), Some(&("r-scan-2".to_string(), reason::TIMEOUT)));
    assert_eq!(sim.phase("scan"), StepPhase::Failed);
    assert_eq!(sim.run_phase(), RunPhase::Failed);
    assert_eq!(sim.reason(), Some(reason::STEP_FAILED));
    assert!(sim.active_jobs().is_empty());
}

const QUARANTINE: &str = r#"
steps:
  - name: identity
  - name: quarantine
    dependsOn: [identity]
    forEach: "steps.identity.outputs.devices"
    parallelism: 1
    inputs: {host: "item", user: "inputs.username"}
  - name: report
    dependsOn: [quarantine]
    inputs: {isolated: "steps.quarantine.outputs.items.map(i, i.isolated)"}
"#;

#[test]
fn for_each_over_three_devices_runs_one_at_a_time_and_collects_outputs_in_order() {
    let mut sim = Sim::new(QUARANTINE).with_inputs(json!({"username": "jdoe"}));
    sim.tick();
    sim.succeed("r-identity-1", json!({"devices": ["ws-1", "ws-2", "ws-3"]}));

    for (i, host) in ["ws-1", "ws-2", "ws-3"].iter().enumerate() {
        let job = format!("r-quarantine-{i}-1");
        assert_eq!(sim.tick_creates(), [job.as_str()], "one item at a time");
        let inputs = &sim.job(&job).inputs;
        assert_eq!(inputs["host"], json!(host));
        assert_eq!(inputs["user"], json!("jdoe"));
        assert_eq!(sim.job(&job).item, Some(i));
        assert_eq!(sim.active_jobs(), [job.as_str()]);
        sim.succeed(&job, json!({ "isolated": host }));
    }

    assert_eq!(sim.tick_creates(), ["r-report-1"]);
    assert_eq!(sim.job("r-report-1").inputs, json!({"isolated": ["ws-1", "ws-2", "ws-3"]}));
    let quarantine = sim.step("quarantine");
    assert_eq!(quarantine.phase, StepPhase::Succeeded);
    assert_eq!(quarantine.attempts, 3);
    let items = json!([{"isolated": "ws-1"}, {"isolated": "ws-2"}, {"isolated": "ws-3"}]);
    assert_eq!(quarantine.outputs, Some(json!({ "items": items })));
}

#[test]
fn for_each_outputs_keep_item_order_when_items_finish_out_of_order() {
    let playbook = QUARANTINE.replace("parallelism: 1", "parallelism: 3");
    let mut sim = Sim::new(&playbook).with_inputs(json!({"username": "jdoe"}));
    sim.tick();
    sim.succeed("r-identity-1", json!({"devices": ["a", "b", "c"]}));
    let started = sim.tick_creates();
    assert_eq!(started, ["r-quarantine-0-1", "r-quarantine-1-1", "r-quarantine-2-1"]);

    for (i, host) in [(2, "c"), (0, "a"), (1, "b")] {
        sim.succeed(&format!("r-quarantine-{i}-1"), json!({ "isolated": host }));
        sim.tick();
    }

    assert_eq!(sim.job("r-report-1").inputs, json!({"isolated": ["a", "b", "c"]}));
}

#[test]
fn finally_runs_after_a_failure_and_the_run_ends_failed_with_step_failed() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: contain
  - name: notify
    dependsOn: [contain]
finally:
  - name: audit
    inputs: {outcome: "steps.contain.phase"}
"#,
    );
    sim.tick();
    sim.fail("r-contain-1");

    assert_eq!(sim.tick_creates(), ["r-audit-1"]);
    assert_eq!(sim.phase("notify"), StepPhase::Skipped);
    assert_eq!(sim.job("r-audit-1").inputs, json!({"outcome": "Failed"}));
    assert_eq!(sim.run_phase(), RunPhase::Running, "the Run waits for finally");

    sim.succeed("r-audit-1", json!({}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Failed);
    assert_eq!(sim.reason(), Some(reason::STEP_FAILED));
    let message = sim.status.message.clone().unwrap_or_default();
    assert!(message.contains("contain"), "{message}");
}

#[test]
fn a_failing_finally_step_fails_an_otherwise_successful_run() {
    let mut sim = Sim::new("steps: [{name: work}]\nfinally: [{name: audit}]");
    sim.tick();
    sim.succeed("r-work-1", json!({}));
    sim.tick();
    sim.fail("r-audit-1");
    sim.tick();

    assert_eq!(sim.run_phase(), RunPhase::Failed);
    assert_eq!(sim.reason(), Some(reason::FINALLY_FAILED));
}

#[test]
fn on_error_continue_lets_the_join_run_and_the_run_succeed() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: siem
    onError: continue
  - name: ti
  - name: score
    dependsOn: [siem, ti]
    inputs: {siem: "steps.siem.phase"}
"#,
    );
    sim.tick();
    sim.fail("r-siem-1");
    assert!(sim.tick_creates().is_empty(), "score still waits for ti");
    assert_eq!(sim.phase("siem"), StepPhase::Failed);

    sim.succeed("r-ti-1", json!({}));
    assert_eq!(sim.tick_creates(), ["r-score-1"]);
    assert_eq!(sim.job("r-score-1").inputs, json!({"siem": "Failed"}));

    sim.succeed("r-score-1", json!({}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Succeeded);
}

#[test]
fn cancel_deletes_running_jobs_runs_finally_and_ends_cancelled() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: siem
  - name: ti
  - name: score
    dependsOn: [siem, ti]
finally:
  - name: audit
"#,
    );
    sim.tick();
    sim.cancel();

    assert_eq!(sim.tick_creates(), ["r-audit-1"]);
    let mut deleted = sim.deleted.clone();
    deleted.sort();
    let cancelled = |job: &str| (job.to_string(), reason::CANCELLED);
    assert_eq!(deleted, [cancelled("r-siem-1"), cancelled("r-ti-1")]);
    assert_eq!(sim.phase("siem"), StepPhase::Cancelled);
    assert_eq!(sim.phase("ti"), StepPhase::Cancelled);
    assert_eq!(sim.phase("score"), StepPhase::Skipped);
    assert_eq!(sim.run_phase(), RunPhase::Running, "the Run waits for finally");

    sim.succeed("r-audit-1", json!({}));
    sim.tick();
    assert_eq!(sim.run_phase(), RunPhase::Cancelled);
    assert_eq!(sim.reason(), Some(reason::CANCELLED));
    assert!(sim.active_jobs().is_empty());
}

#[test]
fn a_finally_step_still_retries_after_a_cancel() {
    let mut sim = Sim::new(
        r#"
steps: [{name: work}]
finally:
  - name: audit
    retries: {limit: 1, backoff: {initial: 2s}}
"#,
    );
    sim.tick();
    sim.cancel();
    sim.tick();
    sim.fail("r-audit-1");
    sim.tick();
    assert_eq!(sim.phase("audit"), StepPhase::Retrying);

    sim.advance(2);
    assert_eq!(sim.tick_creates(), ["r-audit-2"]);
    sim.succeed("r-audit-2", json!({}));
    sim.tick();
    assert_eq!(sim.phase("audit"), StepPhase::Succeeded);
    assert_eq!(sim.run_phase(), RunPhase::Cancelled);
}

const GATED: &str = r#"
steps:
  - name: approve-quarantine
    approval:
      message: "Quarantine {{ inputs.hostname }}?"
      approvers: {groups: [soc-leads]}
  - name: quarantine
    dependsOn: [approve-quarantine]
    inputs: {by: "steps['approve-quarantine'].outputs.decidedBy"}
"#;

#[test]
fn an_approval_waits_for_a_decision_and_approved_lets_dependents_run() {
    let mut sim = Sim::new(GATED).with_inputs(json!({"hostname": "ws-1"}));

    assert!(sim.tick_creates().is_empty());
    assert_eq!(sim.phase("approve-quarantine"), StepPhase::AwaitingApproval);
    assert_eq!(sim.approvals.len(), 1);
    assert_eq!(sim.approvals[0].name, "r-approve-quarantine");
    assert_eq!(sim.approvals[0].message, "Quarantine ws-1?");
    assert!(sim.tick_creates().is_empty(), "still waiting");
    assert_eq!(sim.approvals.len(), 1, "the Approval is asked for once");

    sim.decide("approve-quarantine", Decision::Approved, "alice", Some("confirmed"));
    assert_eq!(sim.tick_creates(), ["r-quarantine-1"]);
    let gate = sim.step("approve-quarantine");
    assert_eq!(gate.phase, StepPhase::Succeeded);
    assert_eq!(gate.reason.as_deref(), Some(reason::APPROVED));
    let outputs = json!({"decision": "approved", "decidedBy": "alice", "reason": "confirmed"});
    assert_eq!(gate.outputs, Some(outputs));
    assert_eq!(sim.job("r-quarantine-1").inputs, json!({"by": "alice"}));
}

#[test]
fn a_denied_approval_skips_its_dependents() {
    let mut sim = Sim::new(GATED).with_inputs(json!({"hostname": "ws-1"}));
    sim.tick();

    sim.decide("approve-quarantine", Decision::Denied, "bob", None);
    assert!(sim.tick_creates().is_empty());
    let gate = sim.step("approve-quarantine");
    assert_eq!(gate.phase, StepPhase::Denied);
    assert_eq!(gate.outputs.as_ref().unwrap()["decision"], json!("denied"));
    assert_eq!(gate.outputs.as_ref().unwrap()["decidedBy"], json!("bob"));
    assert_eq!(sim.phase("quarantine"), StepPhase::Skipped);
    assert_eq!(sim.run_phase(), RunPhase::Succeeded, "a denial is a decision, not an error");
}

#[test]
fn a_when_that_cannot_be_evaluated_fails_the_step_with_expression_error_and_warns() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: contain
    when: "inputs.severity == 'high'"
  - name: notify
    dependsOn: [contain]
"#,
    );

    assert!(sim.tick_creates().is_empty());
    assert_eq!(sim.phase("contain"), StepPhase::Failed);
    assert_eq!(sim.step("contain").reason.as_deref(), Some(reason::EXPRESSION_ERROR));
    let warning = sim.events.iter().find(|(w, why, _)| *w && *why == reason::EXPRESSION_ERROR);
    let (_, _, message) = warning.expect("a Warning event with reason ExpressionError");
    assert!(message.contains("contain") && message.contains("when"), "{message}");
    assert_eq!(sim.phase("notify"), StepPhase::Skipped);
    assert_eq!(sim.run_phase(), RunPhase::Failed);
    assert_eq!(sim.reason(), Some(reason::STEP_FAILED));
}

#[test]
fn an_input_that_cannot_be_evaluated_for_one_item_fails_the_step_and_leaves_no_job_running() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: scan
    forEach: "[{'host': 'a'}, {'nohost': 'b'}, {'host': 'c'}]"
    inputs: {host: "item.host"}
"#,
    );

    sim.tick();
    assert_eq!(sim.phase("scan"), StepPhase::Failed);
    assert_eq!(sim.step("scan").reason.as_deref(), Some(reason::EXPRESSION_ERROR));
    assert_eq!(sim.deleted, [("r-scan-0-1".to_string(), reason::EXPRESSION_ERROR)]);
    assert!(sim.active_jobs().is_empty());
    assert!(sim.created.iter().all(|j| j.item != Some(2)), "no item after the bad one starts");
    let message = sim.step("scan").message.clone().unwrap_or_default();
    assert!(message.contains("inputs.host"), "{message}");
    assert_eq!(sim.run_phase(), RunPhase::Failed);
}

#[test]
fn replanning_with_the_same_observations_creates_no_new_jobs() {
    let mut sim = Sim::new(
        r#"
steps:
  - name: siem
    retries: {limit: 2, backoff: {initial: 2s}}
  - name: ti
  - name: hosts
    forEach: "['a', 'b', 'c']"
    parallelism: 2
  - name: gate
    dependsOn: [ti]
    approval: {message: "go?", approvers: {users: [alice]}}
"#,
    );
    let mut checkpoints = 0;
    let mut check = |sim: &mut Sim| {
        sim.tick();
        let again = sim.peek();
        assert!(Sim::creates(&again.actions).is_empty(), "{:?}", again.actions);
        let asks = again.actions.iter().any(|a| matches!(a, Action::CreateApproval(_)));
        assert!(!asks, "the Approval is asked for again");
        assert_eq!(again.status, sim.status, "the second plan changes nothing");
        checkpoints += 1;
    };

    check(&mut sim);
    sim.fail("r-siem-1");
    sim.succeed("r-ti-1", json!({}));
    sim.succeed("r-hosts-0-1", json!({}));
    check(&mut sim);
    sim.advance(2);
    check(&mut sim);
    assert!(sim.created.iter().any(|j| j.name == "r-siem-2"));
    assert!(sim.created.iter().any(|j| j.name == "r-hosts-2-1"));
    assert_eq!(checkpoints, 3);
}

#[test]
fn compile_names_the_step_and_field_of_a_dependency_cycle() {
    let issues = compile_issues(
        r#"
steps:
  - {name: a, dependsOn: [c]}
  - {name: b, dependsOn: [a]}
  - {name: c, dependsOn: [b]}
"#,
    );

    let cycle = issues.iter().find(|i| i.message.contains("cycle")).expect("a cycle issue");
    assert!(matches!(cycle.step.as_deref(), Some("a" | "b" | "c")), "{cycle:?}");
    assert_eq!(cycle.field, "dependsOn");
}

#[test]
fn compile_names_the_step_and_field_of_an_unknown_dependency() {
    let issues = compile_issues("steps: [{name: score, dependsOn: [siem]}]");

    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].step.as_deref(), Some("score"));
    assert_eq!(issues[0].field, "dependsOn");
    assert!(issues[0].message.contains("siem"), "{}", issues[0]);
    assert!(issues[0].to_string().starts_with("step score: dependsOn: "), "{}", issues[0]);
}

#[test]
fn compile_names_a_duplicate_step_even_across_finally() {
    let issues = compile_issues("steps: [{name: audit}, {name: siem}]\nfinally: [{name: audit}]");

    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].step.as_deref(), Some("audit"));
    assert_eq!(issues[0].field, "name");
}

#[test]
fn compile_names_the_step_and_field_of_bad_cel() {
    let issues = compile_issues(
        r#"
steps:
  - name: siem
    when: "inputs.(("
    inputs: {ip: "inputs.ip +", user: "inputs.username"}
"#,
    );

    let fields: Vec<(Option<&str>, &str)> =
        issues.iter().map(|i| (i.step.as_deref(), i.field.as_str())).collect();
    assert_eq!(fields, [(Some("siem"), "when"), (Some("siem"), "inputs.ip")]);
}
