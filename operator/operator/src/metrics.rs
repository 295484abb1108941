//! Prometheus metrics of the reconciler, with bounded label sets.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::time::Duration;
use vigil_api::{RunPhase, StepPhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub playbook: String,
    pub phase: PhaseLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PhaseLabel {
    Started,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
    Denied,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub phase: PhaseLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

/// The reconciler's metrics.
pub struct Metrics {
    pub runs: Family<RunLabels, Counter>,
    pub run_duration: Histogram,
    pub step_duration: Family<StepLabels, Histogram, fn() -> Histogram>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub jobs_created: Counter,
    pub runs_active: Gauge,
    pub runs_queued: Gauge,
    pub approvals_pending: Gauge,
    pub oldest_pending_approval_seconds: Gauge,
    pub is_leader: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let buckets = BUCKETS;
        let m = Self {
            runs: Family::default(),
            run_duration: Histogram::new(buckets),
            step_duration: Family::new_with_constructor(step_histogram),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            reconcile_errors: Family::default(),
            jobs_created: Counter::default(),
            runs_active: Gauge::default(),
            runs_queued: Gauge::default(),
            approvals_pending: Gauge::default(),
            oldest_pending_approval_seconds: Gauge::default(),
            is_leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("vigil");
        r.register("runs", "Runs started and finished, by playbook and phase", m.runs.clone());
        r.register("run_duration_seconds", "Wall time of finished Runs", m.run_duration.clone());
        r.register("step_duration_seconds", "Wall time of finished steps", m.step_duration.clone());
        r.register("reconcile_duration_seconds", "Time spent in one Run reconcile", m.reconcile_duration.clone());
        r.register("reconcile_errors", "Failed reconciles, by error", m.reconcile_errors.clone());
        r.register("jobs_created", "Step Jobs created", m.jobs_created.clone());
        r.register("runs_active", "Runs in phase Running", m.runs_active.clone());
        r.register("runs_queued", "Runs waiting for a concurrency slot", m.runs_queued.clone());
        r.register("approvals_pending", "Approvals waiting for a decision", m.approvals_pending.clone());
        r.register(
            "approval_oldest_pending_seconds",
            "Age of the oldest undecided Approval",
            m.oldest_pending_approval_seconds.clone(),
        );
        r.register("leader", "1 when this replica runs the reconcilers", m.is_leader.clone());
        m
    }

    pub fn observe_reconcile(&self, took: Duration, _failed: bool) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn run_started(&self, playbook: &str) {
        self.runs.get_or_create(&RunLabels { playbook: playbook.into(), phase: PhaseLabel::Started }).inc();
    }

    pub fn run_finished(&self, playbook: &str, phase: RunPhase, took: Option<Duration>) {
        let phase = match phase {
            RunPhase::Succeeded => PhaseLabel::Succeeded,
            RunPhase::Cancelled => PhaseLabel::Cancelled,
            _ => PhaseLabel::Failed,
        };
        self.runs.get_or_create(&RunLabels { playbook: playbook.into(), phase }).inc();
        if let Some(took) = took {
            self.run_duration.observe(took.as_secs_f64());
        }
    }

    pub fn step_finished(&self, phase: StepPhase, took: Option<Duration>) {
        let phase = match phase {
            StepPhase::Succeeded => PhaseLabel::Succeeded,
            StepPhase::Skipped => PhaseLabel::Skipped,
            StepPhase::Denied => PhaseLabel::Denied,
            StepPhase::Cancelled => PhaseLabel::Cancelled,
            _ => PhaseLabel::Failed,
        };
        let h = self.step_duration.get_or_create(&StepLabels { phase });
        h.observe(took.map_or(0.0, |t| t.as_secs_f64()));
    }
}

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

fn step_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}
