//! The call recorder and fault injector (one axum middleware), with `/_calls` and `/_faults`.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{Query, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{JsonBody, SharedState, api_error};

/// Bodies larger than this are refused rather than buffered.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Paths that serve the recorder itself and are never recorded nor faulted.
const UNRECORDED: &[&str] = &["/_calls", "/_faults", "/_healthz", "/_reset"];

/// One recorded request, with the status the caller received.
#[derive(Clone, Debug, Serialize)]
pub struct Call {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub service: &'static str,
    /// Request headers; credentials are replaced by `[redacted]`.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or as a form, or else kept as text; `null` when empty.
    pub body: Value,
    pub status: u16,
    /// The id of the fault rule that answered instead of the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<u64>,
    pub duration_ms: u64,
}

/// The ordered list of calls.
///
/// Limitation: calls are kept until `DELETE /_calls` or `/_reset`, so a mock left running for
/// days grows without bound; a cap with oldest-first eviction would fix it.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<RecorderInner>,
}

#[derive(Default)]
struct RecorderInner {
    next_seq: u64,
    calls: Vec<Call>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers a call when it arrives, so that the order is the arrival order.
    fn begin(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_seq += 1;
        inner.next_seq
    }

    fn finish(&self, call: Call) {
        let mut inner = self.lock();
        let at = inner.calls.partition_point(|c| c.seq < call.seq);
        inner.calls.insert(at, call);
    }

    /// Every call so far, in arrival order.
    pub fn all(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn clear(&self) {
        *self.lock() = RecorderInner::default();
    }
}

/// What a test asks the mock to do to matching requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub path_prefix: String,
    pub method: Option<String>,
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub fail_first: Option<u32>,
    pub status: Option<u16>,
}

/// An installed fault with its counters.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRule {
    pub id: u64,
    pub path_prefix: String,
    pub method: Option<String>,
    pub latency_ms: u64,
    pub error_rate: f64,
    pub fail_first: u32,
    /// How many of the `fail_first` failures are still to come.
    pub remaining: u32,
    pub status: u16,
    pub matched: u64,
    pub injected: u64,
    #[serde(skip)]
    rng: Option<StdRng>,
}

/// The installed fault rules; the first rule that matches a request applies.
pub struct Faults {
    seed: u64,
    inner: Mutex<(u64, Vec<FaultRule>)>,
}

/// What the fault layer decided for one request.
struct Decision {
    rule: u64,
    latency: Duration,
    fail_with: Option<StatusCode>,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            inner: Mutex::new((0, Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (u64, Vec<FaultRule>)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and installs a rule. With neither `fail_first`, `error_rate` nor `latency_ms`
    /// the rule fails every matching call.
    pub fn add(&self, spec: FaultSpec) -> Result<FaultRule, String> {
        if !spec.path_prefix.starts_with('/') {
            return Err("path_prefix must start with /".into());
        }
        let status = spec.status.unwrap_or(503);
        if !(400..=599).contains(&status) {
            return Err("status must be between 400 and 599".into());
        }
        let unspecified =
            spec.fail_first.is_none() && spec.error_rate.is_none() && spec.latency_ms.is_none();
        let error_rate = if unspecified {
            1.0
        } else {
            spec.error_rate.unwrap_or(0.0)
        };
        if !(0.0..=1.0).contains(&error_rate) {
            return Err("error_rate must be between 0 and 1".into());
        }

        let mut inner = self.lock();
        inner.0 += 1;
        let id = inner.0;
        let fail_first = spec.fail_first.unwrap_or(0);
        let rule = FaultRule {
            id,
            path_prefix: spec.path_prefix,
            method: spec.method.map(|m| m.to_ascii_uppercase()),
            latency_ms: spec.latency_ms.unwrap_or(0),
            error_rate,
            fail_first,
            remaining: fail_first,
            status,
            matched: 0,
            injected: 0,
            rng: Some(StdRng::seed_from_u64(self.seed.wrapping_add(id))),
        };
        inner.1.push(rule.clone());
        Ok(rule)
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().1.clone()
    }

    pub fn clear(&self) {
        *self.lock() = (0, Vec::new());
    }

    fn decide(&self, method: &Method, path: &str) -> Option<Decision> {
        let mut inner = self.lock();
        let rule = inner.1.iter_mut().find(|r| {
            path.starts_with(&r.path_prefix)
                && r.method.as_deref().is_none_or(|m| m == method.as_str())
        })?;

        rule.matched += 1;
        let fail = if rule.remaining > 0 {
            rule.remaining -= 1;
            true
        } else {
            rule.error_rate > 0.0
                && rule
                    .rng
                    .as_mut()
                    .is_some_and(|rng| rng.random::<f64>() < rule.error_rate)
        };
        if fail {
            rule.injected += 1;
        }

        Some(Decision {
            rule: rule.id,
            latency: Duration::from_millis(rule.latency_ms),
            fail_with: fail.then(|| {
                StatusCode::from_u16(rule.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }),
        })
    }
}

/// The middleware: buffers the body, applies any fault, runs the service and records the call.
pub async fn record(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if UNRECORDED.contains(&path.as_str()) {
        return next.run(request).await;
    }

    let started = Instant::now();
    let time = Utc::now();
    let seq = state.calls.begin();
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "over 4 MiB",
            );
        }
    };
    let recorded_body = body_value(&parts.headers, &bytes);
    let query = parts.uri.query().map(parse_form).unwrap_or_default();
    let headers = redacted(&parts.headers);
    let method = parts.method.clone();

