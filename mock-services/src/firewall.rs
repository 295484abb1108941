//! Firewall: block lists of IPs, domains, URLs and hashes.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{JsonBody, SharedState, api_error};

const TYPES: &[&str] = &["ip", "domain", "url", "hash"];

/// Blocks in the order they were added.
#[derive(Default)]
pub struct Store {
    blocks: Vec<Block>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub id: String,
    pub indicator: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct NewBlock {
    indicator: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reason: String,
}

pub fn routes() -> Router<SharedState> {
    Router::new().route("/firewall/blocks", post(add).get(list))
}

/// 201 with the new block; blocking the same indicator again is 200 with the existing one,
/// so a retried step does not create duplicates.
async fn add(State(state): State<SharedState>, JsonBody(new): JsonBody<NewBlock>) -> Response {
    let kind = new.kind.to_ascii_lowercase();
    if new.indicator.trim().is_empty() || !TYPES.contains(&kind.as_str()) {
        let detail = "indicator must be non-empty and type one of ip, domain, url, hash";
        return api_error(StatusCode::BAD_REQUEST, "invalid_block", detail);
    }

    let mut store = state.store();
    let blocks = &mut store.firewall.blocks;
    if let Some(existing) = blocks
        .iter()
        .find(|b| b.indicator == new.indicator && b.kind == kind)
    {
        return (
            StatusCode::OK,
            Json(json!({"block": existing, "created": false})),
        )
            .into_response();
    }

    let block = Block {
        id: format!("fw-blk-{:04}", blocks.len() + 1),
        indicator: new.indicator,
        kind,
        reason: new.reason,
        created_at: Utc::now(),
    };
    tracing::info!(id = block.id, kind = block.kind, "Firewall block");
    blocks.push(block.clone());
    (
        StatusCode::CREATED,
        Json(json!({"block": block, "created": true})),
    )
        .into_response()
}

async fn list(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let blocks = state.store().firewall.blocks.clone();
    Json(json!({"blocks": blocks, "total": blocks.len()}))
}
