//! Mail gateway: reported emails for phishing triage, and purging delivered copies.

use std::collections::BTreeSet;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{JsonBody, SharedState, api_error, scenario};

/// Delivered copies (message id, recipient) purged since the last reset.
#[derive(Default)]
pub struct Store {
    purged: BTreeSet<(&'static str, &'static str)>,
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/mail/messages/{id}", get(message))
        .route("/mail/purge", post(purge))
}

async fn message(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    let Some(email) = scenario::email(&id) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no message {id}"),
        );
    };

    let store = state.store();
    let remaining: Vec<_> = email
        .to
        .iter()
        .filter(|to| !store.mail.purged.contains(&(email.id, **to)))
        .collect();
    let headers: Map<String, Value> = email
        .headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    Json(json!({
        "id": email.id,
        "from": email.from,
        "sender": scenario::address_of(email.from),
        "to": email.to,
        "subject": email.subject,
        "received_at": email.received_at,
        "reported_by": email.reported_by,
        "headers": headers,
        "urls": email.urls,
        "attachments": email.attachments,
        "body": email.body,
        "delivered_to": remaining,
        "purged": remaining.is_empty(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PurgeRequest {
    message_id: Option<String>,
    sender: Option<String>,
}

/// Removes every delivered copy of one message, or of everything one sender sent; a sender
/// without `@` means a whole domain. Purging again finds nothing left: `{"purged": 0}`.
async fn purge(
    State(state): State<SharedState>,
    JsonBody(request): JsonBody<PurgeRequest>,
) -> Response {
    let wanted = |email: &scenario::Email| match (&request.message_id, &request.sender) {
        (Some(id), _) => email.id == id,
        (None, Some(sender)) => sender_matches(email, sender),
        (None, None) => false,
    };
    if request.message_id.is_none() && request.sender.is_none() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "give message_id or sender",
        );
    }

    let mut store = state.store();
    let mut purged = Vec::new();
    for email in scenario::EMAILS.iter().filter(|e| wanted(e)) {
        for to in email.to {
            if store.mail.purged.insert((email.id, to)) {
                purged.push(json!({"message_id": email.id, "mailbox": to}));
            }
        }
    }
    tracing::info!(purged = purged.len(), "Mail purge");
    Json(json!({"purged": purged.len(), "copies": purged})).into_response()
}

fn sender_matches(email: &scenario::Email, sender: &str) -> bool {
    let address = scenario::address_of(email.from).to_ascii_lowercase();
    let sender = sender.trim().to_ascii_lowercase();
    if sender.contains('@') {
        address == sender
    } else {
        address
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain == sender)
    }
}
