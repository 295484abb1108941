//! `Approval`: a human decision a Run waits for; decided once, then immutable.

use crate::{
    condition::Condition,
    playbook::{Approvers, Notify, TimeoutDecision},
};
use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request for a human decision, created by the operator for an approval step.
///
/// Approvers decide by adding an entry to `spec.decisions` (`vigil approve`, the dashboard, or
/// Slack). The admission webhook records who decided from the authenticated request and refuses
/// anyone not listed in `spec.approvers`.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "Approval",
    namespaced,
    status = "ApprovalStatus",
    shortname = "appr",
    category = "vigil",
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".spec.runRef.name"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".spec.step"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".status.decision"}"#,
    printcolumn = r#"{"name":"Decided By","type":"string","jsonPath":".status.decidedBy"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.expiresAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.runRef == oldSelf.runRef && self.step == oldSelf.step && \
    self.approvers == oldSelf.approvers && self.message == oldSelf.message")
    .message("only decisions can be added to an Approval"))]
#[x_kube(validation = Rule::new("!has(oldSelf.decisions) || (has(self.decisions) && \
    size(self.decisions) >= size(oldSelf.decisions) && \
    oldSelf.decisions.all(d, d in self.decisions))")
    .message("recorded decisions cannot be changed or removed"))]
pub struct ApprovalSpec {
    /// The Run waiting for this decision.
    pub run_ref: RunRef,
    /// The approval step of that Run.
    pub step: String,
    /// What is asked, rendered from the Run's inputs and outputs.
    pub message: String,
    /// What an approver needs to know: label to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// Who may decide.
    pub approvers: Approvers,
    /// Distinct approvals needed. One denial denies.
    #[serde(default = "one")]
    pub quorum: u32,
    /// The decision applied when nobody decides before `status.expiresAt`.
    #[serde(default)]
    pub on_timeout: TimeoutDecision,
    /// The user who triggered the Run, refused as an approver when self-approval is forbidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    #[serde(default)]
    pub forbid_self_approval: bool,
    /// Where the operator asks for the decision, copied from the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// The decisions made so far. Append only; `by` is set by the admission webhook from the
    /// authenticated user, whatever the client sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub decisions: Vec<DecisionEntry>,
}

fn one() -> u32 {
    1
}

/// A reference to the Run an Approval belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunRef {
    pub name: String,
}

/// Approve or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approved,
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }
}

/// One approver's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionEntry {
    pub decision: Decision,
    /// The authenticated user, written by the admission webhook. `timeout` for a default decision.
    #[serde(default)]
    pub by: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// When, written by the admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// How the decision came in: `kubectl`, `slack`, `ui`, `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The outcome of an Approval, once decided.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.decision) || \
    (has(self.decision) && self.decision == oldSelf.decision && self.decidedBy == oldSelf.decidedBy \
    && self.decidedAt == oldSelf.decidedAt)")
    .message("a decided Approval cannot change its decision"))]
pub struct ApprovalStatus {
    /// `approved` or `denied`, once decided; never changes after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Who decided, comma-separated for a quorum, or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the default decision applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The Slack message asking for the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_ts: Option<String>,
    /// The channel id of that message, as Slack answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
