//! Chat in the style of the Slack Web API, plus `/_slack/click`, which plays Slack's part in
//! sending a signed interactive `block_actions` payload when a user presses a button.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{JsonBody, SharedState, api_error};

const TEAM_ID: &str = "T0VIGILMOCK";
const APP_ID: &str = "A0VIGILMOCK";
const BOT_USER: &str = "U0VIGILBOT";
const BOT_ID: &str = "B0VIGILBOT";
/// Message timestamps count up from the demo alert's time, so they are the same every run.
const TS_BASE: u64 = 1_705_329_000;

/// Messages posted since the last reset.
#[derive(Default)]
pub struct Store {
    messages: Vec<Message>,
}

/// A posted message and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub channel: String,
    pub channel_name: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    pub updates: u32,
    pub deleted: bool,
    /// The button presses delivered through `/_slack/click` and what the app answered.
    pub clicks: Vec<Value>,
}

impl Message {
    /// The message as Slack shows it to apps.
    fn as_slack(&self) -> Value {
        let mut message = json!({
            "type": "message",
            "text": self.text,
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": self.ts,
            "blocks": self.blocks,
        });
        if let Some(thread_ts) = &self.thread_ts {
            message["thread_ts"] = json!(thread_ts);
        }
        message
    }

    fn in_channel(&self, channel: &str) -> bool {
        let channel = channel.trim_start_matches('#');
        self.channel == channel || self.channel_name == channel
    }
}

impl Store {
    fn post(
        &mut self,
        channel: &str,
        text: String,
        blocks: Value,
        thread: Option<String>,
    ) -> &Message {
        let n = self.messages.len() as u64 + 1;
        let (id, name) = channel_id(channel);
        self.messages.push(Message {
            channel: id,
            channel_name: name,
            ts: format!("{}.{:06}", TS_BASE + n, n),
            text,
            blocks,
            thread_ts: thread,
            updates: 0,
            deleted: false,
            clicks: Vec::new(),
        });
        self.messages.last().expect("just pushed")
    }

    fn find_mut(&mut self, channel: Option<&str>, ts: &str) -> Option<&mut Message> {
        self.messages
            .iter_mut()
            .find(|m| m.ts == ts && channel.is_none_or(|c| m.in_channel(c)))
    }
}

/// Slack answers with channel ids; a name maps to a stable made-up id, an id stays as is.
fn channel_id(channel: &str) -> (String, String) {
    let name = channel.trim_start_matches('#');
    let looks_like_id = name.len() >= 9
        && name.starts_with(['C', 'G', 'D'])
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if looks_like_id {
        return (name.to_owned(), name.to_owned());
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..5]).to_ascii_uppercase();
    (format!("C{digest}"), name.to_owned())
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/slack/api/chat.postMessage", post(post_message))
        .route("/slack/api/chat.update", post(update))
        .route("/slack/messages", get(messages))
}

/// Routes that play Slack's own part; no bot token, as in real Slack.
pub fn support_routes() -> Router<SharedState> {
    Router::new()
        .route("/_slack/click", post(click))
        .route("/_slack/response/{channel}/{ts}", post(respond))
}

/// The arguments of a Web API method, sent as JSON or as a form; `blocks` may be a JSON string.
fn arguments(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // Scripts often send JSON with curl's default form Content-Type; the body tells.
    let looks_json = body.trim_ascii_start().starts_with(b"{");
    let mut args: Map<String, Value> = if is_form && !looks_json {
        form_urlencoded::parse(body)
            .into_owned()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => map,
            _ => return Err("invalid_json"),
        }
    };

    if let Some(Value::String(blocks)) = args.get("blocks") {
        let parsed = serde_json::from_str(blocks).map_err(|_| "invalid_blocks")?;
        args.insert("blocks".into(), parsed);
    }
    match args.get("blocks") {
        None | Some(Value::Array(_)) => Ok(args),
        Some(_) => Err("invalid_blocks"),
    }
}

