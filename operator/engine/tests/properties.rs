//! Properties of the planner over random playbooks, random Job outcomes and random cancels.

mod common;

use common::Sim;
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vigil_api::{
    Duration as KubeDuration,
    approval::Decision,
    playbook::{
        ApprovalGate, Approvers, Backoff, OnError, PlaybookSpec, Retries, RunPolicy, Step,
    },
    run::{RunPhase, StepPhase},
};
use vigil_engine::{Action, JobState};

/// Reconciles a Run may take before it counts as stuck.
const MAX_TICKS: usize = 400;

/// One randomly drawn step, before it is turned into a [`Step`].
#[derive(Clone, Debug)]
struct Drawn {
    /// Picks among the earlier steps; reduced modulo the step's index.
    deps: Vec<usize>,
    approval: bool,
    continue_on_error: bool,
    all_done: bool,
    retries: u32,
    /// None, or the constant the `when` evaluates to.
    when: Option<bool>,
    /// forEach over this many items, with this parallelism.
    for_each: Option<(usize, Option<u32>)>,
}

/// A random Run: the playbook, what its Jobs do, and when (if ever) it is cancelled.
#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Drawn>,
    finally: Vec<Drawn>,
    /// Job `k` (in creation order) succeeds, fails or hangs by `outcomes[k % len] % 4`.
    outcomes: Vec<u8>,
    approve: Vec<bool>,
    cancel_at: Option<usize>,
}

