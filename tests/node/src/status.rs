//! What the node knows about one pod's containers, and the pod status it reports (pure).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::fields::node_ip;

pub type Ts = DateTime<Utc>;

/// Formats a time the way `metav1.Time` is written.
pub fn ts(t: &Ts) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The pod's `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Init containers restart on failure unless the pod never restarts anything.
    pub fn for_init(self) -> Self {
        match self {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        }
    }

    /// Whether a container that exited with `exit_code` runs again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// A finished run of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Ts>,
    pub finished_at: Ts,
    pub container_id: Option<String>,
}

impl Terminated {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": ts(&self.finished_at),
        });
        if let Some(started) = &self.started_at {
            v["startedAt"] = json!(ts(started));
        }
        if let Some(message) = &self.message {
            v["message"] = json!(message);
        }
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// The state of a container, as in `ContainerState`.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Ts,
    },
    Terminated(Terminated),
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        State::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => match message {
                Some(m) => json!({"waiting": {"reason": reason, "message": m}}),
                None => json!({"waiting": {"reason": reason}}),
            },
            State::Running { started_at } => json!({"running": {"startedAt": ts(started_at)}}),
            State::Terminated(t) => json!({"terminated": t.to_json()}),
        }
    }
}

/// One container's record, kept by its supervisor.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: i32,
    pub ready: bool,
    /// The container will not run again.
    pub done: bool,
    pub container_id: Option<String>,
}

