//! Reconciles Approvals: counts decisions against the quorum, applies the default decision when
//! the deadline passes, records the outcome once, and keeps the Slack message in step.
//!
//! The deadline lives in `status.expiresAt`, so a restarted operator applies it all the same.
//! Who may decide is not checked here: the admission webhook refuses decisions by anyone else.

use super::{Context, Error, MANAGER};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde_json::json;
use std::{
    collections::BTreeSet,
    sync::{Arc, OnceLock},
    time::Duration,
};
use vigil_admission::slack::{SlackApi, SlackError, api as slack_api};
use vigil_api::{
    Approval, Decision,
    approval::ApprovalStatus,
    condition::{Condition, set_condition},
    playbook::{SlackNotify, TimeoutDecision},
};

/// The condition telling whether the Slack message is posted and up to date.
pub const SLACK_CONDITION: &str = "SlackNotified";

/// Reasons of [`SLACK_CONDITION`].
pub mod reason {
    pub const POSTED: &str = "Posted";
    pub const UPDATED: &str = "Updated";
    pub const POST_FAILED: &str = "PostFailed";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
}

/// How long before a failed Slack call is tried again.
const SLACK_RETRY: Duration = Duration::from_secs(30);

static SLACK: OnceLock<SlackApi> = OnceLock::new();

/// Sets the Slack Web API base URL (`--slack-api-url`) the reconciler posts to; Slack's own
/// unless called. Call once, before the reconcilers start.
pub fn configure_slack(api: SlackApi) {
    let _ = SLACK.set(api);
}

fn slack_client() -> &'static SlackApi {
    SLACK.get_or_init(|| SlackApi::new(slack_api::DEFAULT_API_URL))
}

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

