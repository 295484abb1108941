//! The planner: frozen playbook + observed state of a Run → the next status and actions.
//!
//! Pure: no clock, no I/O. The reconciler and `vigil run --local` feed it what they observed
//! (Job outcomes, approval decisions, the time) and carry out the actions it returns. Calling it
//! twice with the same observations returns the same plan, which is what makes the reconciler
//! safe to restart at any point.

use crate::{compile::CompiledPlaybook, names};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use vigil_api::{
    approval::Decision,
    playbook::{OnError, RunPolicy, Step, TimeoutDecision},
    run::{OutputsRef, RunPhase, RunStatus, StepPhase, StepStatus, UnitStatus},
};

/// How long a Job may be missing from the observations before its attempt counts as lost.
pub const JOB_LOST_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// What became of one Job, as the reconciler saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Created, not finished.
    Active,
    /// Exited 0; `outputs` is what the step returned (loaded from `stored` when large).
    Succeeded { outputs: Value, stored: Option<OutputsRef> },
    /// Failed, with the container's exit code when known.
    Failed { exit_code: Option<i32>, message: String },
}

/// The decision of an approval step, once made.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalOutcome {
    pub decision: Decision,
    pub decided_by: String,
    pub reason: Option<String>,
}

/// What the reconciler observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub now: DateTime<Utc>,
    pub cancel: bool,
    /// Job outcomes by Job name.
    pub jobs: BTreeMap<String, JobState>,
    /// Decisions by approval step name.
    pub approvals: BTreeMap<String, ApprovalOutcome>,
    /// Large outputs by ConfigMap name, loaded for the expressions that read them.
    pub stored_outputs: BTreeMap<String, Value>,
}

/// A Job to create for one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub name: String,
    pub step: String,
    pub item: Option<usize>,
    pub attempt: u32,
    /// The step's inputs, evaluated.
    pub inputs: Value,
    pub timeout: std::time::Duration,
}

/// An Approval to create.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    pub name: String,
    pub step: String,
    pub message: String,
    pub context: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// Something the reconciler must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateJob(JobRequest),
    /// Stop a Job (timeout or cancel). Its pods go with it.
    DeleteJob { name: String, reason: &'static str },
    CreateApproval(ApprovalRequest),
    /// A user-visible event on the Run.
    Event { warning: bool, reason: &'static str, message: String },
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: RunStatus,
    pub actions: Vec<Action>,
    /// When to look again even if nothing changes (backoff, timeouts).
    pub requeue_after: Option<std::time::Duration>,
}

/// Reasons, as constants, so tests and dashboards can rely on them.
pub mod reason {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const STEP_FAILED: &str = "StepFailed";
    pub const FINALLY_FAILED: &str = "FinallyFailed";
    pub const CANCELLED: &str = "Cancelled";
    pub const RUN_TIMEOUT: &str = "RunTimeout";
    pub const WHEN_FALSE: &str = "WhenFalse";
    pub const DEPENDENCY_NOT_SUCCEEDED: &str = "DependencyNotSucceeded";
    pub const RUN_STOPPING: &str = "RunStopping";
    pub const EXPRESSION_ERROR: &str = "ExpressionError";
    pub const TIMEOUT: &str = "Timeout";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const JOB_LOST: &str = "JobLost";
    pub const APPROVED: &str = "Approved";
    pub const DENIED: &str = "Denied";
}

/// Why the DAG stops starting steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
    Failed,
}

/// Plans the next move of a Run. `status` must carry `startedAt` (the reconciler sets it when
/// the Run leaves the queue).
pub fn plan(pb: &CompiledPlaybook, run: &str, inputs: &Value, status: &RunStatus, obs: &Observed) -> Plan {
    let mut p = Planner {
        pb,
        run,
        inputs,
        obs,
        st: status.clone(),
        actions: Vec::new(),
        wake: None,
    };
    p.run();
    Plan { status: p.st, actions: p.actions, requeue_after: p.wake }
}

