//! An OpenAI-compatible chat completion that writes a deterministic incident summary as JSON.

use std::net::IpAddr;

use axum::{
    Json, Router,
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::SharedState;

const SEVERITIES: &[&str] = &["critical", "high", "medium", "low"];
/// Keys whose presence (non-empty) says an enrichment did not deliver.
const FAILURE_KEYS: &[&str] = &[
    "failed",
    "failures",
    "errors",
    "missing",
    "failed_steps",
    "missing_enrichments",
    "unavailable",
];
/// Values that say the same, e.g. a step phase of `Failed`.
const FAILURE_WORDS: &[&str] = &[
    "failed",
    "error",
    "timeout",
    "timedout",
    "missing",
    "unavailable",
];

pub fn routes() -> Router<SharedState> {
    Router::new().route("/v1/chat/completions", post(completions))
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

impl ChatMessage {
    /// The text of a message, whether `content` is a string or a list of text parts.
    fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// Limitation: `stream: true` is ignored and answered with one ordinary completion, so a
/// client that insists on server-sent events fails; emitting one SSE chunk would fix it.
async fn completions(body: Bytes) -> Response {
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return openai_error(&format!("We could not parse the JSON body: {e}"), None),
    };
    let Some(model) = request.model.filter(|m| !m.is_empty()) else {
        return openai_error("you must provide a model parameter", Some("model"));
    };
    let Some(last_user) = request.messages.iter().rev().find(|m| m.role == "user") else {
        return openai_error("messages must contain a user message", Some("messages"));
    };

    let analysis = Analysis::of(&last_user.text());
    let content = analysis.to_json().to_string();
    let prompt_chars: usize = request.messages.iter().map(|m| m.text().len()).sum();
    let prompt_tokens = prompt_chars.div_ceil(4);
    let completion_tokens = content.len().div_ceil(4);
    let id = hex::encode(&Sha256::digest(&body)[..12]);

    Json(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": Utc::now().timestamp(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_vigil_mock",
    }))
    .into_response()
}

fn openai_error(message: &str, param: Option<&str>) -> Response {
    let body = json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": null,
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// What the "model" concludes from the last user message.
#[derive(Debug)]
pub struct Analysis {
    pub severity: String,
    pub confidence: &'static str,
    pub summary: String,
    pub recommended_actions: Vec<&'static str>,
    pub iocs: Vec<String>,
}

impl Analysis {
    /// Reads the message as JSON when it is (or contains) a JSON object, else as text.
    pub fn of(text: &str) -> Self {
        let parsed = serde_json::from_str::<Value>(text)
            .ok()
            .or_else(|| embedded_object(text));
        let input = parsed.unwrap_or_else(|| Value::String(text.to_owned()));

        let severity = find_key(&input, &["severity"])
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|s| SEVERITIES.contains(&s.as_str()))
            .or_else(|| first_severity_word(text))
            .unwrap_or_else(|| "unknown".to_owned());
        let failures = failure_signals(&input);
        let confidence = match failures {
            0 => "high",
            1 => "medium",
            _ => "low",
        };

        let mut iocs = Vec::new();
        collect_iocs(&input, &mut iocs);
        let summary = summarize(&input, &severity, failures);
        let mut recommended_actions = actions_for(&severity);
        if confidence == "low" {
            recommended_actions.insert(0, "Re-run the failed enrichments before acting");
        }
        Self {
            severity,
            confidence,
            summary,
            recommended_actions,
            iocs,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "summary": self.summary,
            "severity": self.severity,
            "confidence": self.confidence,
            "recommended_actions": self.recommended_actions,
            "iocs": self.iocs,
        })
    }
}

/// The outermost `{...}` inside prose, when it parses.
fn embedded_object(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?)
        .ok()
        .filter(Value::is_object)
}

/// The first value under any of these keys, depth first.
fn find_key<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    match value {
        Value::Object(map) => keys
            .iter()
            .find_map(|k| map.get(*k).filter(|v| !v.is_null()))
            .or_else(|| map.values().find_map(|v| find_key(v, keys))),
        Value::Array(items) => items.iter().find_map(|v| find_key(v, keys)),
        _ => None,
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map(str::to_ascii_lowercase)
}

