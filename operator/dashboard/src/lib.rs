//! The investigation dashboard: a single-page app at `/ui/` and its JSON + SSE API at `/ui/api`.
//!
//! Every API request carries the user's own Kubernetes token. The token is checked with a
//! TokenReview, every read and action with a SubjectAccessReview for that user, and decisions
//! are written while impersonating the user, so the dashboard grants nothing the cluster would not.

pub(crate) mod api;
pub mod auth;
mod error;

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use std::sync::Arc;

pub use auth::{Access, Authorizer, KubeAuthorizer, User};
pub use error::ApiError;

/// How the dashboard is served.
#[derive(Clone, Default)]
pub struct DashboardConfig {
    /// Show only this namespace (default: every namespace the user may read).
    pub namespace: Option<String>,
    /// The configuration impersonating clients are built from (default: inferred like
    /// `kube::Client::try_default`).
    pub kube_config: Option<kube::Config>,
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub client: kube::Client,
    pub authz: Arc<dyn Authorizer>,
    pub base_config: kube::Config,
    pub namespace: Option<String>,
}

/// The dashboard's routes, all under `/ui`, ready to merge into the operator's HTTP app.
pub async fn router(client: kube::Client, config: DashboardConfig) -> anyhow::Result<Router> {
    let base_config = match config.kube_config {
        Some(c) => c,
        None => kube::Config::infer().await?,
    };
    let authz = Arc::new(KubeAuthorizer::new(client.clone()));
    Ok(router_with(AppState { client, authz, base_config, namespace: config.namespace }))
}

pub(crate) fn router_with(state: AppState) -> Router {
    let api = Router::new()
        .route("/whoami", get(api::whoami))
        .route("/runs", get(api::list_runs))
        .route("/runs/{ns}/{name}", get(api::get_run))
        .route("/runs/{ns}/{name}/events", get(api::watch_run))
        .route("/events/{ns}/{name}", get(api::run_events))
        .route("/logs/{ns}/{run}/{step}", get(api::step_logs))
        .route("/approvals", get(api::list_approvals))
        .route("/approvals/{ns}/{name}/decision", post(api::decide))
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .with_state(state);

    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/ui/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/ui/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .nest("/ui/api", api)
}

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

/// Everything from this origin, nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

#[cfg(test)]
mod tests;
