//! `POST /approvals/slack`: a signed Slack button click becomes a decision on an Approval.
//!
//! Served on the operator's HTTP port by every replica. Unsigned, stale, wrongly signed and
//! replayed requests are refused with `401 {"error", "detail"}` and change nothing. A click by
//! a Slack user who is not mapped, or whose Kubernetes user may not decide, is answered `200`
//! with a short text saying why (Slack shows nothing for other statuses) and changes nothing.

use super::{
    payload::{self, Click},
    signature::{SignatureError, Verifier},
    users::SlackUsers,
};
use crate::approvals::{self, Actor, VIA_SLACK};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    response::{IntoResponse, Response},
    routing::post,
};
use http::{HeaderMap, StatusCode};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use vigil_api::Approval;
use vigil_gateway::{Reason, Rejection};

/// The largest callback body read; Slack's payloads are a few KiB.
const MAX_BODY_BYTES: usize = 256 << 10;
/// The longest one Kubernetes API call may take; Slack wants an answer within 3 seconds.
const API_TIMEOUT: Duration = Duration::from_millis(2500);

/// What the callback needs.
#[derive(Clone)]
pub struct CallbackConfig {
    pub client: kube::Client,
    /// Slack's signing secret (one per line for rotation); `None` refuses every request.
    pub signing_secret: Option<Vec<u8>>,
    /// Namespace and name of the user-mapping ConfigMap.
    pub users_namespace: String,
    pub users_config_map: String,
    /// Namespaces whose Approvals may be decided; `None` allows all.
    pub namespaces: Option<Vec<String>>,
}

struct Shared {
    config: CallbackConfig,
    verifier: Option<Verifier>,
}

/// `POST /approvals/slack`, to merge into the operator's HTTP router.
pub fn callback_router(config: CallbackConfig) -> Router {
    let verifier = config.signing_secret.as_deref().map(Verifier::new);
    let shared = Arc::new(Shared { config, verifier });
    Router::new()
        .route("/approvals/slack", post(callback))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn callback(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(verifier) = &shared.verifier else {
        return Rejection::new(Reason::Unauthorized, "no Slack signing secret is configured").into_response();
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = verifier.verify(&headers, &body, now) {
        tracing::info!(%error, "Slack callback refused");
        let reason = if error == SignatureError::Busy { Reason::Overloaded } else { Reason::Unauthorized };
        return Rejection::new(reason, error.to_string()).into_response();
    }
    let click = match payload::parse(&body) {
        Ok(click) => click,
        Err(error) => return Rejection::new(Reason::MalformedJson, error.to_string()).into_response(),
    };
    let allowed = shared.config.namespaces.as_ref().is_none_or(|ns| ns.contains(&click.namespace));
    if !allowed {
        return Rejection::new(Reason::NotFound, format!("approval {}/{} not found", click.namespace, click.approval))
            .into_response();
    }
    match decide(&shared.config, &click).await {
        Ok(text) => text_answer(text),
        Err(rejection) => rejection.into_response(),
    }
}

/// Records the click as a decision. `Ok` carries the text for Slack, including refusals by the
/// decision rules; `Err` is a protocol-level refusal.
async fn decide(config: &CallbackConfig, click: &Click) -> Result<String, Rejection> {
    let users = timed(SlackUsers::load(&config.client, &config.users_namespace, &config.users_config_map)).await?;
    let Some(user) = users.get(&click.user_id) else {
        tracing::info!(slack_user = %click.user_id, "Slack user not mapped");
        return Ok(format!(
            "Not recorded: your Slack user {} is not mapped to a Kubernetes user (ConfigMap {}/{}).",
            click.user_id, config.users_namespace, config.users_config_map
        ));
    };
    let api: Api<Approval> = Api::namespaced(config.client.clone(), &click.namespace);
    let actor = Actor { name: &user.name, groups: Some(&user.groups) };
    let reason = format!("clicked in Slack by @{} ({})", click.user_name, click.user_id);
    let entry = json!({"decision": click.decision.as_str(), "by": user.name, "via": VIA_SLACK, "reason": reason});

    // Two tries: the guard on the first decision can lose to a concurrent one.
    for attempt in 0..2 {
        let Some(approval) = timed(api.get_opt(&click.approval)).await? else {
            return Err(Rejection::new(
                Reason::NotFound,
                format!("approval {}/{} not found", click.namespace, click.approval),
            ));
        };
        if let Err(refusal) = approvals::may_decide(&approval, &actor) {
            tracing::info!(approval = %click.approval, user = %user.name, %refusal, "Slack decision refused");
            return Ok(format!("Not recorded: {refusal}"));
        }
        let patch = decision_patch(&approval, entry.clone());
        match timed(api.patch(&click.approval, &PatchParams::default(), &Patch::Json::<()>(patch))).await {
            Ok(_) => {
                tracing::info!(approval = %click.approval, user = %user.name, decision = click.decision.as_str(), "Slack decision recorded");
                return Ok(format!("{} by {} (recorded for approval {}).",
                    capitalised(click.decision.as_str()), user.name, click.approval));
            }
            Err(rejection) if rejection.reason == Reason::RunRejected && attempt == 0 => continue,
            Err(rejection) if rejection.reason == Reason::RunRejected => {
                return Ok(format!("Not recorded: {}", rejection.detail));
            }
            Err(rejection) => return Err(rejection),
        }
    }
    Ok("Not recorded: the approval changed while recording; try again.".into())
}

/// Appends `entry`; the first decision creates the list, guarded by the resourceVersion so two
/// first decisions cannot overwrite each other.
fn decision_patch(approval: &Approval, entry: serde_json::Value) -> json_patch::Patch {
    let ops = if approval.spec.decisions.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": approval.metadata.resource_version},
            {"op": "add", "path": "/spec/decisions", "value": [entry]},
        ])
    } else {
        json!([{"op": "add", "path": "/spec/decisions/-", "value": entry}])
    };
    serde_json::from_value(ops).unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

/// Runs an API call under [`API_TIMEOUT`]. A refusal by the API server (the admission webhook,
/// a conflict, a failed test) is `RunRejected` with the server's message; the rest `Unavailable`.
async fn timed<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, Rejection> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) if (400..500).contains(&status.code) => {
            Err(Rejection::new(Reason::RunRejected, status.message.clone()))
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "Kubernetes API call failed");
            Err(Rejection::new(Reason::Unavailable, "the Kubernetes API is unavailable"))
        }
        Err(_) => Err(Rejection::new(Reason::Unavailable, "the Kubernetes API did not answer in time")),
    }
}

fn text_answer(text: String) -> Response {
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