impl Record {
    pub fn new(name: &str, image: &str, reason: &str) -> Self {
        Record {
            name: name.to_string(),
            image: image.to_string(),
            state: State::waiting(reason, None),
            last: None,
            restarts: 0,
            ready: false,
            done: false,
            container_id: None,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("vigil-node://{}", self.image),
            "ready": self.ready,
            "started": matches!(self.state, State::Running { .. }),
            "restartCount": self.restarts,
            "state": self.state.to_json(),
            "lastState": match &self.last {
                Some(t) => json!({"terminated": t.to_json()}),
                None => json!({}),
            },
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// The pod phase, as in `PodPhase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Everything the status of one pod is computed from.
#[derive(Debug, Clone)]
pub struct Board {
    pub start_time: Ts,
    pub volumes_ready: bool,
    pub init: Vec<Record>,
    pub main: Vec<Record>,
    /// A pod-level failure such as `DeadlineExceeded`: (reason, message).
    pub failure: Option<(String, String)>,
    transitions: BTreeMap<&'static str, (bool, Ts)>,
}

impl Board {
    pub fn new(start_time: Ts, init: Vec<Record>, main: Vec<Record>) -> Self {
        Board {
            start_time,
            volumes_ready: false,
            init,
            main,
            failure: None,
            transitions: BTreeMap::new(),
        }
    }

    pub fn initialized(&self) -> bool {
        self.init.iter().all(Record::succeeded)
    }

    /// The phase a kubelet would report.
    pub fn phase(&self) -> Phase {
        if self.failure.is_some() {
            return Phase::Failed;
        }
        if self.init.iter().any(|r| r.done && !r.succeeded()) {
            return Phase::Failed;
        }
        if !self.initialized() {
            return Phase::Pending;
        }
        if !self.main.is_empty() && self.main.iter().all(|r| r.done) {
            return if self.main.iter().all(Record::succeeded) {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        let active = |r: &Record| match &r.state {
            State::Running { .. } | State::Terminated(_) => true,
            State::Waiting { .. } => r.restarts > 0 || r.last.is_some(),
        };
        if self.main.iter().any(active) {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    fn condition(
        &mut self,
        kind: &'static str,
        ok: bool,
        reason: Option<String>,
        message: Option<String>,
        now: Ts,
    ) -> Value {
        let entry = self.transitions.entry(kind).or_insert((ok, now));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        let mut v = json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "lastTransitionTime": ts(&entry.1),
        });
        if let Some(reason) = reason {
            v["reason"] = json!(reason);
        }
        if let Some(message) = message {
            v["message"] = json!(message);
        }
        v
    }

    /// The `status` object to write, with conditions that keep their transition times.
    pub fn render(&mut self, now: Ts) -> Value {
        let phase = self.phase();
        let not_ready: Vec<&str> = self
            .main
            .iter()
            .filter(|r| !r.ready)
            .map(|r| r.name.as_str())
            .collect();
        let incomplete: Vec<&str> = self
            .init
            .iter()
            .filter(|r| !r.succeeded())
            .map(|r| r.name.as_str())
            .collect();
        let list = |names: &[&str]| format!("[{}]", names.join(" "));

        let (ready_reason, ready_message) = if phase.is_terminal() {
            (Some("PodCompleted".to_string()), None)
        } else if not_ready.is_empty() {
            (None, None)
        } else {
            (
                Some("ContainersNotReady".to_string()),
                Some(format!(
                    "containers with unready status: {}",
                    list(&not_ready)
                )),
            )
        };
        let ready = !phase.is_terminal() && not_ready.is_empty();
        let init_ok = incomplete.is_empty();
        let (init_reason, init_message) = if init_ok {
            (
                phase.is_terminal().then(|| "PodCompleted".to_string()),
                None,
            )
        } else {
            (
                Some("ContainersNotInitialized".to_string()),
                Some(format!(
                    "containers with incomplete status: {}",
                    list(&incomplete)
                )),
            )
        };

        let conditions = vec![
            self.condition(
                "PodReadyToStartContainers",
                self.volumes_ready && !phase.is_terminal(),
                None,
                None,
                now,
            ),
            self.condition("Initialized", init_ok, init_reason, init_message, now),
            self.condition(
                "Ready",
                ready,
                ready_reason.clone(),
                ready_message.clone(),
                now,
            ),
            self.condition("ContainersReady", ready, ready_reason, ready_message, now),
            self.condition("PodScheduled", true, None, None, now),
        ];

        let mut status = json!({
            "phase": phase.as_str(),
            "conditions": conditions,
            "hostIP": node_ip(),
            "hostIPs": [{"ip": node_ip()}],
            "podIP": node_ip(),
            "podIPs": [{"ip": node_ip()}],
            "startTime": ts(&self.start_time),
            "containerStatuses": self.main.iter().map(Record::to_json).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] =
                json!(self.init.iter().map(Record::to_json).collect::<Vec<_>>());
        }
        if let Some((reason, message)) = &self.failure {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(exit_code: i32) -> State {
        State::Terminated(Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Utc::now(),
            container_id: None,
        })
    }

    fn record(state: State, done: bool) -> Record {
        Record {
            state,
            done,
            ..Record::new("c", "python:3.12-slim", "ContainerCreating")
        }
    }

    #[test]
    fn a_pod_whose_containers_all_completed_should_succeed() {
        let board = Board::new(Utc::now(), vec![], vec![record(finished(0), true)]);
        assert_eq!(board.phase(), Phase::Succeeded);
    }

    #[test]
    fn a_pod_with_one_failed_final_container_should_fail() {
        let board = Board::new(
            Utc::now(),
            vec![],
            vec![record(finished(0), true), record(finished(3), true)],
        );
        assert_eq!(board.phase(), Phase::Failed);
    }

    #[test]
    fn a_failed_init_container_that_will_not_restart_should_fail_the_pod() {
        let board = Board::new(
            Utc::now(),
            vec![record(finished(1), true)],
            vec![record(State::waiting("PodInitializing", None), false)],
        );
        assert_eq!(board.phase(), Phase::Failed);
    }

    #[test]
    fn a_pod_still_initialising_should_be_pending() {
        let running = State::Running {
            started_at: Utc::now(),
        };
        let board = Board::new(
            Utc::now(),
            vec![record(running, false)],
            vec![record(State::waiting("PodInitializing", None), false)],
        );
        assert_eq!(board.phase(), Phase::Pending);
    }

    #[test]
    fn a_container_in_back_off_should_keep_the_pod_running() {
        let mut waiting = record(State::waiting("CrashLoopBackOff", None), false);
        waiting.restarts = 1;
        let board = Board::new(Utc::now(), vec![], vec![waiting]);
        assert_eq!(board.phase(), Phase::Running);
    }

    #[test]
    fn a_deadline_should_fail_the_pod_with_its_reason() {
        let mut board = Board::new(
            Utc::now(),
            vec![],
            vec![record(
                State::Running {
                    started_at: Utc::now(),
                },
                false,
            )],
        );
        board.failure = Some(("DeadlineExceeded".into(), "too long".into()));
        let status = board.render(Utc::now());
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["reason"], "DeadlineExceeded");
    }

    #[test]
    fn conditions_should_keep_their_transition_time_while_unchanged() {
        let t0 = Utc::now() - chrono::Duration::seconds(60);
        let mut board = Board::new(
            t0,
            vec![],
            vec![record(State::Running { started_at: t0 }, false)],
        );
        board.main[0].ready = true;
        let first = board.render(t0);
        let later = board.render(Utc::now());
        assert_eq!(
            first["conditions"][2]["lastTransitionTime"],
            later["conditions"][2]["lastTransitionTime"]
        );
        assert_eq!(later["conditions"][2]["status"], "True");
    }
}