struct Planner<'a> {
    pb: &'a CompiledPlaybook,
    run: &'a str,
    inputs: &'a Value,
    obs: &'a Observed,
    st: RunStatus,
    actions: Vec<Action>,
    wake: Option<std::time::Duration>,
}

impl Planner<'_> {
    fn run(&mut self) {
        if self.st.phase.is_finished() {
            return;
        }
        self.st.phase = RunPhase::Running;
        for step in self.pb.spec.all_steps() {
            self.st.steps.entry(step.name.clone()).or_default();
        }

        self.observe_jobs();
        self.observe_approvals();

        let stop = self.stop_reason();
        if matches!(stop, Some(Stop::Cancelled | Stop::TimedOut)) {
            self.stop_running(stop == Some(Stop::Cancelled));
        }

        // Starting one step can settle others (skips cascade), so repeat until nothing moves.
        while self.start_ready(stop) {}
        self.advance_items(stop);
        self.finish(stop);
        self.st.progress = Some(self.progress());
    }

    // === observing ===

    fn observe_jobs(&mut self) {
        let names: Vec<String> = self.st.steps.keys().cloned().collect();
        for name in names {
            let Some(step) = self.pb.spec.step(&name) else { continue };
            let step = step.clone();
            let mut status = self.st.steps.remove(&name).unwrap_or_default();
            if matches!(status.phase, StepPhase::Running | StepPhase::Retrying) {
                if let Some(items) = status.items.as_mut() {
                    for unit in items.iter_mut() {
                        self.observe_unit(&step, unit, true);
                    }
                } else {
                    let unit = status.unit.get_or_insert_with(Default::default);
                    let result = self.observe_unit(&step, unit, false);
                    if let Some(outputs) = result {
                        status.outputs = Some(outputs);
                    }
                }
                self.settle_step(&step, &mut status);
            }
            self.st.steps.insert(name, status);
        }
    }

    /// Updates a running unit from its Job. Returns the outputs of a single-unit step that just
    /// succeeded (they go to the step's `outputs`; items keep theirs in `result`).
    fn observe_unit(&mut self, step: &Step, unit: &mut UnitStatus, is_item: bool) -> Option<Value> {
        let now = self.obs.now;
        match unit.phase {
            StepPhase::Running => {
                let job = unit.job.clone().unwrap_or_default();
                let started = unit.attempt_started_at.unwrap_or(now);
                match self.obs.jobs.get(&job) {
                    Some(JobState::Succeeded { outputs, stored }) => {
                        unit.phase = StepPhase::Succeeded;
                        unit.exit_code = Some(0);
                        unit.error = None;
                        unit.outputs_ref = stored.clone();
                        if stored.is_some() {
                            return None;
                        }
                        if is_item {
                            unit.result = Some(outputs.clone());
                            return None;
                        }
                        return Some(outputs.clone());
                    }
                    Some(JobState::Failed { exit_code, message }) => {
                        unit.exit_code = *exit_code;
                        self.attempt_failed(step, unit, reason::JOB_FAILED, message.clone());
                    }
                    Some(JobState::Active) | None => {
                        let deadline = started + to_chrono(step.timeout());
                        let missing = !self.obs.jobs.contains_key(&job);
                        if now >= deadline {
                            self.actions.push(Action::DeleteJob { name: job.clone(), reason: reason::TIMEOUT });
                            let msg = format!("attempt {} timed out after {}", unit.attempt, fmt_dur(step.timeout()));
                            self.attempt_failed(step, unit, reason::TIMEOUT, msg);
                        } else if missing && now >= started + to_chrono(JOB_LOST_GRACE) {
                            let msg = format!("Job {job} disappeared before it finished");
                            self.attempt_failed(step, unit, reason::JOB_LOST, msg);
                        } else {
                            let mut next = deadline;
                            if missing {
                                next = next.min(started + to_chrono(JOB_LOST_GRACE));
                            }
                            self.wake_at(next);
                        }
                    }
                }
            }
            StepPhase::Retrying => {
                let due = unit.next_attempt_at.unwrap_or(now);
                // A cancel does not hold the retry back: the DAG's units are cancelled right
                // after observing, and finally steps must keep retrying until they end.
                if now >= due {
                    unit.phase = StepPhase::Pending;
                } else {
                    self.wake_at(due);
                }
            }
            _ => {}
        }
        None
    }

    fn attempt_failed(&mut self, step: &Step, unit: &mut UnitStatus, why: &str, message: String) {
        let now = self.obs.now;
        unit.error = Some(format!("{why}: {message}"));
        if unit.attempt < step.max_attempts() {
            let backoff = step.retries.as_ref().and_then(|r| r.backoff.clone()).unwrap_or_default();
            let delay = backoff.delay(unit.attempt + 1);
            unit.phase = StepPhase::Retrying;
            unit.next_attempt_at = Some(now + to_chrono(delay));
            self.wake_at(now + to_chrono(delay));
            self.event(false, "StepRetrying", format!(
                "step {} attempt {} failed ({why}); retrying in {}",
                step.name, unit.attempt, fmt_dur(delay)
            ));
        } else {
            unit.phase = StepPhase::Failed;
            self.event(true, "StepFailed", format!(
                "step {} failed after {} attempt(s): {message}",
                step.name, unit.attempt
            ));
        }
    }

    fn observe_approvals(&mut self) {
        for (name, outcome) in &self.obs.approvals {
            let Some(status) = self.st.steps.get_mut(name) else { continue };
            if status.phase != StepPhase::AwaitingApproval {
                continue;
            }
            let approved = outcome.decision == Decision::Approved;
            status.phase = if approved { StepPhase::Succeeded } else { StepPhase::Denied };
            status.reason = Some(if approved { reason::APPROVED } else { reason::DENIED }.into());
            status.message = Some(format!("{} by {}", outcome.decision.as_str(), outcome.decided_by));
            status.finished_at = Some(self.obs.now);
            status.outputs = Some(json!({
                "decision": outcome.decision.as_str(),
                "decidedBy": outcome.decided_by,
                "reason": outcome.reason,
            }));
        }
    }

    // === stopping ===

    fn stop_reason(&self) -> Option<Stop> {
        if self.obs.cancel {
            return Some(Stop::Cancelled);
        }
        if let (Some(limit), Some(started)) = (self.pb.spec.timeout, self.st.started_at) {
            if self.obs.now >= started + to_chrono(limit.0) {
                return Some(Stop::TimedOut);
            }
        }
        let hard_failure = self.pb.spec.steps.iter().any(|s| {
            s.on_error() == OnError::Fail
                && self.st.steps.get(&s.name).is_some_and(|st| st.phase == StepPhase::Failed)
        });
        hard_failure.then_some(Stop::Failed)
    }

    /// Cancels every running DAG unit and pending approval. Finally steps are left alone.
    fn stop_running(&mut self, cancelled: bool) {
        let why = if cancelled { reason::CANCELLED } else { reason::RUN_TIMEOUT };
        let dag: Vec<String> = self.pb.spec.steps.iter().map(|s| s.name.clone()).collect();
        for name in dag {
            let Some(status) = self.st.steps.get_mut(&name) else { continue };
            if status.phase.is_finished() || status.phase == StepPhase::Pending {
                continue;
            }
            stop_units(status, why, &mut self.actions);
            status.phase = StepPhase::Cancelled;
            status.reason = Some(why.into());
            status.finished_at = Some(self.obs.now);
        }
    }

    // === starting ===

    /// Starts or settles every step whose dependencies have ended. Returns whether anything
    /// changed.
    fn start_ready(&mut self, stop: Option<Stop>) -> bool {
        let dag_done = self.pb.order.iter().all(|n| self.phase(n).is_finished());
        let mut changed = false;
        let candidates: Vec<(String, bool)> = self
            .pb
            .order
            .iter()
            .map(|n| (n.clone(), false))
            .chain(self.pb.finally_order.iter().map(|n| (n.clone(), true)))
            .collect();
        for (name, is_finally) in candidates {
            if self.phase(&name) != StepPhase::Pending || (is_finally && !dag_done) {
                continue;
            }
            let step = self.pb.spec.step(&name).expect("compiled step").clone();
            if !step.depends_on().iter().all(|d| self.phase(d).is_finished()) {
                continue;
            }
            changed = true;
            if !is_finally {
                if let Some(stop) = stop {
                    let why = match stop {
                        Stop::Cancelled => reason::CANCELLED,
                        Stop::TimedOut => reason::RUN_TIMEOUT,
                        Stop::Failed => reason::RUN_STOPPING,
                    };
                    self.settle(&name, StepPhase::Skipped, why, "the Run is stopping".into());
                    continue;
                }
            }
            self.start_step(&step);
        }
        changed
    }

    fn start_step(&mut self, step: &Step) {
        let name = step.name.clone();
        if step.run_policy() == RunPolicy::AllSucceeded {
            let blocker = step.depends_on().iter().find(|d| !self.dependency_ok(d));
            if let Some(dep) = blocker {
                let msg = format!("dependency {dep} ended {}", self.phase(dep).as_str());
                self.settle(&name, StepPhase::Skipped, reason::DEPENDENCY_NOT_SUCCEEDED, msg);
                return;
            }
        }

        let ctx = self.context(None);
        let compiled = self.pb.compiled(&name).clone();
        if let Some(when) = &compiled.when {
            match when.eval_bool(&ctx.vars()) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = format!("when {:?} is false", when.source());
                    self.settle(&name, StepPhase::Skipped, reason::WHEN_FALSE, msg);
                    return;
                }
                Err(err) => return self.expression_failed(&name, "when", &err.to_string()),
            }
        }

        let now = self.obs.now;
        if let Some(gate) = &step.approval {
            let message = match compiled.approval_message.as_ref().map(|t| t.render(&ctx.vars())) {
                Some(Ok(m)) => m,
                Some(Err(err)) => return self.expression_failed(&name, "approval.message", &err.to_string()),
                None => gate.message.clone(),
            };
            let mut context = BTreeMap::new();
            for (label, expr) in &compiled.approval_context {
                match expr.eval(&ctx.vars()) {
                    Ok(Value::String(s)) => context.insert(label.clone(), s),
                    Ok(v) => context.insert(label.clone(), v.to_string()),
                    Err(err) => {
                        let field = format!("approval.context.{label}");
                        return self.expression_failed(&name, &field, &err.to_string());
                    }
                };
            }
            let timeout = gate.timeout.map_or(std::time::Duration::from_secs(3600), |d| d.0);
            let approval = names::approval_name(self.run, &name);
            self.actions.push(Action::CreateApproval(ApprovalRequest {
                name: approval.clone(),
                step: name.clone(),
                message,
                context,
                expires_at: now + to_chrono(timeout),
            }));
            let default = match gate.on_timeout {
                TimeoutDecision::Approve => "approve",
                TimeoutDecision::Deny => "deny",
            };
            let status = self.st.steps.entry(name.clone()).or_default();
            status.phase = StepPhase::AwaitingApproval;
            status.started_at = Some(now);
            status.approval = Some(approval);
            status.message = Some(format!("waiting for a decision; {default} after {}", fmt_dur(timeout)));
            return;
        }

        let items = match &compiled.for_each {
            Some(expr) => match expr.eval_list(&ctx.vars()) {
                Ok(items) => Some(items),
                Err(err) => return self.expression_failed(&name, "forEach", &err.to_string()),
            },
            None => None,
        };

        let status = self.st.steps.entry(name.clone()).or_default();
        status.started_at = Some(now);
        status.phase = StepPhase::Running;
        match &items {
            Some(list) if list.is_empty() => {
                status.items = Some(Vec::new());
                self.settle(&name, StepPhase::Succeeded, reason::SUCCEEDED, "no items".into());
                self.st.steps.get_mut(&name).expect("present").outputs = Some(json!({"items": []}));
            }
            Some(list) => {
                status.items = Some(vec![UnitStatus::default(); list.len()]);
                self.advance_step_items(step, list);
            }
            None => {
                status.unit = Some(UnitStatus::default());
                self.launch(step, None, None);
            }
        }
    }

    /// Launches the next attempt of a unit: evaluates its inputs and asks for a Job.
    fn launch(&mut self, step: &Step, item: Option<usize>, item_value: Option<&Value>) {
        let name = step.name.clone();
        let ctx = self.context(item.zip(item_value));
        let mut inputs = serde_json::Map::new();
        for (input, expr) in &self.pb.compiled(&name).inputs {
            match expr.eval(&ctx.vars()) {
                Ok(v) => {
                    inputs.insert(input.clone(), v);
                }
                Err(err) => {
                    let field = format!("inputs.{input}");
                    self.unit_failed_to_launch(&name, item, &field, &err.to_string());
                    return self.expression_failed(&name, &field, &err.to_string());
                }
            }
        }
        if let (Some(i), Some(v)) = (item, item_value) {
            inputs.entry("item").or_insert_with(|| v.clone());
            inputs.entry("index").or_insert_with(|| json!(i));
        }

        let now = self.obs.now;
        let status = self.st.steps.get_mut(&name).expect("step status");
        let unit = match item {
            Some(i) => &mut status.items.as_mut().expect("items")[i],
            None => status.unit.get_or_insert_with(Default::default),
        };
        unit.attempt += 1;
        unit.phase = StepPhase::Running;
        unit.attempt_started_at = Some(now);
        unit.next_attempt_at = None;
        let job = names::job_name(self.run, &name, item, unit.attempt);
        unit.job = Some(job.clone());
        let attempt = unit.attempt;
        status.attempts += 1;
        self.wake_at(now + to_chrono(step.timeout()));
        self.actions.push(Action::CreateJob(JobRequest {
            name: job,
            step: name,
            item,
            attempt,
            inputs: Value::Object(inputs),
            timeout: step.timeout(),
        }));
    }

    /// Relaunches units whose backoff ended, and starts more forEach items up to parallelism.
    fn advance_items(&mut self, stop: Option<Stop>) {
        let running: Vec<String> = self
            .st
            .steps
            .iter()
            .filter(|(_, s)| s.phase == StepPhase::Running || s.phase == StepPhase::Retrying)
            .map(|(n, _)| n.clone())
            .collect();
        for name in running {
            let step = self.pb.spec.step(&name).expect("compiled step").clone();
            let is_finally = self.pb.is_finally(&name);
            if stop.is_some() && !is_finally && stop != Some(Stop::Failed) {
                continue;
            }
            let has_items = self.st.steps[&name].items.is_some();
            if has_items {
                let ctx = self.context(None);
                let list = match self.pb.compiled(&name).for_each.as_ref().map(|e| e.eval_list(&ctx.vars())) {
                    Some(Ok(list)) => list,
                    _ => continue,
                };
                self.advance_step_items(&step, &list);
            } else if self.st.steps[&name].unit.as_ref().is_some_and(|u| u.phase == StepPhase::Pending) {
                self.launch(&step, None, None);
            }
            let mut status = self.st.steps.remove(&name).expect("present");
            if !status.phase.is_finished() {
                self.settle_step(&step, &mut status);
            }
            self.st.steps.insert(name, status);
        }
    }

    /// Marks the unit whose inputs did not evaluate Failed and stops the step's other units, so
    /// no Job of a failed step is left running.
    fn unit_failed_to_launch(&mut self, name: &str, item: Option<usize>, field: &str, error: &str) {
        let status = self.st.steps.get_mut(name).expect("step status");
        let unit = match item {
            Some(i) => &mut status.items.as_mut().expect("items")[i],
            None => status.unit.get_or_insert_with(Default::default),
        };
        unit.phase = StepPhase::Failed;
        unit.error = Some(format!("{}: {field}: {error}", reason::EXPRESSION_ERROR));
        stop_units(status, reason::EXPRESSION_ERROR, &mut self.actions);
    }

    fn advance_step_items(&mut self, step: &Step, list: &[Value]) {
        let status = &self.st.steps[&step.name];
        let units = status.items.as_ref().expect("items");
        let any_failed = units.iter().any(|u| u.phase == StepPhase::Failed);
        let mut running = units.iter().filter(|u| matches!(u.phase, StepPhase::Running | StepPhase::Retrying)).count();
        let limit = step.parallelism.map_or(usize::MAX, |p| p as usize);
        let pending: Vec<usize> = units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.phase == StepPhase::Pending)
            .map(|(i, _)| i)
            .collect();
        for i in pending {
            let relaunch = self.st.steps[&step.name].items.as_ref().expect("items")[i].attempt > 0;
            if (any_failed && !relaunch) || (running >= limit && !relaunch) {
                continue;
            }
            if let Some(value) = list.get(i) {
                self.launch(step, Some(i), Some(value));
                if self.phase(&step.name).is_finished() {
                    break;
                }
                running += 1;
            }
        }
    }

    /// Derives a Job step's phase from its units.
    fn settle_step(&mut self, step: &Step, status: &mut StepStatus) {
        let units: Vec<&UnitStatus> = match &status.items {
            Some(items) => items.iter().collect(),
            None => status.unit.iter().collect(),
        };
        let active = units.iter().any(|u| matches!(u.phase, StepPhase::Running | StepPhase::Retrying | StepPhase::Pending) && !(u.phase == StepPhase::Pending && u.attempt == 0 && units.iter().any(|x| x.phase == StepPhase::Failed)));
        let failed = units.iter().find(|u| u.phase == StepPhase::Failed);
        let retrying = units.iter().any(|u| u.phase == StepPhase::Retrying);
        if active {
            status.phase = if retrying && !units.iter().any(|u| u.phase == StepPhase::Running) {
                StepPhase::Retrying
            } else {
                StepPhase::Running
            };
            return;
        }
        let now = self.obs.now;
        status.finished_at = Some(now);
        if let Some(failed) = failed {
            status.phase = StepPhase::Failed;
            status.reason = Some(reason::JOB_FAILED.into());
            status.message = failed.error.clone();
            if let Some(items) = status.items.as_mut() {
                for unit in items.iter_mut().filter(|u| u.phase == StepPhase::Pending) {
                    unit.phase = StepPhase::Skipped;
                }
            }
            if step.on_error() == OnError::Continue {
                status.message = Some(format!(
                    "{} (onError: continue)",
                    status.message.clone().unwrap_or_default()
                ));
            }
        } else if units.iter().all(|u| u.phase == StepPhase::Succeeded) {
            status.phase = StepPhase::Succeeded;
            status.reason = Some(reason::SUCCEEDED.into());
            status.message = None;
            if let Some(items) = &status.items {
                let results = items.iter().map(|u| u.result.clone().unwrap_or(Value::Null));
                status.outputs = Some(json!({ "items": results.collect::<Vec<_>>() }));
            }
        } else {
            status.phase = StepPhase::Cancelled;
        }
    }

    fn settle(&mut self, name: &str, phase: StepPhase, why: &str, message: String) {
        let now = self.obs.now;
        let status = self.st.steps.entry(name.to_string()).or_default();
        status.phase = phase;
        status.reason = Some(why.to_string());
        status.message = Some(message);
        status.finished_at = Some(now);
        status.started_at.get_or_insert(now);
    }

    fn expression_failed(&mut self, step: &str, field: &str, error: &str) {
        let message = format!("{field}: {error}");
        self.event(true, reason::EXPRESSION_ERROR, format!("step {step}: {message}"));
        self.settle(step, StepPhase::Failed, reason::EXPRESSION_ERROR, message);
    }

    fn dependency_ok(&self, dep: &str) -> bool {
        match self.phase(dep) {
            StepPhase::Succeeded => true,
            StepPhase::Failed => self.pb.spec.step(dep).is_some_and(|s| s.on_error() == OnError::Continue),
            _ => false,
        }
    }

    // === finishing ===

    fn finish(&mut self, stop: Option<Stop>) {
        if !self.pb.spec.all_steps().all(|s| self.phase(&s.name).is_finished()) {
            return;
        }
        let failed_step = |steps: &[Step], st: &RunStatus| {
            steps
                .iter()
                .find(|s| s.on_error() == OnError::Fail && st.steps.get(&s.name).is_some_and(|x| x.phase == StepPhase::Failed))
                .map(|s| (s.name.clone(), st.steps[&s.name].message.clone().unwrap_or_default()))
        };
        let (phase, why, message) = match stop {
            Some(Stop::Cancelled) => (RunPhase::Cancelled, reason::CANCELLED, "cancelled on request".to_string()),
            Some(Stop::TimedOut) => (RunPhase::Failed, reason::RUN_TIMEOUT, "the Run exceeded its timeout".to_string()),
            _ => match failed_step(&self.pb.spec.steps, &self.st) {
                Some((step, msg)) => (RunPhase::Failed, reason::STEP_FAILED, format!("step {step} failed: {msg}")),
                None => match failed_step(&self.pb.spec.finally, &self.st) {
                    Some((step, msg)) => (RunPhase::Failed, reason::FINALLY_FAILED, format!("finally step {step} failed: {msg}")),
                    None => (RunPhase::Succeeded, reason::SUCCEEDED, "every step ended".to_string()),
                },
            },
        };
        self.st.phase = phase;
        self.st.reason = Some(why.into());
        self.st.message = Some(message.clone());
        self.st.finished_at = Some(self.obs.now);
        self.wake = None;
        self.event(phase != RunPhase::Succeeded, "RunFinished", format!("{}: {message}", phase.as_str()));
    }

    // === helpers ===

    fn phase(&self, step: &str) -> StepPhase {
        self.st.steps.get(step).map(|s| s.phase).unwrap_or_default()
    }

    fn progress(&self) -> String {
        let total = self.pb.spec.steps.len() + self.pb.spec.finally.len();
        let done = self.pb.spec.all_steps().filter(|s| self.phase(&s.name).is_finished()).count();
        format!("{done}/{total}")
    }

    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.actions.push(Action::Event { warning, reason, message });
    }

    fn wake_at(&mut self, at: DateTime<Utc>) {
        let after = (at - self.obs.now).to_std().unwrap_or_default();
        self.wake = Some(self.wake.map_or(after, |w| w.min(after)));
    }

    /// The CEL variables for a step's expressions.
    fn context(&self, item: Option<(usize, &Value)>) -> Context {
        let mut steps = serde_json::Map::new();
        for (name, status) in &self.st.steps {
            steps.insert(name.clone(), json!({
                "phase": status.phase.as_str(),
                "outputs": self.outputs_of(status),
                "error": status.message.clone().unwrap_or_default(),
            }));
        }
        Context {
            inputs: self.inputs.clone(),
            steps: Value::Object(steps),
            item: item.map(|(_, v)| v.clone()),
            index: item.map(|(i, _)| json!(i)),
        }
    }

    fn outputs_of(&self, status: &StepStatus) -> Value {
        let load = |unit: &UnitStatus, inline: Option<&Value>| -> Value {
            if let Some(r) = &unit.outputs_ref {
                return self.stored(r).unwrap_or(Value::Null);
            }
            inline.cloned().unwrap_or_else(|| json!({}))
        };
        match (&status.items, &status.unit) {
            (Some(items), _) => {
                let list: Vec<Value> = items.iter().map(|u| load(u, u.result.as_ref())).collect();
                json!({ "items": list })
            }
            (None, Some(unit)) => load(unit, status.outputs.as_ref()),
            (None, None) => status.outputs.clone().unwrap_or_else(|| json!({})),
        }
    }
}

