//! Handler tests with a mocked authorizer and a canned API server.

use crate::{AppState, ApiError, auth::{Access, Authorizer, User}, api, router_with};
use async_trait::async_trait;
use axum::{body::Body, http::{Request, StatusCode}};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use vigil_api::{Approval, Run};

/// Accepts the token `good` as `alice`; allows what `allow` lets through and records every check.
struct MockAuthorizer {
    allow: fn(&Access) -> bool,
    checked: Mutex<Vec<Access>>,
}

#[async_trait]
impl Authorizer for MockAuthorizer {
    async fn authenticate(&self, token: &str) -> Result<User, ApiError> {
        match token {
            "good" => Ok(User { username: "alice".into(), groups: vec!["soc".into()], ..Default::default() }),
            _ => Err(ApiError::Unauthenticated("the token was not accepted".into())),
        }
    }

    async fn allowed(&self, _user: &User, access: &Access) -> Result<bool, ApiError> {
        self.checked.lock().unwrap().push(access.clone());
        Ok((self.allow)(access))
    }
}

/// An API server that answers every request with `body` and records the paths asked for.
fn canned_client(body: Value, seen: Arc<Mutex<Vec<String>>>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let body = body.clone();
        seen.lock().unwrap().push(req.uri().to_string());
        async move {
            let bytes = serde_json::to_vec(&body).unwrap();
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().header("content-type", "application/json").body(kube::client::Body::from(bytes)).unwrap(),
            )
        }
    });
    kube::Client::new(service, "default")
}

struct Fixture {
    app: axum::Router,
    authz: Arc<MockAuthorizer>,
    seen: Arc<Mutex<Vec<String>>>,
}

fn fixture(allow: fn(&Access) -> bool, api_answer: Value) -> Fixture {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let authz = Arc::new(MockAuthorizer { allow, checked: Mutex::new(Vec::new()) });
    let state = AppState {
        client: canned_client(api_answer, seen.clone()),
        authz: authz.clone(),
        base_config: kube::Config::new("http://127.0.0.1:9".parse().unwrap()),
        namespace: None,
    };
    Fixture { app: router_with(state), authz, seen }
}

async fn call(app: &axum::Router, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let res = app.clone().oneshot(req.unwrap()).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn run(name: &str, playbook: &str, phase: &str, severity: Option<&str>, created: &str) -> Value {
    let mut steps = json!({});
    if let Some(sev) = severity {
        steps = json!({"score": {"phase": "Succeeded", "outputs": {"severity": sev}}});
    }
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Run",
        "metadata": {"name": name, "namespace": "soc", "creationTimestamp": created},
        "spec": {"playbookRef": {"name": playbook}},
        "status": {"phase": phase, "steps": steps},
    })
}

fn run_list() -> Value {
    json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "RunList", "metadata": {}, "items": [
        run("a", "incident-response", "Succeeded", Some("high"), "2026-01-01T10:00:00Z"),
        run("b", "incident-response", "Running", Some("low"), "2026-01-01T11:00:00Z"),
        run("c", "phishing-triage", "Failed", None, "2026-01-01T12:00:00Z"),
    ]})
}

#[tokio::test]
async fn api_without_a_token_is_unauthenticated() {
    let f = fixture(|_| true, run_list());
    let (status, body) = call(&f.app, "GET", "/ui/api/runs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");
    assert!(f.seen.lock().unwrap().is_empty(), "nothing may be read for an anonymous request");
}

