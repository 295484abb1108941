//! Reconciles Approvals: counts decisions against the quorum, applies the default decision when
//! the deadline passes, and records the outcome once.

use super::{Context, Error, MANAGER};
use chrono::{DateTime, Utc};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use vigil_api::{
    Approval, Decision,
    approval::ApprovalStatus,
    playbook::TimeoutDecision,
};

/// The outcome the recorded decisions give, if any: one denial denies; `quorum` distinct
/// approvers approve.
pub fn tally(approval: &Approval) -> Option<(Decision, String, Option<String>)> {
    let spec = &approval.spec;
    if let Some(denial) = spec.decisions.iter().find(|d| d.decision == Decision::Denied) {
        return Some((Decision::Denied, denial.by.clone(), denial.reason.clone()));
    }
    let approvers: BTreeSet<&str> = spec
        .decisions
        .iter()
        .filter(|d| d.decision == Decision::Approved && !d.by.is_empty())
        .map(|d| d.by.as_str())
        .collect();
    if approvers.len() >= spec.quorum.max(1) as usize {
        let by = approvers.into_iter().collect::<Vec<_>>().join(",");
        let reason = spec.decisions.iter().rev().find_map(|d| d.reason.clone());
        return Some((Decision::Approved, by, reason));
    }
    None
}

pub async fn reconcile(approval: Arc<Approval>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = approval.status.clone().unwrap_or_default();
    if status.decision.is_some() {
        return Ok(Action::await_change());
    }
    let expires_at = status.expires_at.or_else(|| {
        approval
            .annotations()
            .get("vigil.dev/expires-at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    });
    let now = Utc::now();

    let mut next = ApprovalStatus { expires_at, ..status.clone() };
    if let Some((decision, by, reason)) = tally(&approval) {
        next.decision = Some(decision);
        next.decided_by = Some(by);
        next.decided_at = Some(now);
        next.reason = reason;
    } else if expires_at.is_some_and(|e| now >= e) {
        next.decision = Some(match approval.spec.on_timeout {
            TimeoutDecision::Approve => Decision::Approved,
            TimeoutDecision::Deny => Decision::Denied,
        });
        next.decided_by = Some("timeout".into());
        next.decided_at = Some(now);
        next.reason = Some("nobody decided before the deadline".into());
    }

    if next != status {
        write_status(&ctx, &approval, &next).await?;
        if let Some(decision) = next.decision {
            tracing::info!(approval = %approval.name_any(), decision = decision.as_str(), by = ?next.decided_by, "Decided");
        }
    }
    if next.decision.is_some() {
        return Ok(Action::await_change());
    }
    let wait = expires_at
        .and_then(|e| (e - now).to_std().ok())
        .map_or(Duration::from_secs(300), |d| d.min(Duration::from_secs(300)) + Duration::from_millis(100));
    Ok(Action::requeue(wait))
}

async fn write_status(ctx: &Context, approval: &Approval, status: &ApprovalStatus) -> Result<(), Error> {
    let api: Api<Approval> = Api::namespaced(ctx.client.clone(), &approval.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": format!("{}/{}", vigil_api::GROUP, vigil_api::VERSION),
        "kind": "Approval",
        "status": status,
    });
    api.patch_status(&approval.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

pub fn error_policy(approval: Arc<Approval>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(approval = %approval.name_any(), error = %error, "Reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
