//! Deterministic stand-ins for the SOC tools vigil playbooks call, served by one axum router.

pub mod ai;
pub mod auth;
pub mod calls;
pub mod compliance;
pub mod config;
pub mod edr;
pub mod firewall;
pub mod identity;
pub mod idp;
pub mod mail;
pub mod scenario;
pub mod siem;
pub mod slack;
pub mod snow;
pub mod ti;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, Uri},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::Guard;
pub use crate::config::Config;

/// Everything the handlers share: configuration, the call recorder and the mutable scenario state.
pub struct AppState {
    pub config: Config,
    pub calls: calls::Recorder,
    pub faults: calls::Faults,
    store: Mutex<Store>,
    http: reqwest::Client,
}

/// State the services change at run time; `POST /_reset` puts it back to the scenario start.
///
/// Limitation: it lives in memory only, so a restart forgets tickets, isolations and messages,
/// and two replicas disagree; run one replica.
#[derive(Default)]
pub struct Store {
    pub siem: siem::Store,
    pub edr: edr::Store,
    pub idp: idp::Store,
    pub firewall: firewall::Store,
    pub snow: snow::Store,
    pub mail: mail::Store,
    pub slack: slack::Store,
    next_action: u64,
}

impl Store {
    /// A deterministic id for a containment action, e.g. `edr-act-000001`.
    pub fn next_action_id(&mut self, prefix: &str) -> String {
        self.next_action += 1;
        format!("{prefix}-act-{:06}", self.next_action)
    }
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        let faults = calls::Faults::new(config.fault_seed);
        Arc::new(Self {
            config,
            calls: calls::Recorder::default(),
            faults,
            store: Mutex::new(Store::default()),
            http: reqwest::Client::new(),
        })
    }

    /// The mutable state. A panic in another handler must not wedge the mock, so poison is ignored.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub type SharedState = Arc<AppState>;

/// The whole mock: every service behind its own credential check, all calls recorded.
pub fn router(state: SharedState) -> Router {
    let c = &state.config;
    let guarded = |routes: Router<SharedState>, guard: Guard| {
        routes.route_layer(middleware::from_fn_with_state(guard, auth::require))
    };

    Router::new()
        .merge(guarded(siem::routes(), Guard::bearer(&c.siem_token)))
        .merge(guarded(ti::routes(), Guard::api_key(&c.ti_key)))
        .merge(guarded(identity::routes(), Guard::bearer(&c.idp_token)))
        .merge(guarded(idp::routes(), Guard::bearer(&c.idp_token)))
        .merge(guarded(edr::routes(), Guard::bearer(&c.edr_token)))
        .merge(guarded(compliance::routes(), Guard::bearer(&c.grc_token)))
        .merge(guarded(firewall::routes(), Guard::bearer(&c.fw_token)))
        .merge(guarded(
            snow::routes(),
            Guard::basic(&c.snow_user, &c.snow_password),
        ))
        .merge(guarded(mail::routes(), Guard::bearer(&c.mail_token)))
        .merge(guarded(slack::routes(), Guard::slack(&c.slack_token)))
        .merge(guarded(ai::routes(), Guard::openai(&c.openai_key)))
        .merge(slack::support_routes())
        .merge(calls::routes())
        .route("/_healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/_reset", post(reset))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), calls::record))
        .with_state(state)
}

/// `POST /_reset`: forget calls, faults and every change the services made.
async fn reset(axum::extract::State(state): axum::extract::State<SharedState>) -> StatusCode {
    *state.store() = Store::default();
    state.calls.clear();
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn not_found(method: axum::http::Method, uri: Uri) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

/// The project-wide error shape: `{"error": "...", "detail": "..."}`.
pub fn api_error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": error, "detail": detail.into()})),
    )
        .into_response()
}

/// A JSON body read whatever the Content-Type says (scripts often forget it); an empty body
/// reads as `{}`. A body that does not parse is a JSON 400, not axum's plain-text rejection.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| api_error(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
    }
}
