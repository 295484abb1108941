//! The gateway end to end over HTTP, in process, with the in-memory backend: what a sender
//! gets back, and which Runs exist afterwards.

use axum::{Router, body::Body, extract::ConnectInfo};
use futures::stream;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tower::ServiceExt;
use vigil_api::{Playbook, labels};
use vigil_gateway::{BackendError, Gateway, GatewayConfig, MemoryBackend, auth::hmac_tag};

const NS: &str = "soc";
const SECRET: &[u8] = b"ids-shared-secret";

struct Fixture {
    backend: Arc<MemoryBackend>,
    router: Router,
    registry: Registry,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

fn playbook(name: &str, triggers: Value) -> Playbook {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Playbook",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "inputs": {
                "username": {"type": "string", "required": true},
                "ip": {"type": "string", "required": true},
                "hostname": {"type": "string"},
            },
            "triggers": triggers,
            "steps": [{"name": "siem", "image": "python:3.12-slim", "script": "print(1)"}],
        },
    }))
    .unwrap()
}

fn ids_trigger(auth: Value) -> Value {
    json!({"webhook": {
        "auth": auth,
        "filter": "body.event_type == 'alert'",
        "inputs": {"username": "body.user", "ip": "body.src_ip", "hostname": "body.host"},
        "dedupe": {"key": "body.alert_id", "window": "10m"},
    }})
}

fn secret_ref(name: &str) -> Value {
    json!({"secretRef": {"name": name, "key": "secret"}})
}

impl Fixture {
    fn new() -> Self {
        Self::with_config(GatewayConfig::default())
    }

    fn with_config(config: GatewayConfig) -> Self {
        let backend = Arc::new(MemoryBackend::new());
        let ir = ids_trigger(json!({"hmacSha256": secret_ref("ids-webhook")}));
        backend.put_playbook(playbook("incident-response", ir));
        let slack = ids_trigger(json!({"timestampedHmac": secret_ref("slack-webhook")}));
        backend.put_playbook(playbook("slack-alert", slack));
        backend
            .put_playbook(playbook("edr", ids_trigger(json!({"bearer": secret_ref("edr-token")}))));
        backend.put_playbook(playbook(
            "open",
            json!({"webhook": {
                "auth": {"none": {}},
                "inputs": {"username": "body.user", "ip": "body.src_ip"},
                "rateLimit": 2,
            }}),
        ));
        let mut disabled = ids_trigger(json!({"none": {}}));
        disabled["webhook"]["enabled"] = json!(false);
        backend.put_playbook(playbook("disabled", disabled));
        backend.put_playbook(playbook("manual", json!({})));
        backend.put_secret(NS, "ids-webhook", "secret", SECRET);
        backend.put_secret(NS, "slack-webhook", "secret", SECRET);
        backend.put_secret(NS, "edr-token", "secret", b"edr-token-1\n");

        let mut registry = Registry::default();
        let gateway = Gateway::with_backend(backend.clone(), config, &mut registry);
        Self { backend, router: gateway.router(), registry }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, json }
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn alert(id: &str) -> Value {
    json!({"event_type": "alert", "user": "jdoe", "src_ip": "10.0.0.5", "host": "ws-17",
           "alert_id": id})
}

/// A GitHub-style signed POST to the incident-response hook.
fn signed(body: impl Into<Vec<u8>>) -> http::request::Builder {
    signed_to("incident-response", body.into())
}

fn signed_to(playbook: &str, body: Vec<u8>) -> http::request::Builder {
    signed_as(playbook, "application/json", body)
}

fn signed_as(playbook: &str, content_type: &str, body: Vec<u8>) -> http::request::Builder {
    let sig = format!("sha256={}", hex::encode(hmac_tag(SECRET, &[&body])));
    Request::post(format!("/hooks/{NS}/{playbook}"))
        .header("content-type", content_type)
        .header("x-hub-signature-256", sig)
}

fn with_body(builder: http::request::Builder, body: impl Into<Vec<u8>>) -> Request<Body> {
    builder.body(Body::from(body.into())).unwrap()
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn post_signed(body: Vec<u8>) -> Request<Body> {
    with_body(signed(body.clone()), body)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_signed_alert_creates_a_run_with_its_provenance() {
    let f = Fixture::new();
    let body = json_bytes(&alert("a-1"));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = with_body(
        signed(body.clone())
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("traceparent", traceparent)
            .header("x-forwarded-for", "203.0.113.9"),
        body.clone(),
    );
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));

    let answer = f.send(request).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json);
    assert!(answer.headers.contains_key("x-request-id"));
    let runs = f.backend.runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(answer.json, json!({"run": run.metadata.name, "namespace": NS}));
    assert_eq!(run.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(run.spec.playbook_ref.name, "incident-response");
    assert_eq!(
        run.spec.inputs,
        Some(json!({"username": "jdoe", "ip": "10.0.0.5", "hostname": "ws-17"}))
    );
    let trigger = run.spec.trigger.as_ref().unwrap();
    assert_eq!(trigger.kind, "webhook");
    assert_eq!(trigger.source.as_deref(), Some("webhook/soc/incident-response"));
    assert_eq!(trigger.remote_addr.as_deref(), Some("192.0.2.7"), "X-Forwarded-For is not trusted");
    assert_eq!(trigger.delivery_id.as_deref(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
    assert!(trigger.received_at.is_some());
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(trigger.body_digest, Some(format!("sha256:{digest}")));
    let labels_ = run.metadata.labels.as_ref().unwrap();
    assert_eq!(labels_[labels::PLAYBOOK], "incident-response");
    let annotations = run.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[labels::TRACEPARENT], traceparent);
    let key_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a-1"));
    assert_eq!(annotations[labels::DEDUPE_KEY], format!("sha256:{key_digest}"));
}

#[tokio::test]
async fn the_same_alert_twice_in_the_window_answers_the_first_run() {
    let f = Fixture::new();
    let first = f.send(post_signed(json_bytes(&alert("dup-1")))).await;
    let second = f.send(post_signed(json_bytes(&alert("dup-1")))).await;
    let other = f.send(post_signed(json_bytes(&alert("dup-2")))).await;

    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json["run"], first.json["run"]);
    assert_eq!(second.json["duplicate"], json!(true));
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.json["run"], first.json["run"]);
    assert_eq!(f.backend.runs().len(), 2);
    assert!(f.metrics().contains(
        r#"vigil_webhook_duplicates_total{namespace="soc",playbook="incident-response"} 1"#
    ));
}