impl Planner<'_> {
    /// Large outputs: loaded by the reconciler, or carried by the Job seen ending in this very
    /// pass, whose outputs the reconciler could not know to load yet.
    fn stored(&self, r: &OutputsRef) -> Option<Value> {
        if let Some(v) = self.obs.stored_outputs.get(&r.config_map) {
            return Some(v.clone());
        }
        self.obs.jobs.values().find_map(|job| match job {
            JobState::Succeeded { outputs, stored: Some(s) } if s.config_map == r.config_map => {
                Some(outputs.clone())
            }
            _ => None,
        })
    }
}

/// The variables of one evaluation.
struct Context {
    inputs: Value,
    steps: Value,
    item: Option<Value>,
    index: Option<Value>,
}

impl Context {
    fn vars(&self) -> Vec<(&str, &Value)> {
        let mut vars = vec![("inputs", &self.inputs), ("steps", &self.steps)];
        if let (Some(item), Some(index)) = (&self.item, &self.index) {
            vars.push(("item", item));
            vars.push(("index", index));
        }
        vars
    }
}

/// Stops the units of a step that have not ended; the Jobs of running ones are deleted.
fn stop_units(status: &mut StepStatus, why: &'static str, actions: &mut Vec<Action>) {
    let units: Vec<&mut UnitStatus> = match status.items.as_mut() {
        Some(items) => items.iter_mut().collect(),
        None => status.unit.iter_mut().collect(),
    };
    for unit in units {
        if let (StepPhase::Running, Some(job)) = (unit.phase, &unit.job) {
            actions.push(Action::DeleteJob { name: job.clone(), reason: why });
        }
        if !unit.phase.is_finished() {
            unit.phase = StepPhase::Cancelled;
        }
    }
}

fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn fmt_dur(d: std::time::Duration) -> String {
    vigil_api::Duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_outputs_of_a_job_that_just_ended_reach_the_next_step_in_the_same_pass() {
        let spec: vigil_api::PlaybookSpec = serde_json::from_value(json!({"steps": [
            {"name": "collect", "image": "python", "script": "pass"},
            {"name": "measure", "image": "python", "script": "pass", "dependsOn": ["collect"],
             "inputs": {"evidence": "steps.collect.outputs.evidence"}},
        ]}))
        .expect("spec");
        let pb = crate::compile(&spec).expect("compiles");
        let mut obs = Observed { now: Utc::now(), ..Default::default() };
        let first = plan(&pb, "r", &json!({}), &RunStatus { started_at: Some(obs.now), ..Default::default() }, &obs);

        let stored = OutputsRef { config_map: "r-collect-1-out".into(), bytes: 20, digest: "sha256:x".into() };
        let outputs = json!({"evidence": "large"});
        obs.jobs.insert("r-collect-1".into(), JobState::Succeeded { outputs, stored: Some(stored) });
        let second = plan(&pb, "r", &json!({}), &first.status, &obs);

        let created: Vec<&JobRequest> = second
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateJob(req) => Some(req),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "{:?}", second.status);
        assert_eq!(created[0].inputs, json!({"evidence": "large"}));
    }
}
