//! Slack's `block_actions` payload: who clicked which button of which Approval. Pure.

use serde::Deserialize;
use vigil_api::Decision;

/// A click on an approval message's approve or deny button.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Click {
    pub user_id: String,
    /// The Slack user name, for the decision's reason; not trusted for anything else.
    pub user_name: String,
    pub decision: Decision,
    pub namespace: String,
    pub approval: String,
}

/// Why a callback body is not a usable click.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the form has no payload field")]
    NoPayload,
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("payload type {0:?} is not block_actions")]
    NotBlockActions(String),
    #[error("payload has no action")]
    NoAction,
    #[error("action {0:?} is neither approve nor deny")]
    UnknownAction(String),
    #[error("button value {0:?} is not <namespace>/<approval>")]
    BadValue(String),
    #[error("payload has no user id")]
    NoUser,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    actions: Vec<ActionJson>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ActionJson {
    #[serde(default)]
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// Reads the form-encoded callback body (`payload=<json>`).
///
/// # Errors
///
/// A [`PayloadError`] saying what is missing or malformed.
pub fn parse(body: &[u8]) -> Result<Click, PayloadError> {
    let json = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or(PayloadError::NoPayload)?;
    let payload: Payload = serde_json::from_str(&json).map_err(|e| PayloadError::Json(e.to_string()))?;
    if payload.type_ != "block_actions" {
        return Err(PayloadError::NotBlockActions(payload.type_));
    }
    let user = payload.user.filter(|u| !u.id.is_empty()).ok_or(PayloadError::NoUser)?;
    let action = payload.actions.into_iter().next().ok_or(PayloadError::NoAction)?;
    let decision = if action.action_id.starts_with("approve") {
        Decision::Approved
    } else if action.action_id.starts_with("deny") {
        Decision::Denied
    } else {
        return Err(PayloadError::UnknownAction(action.action_id));
    };
    let value = action.value.unwrap_or_default();
    let (namespace, approval) = value
        .split_once('/')
        .filter(|(ns, name)| is_name(ns) && is_name(name))
        .ok_or_else(|| PayloadError::BadValue(value.clone()))?;
    Ok(Click {
        user_name: user.username.or(user.name).unwrap_or_default(),
        user_id: user.id,
        decision,
        namespace: namespace.into(),
        approval: approval.into(),
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(payload: serde_json::Value) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    #[test]
    fn reads_who_clicked_what_on_which_approval() {
        let body = form(json!({
            "type": "block_actions",
            "user": {"id": "U123", "username": "alice.s", "name": "alice", "team_id": "T1"},
            "actions": [{"type": "button", "action_id": "deny", "value": "soc/ir-7f3k-approve"}]
        }));
        assert_eq!(
            parse(&body),
            Ok(Click {
                user_id: "U123".into(),
                user_name: "alice.s".into(),
                decision: Decision::Denied,
                namespace: "soc".into(),
                approval: "ir-7f3k-approve".into(),
            })
        );
    }

    #[test]
    fn refuses_malformed_payloads() {
        assert_eq!(parse(b"text=hi"), Err(PayloadError::NoPayload));
        assert!(matches!(parse(b"payload=%7B"), Err(PayloadError::Json(_))));
        let base = json!({"type": "block_actions", "user": {"id": "U1"},
                          "actions": [{"action_id": "approve", "value": "soc/a"}]});
        let mut other = base.clone();
        other["type"] = json!("view_submission");
        assert!(matches!(parse(&form(other)), Err(PayloadError::NotBlockActions(_))));
        let mut odd = base.clone();
        odd["actions"][0]["action_id"] = json!("snooze");
        assert!(matches!(parse(&form(odd)), Err(PayloadError::UnknownAction(_))));
        for value in ["soc", "soc/../x", "Soc/a", "/a"] {
            let mut bad = base.clone();
            bad["actions"][0]["value"] = json!(value);
            assert!(matches!(parse(&form(bad)), Err(PayloadError::BadValue(_))), "{value}");
        }
        let mut nobody = base;
        nobody["user"] = json!({});
        assert_eq!(parse(&form(nobody)), Err(PayloadError::NoUser));
    }
}
