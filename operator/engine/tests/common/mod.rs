//! A simulated reconciler for tests: holds a Run's status and observations, applies the
//! planner's actions, and lets a test finish Jobs, decide approvals and move a fake clock.

#![allow(dead_code)] // Each test binary uses its own part of the fixture.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use vigil_api::{
    approval::Decision,
    playbook::PlaybookSpec,
    run::{RunPhase, RunStatus, StepPhase, StepStatus},
};
use vigil_engine::{
    Action, ApprovalOutcome, CompiledPlaybook, Issue, JobRequest, JobState, Observed, Plan,
    compile, plan, plan::ApprovalRequest,
};

/// The Run every simulation drives; Job names start with it.
pub const RUN: &str = "r";

/// One Run under simulation.
pub struct Sim {
    pub pb: CompiledPlaybook,
    pub inputs: Value,
    pub status: RunStatus,
    pub obs: Observed,
    /// Every Job asked for, in order, over the whole Run.
    pub created: Vec<JobRequest>,
    /// Every Job deleted, with the planner's reason.
    pub deleted: Vec<(String, &'static str)>,
    pub approvals: Vec<ApprovalRequest>,
    /// Every event: (warning, reason, message).
    pub events: Vec<(bool, &'static str, String)>,
    /// The last plan's `requeue_after`.
    pub requeue_after: Option<Duration>,
}

/// Parses a playbook written in YAML. Steps that are neither approvals nor name an image get a
/// placeholder image and command, so tests only write what they are about.
pub fn spec(yaml: &str) -> PlaybookSpec {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml).expect("playbook YAML");
    for section in ["steps", "finally"] {
        let Some(steps) = doc.get_mut(section).and_then(|s| s.as_sequence_mut()) else { continue };
        for step in steps.iter_mut().filter_map(|s| s.as_mapping_mut()) {
            if !step.contains_key("approval") && !step.contains_key("image") {
                step.insert("image".into(), "busybox".into());
                step.insert("command".into(), serde_yaml::from_str("[\"true\"]").unwrap());
            }
        }
    }
    serde_yaml::from_value(doc).expect("a PlaybookSpec")
}

/// The issues `compile` reports for a playbook written in YAML.
pub fn compile_issues(yaml: &str) -> Vec<Issue> {
    compile(&spec(yaml)).expect_err("the playbook should not compile")
}

/// The instant every simulation starts at.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
}

impl Sim {
    pub fn new(yaml: &str) -> Self {
        Self::from_spec(spec(yaml))
    }

    pub fn from_spec(spec: PlaybookSpec) -> Self {
        let pb = compile(&spec).unwrap_or_else(|issues| panic!("does not compile: {issues:?}"));
        let status = RunStatus { started_at: Some(epoch()), ..Default::default() };
        Self {
            pb,
            inputs: json!({}),
            status,
            obs: Observed { now: epoch(), ..Default::default() },
            created: Vec::new(),
            deleted: Vec::new(),
            approvals: Vec::new(),
            events: Vec::new(),
            requeue_after: None,
        }
    }

    pub fn with_inputs(mut self, inputs: Value) -> Self {
        self.inputs = inputs;
        self
    }

    /// Plans without applying anything.
    pub fn peek(&self) -> Plan {
        plan(&self.pb, RUN, &self.inputs, &self.status, &self.obs)
    }

    /// One reconcile: plans, applies the actions and stores the status. Returns the actions.
    pub fn tick(&mut self) -> Vec<Action> {
        let plan = self.peek();
        for action in &plan.actions {
            match action {
                Action::CreateJob(job) => {
                    self.obs.jobs.insert(job.name.clone(), JobState::Active);
                    self.created.push(job.clone());
                }
                Action::DeleteJob { name, reason } => {
                    self.obs.jobs.remove(name);
                    self.deleted.push((name.clone(), reason));
                }
                Action::CreateApproval(approval) => self.approvals.push(approval.clone()),
                Action::Event { warning, reason, message } => {
                    self.events.push((*warning, reason, message.clone()))
                }
            }
        }
        // Status goes through JSON between reconciles, as it does through the API server.
        let json = serde_json::to_value(&plan.status).expect("status serializes");
        self.status = serde_json::from_value(json).expect("status deserializes");
        assert_eq!(self.status, plan.status, "status must survive a JSON round trip");
        self.requeue_after = plan.requeue_after;
        plan.actions
    }

    /// Names of the Jobs the given actions create.
    pub fn creates(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateJob(job) => Some(job.name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Ticks and returns the names of the Jobs created.
    pub fn tick_creates(&mut self) -> Vec<String> {
        let actions = self.tick();
        Self::creates(&actions)
    }

    pub fn succeed(&mut self, job: &str, outputs: Value) {
        self.finish_job(job, JobState::Succeeded { outputs, stored: None });
    }

    pub fn fail(&mut self, job: &str) {
        let state = JobState::Failed { exit_code: Some(1), message: "exit status 1".into() };
        self.finish_job(job, state);
    }

    fn finish_job(&mut self, job: &str, state: JobState) {
        let known = self.obs.jobs.get(job);
        assert_eq!(known, Some(&JobState::Active), "job {job} is not running");
        self.obs.jobs.insert(job.to_string(), state);
    }

    /// Moves the fake clock forward.
    pub fn advance(&mut self, secs: u64) {
        self.obs.now += chrono::Duration::seconds(secs as i64);
    }

    pub fn cancel(&mut self) {
        self.obs.cancel = true;
    }

    pub fn decide(&mut self, step: &str, decision: Decision, by: &str, reason: Option<&str>) {
        let outcome = ApprovalOutcome {
            decision,
            decided_by: by.into(),
            reason: reason.map(str::to_string),
        };
        self.obs.approvals.insert(step.into(), outcome);
    }

    pub fn step(&self, name: &str) -> &StepStatus {
        self.status.steps.get(name).unwrap_or_else(|| panic!("no status for step {name}"))
    }

    pub fn phase(&self, name: &str) -> StepPhase {
        self.step(name).phase
    }

    pub fn run_phase(&self) -> RunPhase {
        self.status.phase
    }

    pub fn reason(&self) -> Option<&str> {
        self.status.reason.as_deref()
    }

    /// The request of a Job created earlier in the Run.
    pub fn job(&self, name: &str) -> &JobRequest {
        self.created.iter().find(|j| j.name == name).unwrap_or_else(|| panic!("no job {name}"))
    }

    /// Jobs still running in the simulated cluster.
    pub fn active_jobs(&self) -> Vec<String> {
        let active = self.obs.jobs.iter().filter(|(_, s)| **s == JobState::Active);
        active.map(|(n, _)| n.clone()).collect()
    }
}
