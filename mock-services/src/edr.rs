//! EDR: malware scans, host details, network isolation and where a file hash was seen.

use std::collections::BTreeSet;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use crate::{JsonBody, SharedState, api_error, scenario};

/// Hosts isolated since the last reset.
#[derive(Default)]
pub struct Store {
    isolated: BTreeSet<&'static str>,
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/edr/scan", post(scan))
        .route("/edr/hosts/{host}", get(host))
        .route("/edr/hosts/{host}/isolate", post(isolate))
        .route("/edr/hosts/{host}/unisolate", post(unisolate))
        .route("/edr/hashes/{sha256}/hosts", get(hash_hosts))
}

#[derive(Deserialize)]
struct ScanRequest {
    hosts: Vec<String>,
}

/// Hosts the EDR does not manage scan clean and say `"managed": false`.
async fn scan(JsonBody(request): JsonBody<ScanRequest>) -> Response {
    let results: Vec<_> = request
        .hosts
        .iter()
        .map(|name| {
            let host = scenario::host_named(name);
            let threats = host.map_or(&[][..], |h| h.threats);
            json!({
                "host": host.map_or(name.as_str(), |h| h.hostname),
                "managed": host.is_some(),
                "infected": !threats.is_empty(),
                "threats": threats,
            })
        })
        .collect();
    Json(json!({"results": results})).into_response()
}

async fn host(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    let Some(host) = scenario::host_named(&name) else {
        return unknown_host(&name);
    };

    let isolated = state.store().edr.isolated.contains(host.hostname);
    Json(json!({
        "host": host.hostname,
        "os": host.os,
        "owner": host.owner,
        "online": true,
        "isolated": isolated,
        "infected": !host.threats.is_empty(),
        "threats": host.threats,
        "last_seen": scenario::ALERT_TIME,
    }))
    .into_response()
}

async fn isolate(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    set_isolation(&state, &name, true)
}

async fn unisolate(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    set_isolation(&state, &name, false)
}

fn set_isolation(state: &SharedState, name: &str, isolated: bool) -> Response {
    let Some(host) = scenario::host_named(name) else {
        return unknown_host(name);
    };

    let mut store = state.store();
    let changed = if isolated {
        store.edr.isolated.insert(host.hostname)
    } else {
        store.edr.isolated.remove(host.hostname)
    };
    let action_id = store.next_action_id("edr");
    tracing::info!(host = host.hostname, isolated, "EDR isolation");
    let body = json!({
        "host": host.hostname,
        "isolated": isolated,
        "changed": changed,
        "action_id": action_id,
    });
    Json(body).into_response()
}

async fn hash_hosts(Path(sha256): Path<String>) -> Response {
    let sha256 = sha256.to_ascii_lowercase();
    let hosts: Vec<_> = scenario::HOSTS
        .iter()
        .filter(|h| h.threats.iter().any(|t| t.sha256 == sha256))
        .map(|h| h.hostname)
        .collect();
    Json(json!({"sha256": sha256, "hosts": hosts, "count": hosts.len()})).into_response()
}

fn unknown_host(name: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no managed host named {name}"),
    )
}
