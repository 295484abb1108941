//! The vigil admission webhooks and the Slack approval callback.
//!
//! [`router`] serves, over TLS through [`serve_tls`]:
//!
//! | path | what |
//! | --- | --- |
//! | `POST /mutate/approvals` | writes `by`, `at` and `via` of an added decision from the request |
//! | `POST /validate/approvals` | who may decide ([`approvals`]); status writes by the operator only |
//! | `POST /validate/playbooks` | refuses Playbooks that do not compile ([`playbooks`]) |
//!
//! [`slack`] holds the other way in: the signed `POST /approvals/slack` callback, served on the
//! operator's plain HTTP port, and the Slack Web API client the Approval reconciler posts with.
//! The rules themselves are pure and tested without a cluster. See `docs/approvals.md`.

pub mod approvals;
pub mod playbooks;
pub mod slack;
mod tls;

pub use approvals::{Refusal, Requester, Trusted};
pub use tls::serve_tls;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use std::sync::Arc;
use vigil_api::Approval;

/// The largest AdmissionReview read; it carries the old and the new object.
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// What the admission webhooks need to know.
#[derive(Clone, Debug, Default)]
pub struct AdmissionConfig {
    /// Users that may record a decision `via: slack` for the mapped user and write an
    /// Approval's status: the operator's ServiceAccount user, plus any `--trusted-user`.
    pub trusted_users: Vec<String>,
}

struct Shared {
    trusted: Trusted,
}

/// The user this process acts as, asked from the API server (a SelfSubjectReview), so the
/// operator's own ServiceAccount is trusted without configuration. `None` when the API server
/// cannot tell.
pub async fn whoami(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match api.create(&kube::api::PostParams::default(), &SelfSubjectReview::default()).await {
        Ok(review) => review.status?.user_info?.username,
        Err(error) => {
            tracing::warn!(%error, "Cannot ask the API server who this operator is");
            None
        }
    }
}

/// The admission routes (and `GET /healthz`), to be served with [`serve_tls`].
pub fn router(config: AdmissionConfig) -> Router {
    let shared = Arc::new(Shared { trusted: Trusted::new(config.trusted_users) });
    Router::new()
        .route("/mutate/approvals", post(mutate_approvals))
        .route("/validate/approvals", post(validate_approvals))
        .route("/validate/playbooks", post(validate_playbooks))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(shared)
}

async fn mutate_approvals(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    review(&body, |req| {
        let response = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource.is_some() {
            return response;
        }
        let (old, new) = match objects(req) {
            Ok(pair) => pair,
            // Nothing to record on an object that does not parse; the validating path refuses it.
            Err(_) => return response,
        };
        let ops = approvals::mutation(&shared.trusted, old.as_ref(), &new, &requester(req), chrono::Utc::now());
        if ops.is_empty() {
            return response;
        }
        match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops))
            .map_err(|e| e.to_string())
            .and_then(|patch| response.clone().with_patch(patch).map_err(|e| e.to_string()))
        {
            Ok(patched) => patched,
            Err(error) => {
                tracing::error!(%error, "Cannot build the decision patch");
                response.deny(format!("cannot record the decision: {error}"))
            }
        }
    })
}

async fn validate_approvals(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    review(&body, |req| {
        let response = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return response;
        }
        let (old, new) = match objects(req) {
            Ok(pair) => pair,
            Err(refusal) => return deny(response, &refusal),
        };
        let who = requester(req);
        let verdict = match req.sub_resource.as_deref() {
            Some("status") => approvals::validate_status(&shared.trusted, old.as_ref(), &new, &who),
            Some(_) => Ok(()),
            None => approvals::validate(&shared.trusted, old.as_ref(), &new, &who),
        };
        match verdict {
            Ok(()) => {
                let added = new.spec.decisions.len() > old.as_ref().map_or(0, |o| o.spec.decisions.len());
                if added {
                    tracing::info!(approval = %req.name, ns = req.namespace.as_deref().unwrap_or_default(), user = %who.username, "Decision admitted");
                }
                response
            }
            Err(refusal) => {
                tracing::info!(approval = %req.name, ns = req.namespace.as_deref().unwrap_or_default(), user = %who.username, %refusal, "Denied");
                deny(response, &refusal)
            }
        }
    })
}

async fn validate_playbooks(body: Bytes) -> Response {
    review(&body, |req| {
        let response = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource.is_some() {
            return response;
        }
        let object = req.object.as_ref().map(serde_json::to_value);
        let issues = match object {
            Some(Ok(value)) => playbooks::issues(&value),
            Some(Err(e)) => vec![e.to_string()],
            None => vec!["the request carries no object".into()],
        };
        if issues.is_empty() {
            return response;
        }
        tracing::info!(playbook = %req.name, ns = req.namespace.as_deref().unwrap_or_default(), issues = issues.len(), "Denied");
        let mut denied = response.deny(playbooks::message(&req.name, &issues));
        denied.result.code = 422;
        denied.result.reason = "Invalid".into();
        denied
    })
}

