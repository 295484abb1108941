//! `Run`: one execution of a playbook, with the frozen steps and the status of every branch.

use crate::{condition::Condition, playbook::PlaybookSpec};
use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One execution of a Playbook. Created by the gateway, `vigil trigger` or `kubectl apply`.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "Run",
    namespaced,
    status = "RunStatus",
    shortname = "vrun",
    category = "vigil",
    printcolumn = r#"{"name":"Playbook","type":"string","jsonPath":".spec.playbookRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#,
    printcolumn = r#"{"name":"Trigger","type":"string","jsonPath":".spec.trigger.source","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.playbookRef == oldSelf.playbookRef && \
    (!has(oldSelf.inputs) || (has(self.inputs) && self.inputs == oldSelf.inputs))")
    .message("playbookRef and inputs cannot change once a Run exists"))]
#[x_kube(validation = Rule::new("!has(oldSelf.cancel) || !oldSelf.cancel || \
    (has(self.cancel) && self.cancel)").message("a cancelled Run cannot be resumed"))]
pub struct RunSpec {
    /// The playbook to run, in the Run's namespace.
    pub playbook_ref: PlaybookRef,

    /// The playbook's inputs, as one JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::playbook::any_object")]
    pub inputs: Option<serde_json::Value>,

    /// Who or what started the Run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerInfo>,

    /// Set to true to cancel: running steps are stopped, finally steps still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
}

/// A reference to a Playbook in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlaybookRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Provenance of a Run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerInfo {
    /// `webhook`, `cli`, `manual` or `schedule`.
    pub kind: String,
    /// The trigger or tool that created the Run, e.g. `webhook/soc/incident-response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The network address the alert came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// The sender's delivery id header (X-GitHub-Delivery, X-Request-Id, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// When the alert was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// `sha256:<hex>` of the raw request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_digest: Option<String>,
    /// The Kubernetes user who created the Run, when a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The lifecycle phase of a Run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    /// Accepted, not looked at yet.
    #[default]
    Pending,
    /// Waiting for a concurrency slot of its playbook.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// The phase of one step (or one forEach item).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StepPhase {
    /// Not started: waiting for dependencies.
    #[default]
    Pending,
    /// A Job is running.
    Running,
    /// An attempt failed; the next starts at `nextAttemptAt`.
    Retrying,
    /// An approval step waiting for a decision.
    AwaitingApproval,
    Succeeded,
    Failed,
    /// Not run: its `when` was false, or a dependency did not succeed.
    Skipped,
    /// An approval step whose request was denied; dependents are skipped.
    Denied,
    /// Stopped by a cancel of the Run.
    Cancelled,
}

impl StepPhase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Denied | Self::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Retrying => "Retrying",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Skipped => "Skipped",
            Self::Denied => "Denied",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// The observed state of a Run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    #[serde(default)]
    pub phase: RunPhase,
    /// A CamelCase word for why the Run is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Finished steps over all steps, e.g. `7/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The playbook as it was when the Run started. Editing the Playbook later changes nothing
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<FrozenPlaybook>,
    /// The inputs after defaults were applied and types checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::playbook::any_object")]
    pub inputs: Option<serde_json::Value>,
    /// Every step, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, StepStatus>,
    /// `Succeeded`, `Ready` and friends, per the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The copy of the playbook a Run executes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrozenPlaybook {
    /// The Playbook's generation when frozen.
    pub generation: i64,
    /// The Playbook's uid when frozen.
    #[serde(default)]
    pub uid: String,
    /// The spec as it was.
    #[schemars(schema_with = "crate::playbook::any_object")]
    pub spec: PlaybookSpec,
}

/// The status of one step. forEach steps list their items in `items`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    #[serde(default)]
    pub phase: StepPhase,
    /// A CamelCase word for why the step is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts made so far (for forEach, the sum over items).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The Job-backed work of a step without forEach: attempt, Job, exit code, error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitStatus>,
    /// One entry per forEach item, in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<UnitStatus>>,
    /// The Approval object of an approval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Small outputs inline. forEach steps have `{"items": [...]}`; approval steps have
    /// `{"decision": "approved"|"denied", "decidedBy": [...], "reason": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::playbook::any_object")]
    pub outputs: Option<serde_json::Value>,
}

/// One Job-backed unit of work: a plain step, or one forEach item.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    #[serde(default)]
    pub phase: StepPhase,
    /// Attempts started, from 1.
    #[serde(default)]
    pub attempt: u32,
    /// The Job of the current or last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// When the next attempt may start (phase Retrying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Outputs too large for status live in this ConfigMap, beside the Run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_ref: Option<OutputsRef>,
    /// The outputs of this unit, when small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::playbook::any_object")]
    pub result: Option<serde_json::Value>,
}

/// Where large outputs are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputsRef {
    /// The ConfigMap, owned by the Run.
    pub config_map: String,
    /// Size in bytes of the JSON document.
    pub bytes: u64,
    /// `sha256:<hex>` of the JSON document.
    pub digest: String,
}

impl Run {
    pub fn phase(&self) -> RunPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    pub fn cancel_requested(&self) -> bool {
        self.spec.cancel.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_status_survives_a_round_trip_through_json() {
        let status = StepStatus {
            phase: StepPhase::Running,
            attempts: 2,
            unit: Some(UnitStatus {
                phase: StepPhase::Retrying,
                attempt: 2,
                job: Some("r-a-2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let back: StepStatus = serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(back, status);
    }
}