#[tokio::test]
async fn an_alert_the_filter_drops_is_accepted_without_a_run() {
    let f = Fixture::new();
    let body = json_bytes(&json!({"event_type": "heartbeat"}));
    let answer = f.send(post_signed(body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json, json!({"filtered": true}));
    assert!(f.backend.runs().is_empty());
}

#[tokio::test]
async fn runs_without_dedupe_get_unique_names() {
    let f = Fixture::new();
    let body = json_bytes(&json!({"user": "u", "src_ip": "10.1.1.1"}));
    let post = || Request::post("/hooks/soc/open").header("content-type", "application/json");
    let a = f.send(with_body(post(), body.clone())).await;
    let b = f.send(with_body(post(), body)).await;
    assert_eq!((a.status, b.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_ne!(a.json["run"], b.json["run"]);
    assert!(a.json["run"].as_str().unwrap().starts_with("open-"));
    assert_eq!(f.backend.runs().len(), 2);
}

#[tokio::test]
async fn a_rotated_secret_accepts_old_and_new_signatures() {
    let f = Fixture::new();
    f.backend.put_secret(NS, "ids-webhook", "secret", b"brand-new-secret\nids-shared-secret\n");
    assert_eq!(f.send(post_signed(json_bytes(&alert("r-1")))).await.status, StatusCode::ACCEPTED);

    f.backend.put_secret(NS, "ids-webhook", "secret", b"brand-new-secret\n");
    let answer = f.send(post_signed(json_bytes(&alert("r-2")))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.backend.runs().len(), 1);
}

#[tokio::test]
async fn slack_style_timestamped_signatures_are_checked_against_the_clock() {
    let f = Fixture::new();
    let body = json_bytes(&alert("s-1"));
    let request = |ts: i64| {
        let tag = hmac_tag(SECRET, &[format!("v0:{ts}:").as_bytes(), &body]);
        with_body(
            Request::post("/hooks/soc/slack-alert")
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", format!("v0={}", hex::encode(tag))),
            body.clone(),
        )
    };
    let fresh = f.send(request(now())).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{}", fresh.json);
    let stale = f.send(request(now() - 600)).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stale.json["error"], "unauthorized");
    assert!(stale.json["detail"].as_str().unwrap().contains("300s"));
    assert_eq!(f.backend.runs().len(), 1);
}

#[tokio::test]
async fn bearer_tokens_are_checked() {
    let f = Fixture::new();
    let body = json_bytes(&alert("b-1"));
    let request = |token: &str| {
        with_body(
            Request::post("/hooks/soc/edr")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}")),
            body.clone(),
        )
    };
    assert_eq!(f.send(request("edr-token-1")).await.status, StatusCode::ACCEPTED);
    assert_eq!(f.send(request("edr-token-2")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.backend.runs().len(), 1);
}

/// A body that sends one chunk and then nothing, ever.
fn stalled_body() -> Body {
    let first = stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{")) });
    Body::from_stream(futures::StreamExt::chain(first, stream::pending()))
}

/// A body of `n` bytes sent in chunks, without a Content-Length.
fn chunked_body(n: usize) -> Body {
    let chunks =
        (0..n / 8192 + 1).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 8192])));
    Body::from_stream(stream::iter(chunks))
}

