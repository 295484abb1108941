//! Slack: posting and updating messages, and a click that reaches the app correctly signed.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, body::Bytes, http::HeaderMap, http::StatusCode, routing::post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use vigil_mock_services::Config;

use crate::support::Mock;

const SECRET: &str = "test-signing-secret";

/// What the local app received: headers and the raw form body.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An app on 127.0.0.1:0 that keeps every interactive request and answers 200 with JSON.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let kept = received.clone();
    let app = Router::new().route(
        "/approvals/slack",
        post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push((headers, String::from_utf8(body.to_vec()).unwrap()));
                (StatusCode::OK, Json(json!({"text": "Approved by alice"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/approvals/slack", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn approval_blocks() -> Value {
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": "Quarantine workstation-015?"}},
        {"type": "actions", "block_id": "decision", "elements": [
            {"type": "button", "action_id": "approve", "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"},
             "value": "soc/approve-quarantine-x7"},
            {"type": "button", "action_id": "deny", "style": "danger",
             "text": {"type": "plain_text", "text": "Deny"}, "value": "soc/approve-quarantine-x7"},
        ]},
    ])
}

async fn post_approval(mock: &Mock) -> Value {
    let message =
        json!({"channel": "#security", "text": "Approval needed", "blocks": approval_blocks()});
    let posted = mock
        .post("/slack/api/chat.postMessage")
        .bearer("xoxb-dev-token")
        .json(message);
    let posted = posted.send().await.ok();
    assert_eq!(posted["ok"], true, "{posted}");
    posted
}

#[tokio::test]
async fn a_click_reaches_the_app_signed_with_the_signing_secret() {
    let (url, received) = receiver().await;
    let config = Config {
        slack_signing_secret: SECRET.into(),
        slack_interactivity_url: url,
        public_url: "http://mock.test".into(),
        ..Config::dev()
    };
    let mock = Mock::with(config);
    let posted = post_approval(&mock).await;
    let ts = posted["ts"].as_str().unwrap();

    let click = json!({"ts": ts, "action_id": "approve", "user": {"id": "U123", "name": "alice"}});
    let answer = mock.post("/_slack/click").json(click).send().await.ok();
    assert_eq!(answer, json!({"text": "Approved by alice"}));

    let (headers, body) = received
        .lock()
        .unwrap()
        .pop()
        .expect("the app got one request");
    let timestamp = headers["x-slack-request-timestamp"].to_str().unwrap();
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp is current");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let expected = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-slack-signature"].to_str().unwrap(), expected);
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");

    let fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].0, "payload");
    let payload: Value = serde_json::from_str(&fields[0].1).unwrap();
    assert_eq!(payload["type"], "block_actions");
    let user = &payload["user"];
    assert_eq!(
        (&user["id"], &user["username"], &user["name"]),
        (&json!("U123"), &json!("alice"), &json!("alice"))
    );
    assert_eq!(payload["actions"][0]["action_id"], "approve");
    assert_eq!(payload["actions"][0]["block_id"], "decision");
    assert_eq!(payload["actions"][0]["value"], "soc/approve-quarantine-x7");
    assert_eq!(payload["message"]["ts"], ts);
    assert_eq!(payload["channel"]["id"], posted["channel"]);
    assert_eq!(payload["channel"]["name"], "security");
    let response_url = payload["response_url"].as_str().unwrap();
    assert!(
        response_url.starts_with("http://mock.test/_slack/response/"),
        "{response_url}"
    );
    assert!(payload["trigger_id"].is_string() && payload["api_app_id"].is_string());
}

#[tokio::test]
async fn clicks_on_unknown_messages_or_buttons_are_refused() {
    let mock = Mock::new();
    let ts = post_approval(&mock).await["ts"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = json!({"id": "U1", "name": "alice"});

    let unknown_ts = json!({"ts": "1.2", "action_id": "approve", "user": user});
    mock.post("/_slack/click")
        .json(unknown_ts)
        .send()
        .await
        .expect(StatusCode::NOT_FOUND);
    let unknown_button = json!({"ts": ts, "action_id": "escalate", "user": user});
    let body = mock.post("/_slack/click").json(unknown_button).send().await;
    assert_eq!(
        body.expect(StatusCode::BAD_REQUEST)["error"],
        "no_such_button"
    );
}

#[tokio::test]
async fn an_unreachable_app_is_a_bad_gateway() {
    let config = Config {
        slack_interactivity_url: "http://127.0.0.1:9/nothing".into(),
        ..Config::dev()
    };
    let mock = Mock::with(config);
    let ts = post_approval(&mock).await["ts"]
        .as_str()
        .unwrap()
        .to_owned();

    let click = json!({"ts": ts, "action_id": "approve", "user": {"id": "U1", "name": "alice"}});
    mock.post("/_slack/click")
        .json(click)
        .send()
        .await
        .expect(StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn messages_can_be_updated_and_read_back() {
    let mock = Mock::new();
    let posted = post_approval(&mock).await;

    let update =
        json!({"channel": posted["channel"], "ts": posted["ts"], "text": "Approved", "blocks": []});
    let updated = mock
        .post("/slack/api/chat.update")
        .bearer("xoxb-dev-token")
        .json(update)
        .send()
        .await
        .ok();
    assert_eq!(
        (updated["ok"].clone(), updated["text"].clone()),
        (json!(true), json!("Approved"))
    );

    let read = mock
        .get("/slack/messages?channel=%23security")
        .bearer("xoxb-dev-token")
        .send()
        .await
        .ok();
    let messages = read["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0]["text"].clone(), messages[0]["updates"].clone()),
        (json!("Approved"), json!(1))
    );

    let missing = json!({"channel": posted["channel"], "ts": "9.9", "text": "x"});
    let missing = mock
        .post("/slack/api/chat.update")
        .bearer("xoxb-dev-token")
        .json(missing)
        .send()
        .await;
    assert_eq!(missing.ok()["error"], "message_not_found");
}

#[tokio::test]
async fn the_response_url_replaces_the_original_message() {
    let mock = Mock::new();
    let posted = post_approval(&mock).await;
    let channel = posted["channel"].as_str().unwrap();
    let ts = posted["ts"].as_str().unwrap();

    let path = format!("/_slack/response/{channel}/{ts}");
    let reply = json!({"replace_original": true, "text": "Approved by alice"});
    mock.post(&path).json(reply).send().await.ok();

    let read = mock
        .get("/slack/messages")
        .bearer("xoxb-dev-token")
        .send()
        .await
        .ok();
    assert_eq!(read["messages"][0]["text"], "Approved by alice");
}
