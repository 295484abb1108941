//! The audit record: what happened, to which object, when, by whom, under which trace.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_api::Run;

/// What a record is about. The serialized form (`run.transition`, ...) is the `kind` field and
/// the `kind` label of `vigil_audit_records_total`, so the set is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A Run changed phase.
    #[serde(rename = "run.transition")]
    RunTransition,
    /// A step's attempt started (a Job was asked for).
    #[serde(rename = "step.started")]
    StepStarted,
    /// A step's attempt ended: finished, or failed and waiting to retry.
    #[serde(rename = "step.finished")]
    StepFinished,
    /// An approval step began waiting for a decision.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// An approval step got its decision (or timed out).
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// The gateway accepted an alert (a Run was created, found as a duplicate, or filtered).
    #[serde(rename = "trigger.accepted")]
    TriggerAccepted,
    /// The gateway refused an alert.
    #[serde(rename = "trigger.rejected")]
    TriggerRejected,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::RunTransition,
        Kind::StepStarted,
        Kind::StepFinished,
        Kind::ApprovalRequested,
        Kind::ApprovalDecided,
        Kind::TriggerAccepted,
        Kind::TriggerRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RunTransition => "run.transition",
            Kind::StepStarted => "step.started",
            Kind::StepFinished => "step.finished",
            Kind::ApprovalRequested => "approval.requested",
            Kind::ApprovalDecided => "approval.decided",
            Kind::TriggerAccepted => "trigger.accepted",
            Kind::TriggerRejected => "trigger.rejected",
        }
    }
}

/// Where an alert came from. Never the body: only its digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// `sha256:<hex>` of the raw body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_digest: Option<String>,
}

/// One audit record. Built only from names, phases, counts, times, decisions and digests: no
/// inputs, no outputs, no bodies, no secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Position in this process's stream, from 1, given when the record enters the sink. A gap
    /// at the receiver means records were dropped.
    #[serde(default)]
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub kind: Kind,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The phase reached (Run or step), e.g. `Running`, `Succeeded`, `Retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// A CamelCase reason, or for `trigger.rejected` the gateway's rejection reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who decided an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `approved` or `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerRecord>,
    /// The W3C trace id (32 hex digits) of the Run's `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub message: String,
}

impl Record {
    /// A record of `kind` in `namespace`, stamped now.
    pub fn new(kind: Kind, namespace: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            seq: 0,
            time: Utc::now(),
            kind,
            namespace: namespace.into(),
            run: None,
            playbook: None,
            step: None,
            attempt: None,
            exit_code: None,
            duration_ms: None,
            phase: None,
            reason: None,
            actor: None,
            decision: None,
            trigger: None,
            trace_id: None,
            message: message.into(),
        }
    }

    /// A record about `run`: namespace, name, playbook and trace id filled in.
    pub fn for_run(kind: Kind, run: &Run, message: impl Into<String>) -> Self {
        let mut record = Self::new(kind, run.metadata.namespace.clone().unwrap_or_default(), message);
        record.run = run.metadata.name.clone();
        record.playbook = Some(run.spec.playbook_ref.name.clone());
        record.trace_id = run_trace_id(run);
        record
    }
}

/// The trace id of a Run, from its `vigil.dev/traceparent` annotation.
pub fn run_trace_id(run: &Run) -> Option<String> {
    let annotations = run.metadata.annotations.as_ref()?;
    trace_id(annotations.get(vigil_api::labels::TRACEPARENT)?)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when the value
/// is malformed or the id is all zeros.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && id.bytes().any(|b| b != b'0')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_taken_from_a_valid_traceparent_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn kinds_serialize_as_their_dotted_names() {
        for kind in Kind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn empty_fields_are_left_out() {
        let value = serde_json::to_value(Record::new(Kind::TriggerRejected, "soc", "x")).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["kind", "message", "namespace", "seq", "time"]);
    }
}