/// What is sent, the status and `error` expected, and a piece of the `detail`.
type Case = (&'static str, Request<Body>, StatusCode, &'static str, Option<&'static str>);

#[tokio::test]
async fn every_bad_request_gets_its_4xx_as_json_and_creates_nothing() {
    let f = Fixture::new();
    let good = json_bytes(&alert("bad-0"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let big = vec![b' '; (1 << 20) + 1];
    let missing = json_bytes(&json!({"event_type": "alert", "alert_id": "m"}));
    let wrong_types = json_bytes(&json!({"event_type": "alert", "user": "u", "src_ip": 10,
                                          "alert_id": "w"}));
    let no_event_type = json_bytes(&json!({"user": "u", "src_ip": "10.0.0.1", "alert_id": "x"}));
    let plain = |path: &str| Request::post(path).header("content-type", "application/json");

    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            post_signed(b"{\"user\": ".to_vec()),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            "trailing garbage",
            post_signed(b"{} x".to_vec()),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        ("empty body", post_signed(Vec::new()), StatusCode::BAD_REQUEST, "malformed_json", None),
        (
            "wrong content type",
            with_body(signed_as("incident-response", "text/plain", good.clone()), good.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            "form content type",
            with_body(
                signed_as("incident-response", "application/x-www-form-urlencoded", good.clone()),
                good.clone(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            "two content types",
            with_body(signed(good.clone()).header("content-type", "text/plain"), good.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            Some("several"),
        ),
        (
            "oversized body",
            post_signed(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
        (
            "oversized chunked body",
            signed(big).body(chunked_body((1 << 20) + 1)).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
        ("deep nesting", post_signed(deep), StatusCode::BAD_REQUEST, "too_deep", None),
        (
            "invalid UTF-8",
            post_signed(b"{\"user\": \"\xc3\x28\"}".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
            None,
        ),
        (
            "missing fields",
            post_signed(missing),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_inputs",
            Some("username"),
        ),
        (
            "wrong types",
            post_signed(wrong_types),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_inputs",
            Some("input ip: expected string"),
        ),
        (
            "filter over a missing field",
            post_signed(no_event_type),
            StatusCode::UNPROCESSABLE_ENTITY,
            "filter_failed",
            Some("has()"),
        ),
        (
            "unsigned",
            with_body(plain("/hooks/soc/incident-response"), good.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("x-hub-signature-256"),
        ),
        (
            "wrong signature",
            with_body(
                plain("/hooks/soc/incident-response")
                    .header("x-hub-signature-256", format!("sha256={}", "ab".repeat(32))),
                good.clone(),
            ),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
        ),
        (
            "signature of another body",
            with_body(signed(b"{}".to_vec()), good.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
        ),
        (
            "unknown playbook",
            with_body(plain("/hooks/soc/nope"), good.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "unknown namespace",
            with_body(plain("/hooks/elsewhere/incident-response"), good.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "invalid name in path",
            with_body(plain("/hooks/soc/Not_A_Name"), good.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "bad percent-encoding in path",
            with_body(plain("/hooks/soc/%ff%fe"), good.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "disabled trigger",
            with_body(plain("/hooks/soc/disabled"), good.clone()),
            StatusCode::FORBIDDEN,
            "trigger_disabled",
            None,
        ),
        (
            "no webhook trigger",
            with_body(plain("/hooks/soc/manual"), good.clone()),
            StatusCode::NOT_FOUND,
            "no_webhook_trigger",
            None,
        ),
        (
            "GET instead of POST",
            Request::get("/hooks/soc/incident-response").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
    ];

    for (what, request, status, error, detail) in cases {
        let answer = f.send(request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.json);
        assert_eq!(answer.json["error"], error, "{what}: {}", answer.json);
        let text = answer.json["detail"].as_str().unwrap_or_else(|| panic!("{what}: no detail"));
        if let Some(needle) = detail {
            assert!(text.contains(needle), "{what}: {text}");
        }
        assert!(f.backend.runs().is_empty(), "{what} created a Run");
    }

    let metrics = f.metrics();
    assert!(
        metrics.contains(
            r#"vigil_webhook_requests_total{namespace="unknown",playbook="unknown",status="404"} 4"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vigil_webhook_rejections_total{reason="unauthorized"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let f = Fixture::new();
    let body = json_bytes(&json!({"user": "u", "src_ip": "10.1.1.1"}));
    let post = || {
        with_body(
            Request::post("/hooks/soc/open").header("content-type", "application/json"),
            body.clone(),
        )
    };
    assert_eq!(f.send(post()).await.status, StatusCode::ACCEPTED);
    assert_eq!(f.send(post()).await.status, StatusCode::ACCEPTED);
    let limited = f.send(post()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json["error"], "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(f.backend.runs().len(), 2);
}

#[tokio::test]
async fn the_in_flight_cap_answers_429() {
    let f = Fixture::with_config(GatewayConfig { max_in_flight: 1, ..Default::default() });
    f.backend.set_create_delay(Some(Duration::from_millis(500)));
    let slow = tokio::spawn({
        let router = f.router.clone();
        async move { router.oneshot(post_signed(json_bytes(&alert("slow")))).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let refused = f.send(post_signed(json_bytes(&alert("second")))).await;

    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json["error"], "overloaded");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(slow.await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(f.backend.runs().len(), 1);
}

#[tokio::test]
async fn a_slow_api_server_answers_503_with_retry_after() {
    let config = GatewayConfig { api_timeout: Duration::from_millis(100), ..Default::default() };
    let f = Fixture::with_config(config);
    f.backend.set_create_delay(Some(Duration::from_secs(2)));
    let answer = f.send(post_signed(json_bytes(&alert("slow-api")))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json["error"], "unavailable");
    assert_eq!(answer.headers["retry-after"], "5");
}

#[tokio::test]
async fn a_failing_api_server_answers_503_and_an_invalid_run_422() {
    let f = Fixture::new();
    f.backend.set_create_failure(Some(BackendError::Unavailable("connection refused".into())));
    let answer = f.send(post_signed(json_bytes(&alert("down")))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!answer.json["detail"].as_str().unwrap().contains("refused"), "internals stay in logs");

    f.backend.set_create_failure(Some(BackendError::Invalid("spec.inputs: bad".into())));
    let answer = f.send(post_signed(json_bytes(&alert("invalid")))).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json["error"], "run_rejected");
}

#[tokio::test]
async fn a_gateway_that_has_not_synced_answers_503() {
    let f = Fixture::new();
    f.backend.set_ready(false);
    let answer = f.send(post_signed(json_bytes(&alert("early")))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json["error"], "not_ready");
    assert!(answer.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_in_bounded_time() {
    let config = GatewayConfig {
        request_timeout: Duration::from_millis(600),
        api_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let f = Fixture::with_config(config);
    let request = signed(Vec::new()).body(stalled_body()).unwrap();
    let started = std::time::Instant::now();
    let answer = f.send(request).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer.json["error"], "body_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_trigger_with_broken_cel_is_a_422_after_auth() {
    let f = Fixture::new();
    let mut trigger = ids_trigger(json!({"hmacSha256": secret_ref("ids-webhook")}));
    trigger["webhook"]["filter"] = json!("body.((");
    f.backend.put_playbook(playbook("incident-response", trigger));
    let answer = f.send(post_signed(json_bytes(&alert("cel")))).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json["error"], "invalid_trigger");
    let unsigned = with_body(
        Request::post("/hooks/soc/incident-response").header("content-type", "application/json"),
        json_bytes(&alert("cel")),
    );
    assert_eq!(f.send(unsigned).await.status, StatusCode::UNAUTHORIZED);
}