/// The status the decisions and the clock give, before any Slack work.
fn decide(approval: &Approval, status: &ApprovalStatus, now: DateTime<Utc>) -> ApprovalStatus {
    let expires_at = status.expires_at.or_else(|| {
        approval
            .annotations()
            .get("vigil.dev/expires-at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    });
    let mut next = ApprovalStatus { expires_at, ..status.clone() };
    if next.decision.is_some() {
        return next;
    }
    if let Some((decision, by, reason)) = tally(approval) {
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
    next
}

pub async fn reconcile(approval: Arc<Approval>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = approval.status.clone().unwrap_or_default();
    let now = Utc::now();
    let mut next = decide(&approval, &status, now);
    let newly_decided = status.decision.is_none() && next.decision.is_some();
    let slack_retry = notify_slack(&ctx, &approval, &mut next).await;

    if next != status {
        write_status(&ctx, &approval, &next).await?;
        if newly_decided && let Some(decision) = next.decision {
            tracing::info!(decision = decision.as_str(), by = ?next.decided_by, "Decided");
        }
    }
    if next.decision.is_some() {
        return Ok(slack_retry.map_or_else(Action::await_change, Action::requeue));
    }
    let wait = next
        .expires_at
        .and_then(|e| (e - now).to_std().ok())
        .map_or(Duration::from_secs(300), |d| d.min(Duration::from_secs(300)) + Duration::from_millis(100));
    Ok(Action::requeue(slack_retry.map_or(wait, |r| r.min(wait))))
}

/// Posts the question to Slack while undecided, and replaces it with the outcome once decided.
/// Records what happened in `next` (message ts, channel, condition). Returns when to try again
/// after a failure that may pass.
async fn notify_slack(ctx: &Context, approval: &Approval, next: &mut ApprovalStatus) -> Option<Duration> {
    let slack = approval.spec.notify.as_ref().and_then(|n| n.slack.as_ref())?;
    let state = next.conditions.iter().find(|c| c.type_ == SLACK_CONDITION).map(|c| c.reason.clone());
    let settled = matches!(state.as_deref(), Some(reason::UPDATED | reason::UPDATE_FAILED));
    let posting = match (&next.decision, &next.slack_ts) {
        (None, None) => true,
        (Some(_), Some(_)) if !settled => false,
        _ => return None,
    };

    let token = match read_token(ctx, approval, slack).await {
        Ok(token) => token,
        Err(message) => {
            let why = if posting { reason::POST_FAILED } else { reason::UPDATE_FAILED };
            warn(ctx, approval, next, why, message).await;
            return Some(SLACK_RETRY);
        }
    };

    if posting {
        let message = slack_api::request_message(approval);
        match slack_client().post_message(&token, &slack.channel, &message).await {
            Ok(posted) => {
                tracing::info!(channel = %posted.channel, ts = %posted.ts, "Posted to Slack");
                next.slack_ts = Some(posted.ts);
                next.slack_channel = Some(posted.channel);
                set_condition(&mut next.conditions, Condition::new(SLACK_CONDITION, true, reason::POSTED,
                    format!("asked in {}", slack.channel)));
                None
            }
            Err(error) => {
                warn(ctx, approval, next, reason::POST_FAILED, error.to_string()).await;
                Some(SLACK_RETRY)
            }
        }
    } else {
        let channel = next.slack_channel.clone().unwrap_or_else(|| slack.channel.clone());
        let ts = next.slack_ts.clone().unwrap_or_default();
        let message = slack_api::outcome_message(approval, next);
        match slack_client().update_message(&token, &channel, &ts, &message).await {
            Ok(()) => {
                set_condition(&mut next.conditions, Condition::new(SLACK_CONDITION, true, reason::UPDATED,
                    "the message shows the decision"));
                None
            }
            // Slack refused (message deleted, channel archived...): trying again will not help.
            Err(error @ SlackError::Api { .. }) => {
                warn(ctx, approval, next, reason::UPDATE_FAILED, error.to_string()).await;
                None
            }
            Err(error) => {
                tracing::warn!(%error, "Slack update failed; will retry");
                Some(SLACK_RETRY)
            }
        }
    }
}

/// The bot token from the Secret the gate names, in the Approval's namespace. Never logged.
async fn read_token(ctx: &Context, approval: &Approval, slack: &SlackNotify) -> Result<String, String> {
    let ns = approval.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let r = &slack.secret_ref;
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("cannot read Secret {}: {e}", r.name))?
        .ok_or_else(|| format!("Secret {} not found", r.name))?;
    let value = secret
        .data
        .and_then(|d| d.get(&r.key).cloned())
        .ok_or_else(|| format!("Secret {} has no key {}", r.name, r.key))?;
    let token = String::from_utf8(value.0).map_err(|_| format!("key {} of Secret {} is not text", r.key, r.name))?;
    Ok(token.trim().to_string())
}

/// Records a Slack failure as the condition and a Warning event.
async fn warn(ctx: &Context, approval: &Approval, next: &mut ApprovalStatus, why: &str, message: String) {
    tracing::warn!(reason = why, %message, "Slack notification failed");
    set_condition(&mut next.conditions, Condition::new(SLACK_CONDITION, false, why, message.clone()));
    let event = Event {
        type_: EventType::Warning,
        reason: why.to_string(),
        note: Some(super::actions::truncate(&message, 1024)),
        action: "NotifySlack".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &approval.object_ref(&())).await {
        tracing::debug!(error = %e, "Cannot publish event");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_api::{ApprovalSpec, approval::DecisionEntry};

    fn approval(quorum: u32, votes: &[(Decision, &str)]) -> Approval {
        let decisions = votes
            .iter()
            .map(|(d, by)| DecisionEntry { decision: *d, by: (*by).into(), reason: None, at: None, via: None })
            .collect();
        Approval::new("a", ApprovalSpec { quorum, decisions, ..Default::default() })
    }

    #[test]
    fn one_denial_denies_and_a_quorum_of_distinct_users_approves() {
        let denied = approval(2, &[(Decision::Approved, "alice"), (Decision::Denied, "bob")]);
        assert_eq!(tally(&denied).map(|t| t.0), Some(Decision::Denied));
        let same_twice = approval(2, &[(Decision::Approved, "alice"), (Decision::Approved, "alice")]);
        assert_eq!(tally(&same_twice), None);
        let two = approval(2, &[(Decision::Approved, "alice"), (Decision::Approved, "carol")]);
        assert_eq!(tally(&two).map(|t| (t.0, t.1)), Some((Decision::Approved, "alice,carol".into())));
    }

    #[test]
    fn the_default_decision_applies_at_the_deadline_and_never_changes_after() {
        let mut a = approval(1, &[]);
        a.spec.on_timeout = TimeoutDecision::Deny;
        let now = Utc::now();
        let waiting = ApprovalStatus { expires_at: Some(now + chrono::Duration::seconds(1)), ..Default::default() };
        assert_eq!(decide(&a, &waiting, now).decision, None);
        let late = decide(&a, &waiting, now + chrono::Duration::seconds(2));
        assert_eq!((late.decision, late.decided_by.as_deref()), (Some(Decision::Denied), Some("timeout")));

        let voted = approval(1, &[(Decision::Approved, "alice")]);
        assert_eq!(decide(&voted, &late, now).decided_by.as_deref(), Some("timeout"));
    }
}