#[tokio::test]
async fn api_with_a_rejected_token_is_unauthenticated() {
    let f = fixture(|_| true, run_list());
    let (status, _) = call(&f.app, "GET", "/ui/api/runs", Some("stolen"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn runs_are_forbidden_when_the_user_may_not_list_them() {
    let f = fixture(|_| false, run_list());
    let (status, body) = call(&f.app, "GET", "/ui/api/runs?namespace=soc", Some("good"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["detail"], "alice may not list runs in namespace soc");
    assert!(f.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn runs_list_filters_by_severity_and_counts_phases() {
    let f = fixture(|a| a.verb == "list" && a.resource == "runs", run_list());
    let (status, body) = call(&f.app, "GET", "/ui/api/runs?namespace=soc&severity=high", Some("good"), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = body["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(body["runs"][0]["severity"], "high");
    assert_eq!(body["counts"], json!({"Succeeded": 1}));
    assert_eq!(f.authz.checked.lock().unwrap()[0].namespace.as_deref(), Some("soc"));
    assert!(f.seen.lock().unwrap()[0].starts_with("/apis/vigil.dev/v1alpha1/namespaces/soc/runs"));
}

#[tokio::test]
async fn runs_list_is_newest_first_and_counts_ignore_the_phase_filter() {
    let f = fixture(|_| true, run_list());
    let (_, body) = call(&f.app, "GET", "/ui/api/runs?phase=Running", Some("good"), None).await;
    assert_eq!(body["runs"].as_array().unwrap().len(), 1);
    assert_eq!(body["counts"], json!({"Succeeded": 1, "Running": 1, "Failed": 1}));
    let (_, all) = call(&f.app, "GET", "/ui/api/runs", Some("good"), None).await;
    let names: Vec<_> = all["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "b", "a"]);
    assert_eq!(f.authz.checked.lock().unwrap().last().unwrap().namespace, None, "no namespace: all namespaces");
}

#[tokio::test]
async fn deciding_needs_update_and_patch_on_the_approval() {
    let f = fixture(|a| a.verb != "patch", json!({}));
    let (status, body) =
        call(&f.app, "POST", "/ui/api/approvals/soc/ap-1/decision", Some("good"), Some(json!({"decision": "approved"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["detail"], "alice may not patch approvals in namespace soc");
    let checked = f.authz.checked.lock().unwrap();
    assert_eq!(checked.last().unwrap().name.as_deref(), Some("ap-1"));
    assert!(f.seen.lock().unwrap().is_empty(), "a refused decision touches nothing");
}

#[tokio::test]
async fn unknown_api_routes_answer_json_404() {
    let f = fixture(|_| true, json!({}));
    let (status, body) = call(&f.app, "GET", "/ui/api/nope", Some("good"), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not found")));
}

#[tokio::test]
async fn the_app_is_served_without_a_token() {
    let f = fixture(|_| false, json!({}));
    let res = f.app.clone().oneshot(Request::get("/ui/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
}

fn approval(decisions: Value) -> Approval {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Approval",
        "metadata": {"name": "ap-1", "namespace": "soc", "resourceVersion": "42"},
        "spec": {"runRef": {"name": "r"}, "step": "gate", "message": "ok?", "approvers": {"groups": ["soc"]},
                 "decisions": decisions},
    }))
    .unwrap()
}

#[test]
fn first_decision_creates_the_list_guarded_by_the_resource_version() {
    let user = User { username: "alice".into(), ..Default::default() };
    let req = api::DecisionRequest { decision: "approved".into(), reason: Some(" contained ".into()) };
    let patch = api::decision_patch(&approval(json!([])), &user, &req).unwrap();
    assert_eq!(patch, json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "add", "path": "/spec/decisions", "value": [{"decision": "approved", "by": "alice", "via": "ui", "reason": "contained"}]},
    ]));
}

#[test]
fn later_decisions_are_appended() {
    let user = User { username: "bob".into(), ..Default::default() };
    let req = api::DecisionRequest { decision: "denied".into(), reason: None };
    let earlier = approval(json!([{"decision": "approved", "by": "alice"}]));
    let patch = api::decision_patch(&earlier, &user, &req).unwrap();
    assert_eq!(patch, json!([{"op": "add", "path": "/spec/decisions/-", "value": {"decision": "denied", "by": "bob", "via": "ui"}}]));
}

#[test]
fn a_decision_other_than_approve_or_deny_is_rejected() {
    let req = api::DecisionRequest { decision: "maybe".into(), reason: None };
    assert!(matches!(api::decision_patch(&approval(json!([])), &User::default(), &req), Err(ApiError::BadRequest(_))));
}

#[test]
fn inbox_lists_pending_approvals_first() {
    let mut decided = approval(json!([]));
    decided.metadata.name = Some("done".into());
    decided.status = Some(vigil_api::ApprovalStatus { decision: Some(vigil_api::Decision::Denied), ..Default::default() });
    let views = api::inbox(&[decided, approval(json!([]))]);
    assert_eq!(views.iter().map(|v| (v.name.as_str(), v.pending)).collect::<Vec<_>>(), [("ap-1", true), ("done", false)]);
}

#[test]
fn timeline_is_sorted_oldest_first() {
    let events: Vec<k8s_openapi::api::core::v1::Event> = serde_json::from_value(json!([
        {"metadata": {"name": "e2"}, "involvedObject": {}, "reason": "Succeeded", "lastTimestamp": "2026-01-01T10:05:00Z"},
        {"metadata": {"name": "e1"}, "involvedObject": {}, "reason": "Started", "lastTimestamp": "2026-01-01T10:00:00Z"},
    ]))
    .unwrap();
    let reasons: Vec<_> = api::timeline(events).into_iter().map(|e| e.reason).collect();
    assert_eq!(reasons, ["Started", "Succeeded"]);
}

#[test]
fn severity_comes_from_the_score_step() {
    let r: Run = serde_json::from_value(run("a", "p", "Running", Some("critical"), "2026-01-01T10:00:00Z")).unwrap();
    assert_eq!(api::severity(&r).as_deref(), Some("critical"));
}