fn drawn(approvals: bool) -> impl Strategy<Value = Drawn> {
    let for_each = prop::option::weighted(0.3, (0..=3usize, prop::option::of(1..=3u32)));
    (
        prop::collection::vec(any::<usize>(), 0..=3),
        prop::bool::weighted(if approvals { 0.15 } else { 0.0 }),
        any::<bool>(),
        prop::bool::weighted(0.2),
        0..=2u32,
        prop::option::weighted(0.3, prop::bool::weighted(0.7)),
        for_each,
    )
        .prop_map(|(deps, approval, continue_on_error, all_done, retries, when, for_each)| {
            Drawn { deps, approval, continue_on_error, all_done, retries, when, for_each }
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(drawn(true), 1..=12),
        prop::collection::vec(drawn(false), 0..=3),
        prop::collection::vec(any::<u8>(), 1..=32),
        prop::collection::vec(any::<bool>(), 1..=8),
        prop::option::weighted(0.3, 0..40usize),
    )
        .prop_map(|(steps, finally, outcomes, approve, cancel_at)| Case {
            steps,
            finally,
            outcomes,
            approve,
            cancel_at,
        })
}

impl Case {
    fn spec(&self) -> PlaybookSpec {
        let steps = self.steps.iter().enumerate().map(|(i, d)| dag_step(i, d)).collect();
        let finally = self.finally.iter().enumerate().map(|(i, d)| finally_step(i, d)).collect();
        PlaybookSpec { steps, finally, ..Default::default() }
    }
}

fn dag_step(index: usize, d: &Drawn) -> Step {
    let mut step = base_step(format!("s{index}"), index, d);
    if d.approval {
        step.approval = Some(ApprovalGate {
            message: "go?".into(),
            approvers: Approvers { users: vec!["alice".into()], groups: vec![] },
            ..Default::default()
        });
        return step;
    }
    step.image = Some("busybox".into());
    step.command = Some(vec!["true".into()]);
    step.on_error = Some(if d.continue_on_error { OnError::Continue } else { OnError::Fail });
    step.retries = retries(d.retries);
    if let Some((items, parallelism)) = d.for_each {
        step.for_each = Some(format!("{:?}", (0..items).collect::<Vec<_>>()));
        step.parallelism = parallelism;
    }
    step
}

/// A finally step: no `when`, no forEach, no approval, so it must always run. Its dependencies
/// (on earlier finally steps) run on AllDone.
fn finally_step(index: usize, d: &Drawn) -> Step {
    let mut step = base_step(format!("f{index}"), index, d);
    step.when = None;
    step.run_policy = Some(RunPolicy::AllDone);
    step.image = Some("busybox".into());
    step.command = Some(vec!["true".into()]);
    step.retries = retries(d.retries);
    let renamed = |deps: Vec<String>| deps.iter().map(|d| format!("f{}", &d[1..])).collect();
    step.depends_on = step.depends_on.map(renamed);
    step
}

fn base_step(name: String, index: usize, d: &Drawn) -> Step {
    let deps: BTreeSet<String> =
        d.deps.iter().filter(|_| index > 0).map(|r| format!("s{}", r % index)).collect();
    Step {
        name,
        depends_on: (!deps.is_empty()).then(|| deps.into_iter().collect()),
        when: d.when.map(|w| w.to_string()),
        run_policy: d.all_done.then_some(RunPolicy::AllDone),
        timeout: Some(KubeDuration::from_secs(10)),
        ..Default::default()
    }
}

fn retries(limit: u32) -> Option<Retries> {
    let backoff = Backoff {
        initial: KubeDuration::from_secs(1),
        factor: 2,
        max: KubeDuration::from_secs(3),
    };
    (limit > 0).then_some(Retries { limit, backoff: Some(backoff) })
}

/// What the simulation recorded while driving one case.
struct Driven {
    sim: Sim,
    /// Whether the reconcile that ended the Run saw the cancel.
    cancelled: bool,
}

/// Drives the case until the Run ends, checking the per-reconcile invariants on the way.
fn drive(case: &Case) -> Result<Driven, TestCaseError> {
    let mut sim = Sim::from_spec(case.spec());
    let mut decided_jobs = BTreeSet::new();
    let mut names = BTreeSet::new();

    for tick in 0..MAX_TICKS {
        if case.cancel_at == Some(tick) {
            sim.cancel();
        }
        let actions = sim.tick();
        for action in &actions {
            if let Action::CreateJob(job) = action {
                prop_assert!(names.insert(job.name.clone()), "Job {} created twice", job.name);
                check_dependencies_ended(&sim, &job.step)?;
                let max = sim.pb.spec.step(&job.step).unwrap().max_attempts();
                prop_assert!(job.attempt >= 1 && job.attempt <= max, "{job:?} beyond {max}");
            }
        }
        if sim.run_phase().is_finished() {
            return Ok(Driven { cancelled: sim.obs.cancel, sim });
        }

        for job in sim.active_jobs() {
            if decided_jobs.insert(job.clone()) {
                let k = decided_jobs.len() - 1;
                match case.outcomes[k % case.outcomes.len()] % 4 {
                    0 | 1 => sim.succeed(&job, json!({ "job": job })),
                    2 => sim.fail(&job),
                    _ => {} // hangs until its timeout
                }
            }
        }
        let awaiting: Vec<(usize, String)> = sim.status.steps.iter()
            .filter(|(_, s)| s.phase == StepPhase::AwaitingApproval)
            .map(|(n, _)| (n[1..].parse().unwrap(), n.clone()))
            .collect();
        for (index, step) in awaiting {
            let approved = case.approve[index % case.approve.len()];
            let decision = if approved { Decision::Approved } else { Decision::Denied };
            sim.decide(&step, decision, "alice", None);
        }
        sim.advance(sim.requeue_after.unwrap_or(Duration::from_secs(1)).as_secs());
    }
    Err(TestCaseError::fail(format!(
        "the Run did not end within {MAX_TICKS} reconciles: {:#?}",
        sim.status.steps
    )))
}

/// A Job may start only once its step's dependencies ended (and, for finally steps, the DAG).
fn check_dependencies_ended(sim: &Sim, step: &str) -> Result<(), TestCaseError> {
    let spec = &sim.pb.spec;
    let def = spec.step(step).unwrap();
    for dep in def.depends_on() {
        let phase = sim.phase(dep);
        prop_assert!(phase.is_finished(), "{step} started while its dependency {dep} is {phase:?}");
    }
    if sim.pb.is_finally(step) {
        for dag in &spec.steps {
            let phase = sim.phase(&dag.name);
            let dag = &dag.name;
            prop_assert!(phase.is_finished(), "finally {step} started while {dag} is {phase:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_run_ends_with_each_attempt_started_once_and_every_finally_step_run(case in case()) {
        let Driven { sim, cancelled } = drive(&case)?;

        for (name, status) in &sim.status.steps {
            prop_assert!(status.phase.is_finished(), "{name} is {:?} after the Run", status.phase);
        }
        for step in &sim.pb.spec.finally {
            let status = sim.step(&step.name);
            prop_assert!(status.phase != StepPhase::Skipped, "finally {} skipped", step.name);
            prop_assert!(status.attempts >= 1, "finally {} never started", step.name);
        }

        let mut attempts: BTreeMap<(String, Option<usize>), u32> = BTreeMap::new();
        for job in &sim.created {
            *attempts.entry((job.step.clone(), job.item)).or_default() += 1;
        }
        for ((step, item), count) in attempts {
            let max = sim.pb.spec.step(&step).unwrap().max_attempts();
            prop_assert!(count <= max, "{step} item {item:?} ran {count} attempts, at most {max}");
        }

        let left: Vec<_> = sim.obs.jobs.iter().filter(|(_, s)| **s == JobState::Active).collect();
        prop_assert!(left.is_empty(), "Jobs left running after the Run ended: {left:?}");

        let hard_failure = sim.pb.spec.steps.iter()
            .any(|s| s.on_error() == OnError::Fail && sim.phase(&s.name) == StepPhase::Failed);
        let expected = if cancelled {
            RunPhase::Cancelled
        } else if hard_failure {
            RunPhase::Failed
        } else {
            sim.run_phase()
        };
        prop_assert_eq!(sim.run_phase(), expected);
        if sim.run_phase() == RunPhase::Succeeded {
            let finally_failed = sim.pb.spec.finally.iter()
                .any(|s| s.on_error() == OnError::Fail && sim.phase(&s.name) == StepPhase::Failed);
            prop_assert!(!finally_failed, "Succeeded although a finally step failed");
        }
    }
}