    let decision = if path.starts_with("/_") {
        None
    } else {
        state.faults.decide(&method, &path)
    };
    if let Some(d) = &decision {
        tokio::time::sleep(d.latency).await;
    }
    let response = match decision
        .as_ref()
        .and_then(|d| d.fail_with.map(|s| (d.rule, s)))
    {
        Some((rule, status)) => injected(rule, status),
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };

    let service = service_of(&path);
    let status = response.status().as_u16();
    tracing::info!(%method, path, service, status, seq, "Call");
    state.calls.finish(Call {
        seq,
        time,
        method: method.to_string(),
        path,
        query,
        service,
        headers,
        body: recorded_body,
        status,
        fault: decision.map(|d| d.rule),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    response
}

fn injected(rule: u64, status: StatusCode) -> Response {
    let body = json!({"error": "injected_fault", "detail": format!("fault rule {rule}")});
    (status, Json(body)).into_response()
}

/// The service a path belongs to, as `/_calls?service=` filters it.
pub fn service_of(path: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("/siem/", "siem"),
        ("/ti/", "ti"),
        ("/identity/", "identity"),
        ("/idp/", "idp"),
        ("/edr/", "edr"),
        ("/compliance/", "compliance"),
        ("/firewall/", "firewall"),
        ("/api/now/", "snow"),
        ("/mail/", "mail"),
        ("/slack/", "slack"),
        ("/v1/", "ai"),
        ("/_", "support"),
    ];
    PREFIXES
        .iter()
        .find(|(p, _)| path.starts_with(p))
        .map_or("unknown", |(_, s)| s)
}

/// Headers as text, with anything that may carry a credential hidden.
fn redacted(headers: &HeaderMap) -> BTreeMap<String, String> {
    const SECRET_PARTS: &[&str] = &["auth", "key", "token", "secret", "cookie", "signature"];
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let value = if SECRET_PARTS.iter().any(|p| name.contains(p)) {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

fn body_value(headers: &HeaderMap, bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return value;
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let text = String::from_utf8_lossy(bytes);
    if is_form {
        return json!(parse_form(&text));
    }
    Value::String(text.into_owned())
}

fn parse_form(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

// === the test-support routes ===

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/_calls", get(list_calls).delete(clear_calls))
        .route(
            "/_faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
}

#[derive(Deserialize)]
struct CallFilter {
    service: Option<String>,
    path_prefix: Option<String>,
    method: Option<String>,
}

async fn list_calls(
    State(state): State<SharedState>,
    Query(f): Query<CallFilter>,
) -> Json<Vec<Call>> {
    let calls = state.calls.all().into_iter().filter(|c| {
        f.service.as_deref().is_none_or(|s| c.service == s)
            && f.path_prefix
                .as_deref()
                .is_none_or(|p| c.path.starts_with(p))
            && f.method
                .as_deref()
                .is_none_or(|m| c.method.eq_ignore_ascii_case(m))
    });
    Json(calls.collect())
}

async fn clear_calls(State(state): State<SharedState>) -> StatusCode {
    state.calls.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(state): State<SharedState>) -> Json<Vec<FaultRule>> {
    Json(state.faults.list())
}

async fn add_fault(
    State(state): State<SharedState>,
    JsonBody(spec): JsonBody<FaultSpec>,
) -> Response {
    match state.faults.add(spec) {
        Ok(rule) => (StatusCode::CREATED, Json(rule)).into_response(),
        Err(detail) => api_error(StatusCode::BAD_REQUEST, "invalid_fault", detail),
    }
}

async fn clear_faults(State(state): State<SharedState>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}
