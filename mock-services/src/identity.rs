//! Identity directory: who a user is, their department, devices and account status.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{SharedState, api_error, scenario};

pub fn routes() -> Router<SharedState> {
    Router::new().route("/identity/users/{username}", get(user))
}

/// The account status reflects `POST /idp/users/{u}/disable`.
async fn user(State(state): State<SharedState>, Path(username): Path<String>) -> Response {
    let Some(user) = scenario::user(&username) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user named {username}"),
        );
    };

    let disabled = state.store().idp.is_disabled(user.username);
    Json(json!({
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email,
        "department": user.department,
        "role": user.role,
        "manager": user.manager,
        "devices": user.devices,
        "status": if disabled { "disabled" } else { "active" },
        "privileged": user.privileged,
    }))
    .into_response()
}
