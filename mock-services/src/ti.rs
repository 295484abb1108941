//! Threat intelligence: reputation of IPs, domains, file hashes and URLs.

use std::net::IpAddr;

use axum::{
    Json, Router,
    extract::{Path, Query},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{SharedState, api_error, scenario};

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/ti/ip/{ip}", get(ip))
        .route("/ti/domain/{domain}", get(domain))
        .route("/ti/hash/{sha256}", get(hash))
        .route("/ti/url", get(url))
}

async fn ip(Path(ip): Path<String>) -> Response {
    if ip.parse::<IpAddr>().is_err() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_indicator",
            "not an IP address",
        );
    }
    let entry = scenario::IPS.iter().find(|r| r.indicator == ip);
    verdict(&ip, "ip", entry)
}

async fn domain(Path(domain): Path<String>) -> Response {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || !domain.contains('.') {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_indicator",
            "not a domain name",
        );
    }
    verdict(&domain, "domain", domain_entry(&domain))
}

async fn hash(Path(sha256): Path<String>) -> Response {
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_indicator",
            "not a SHA-256 hex digest",
        );
    }
    let entry = scenario::HASHES.iter().find(|r| r.indicator == sha256);
    verdict(&sha256, "hash", entry)
}

#[derive(Deserialize)]
struct UrlQuery {
    u: Option<String>,
}

/// A URL is as bad as its host: the entry of the domain it points at, with its own score
/// raised a little because a live path on a bad domain is worse than the domain alone.
async fn url(Query(query): Query<UrlQuery>) -> Response {
    let Some(url) = query.u.filter(|u| !u.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            "query parameter u is required",
        );
    };
    let Some(host) = host_of(&url) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_indicator",
            "not an absolute URL",
        );
    };

    let mut body = verdict_body(&url, "url", domain_entry(&host));
    if body["malicious"] == true {
        let score = body["score"].as_u64().unwrap_or(0);
        body["score"] = json!((score + 3).min(100));
    }
    body["domain"] = json!(host);
    Json(body).into_response()
}

/// The entry for a domain or any parent domain of it.
fn domain_entry(domain: &str) -> Option<&'static scenario::Reputation> {
    scenario::DOMAINS.iter().find(|r| {
        domain == r.indicator
            || domain
                .strip_suffix(r.indicator)
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// The host of `scheme://[user@]host[:port]/...`, lowercased.
pub fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next()?.to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn verdict(indicator: &str, kind: &str, entry: Option<&scenario::Reputation>) -> Response {
    Json(verdict_body(indicator, kind, entry)).into_response()
}

/// Unknown indicators are clean: score 0, no tags, never seen.
fn verdict_body(indicator: &str, kind: &str, entry: Option<&scenario::Reputation>) -> Value {
    json!({
        "indicator": indicator,
        "type": kind,
        "score": entry.map_or(0, |e| e.score),
        "malicious": entry.is_some_and(|e| e.malicious),
        "indicators": entry.map_or(&[][..], |e| e.indicators),
        "last_seen": entry.map(|e| e.last_seen),
        "source": "vigil-mock-ti",
    })
}
