//! Compliance and audit (GRC): a user's permission review, open risks and recent audit trail.

use axum::{
    Json, Router,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{SharedState, api_error, scenario};

pub fn routes() -> Router<SharedState> {
    Router::new().route("/compliance/users/{username}", get(user))
}

async fn user(Path(username): Path<String>) -> Response {
    let Some(user) = scenario::user(&username) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user named {username}"),
        );
    };

    let c = &user.compliance;
    Json(json!({
        "username": user.username,
        "permissions_ok": c.permissions_ok,
        "risks": c.risks,
        "recent_changes": c.recent_changes,
        "access_requests": c.access_requests,
    }))
    .into_response()
}
