//! SIEM (Splunk-like): authentication event search over the scenario, and log ingestion.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{JsonBody, SharedState, api_error, scenario};

/// Records sent to `POST /siem/events`, in arrival order.
#[derive(Default)]
pub struct Store {
    events: Vec<Value>,
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/siem/search", post(search))
        .route("/siem/events", post(ingest).get(ingested))
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchRequest {
    pub user: Option<String>,
    pub ip: Option<String>,
    pub host: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One authentication event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub user: &'static str,
    pub ip: &'static str,
    pub host: &'static str,
    pub action: &'static str,
    pub outcome: &'static str,
}

async fn search(JsonBody(request): JsonBody<SearchRequest>) -> Response {
    let bound = |value: &Option<String>| {
        let parsed = value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(DateTime::parse_from_rfc3339);
        parsed.transpose().map(|t| t.map(|t| t.with_timezone(&Utc)))
    };
    let (from, to) = match (bound(&request.from), bound(&request.to)) {
        (Ok(from), Ok(to)) => (from, to),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_time",
                "from/to must be RFC 3339",
            );
        }
    };

    let matches = |wanted: &Option<String>, actual: &str| {
        wanted
            .as_deref()
            .is_none_or(|w| w.is_empty() || w.eq_ignore_ascii_case(actual))
    };
    let events: Vec<Event> = all_events()
        .filter(|e| matches(&request.user, e.user))
        .filter(|e| matches(&request.ip, e.ip))
        .filter(|e| matches(&request.host, e.host))
        .filter(|e| from.is_none_or(|f| e.time >= f) && to.is_none_or(|t| e.time <= t))
        .collect();

    let failed_logins = events.iter().filter(|e| e.outcome == "failure").count();
    Json(json!({"events": events, "failed_logins": failed_logins, "total": events.len()}))
        .into_response()
}

/// Every scenario user's logins: their failures from the alert IP two minutes apart, ending at
/// 14:28, then one success at 14:29 on the first device.
pub fn all_events() -> impl Iterator<Item = Event> {
    let alert: DateTime<Utc> = scenario::ALERT_TIME
        .parse()
        .expect("ALERT_TIME is RFC 3339");
    scenario::USERS.iter().flat_map(move |user| {
        let host = user.devices.first().copied().unwrap_or("unknown");
        let event = move |minutes_before: i64, outcome| Event {
            time: alert - Duration::minutes(minutes_before),
            user: user.username,
            ip: user.alert_ip,
            host,
            action: "login",
            outcome,
        };
        let failures = (1..=i64::from(user.failed_logins))
            .rev()
            .map(move |i| event(2 * i, "failure"));
        failures.chain(std::iter::once(event(1, "success")))
    })
}

async fn ingest(State(state): State<SharedState>, JsonBody(body): JsonBody<Value>) -> Response {
    let records = match body {
        Value::Array(items) => items,
        Value::Object(_) => vec![body],
        _ => {
            let detail = "expected a JSON object or an array of objects";
            return api_error(StatusCode::BAD_REQUEST, "invalid_body", detail);
        }
    };

    let accepted = records.len();
    state.store().siem.events.extend(records);
    (StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))).into_response()
}

async fn ingested(State(state): State<SharedState>) -> Json<Value> {
    let events = state.store().siem.events.clone();
    Json(json!({"events": events, "total": events.len()}))
}