fn first_severity_word(text: &str) -> Option<String> {
    words(text).find(|w| SEVERITIES.contains(&w.as_str()))
}

/// How many enrichments the input says failed or are missing.
fn failure_signals(value: &Value) -> usize {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, v)| {
                let key = key.to_ascii_lowercase();
                if FAILURE_KEYS.contains(&key.as_str()) {
                    return size(v);
                }
                if key == "error" {
                    return usize::from(size(v) > 0);
                }
                failure_signals(v)
            })
            .sum(),
        Value::Array(items) => items.iter().map(failure_signals).sum(),
        Value::String(s) => words(s)
            .filter(|w| FAILURE_WORDS.contains(&w.as_str()))
            .count(),
        _ => 0,
    }
}

fn size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(false) => 0,
        Value::Bool(true) => 1,
        Value::Number(n) => n
            .as_u64()
            .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        Value::String(s) => usize::from(!s.is_empty()),
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
    }
}

/// IPs, SHA-256 digests and URLs found in any string, in order of appearance.
fn collect_iocs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let tokens = s.split(|c: char| c.is_whitespace() || "\"'()[]{}<>,;|".contains(c));
            for token in tokens.map(|t| t.trim_end_matches(['.', ':', ','])) {
                let is_url = token.starts_with("http://") || token.starts_with("https://");
                let ioc = if is_url || token.parse::<IpAddr>().is_ok() {
                    Some(token.to_owned())
                } else if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Some(token.to_ascii_lowercase())
                } else {
                    None
                };
                if let Some(ioc) = ioc.filter(|i| !out.contains(i)) {
                    out.push(ioc);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_iocs(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_iocs(v, out)),
        _ => {}
    }
}

fn summarize(input: &Value, severity: &str, failures: usize) -> String {
    let mut severity_word = severity.to_owned();
    if let Some(first) = severity_word.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let text = |keys: &[&str]| {
        find_key(input, keys).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };

    let mut summary = format!("{severity_word} severity incident");
    if let Some(user) = text(&["username", "user"]) {
        summary += &format!(" for user {user}");
    }
    if let Some(ip) = text(&["ip", "src_ip", "source_ip"]) {
        summary += &format!(" from {ip}");
    }
    if let Some(host) = text(&["hostname", "host"]) {
        summary += &format!(" on {host}");
    }
    if let Some(score) = text(&["risk_score", "score"]) {
        summary += &format!(" (risk score {score})");
    }
    summary.push('.');

    if let Some(failed) = find_key(input, &["failed_logins"]).and_then(Value::as_u64) {
        summary += &format!(" {failed} failed logins.");
    }
    if find_key(input, &["infected"]) == Some(&Value::Bool(true)) {
        summary += " Malware was found on an endpoint.";
    }
    if input.is_string() {
        let excerpt: String = input
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(160)
            .collect();
        summary += &format!(" Reported: {excerpt}");
    }
    if failures > 0 {
        summary +=
            &format!(" {failures} enrichment signal(s) failed or missing; confidence reduced.");
    }
    summary
}

fn actions_for(severity: &str) -> Vec<&'static str> {
    match severity {
        "critical" => vec![
            "Isolate the affected hosts from the network",
            "Disable the user account and revoke all sessions",
            "Block the source IP at the firewall",
            "Open a P1 incident and page the on-call responder",
            "Preserve forensic images of infected hosts",
        ],
        "high" => vec![
            "Isolate the affected hosts after approval",
            "Reset the user's credentials and revoke sessions",
            "Block the source IP at the firewall",
            "Open an incident ticket",
        ],
        "medium" => vec![
            "Reset the user's credentials",
            "Monitor the account for 24 hours",
            "Open an incident ticket for review",
        ],
        _ => vec![
            "Close as benign after analyst review",
            "Keep monitoring the account",
        ],
    }
}
