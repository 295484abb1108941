//! The Slack Web API calls vigil makes (`chat.postMessage`, `chat.update`) and the messages it
//! posts: the question with approve and deny buttons, then the outcome in its place.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use vigil_api::{Approval, approval::ApprovalStatus};

/// Slack's API base URL.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// `action_id` of the approve button; the callback reads any id starting with `approve`.
pub const APPROVE_ACTION: &str = "approve";
/// `action_id` of the deny button.
pub const DENY_ACTION: &str = "deny";

/// Why a Slack call failed. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("calling Slack {method}: {source}")]
    Http { method: &'static str, source: reqwest::Error },
    #[error("Slack {method} answered HTTP {status}")]
    Status { method: &'static str, status: u16 },
    #[error("Slack {method} failed: {error}")]
    Api { method: &'static str, error: String },
}

/// Where a message was posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// A Slack Web API client for one base URL (Slack's, or a compatible mock).
#[derive(Clone, Debug)]
pub struct SlackApi {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

impl SlackApi {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http, base: base.into().trim_end_matches('/').to_string() }
    }

    /// Posts `message` (`text` and `blocks`) in `channel`.
    ///
    /// # Errors
    ///
    /// When Slack cannot be reached or answers `ok: false`.
    pub async fn post_message(&self, token: &str, channel: &str, message: &Value) -> Result<Posted, SlackError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        let answer = self.call("chat.postMessage", token, &body).await?;
        Ok(Posted {
            channel: answer.channel.unwrap_or_else(|| channel.to_string()),
            ts: answer.ts.unwrap_or_default(),
        })
    }

    /// Replaces the message at `ts` in `channel` with `message`.
    ///
    /// # Errors
    ///
    /// When Slack cannot be reached or answers `ok: false`.
    pub async fn update_message(&self, token: &str, channel: &str, ts: &str, message: &Value) -> Result<(), SlackError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        body["ts"] = json!(ts);
        self.call("chat.update", token, &body).await.map(|_| ())
    }

    async fn call(&self, method: &'static str, token: &str, body: &Value) -> Result<Answer, SlackError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|source| SlackError::Http { method, source })?;
        let status = response.status();
        if !status.is_success() {
            return Err(SlackError::Status { method, status: status.as_u16() });
        }
        let answer: Answer = response.json().await.map_err(|source| SlackError::Http { method, source })?;
        if !answer.ok {
            return Err(SlackError::Api { method, error: answer.error.unwrap_or_else(|| "unknown".into()) });
        }
        Ok(answer)
    }
}

/// The question: the message, its context, and approve and deny buttons whose `value` is
/// `<namespace>/<approval>`.
pub fn request_message(approval: &Approval) -> Value {
    let name = approval.metadata.name.clone().unwrap_or_default();
    let ns = approval.metadata.namespace.clone().unwrap_or_default();
    let spec = &approval.spec;
    let value = format!("{ns}/{name}");
    let mut blocks = vec![json!({
        "type": "section",
        "block_id": "question",
        "text": {"type": "mrkdwn", "text": format!("*Approval needed*: {}", escape(&spec.message))}
    })];
    if !spec.context.is_empty() {
        let fields: Vec<Value> = spec
            .context
            .iter()
            .take(10)
            .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{}*\n{}", escape(k), escape(v))}))
            .collect();
        blocks.push(json!({"type": "section", "block_id": "context", "fields": fields}));
    }
    blocks.push(json!({
        "type": "context",
        "block_id": "run",
        "elements": [{"type": "mrkdwn", "text": format!(
            "Run `{}`, step `{}`, approval `{value}`{}",
            spec.run_ref.name, spec.step,
            if spec.quorum > 1 { format!(", {} approvals needed", spec.quorum) } else { String::new() }
        )}]
    }));
    blocks.push(json!({
        "type": "actions",
        "block_id": "decision",
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DENY_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Deny"}}
        ]
    }));
    json!({"text": format!("Approval needed: {}", spec.message), "blocks": blocks})
}

/// The outcome, replacing the question once decided: no buttons left to press.
pub fn outcome_message(approval: &Approval, status: &ApprovalStatus) -> Value {
    let decision = status.decision.map_or("decided", |d| d.as_str());
    let by = status.decided_by.as_deref().unwrap_or("unknown");
    let reason = status.reason.as_deref().map(|r| format!(" ({})", escape(r))).unwrap_or_default();
    let outcome = format!("*{}* by {}{reason}", capitalise(decision), escape(by));
    json!({
        "text": format!("{}: {} by {by}", approval.spec.message, decision),
        "blocks": [
            {"type": "section", "block_id": "question",
             "text": {"type": "mrkdwn", "text": escape(&approval.spec.message)}},
            {"type": "section", "block_id": "outcome", "text": {"type": "mrkdwn", "text": outcome}}
        ]
    })
}

/// Slack's three control characters in message text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use vigil_api::{ApprovalSpec, Decision};

    fn approval() -> Approval {
        Approval {
            metadata: ObjectMeta { name: Some("ir-1-approve".into()), namespace: Some("soc".into()), ..Default::default() },
            spec: ApprovalSpec { message: "Quarantine <ws-15>?".into(), ..Default::default() },
            status: None,
        }
    }

    #[test]
    fn buttons_carry_namespace_and_name() {
        let message = request_message(&approval());
        let actions = message["blocks"].as_array().unwrap().iter().find(|b| b["type"] == "actions").unwrap();
        for button in actions["elements"].as_array().unwrap() {
            assert_eq!(button["value"], "soc/ir-1-approve");
        }
        assert!(message["blocks"][0]["text"]["text"].as_str().unwrap().contains("&lt;ws-15&gt;"));
    }

    #[test]
    fn outcome_has_no_buttons() {
        let status = ApprovalStatus {
            decision: Some(Decision::Denied),
            decided_by: Some("timeout".into()),
            ..Default::default()
        };
        let message = outcome_message(&approval(), &status);
        assert!(message["blocks"].as_array().unwrap().iter().all(|b| b["type"] != "actions"));
        assert!(message["blocks"][1]["text"]["text"].as_str().unwrap().contains("*Denied* by timeout"));
    }
}