fn text_arg(args: &Map<String, Value>, key: &str) -> Option<String> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Slack's error style: HTTP 200 with `ok: false`.
fn slack_error(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

async fn post_message(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = match arguments(&headers, &body) {
        Ok(args) => args,
        Err(error) => return slack_error(error),
    };
    let Some(channel) = text_arg(&args, "channel") else {
        return slack_error("channel_not_found");
    };
    let text = text_arg(&args, "text").unwrap_or_default();
    let blocks = args.get("blocks").cloned().unwrap_or_else(|| json!([]));
    if text.is_empty() && blocks.as_array().is_none_or(Vec::is_empty) {
        return slack_error("no_text");
    }

    let mut store = state.store();
    let message = store
        .slack
        .post(&channel, text, blocks, text_arg(&args, "thread_ts"));
    tracing::info!(
        channel = message.channel_name,
        ts = message.ts,
        "Slack message posted"
    );
    Json(json!({
        "ok": true,
        "channel": message.channel,
        "ts": message.ts,
        "message": message.as_slack(),
    }))
    .into_response()
}

async fn update(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let args = match arguments(&headers, &body) {
        Ok(args) => args,
        Err(error) => return slack_error(error),
    };
    let (Some(channel), Some(ts)) = (text_arg(&args, "channel"), text_arg(&args, "ts")) else {
        return slack_error("message_not_found");
    };

    let mut store = state.store();
    let Some(message) = store.slack.find_mut(Some(&channel), &ts) else {
        return slack_error("message_not_found");
    };
    if let Some(text) = args.get("text").and_then(Value::as_str) {
        message.text = text.to_owned();
    }
    if let Some(blocks) = args.get("blocks") {
        message.blocks = blocks.clone();
    }
    message.updates += 1;
    Json(json!({
        "ok": true,
        "channel": message.channel,
        "ts": message.ts,
        "text": message.text,
        "message": message.as_slack(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct MessagesQuery {
    channel: Option<String>,
}

/// Test read-back: every message, with its updates and clicks.
async fn messages(State(state): State<SharedState>, Query(q): Query<MessagesQuery>) -> Json<Value> {
    let store = state.store();
    let messages: Vec<&Message> = store
        .slack
        .messages
        .iter()
        .filter(|m| q.channel.as_deref().is_none_or(|c| m.in_channel(c)))
        .collect();
    Json(json!({"ok": true, "messages": messages}))
}

// === the interactive side: what Slack sends to the app ===

#[derive(Deserialize)]
struct Click {
    ts: String,
    action_id: String,
    user: ClickUser,
    value: Option<Value>,
    channel: Option<String>,
}

#[derive(Deserialize)]
struct ClickUser {
    id: String,
    name: String,
}

/// `X-Slack-Signature` for a body sent at `timestamp`: `v0=hex(hmac_sha256(secret, "v0:ts:body"))`.
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Presses a button of a posted message: builds the `block_actions` payload Slack would send,
/// signs it, posts it to the interactivity URL and answers with what the app answered.
async fn click(State(state): State<SharedState>, JsonBody(click): JsonBody<Click>) -> Response {
    let found = {
        let mut store = state.store();
        store
            .slack
            .find_mut(click.channel.as_deref(), &click.ts)
            .map(|m| m.clone())
    };
    let Some(message) = found else {
        return api_error(
            StatusCode::NOT_FOUND,
            "message_not_found",
            format!("no message {}", click.ts),
        );
    };
    let Some((block_id, button)) = find_button(&message.blocks, &click.action_id) else {
        let detail = format!(
            "message {} has no button with action_id {}",
            click.ts, click.action_id
        );
        return api_error(StatusCode::BAD_REQUEST, "no_such_button", detail);
    };

    let payload = block_actions(&state, &message, &click, &block_id, &button);
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let timestamp = Utc::now().timestamp().to_string();
    let signature = signature(&state.config.slack_signing_secret, &timestamp, &body);

    let url = &state.config.slack_interactivity_url;
    let sent = state
        .http
        .post(url)
        .timeout(Duration::from_secs(15))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await;
    let (status, content_type, answer) = match sent {
        Ok(response) => {
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            (
                status,
                content_type,
                response.bytes().await.unwrap_or_default(),
            )
        }
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "Interactivity URL unreachable"
            );
            let detail = format!("could not deliver to {url}: {error}");
            return api_error(StatusCode::BAD_GATEWAY, "interactivity_unreachable", detail);
        }
    };

    tracing::info!(
        ts = click.ts,
        action_id = click.action_id,
        status = status.as_u16(),
        "Slack click"
    );
    if let Some(stored) = state.store().slack.find_mut(None, &message.ts) {
        stored.clicks.push(json!({
            "action_id": click.action_id,
            "user": {"id": click.user.id, "name": click.user.name},
            "value": payload["actions"][0]["value"],
            "status": status.as_u16(),
        }));
    }

    let mut response = (status, answer).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// The button with this action_id (or, failing that, one whose action_id starts with it) and
/// the id of the block that holds it.
fn find_button(blocks: &Value, action_id: &str) -> Option<(String, Value)> {
    let mut buttons = Vec::new();
    for (index, block) in blocks.as_array().into_iter().flatten().enumerate() {
        let block_id = block["block_id"]
            .as_str()
            .map_or_else(|| format!("b{index}"), str::to_owned);
        let elements = block["elements"].as_array().into_iter().flatten();
        for element in elements.chain(block.get("accessory")) {
            if element["type"] == "button" {
                buttons.push((block_id.clone(), element.clone()));
            }
        }
    }
    let exact = buttons
        .iter()
        .position(|(_, b)| b["action_id"] == action_id);
    let prefixed = || {
        buttons.iter().position(|(_, b)| {
            b["action_id"]
                .as_str()
                .is_some_and(|a| a.starts_with(action_id))
        })
    };
    exact.or_else(prefixed).map(|i| buttons.swap_remove(i))
}

fn block_actions(
    state: &SharedState,
    message: &Message,
    click: &Click,
    block_id: &str,
    button: &Value,
) -> Value {
    let value = match &click.value {
        Some(Value::String(v)) => json!(v),
        Some(other) => json!(other.to_string()),
        None => button.get("value").cloned().unwrap_or(Value::Null),
    };
    let now = Utc::now();
    let action_ts = format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros());
    let seed = format!("{}:{}:{}", message.ts, click.action_id, click.user.id);
    let trigger_id = format!(
        "{}.{}",
        message.ts.replace('.', ""),
        hex::encode(&Sha256::digest(seed)[..8])
    );

    let mut action = json!({
        "type": "button",
        "action_id": button["action_id"],
        "block_id": block_id,
        "text": button["text"],
        "value": value,
        "action_ts": action_ts,
    });
    if let Some(style) = button.get("style") {
        action["style"] = style.clone();
    }

    json!({
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "vigil-mock"},
        "user": {
            "id": click.user.id,
            "username": click.user.name,
            "name": click.user.name,
            "team_id": TEAM_ID,
        },
        "api_app_id": APP_ID,
        "token": "vigil-mock-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": false,
        },
        "trigger_id": trigger_id,
        "channel": {"id": message.channel, "name": message.channel_name},
        "message": message.as_slack(),
        "state": {"values": {}},
        "response_url": format!(
            "{}/_slack/response/{}/{}",
            state.config.public_url, message.channel, message.ts
        ),
        "actions": [action],
        "is_enterprise_install": false,
        "enterprise": null,
    })
}

#[derive(Deserialize)]
struct ResponseUrlBody {
    text: Option<String>,
    blocks: Option<Value>,
    #[serde(default)]
    replace_original: bool,
    #[serde(default)]
    delete_original: bool,
}

/// The `response_url` of a click: replace or delete the original message, or post a new one.
async fn respond(
    State(state): State<SharedState>,
    Path((channel, ts)): Path<(String, String)>,
    JsonBody(body): JsonBody<ResponseUrlBody>,
) -> Response {
    let mut store = state.store();
    let Some(message) = store.slack.find_mut(Some(&channel), &ts) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "message_not_found",
            format!("no message {ts}"),
        );
    };

    if body.delete_original {
        message.deleted = true;
    } else if body.replace_original {
        message.text = body.text.unwrap_or_default();
        message.blocks = body.blocks.unwrap_or_else(|| json!([]));
        message.updates += 1;
    } else {
        let blocks = body.blocks.unwrap_or_else(|| json!([]));
        store
            .slack
            .post(&channel, body.text.unwrap_or_default(), blocks, None);
    }
    Json(json!({"ok": true})).into_response()
}