/// Reads an AdmissionReview, answers it with `decide`. A body that is not one answers 400
/// `{"error", "detail"}`, which the API server treats as a failed call.
fn review(body: &[u8], decide: impl FnOnce(&AdmissionRequest<DynamicObject>) -> AdmissionResponse) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return malformed(format!("not an AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return malformed(e.to_string()),
    };
    Json(decide(&request).into_review()).into_response()
}

fn malformed(detail: String) -> Response {
    let body = serde_json::json!({"error": "malformed_review", "detail": detail});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn deny(response: AdmissionResponse, refusal: &Refusal) -> AdmissionResponse {
    let mut denied = response.deny(refusal.to_string());
    denied.result.code = 403;
    denied.result.reason = "Forbidden".into();
    denied
}

fn requester(req: &AdmissionRequest<DynamicObject>) -> Requester {
    Requester {
        username: req.user_info.username.clone().unwrap_or_default(),
        groups: req.user_info.groups.clone().unwrap_or_default(),
    }
}

/// The old (on update) and new Approval of a request.
fn objects(req: &AdmissionRequest<DynamicObject>) -> Result<(Option<Approval>, Approval), Refusal> {
    let parse = |obj: &DynamicObject| {
        serde_json::to_value(obj)
            .and_then(serde_json::from_value::<Approval>)
            .map_err(|e| Refusal::Malformed { approval: req.name.clone(), detail: e.to_string() })
    };
    let new = req.object.as_ref().ok_or_else(|| Refusal::Malformed {
        approval: req.name.clone(),
        detail: "the request carries no object".into(),
    })?;
    let old = match (&req.operation, &req.old_object) {
        (Operation::Update, Some(old)) => Some(parse(old)?),
        _ => None,
    };
    Ok((old, parse(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    const OPERATOR: &str = "system:serviceaccount:vigil-system:vigil-operator";

    fn approval(decisions: Value) -> Value {
        json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": "quarantine-x1", "namespace": "soc"},
            "spec": {"runRef": {"name": "ir-x1"}, "step": "approve", "message": "ok?",
                     "approvers": {"groups": ["soc-leads"]}, "decisions": decisions}
        })
    }

    fn review_of(user: &str, groups: &[&str], old: Value, new: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "vigil.dev", "version": "v1alpha1", "kind": "Approval"},
                "resource": {"group": "vigil.dev", "version": "v1alpha1", "resource": "approvals"},
                "name": "quarantine-x1", "namespace": "soc", "operation": "UPDATE",
                "userInfo": {"username": user, "groups": groups},
                "object": new, "oldObject": old, "dryRun": false
            }
        })
    }

    async fn call(path: &str, body: Value) -> Value {
        let app = router(AdmissionConfig { trusted_users: vec![OPERATOR.into()] });
        let request = http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn validating_path_refuses_a_non_approver_with_the_uid_copied() {
        let old = approval(json!([]));
        let new = approval(json!([{"decision": "approved", "by": "bob"}]));
        let answer = call("/validate/approvals", review_of("bob", &[], old, new)).await;
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert!(response["status"]["message"].as_str().unwrap().contains("\"bob\" is not an approver"));
    }

    #[tokio::test]
    async fn mutating_path_answers_a_json_patch_setting_by() {
        let old = approval(json!([]));
        let new = approval(json!([{"decision": "approved", "by": "someone-else"}]));
        let answer = call("/mutate/approvals", review_of("alice", &["soc-leads"], old, new)).await;
        let response = &answer["response"];
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        // kube serializes the patch bytes as a JSON array of numbers, which the API server reads.
        let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(patch[0], json!({"op": "add", "path": "/spec/decisions/0/by", "value": "alice"}));
    }

    #[tokio::test]
    async fn playbook_path_lists_every_issue() {
        let pb = json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "Playbook",
            "metadata": {"name": "ir", "namespace": "soc"},
            "spec": {"steps": [
                {"name": "a", "image": "x", "command": ["true"], "dependsOn": ["ghost"]},
                {"name": "b", "image": "x", "command": ["true"], "when": "1 +"}]}
        });
        let mut body = review_of("alice", &[], Value::Null, pb);
        body["request"]["operation"] = json!("CREATE");
        body["request"]["kind"]["kind"] = json!("Playbook");
        let answer = call("/validate/playbooks", body).await;
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("playbook quarantine-x1 is invalid: "), "{message}");
        assert!(message.contains("step a: dependsOn: unknown step \"ghost\""), "{message}");
        assert!(message.contains("step b: when:"), "{message}");
    }
}
