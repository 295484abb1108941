//! Receives large step outputs from `vigil-step` and stores them beside the Run.
//!
//! The step pod authenticates with its projected ServiceAccount token (audience `vigil`). A
//! TokenReview tells which pod is speaking, and the pod's own labels say which Run, step and
//! attempt it is, so a step can only ever report its own outputs.

use crate::controller::jobs::{TOKEN_AUDIENCE, owner};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use k8s_openapi::{
    api::{authentication::v1::{TokenReview, TokenReviewSpec}, core::v1::{ConfigMap, Pod}},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, api::{Patch, PatchParams, PostParams}};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use vigil_api::{Run, labels};
use vigil_engine::names;

/// The largest outputs document accepted.
pub const MAX_OUTPUTS: usize = 1024 * 1024;

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn reject(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": error, "detail": detail.into()});
    (status, axum::Json(body)).into_response()
}

/// `POST /internal/v1/outputs`.
pub async fn receive(State(client): State<kube::Client>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return reject(StatusCode::UNAUTHORIZED, "unauthenticated", "a bearer token is required");
    };
    if body.len() > MAX_OUTPUTS {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "too large", format!("outputs are capped at {MAX_OUTPUTS} bytes"));
    }
    let claimed = headers.get("x-vigil-digest").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let actual = digest(&body);
    if claimed != actual {
        return reject(StatusCode::BAD_REQUEST, "digest mismatch", "X-Vigil-Digest does not match the body");
    }
    if !matches!(serde_json::from_slice::<serde_json::Value>(&body), Ok(serde_json::Value::Object(_))) {
        return reject(StatusCode::BAD_REQUEST, "invalid outputs", "outputs must be a JSON object");
    }
    let (ns, pod_name) = match review(&client, token).await {
        Ok(who) => who,
        Err(detail) => return reject(StatusCode::UNAUTHORIZED, "unauthenticated", detail),
    };
    match store(&client, &ns, &pod_name, &body).await {
        Ok(name) => (StatusCode::CREATED, axum::Json(serde_json::json!({"stored": name, "digest": actual}))).into_response(),
        Err((status, detail)) => reject(status, "not stored", detail),
    }
}

/// Returns the namespace and pod name the token was issued to.
async fn review(client: &kube::Client, token: &str) -> Result<(String, String), String> {
    let api: Api<TokenReview> = Api::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec { token: token.to_string(), audiences: Some(vec![TOKEN_AUDIENCE.into()]) },
        ..Default::default()
    };
    let result = api.create(&PostParams::default(), &review).await.map_err(|e| format!("token review failed: {e}"))?;
    let status = result.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(status.error.unwrap_or_else(|| "token not accepted".into()));
    }
    let user = status.user.unwrap_or_default();
    let extra = user.extra.unwrap_or_default();
    let pod = extra
        .get("authentication.kubernetes.io/pod-name")
        .and_then(|v| v.first().cloned())
        .ok_or("the token is not bound to a pod")?;
    let ns = user
        .username
        .as_deref()
        .and_then(|u| u.strip_prefix("system:serviceaccount:"))
        .and_then(|rest| rest.split(':').next())
        .ok_or("the token is not a ServiceAccount token")?
        .to_string();
    Ok((ns, pod))
}

async fn store(client: &kube::Client, ns: &str, pod_name: &str, body: &[u8]) -> Result<String, (StatusCode, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(pod_name).await.map_err(|e| (StatusCode::FORBIDDEN, format!("pod {pod_name}: {e}")))?;
    let pod_labels = pod.metadata.labels.unwrap_or_default();
    let (Some(run_name), Some(job)) = (pod_labels.get(labels::RUN), pod_labels.get("job-name")) else {
        return Err((StatusCode::FORBIDDEN, "the pod is not a vigil step".into()));
    };
    let runs: Api<Run> = Api::namespaced(client.clone(), ns);
    let run = runs.get(run_name).await.map_err(|e| (StatusCode::FORBIDDEN, format!("run {run_name}: {e}")))?;

    let name = names::job_outputs_name(job);
    let mut cm_labels: BTreeMap<String, String> = pod_labels
        .iter()
        .filter(|(k, _)| k.starts_with("vigil.dev/") || k.as_str() == labels::MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cm_labels.insert("vigil.dev/outputs".into(), "true".into());
    let text = String::from_utf8_lossy(body).into_owned();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(cm_labels),
            owner_references: Some(vec![owner(&run)]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("outputs.json".to_string(), text)])),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.patch(&name, &PatchParams::apply(crate::controller::MANAGER).force(), &Patch::Apply(&cm))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("cannot store outputs: {e}")))?;
    Ok(name)
}
