//! Identity provider actions: disable an account, revoke sessions, reset credentials, hand over.

use std::collections::BTreeSet;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{JsonBody, SharedState, api_error, scenario};

/// Accounts disabled since the last reset.
#[derive(Default)]
pub struct Store {
    disabled: BTreeSet<&'static str>,
}

impl Store {
    pub fn is_disabled(&self, username: &str) -> bool {
        self.disabled.contains(username)
    }
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/idp/users/{username}/disable", post(disable))
        .route(
            "/idp/users/{username}/revoke-sessions",
            post(revoke_sessions),
        )
        .route(
            "/idp/users/{username}/reset-credentials",
            post(reset_credentials),
        )
        .route(
            "/idp/users/{username}/transfer-ownership",
            post(transfer_ownership),
        )
}

async fn disable(State(state): State<SharedState>, Path(username): Path<String>) -> Response {
    act(&state, &username, "disable", |store, user| {
        let newly = store.idp.disabled.insert(user.username);
        json!({"status": "disabled", "changed": newly})
    })
}

async fn revoke_sessions(
    State(state): State<SharedState>,
    Path(username): Path<String>,
) -> Response {
    act(
        &state,
        &username,
        "revoke-sessions",
        |_, user| json!({"sessions_revoked": user.devices.len() + 1}),
    )
}

async fn reset_credentials(
    State(state): State<SharedState>,
    Path(username): Path<String>,
) -> Response {
    act(
        &state,
        &username,
        "reset-credentials",
        |_, _| json!({"password_reset": true, "mfa_reset": true, "must_change_password": true}),
    )
}

#[derive(Deserialize)]
struct Transfer {
    to: String,
}

async fn transfer_ownership(
    State(state): State<SharedState>,
    Path(username): Path<String>,
    JsonBody(body): JsonBody<Transfer>,
) -> Response {
    let Some(to) = scenario::user(&body.to) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user named {}", body.to),
        );
    };
    act(
        &state,
        &username,
        "transfer-ownership",
        |_, _| json!({"to": to.username, "resources_transferred": ["drive", "calendar", "repos"]}),
    )
}

/// Runs an action on a known user and answers `{ok, action_id, user, action, ...details}`.
fn act(
    state: &SharedState,
    username: &str,
    action: &str,
    apply: impl FnOnce(&mut crate::Store, &'static scenario::User) -> Value,
) -> Response {
    let Some(user) = scenario::user(username) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user named {username}"),
        );
    };

    let mut store = state.store();
    let mut body = apply(&mut store, user);
    body["ok"] = json!(true);
    body["action_id"] = json!(store.next_action_id("idp"));
    body["user"] = json!(user.username);
    body["action"] = json!(action);
    tracing::info!(user = user.username, action, "IdP action");
    Json(body).into_response()
}
