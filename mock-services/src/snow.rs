//! Ticketing in the style of the ServiceNow Table API, for the `incident` table.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{JsonBody, SharedState};

/// Fields the caller may not set: the table owns them.
const SYSTEM_FIELDS: &[&str] = &["sys_id", "number", "sys_created_on", "sys_created_by"];

/// Incidents by sys_id; every value is a string, as the Table API returns them.
#[derive(Default)]
pub struct Store {
    created: u64,
    order: Vec<String>,
    incidents: BTreeMap<String, Map<String, Value>>,
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/now/table/incident", get(list).post(create))
        .route(
            "/api/now/table/incident/{sys_id}",
            get(read).patch(update).put(update),
        )
}

async fn create(State(state): State<SharedState>, JsonBody(body): JsonBody<Value>) -> Response {
    let Value::Object(fields) = body else {
        return failure(
            StatusCode::BAD_REQUEST,
            "Invalid body",
            "expected a JSON object",
        );
    };

    let now = now();
    let mut store = state.store();
    store.snow.created += 1;
    let n = store.snow.created;
    let sys_id = hex::encode(&Sha256::digest(format!("incident:{n}"))[..16]);

    let mut record = Map::new();
    for (key, value) in [
        ("state", "1"),
        ("urgency", "3"),
        ("impact", "3"),
        ("category", "security"),
        ("active", "true"),
        ("short_description", ""),
        ("description", ""),
        ("assignment_group", ""),
        ("caller_id", ""),
    ] {
        record.insert(key.into(), key_value(value));
    }
    merge(&mut record, fields);
    record.insert("sys_id".into(), json!(sys_id));
    record.insert("number".into(), json!(format!("INC{:07}", 10_000 + n)));
    record.insert("sys_created_on".into(), json!(now));
    record.insert("opened_at".into(), json!(now));
    record.insert("sys_created_by".into(), json!(state.config.snow_user));
    touch(&mut record, &now);

    tracing::info!(sys_id, "Incident created");
    store.snow.order.push(sys_id.clone());
    store.snow.incidents.insert(sys_id, record.clone());
    (StatusCode::CREATED, Json(json!({"result": record}))).into_response()
}

async fn update(
    State(state): State<SharedState>,
    Path(sys_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Response {
    let Value::Object(fields) = body else {
        return failure(
            StatusCode::BAD_REQUEST,
            "Invalid body",
            "expected a JSON object",
        );
    };

    let mut store = state.store();
    let Some(record) = store.snow.incidents.get_mut(&sys_id) else {
        return no_record(&sys_id);
    };
    merge(record, fields);
    touch(record, &now());
    Json(json!({"result": record})).into_response()
}

async fn read(State(state): State<SharedState>, Path(sys_id): Path<String>) -> Response {
    match state.store().snow.incidents.get(&sys_id) {
        Some(record) => Json(json!({"result": record})).into_response(),
        None => no_record(&sys_id),
    }
}

/// Supports `sysparm_limit` and an equality-only `sysparm_query` (`field=value^field=value`).
async fn list(
    State(state): State<SharedState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let limit = params
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10_000);
    let conditions: Vec<(&str, &str)> = params
        .get("sysparm_query")
        .map(|q| q.split('^').filter_map(|c| c.split_once('=')).collect())
        .unwrap_or_default();

    let store = state.store();
    let result: Vec<&Map<String, Value>> = store
        .snow
        .order
        .iter()
        .filter_map(|id| store.snow.incidents.get(id))
        .filter(|r| {
            conditions
                .iter()
                .all(|(k, v)| r.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .take(limit)
        .collect();
    let total = result.len();
    let mut response = Json(json!({"result": result})).into_response();
    response.headers_mut().insert("x-total-count", total.into());
    response
}

/// Copies caller fields in as strings, keeps system fields, and derives priority and the
/// resolution timestamps the way the incident table does.
fn merge(record: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (key, value) in fields {
        if SYSTEM_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let text = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        record.insert(key, Value::String(text));
    }

    let level = |key| {
        record
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u8>().ok())
    };
    let priority = (level("urgency").unwrap_or(3) + level("impact").unwrap_or(3)).saturating_sub(1);
    record.insert(
        "priority".into(),
        key_value(&priority.clamp(1, 5).to_string()),
    );

    let state = record
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("1")
        .to_owned();
    let now = now();
    if state == "6" && !record.contains_key("resolved_at") {
        record.insert("resolved_at".into(), json!(now));
    }
    if state == "7" {
        record.entry("closed_at").or_insert_with(|| json!(now));
        record.insert("active".into(), json!("false"));
    }
}

fn touch(record: &mut Map<String, Value>, now: &str) {
    record.insert("sys_updated_on".into(), json!(now));
    let mods = record
        .get("sys_mod_count")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok());
    let mods: u64 = mods.map_or(0, |m: u64| m + 1);
    record.insert("sys_mod_count".into(), json!(mods.to_string()));
}

fn key_value(value: &str) -> Value {
    Value::String(value.to_owned())
}

/// ServiceNow's date format, in UTC.
fn now() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn no_record(sys_id: &str) -> Response {
    let detail = format!("Record doesn't exist or ACL restricts the record retrieval: {sys_id}");
    failure(StatusCode::NOT_FOUND, "No Record found", &detail)
}

/// The Table API's error shape.
fn failure(status: StatusCode, message: &str, detail: &str) -> Response {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    (status, Json(body)).into_response()
}
