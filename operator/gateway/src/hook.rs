//! `POST /hooks/{namespace}/{playbook}`: one alert in, at most one Run out.
//!
//! The checks run cheapest first and the body is authenticated before it is parsed: path,
//! readiness, Playbook and trigger, rate limit, content type and declared length, body read
//! (size and time capped), signature, UTF-8 and depth and JSON, then filter, mapping, inputs
//! and dedupe key, and last the Run.

use crate::{
    Shared,
    auth::{self, Method, Secrets},
    body,
    mapping::{self, Alert, CompiledTrigger, Mapped},
    naming,
    reject::{Reason, Rejection},
};
use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, Request, State, rejection::PathRejection},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use vigil_api::{
    Playbook, Run, RunSpec, labels,
    playbook::WebhookTrigger,
    run::{PlaybookRef, TriggerInfo},
};

use crate::backend::{BackendError, Created};

/// Headers senders put their delivery id in, most specific first. `x-request-id` comes last:
/// when the sender sets none, it is the gateway's own request id.
pub const DELIVERY_ID_HEADERS: [&str; 7] = [
    "x-github-delivery",
    "x-delivery-id",
    "x-slack-request-id",
    "x-gitlab-event-uuid",
    "x-amz-sns-message-id",
    "x-event-id",
    "x-request-id",
];

/// `Retry-After` for API server trouble.
const API_RETRY: Duration = Duration::from_secs(5);

/// What one request ended with, for metrics, the log line and the audit record.
#[derive(Default)]
struct Trace {
    /// Namespace and name of the Playbook, once it is known to exist.
    known: Option<(String, String)>,
    /// Namespace and name from the path, once they are valid names.
    target: Option<(String, String)>,
    run: Option<String>,
    /// What the created (or found) Run was told about where the alert came from.
    trigger: vigil_audit::TriggerRecord,
    traceparent: Option<String>,
    /// `duplicate` or `filtered` when the answer created no new Run.
    outcome: Option<&'static str>,
}

pub(crate) async fn hook(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let mut trace = Trace::default();
    let trust = shared.config.trust_forwarded_for;
    trace.trigger.remote_addr = remote_addr(request.extensions(), request.headers(), trust);
    trace.trigger.delivery_id = delivery_id(request.headers());

    let response = match shared.in_flight.clone().try_acquire_owned() {
        Err(_) => Rejection::new(Reason::Overloaded, "too many requests in flight")
            .retry_after(Duration::from_secs(1))
            .into_response(),
        Ok(_permit) => {
            let work = process(&shared, &mut trace, path, request);
            match tokio::time::timeout(shared.config.request_timeout, work).await {
                Ok(Ok(response)) => response,
                Ok(Err(rejection)) => rejection.into_response(),
                Err(_) => Rejection::new(Reason::Timeout, "the request took too long")
                    .retry_after(Duration::from_secs(1))
                    .into_response(),
            }
        }
    };

    record(&shared, &trace, &response, started);
    response
}

/// Answers any method but POST on the hook route.
pub(crate) async fn not_post(State(shared): State<Arc<Shared>>) -> Response {
    let started = Instant::now();
    let mut response =
        Rejection::new(Reason::MethodNotAllowed, "send alerts with POST").into_response();
    response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
    record(&shared, &Trace::default(), &response, started);
    response
}

fn record(shared: &Shared, trace: &Trace, response: &Response, started: Instant) {
    let status = response.status().as_u16();
    let known = trace.known.as_ref().map(|(ns, pb)| (ns.as_str(), pb.as_str()));
    shared.metrics.answered(known, status, started.elapsed().as_secs_f64());
    let (namespace, playbook) = known.unwrap_or_default();
    match response.extensions().get::<Reason>() {
        Some(reason) => {
            shared.metrics.rejected(*reason);
            tracing::info!(namespace, playbook, status, reason = reason.as_str(), "Alert refused");
        }
        None => {
            let run = trace.run.as_deref().unwrap_or_default();
            tracing::info!(namespace, playbook, status, run, "Alert accepted");
        }
    }
    if let Some(hook) = shared.audit.get() {
        hook.emit(audit_record(trace, response));
    }
}

/// The `trigger.accepted` or `trigger.rejected` record of an answered request: provenance and
/// outcome, never the body.
fn audit_record(trace: &Trace, response: &Response) -> vigil_audit::Record {
    use vigil_audit::{Kind, Record};
    let (namespace, playbook) = trace.known.clone().or(trace.target.clone()).unwrap_or_default();
    let status = response.status().as_u16();
    let mut record = match response.extensions().get::<Reason>() {
        Some(reason) => {
            let mut r = Record::new(Kind::TriggerRejected, namespace, format!("alert refused ({status})"));
            r.reason = Some(reason.as_str().to_string());
            r
        }
        None => {
            let run = trace.run.as_deref().unwrap_or_default();
            let message = match trace.outcome {
                Some("filtered") => "alert filtered out; no run".to_string(),
                Some("duplicate") => format!("alert is a duplicate of run {run}"),
                _ => format!("alert accepted; run {run} created"),
            };
            let mut r = Record::new(Kind::TriggerAccepted, namespace, message);
            r.run = trace.run.clone().filter(|_| trace.outcome != Some("filtered"));
            r.reason = trace.outcome.map(str::to_string);
            r
        }
    };
    record.playbook = Some(playbook).filter(|p| !p.is_empty());
    record.trigger = Some(trace.trigger.clone());
    record.trace_id = trace.traceparent.as_deref().and_then(vigil_audit::trace_id);
    record
}

async fn process(
    shared: &Shared,
    trace: &mut Trace,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Result<Response, Rejection> {
    let received_at = Utc::now();
    let Ok(Path((namespace, name))) = path else {
        return Err(Rejection::new(Reason::NotFound, "the path names no playbook"));
    };
    if !is_dns_name(&namespace) || !is_dns_name(&name) {
        return Err(not_found(&namespace, &name));
    }
    trace.target = Some((namespace.clone(), name.clone()));
    trace.trigger.source = Some(format!("webhook/{namespace}/{name}"));
    if !shared.backend.ready() {
        let why = "the gateway is still loading playbooks";
        return Err(Rejection::new(Reason::NotReady, why).retry_after(Duration::from_secs(1)));
    }

    let playbook = api_call(shared, shared.backend.playbook(&namespace, &name))
        .await?
        .ok_or_else(|| not_found(&namespace, &name))?;
    trace.known = Some((namespace.clone(), name.clone()));
    let trigger = webhook_trigger(&playbook)?;
    if let Some(rps) = trigger.rate_limit {
        let key = format!("{namespace}/{name}");
        shared.limiter.acquire(&key, rps, Instant::now()).map_err(|wait| {
            Rejection::new(Reason::RateLimited, format!("more than {rps} alerts per second"))
                .retry_after(wait)
        })?;
    }

    let (parts, raw) = request.into_parts();
    body::check_content_type(&parts.headers)?;
    body::check_declared_length(&parts.headers, shared.config.max_body_bytes)?;
    let bytes = read_body(raw, shared.config.max_body_bytes, shared.body_deadline()).await?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    trace.trigger.body_digest = Some(digest.clone());

    authenticate(shared, &namespace, trigger, &parts.headers, &bytes).await?;

    let alert = Alert {
        body: body::parse(&bytes, shared.config.max_depth)?,
        headers: mapping::headers_value(&parts.headers),
        query: mapping::query_value(parts.uri.query()),
    };
    let compiled = shared.compiled(&namespace, &name, trigger).map_err(|issues| {
        Rejection::new(
            Reason::InvalidTrigger,
            format!("the playbook's webhook trigger is invalid: {}", issues.join("; ")),
        )
    })?;
    let declared = playbook.spec.inputs.clone();
    let mapped = evaluate(compiled, declared, alert).await?;
    let Mapped::Accepted { inputs, dedupe } = mapped else {
        trace.outcome = Some("filtered");
        return Ok((StatusCode::OK, Json(json!({ "filtered": true }))).into_response());
    };

    let provenance = TriggerInfo {
        kind: "webhook".into(),
        source: Some(format!("webhook/{namespace}/{name}")),
        remote_addr: remote_addr(
            &parts.extensions,
            &parts.headers,
            shared.config.trust_forwarded_for,
        ),
        delivery_id: delivery_id(&parts.headers),
        received_at: Some(received_at),
        body_digest: Some(digest),
        user: None,
    };
    let traceparent = naming::traceparent(header_text(&parts.headers, "traceparent"));
    trace.traceparent = Some(traceparent.clone());
    let draft =
        RunDraft { namespace: &namespace, playbook: &name, inputs, provenance, traceparent };

    match dedupe {
        Some(d) => {
            let bucket = naming::window_bucket(received_at.timestamp_millis(), d.window);
            let run_name = naming::dedupe_run_name(&namespace, &name, &d.key, bucket);
            let run = draft.build(&run_name, Some(naming::key_digest(&d.key)));
            trace.run = Some(run_name.clone());
            match api_call(shared, shared.backend.create_run(&run)).await? {
                Created::New => Ok(created(shared, &namespace, &name, &run_name)),
                Created::AlreadyExists => {
                    trace.outcome = Some("duplicate");
                    shared.metrics.duplicate(&namespace, &name);
                    let body =
                        json!({ "run": run_name, "namespace": namespace, "duplicate": true });
                    Ok((StatusCode::OK, Json(body)).into_response())
                }
            }
        }
        None => {
            // A clash of 40 random bits is next to impossible; one retry covers it.
            for _ in 0..2 {
                let run_name = naming::unique_run_name(&name);
                let run = draft.build(&run_name, None);
                trace.run = Some(run_name.clone());
                if api_call(shared, shared.backend.create_run(&run)).await? == Created::New {
                    return Ok(created(shared, &namespace, &name, &run_name));
                }
            }
            Err(Rejection::new(Reason::Unavailable, "could not find a free Run name")
                .retry_after(Duration::from_secs(1)))
        }
    }
}

fn created(shared: &Shared, namespace: &str, playbook: &str, run: &str) -> Response {
    shared.metrics.created(namespace, playbook);
    let body = json!({ "run": run, "namespace": namespace });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn not_found(namespace: &str, name: &str) -> Rejection {
    Rejection::new(Reason::NotFound, format!("no playbook {name} in namespace {namespace}"))
}

/// The enabled webhook trigger of the playbook: 404 when it has none, 403 when disabled.
fn webhook_trigger(playbook: &Playbook) -> Result<&WebhookTrigger, Rejection> {
    let trigger = playbook.spec.triggers.as_ref().and_then(|t| t.webhook.as_ref());
    match trigger {
        None => Err(Rejection::new(Reason::NoWebhook, "the playbook has no webhook trigger")),
        Some(t) if !t.enabled => {
            Err(Rejection::new(Reason::Disabled, "the playbook's webhook trigger is disabled"))
        }
        Some(t) => Ok(t),
    }
}

/// Runs a backend call under the API timeout; trouble becomes 503 (or 422 for an invalid Run).
async fn api_call<T>(
    shared: &Shared,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, Rejection> {
    let limit = shared.config.api_timeout;
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(BackendError::Invalid(message))) => {
            Err(Rejection::new(Reason::RunRejected, message))
        }
        Ok(Err(BackendError::Unavailable(message))) => {
            tracing::warn!(error = %message, "API server call failed");
            Err(Rejection::new(Reason::Unavailable, "the Kubernetes API server failed")
                .retry_after(API_RETRY))
        }
        Err(_) => Err(Rejection::new(
            Reason::Unavailable,
            format!("the Kubernetes API server did not answer within {limit:?}"),
        )
        .retry_after(API_RETRY)),
    }
}

/// Reads the body, refusing it once it exceeds `max` bytes (413) or `deadline` passes (408).
async fn read_body(mut raw: Body, max: usize, deadline: Duration) -> Result<Bytes, Rejection> {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(frame) = raw.frame().await {
            let frame = frame
                .map_err(|_| Rejection::new(Reason::MalformedJson, "the body could not be read"))?;
            if let Ok(data) = frame.into_data() {
                if buf.len().saturating_add(data.len()) > max {
                    return Err(body::too_large(max));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(deadline, read).await.unwrap_or_else(|_| {
        Err(Rejection::new(
            Reason::BodyTimeout,
            format!("the body did not arrive within {deadline:?}"),
        ))
    })
}

async fn authenticate(
    shared: &Shared,
    namespace: &str,
    trigger: &WebhookTrigger,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let method = Method::of(&trigger.auth);
    let secrets = match method.secret_ref() {
        None => None,
        Some(r) => api_call(shared, shared.backend.secret(namespace, &r.name, &r.key))
            .await?
            .map(|raw| Secrets::parse(&raw)),
    };
    auth::verify(method, secrets.as_ref(), headers, body, Utc::now().timestamp()).map_err(|e| {
        if matches!(e, auth::AuthError::NoSecret | auth::AuthError::Unconfigured) {
            let secret = method.secret_ref().map(|r| r.name.as_str()).unwrap_or_default();
            tracing::warn!(namespace, secret, error = %e, "Webhook secret unusable");
        }
        Rejection::new(Reason::Unauthorized, e.to_string())
    })
}

/// Evaluates the trigger off the async threads: CEL over a large body is CPU work.
async fn evaluate(
    compiled: Arc<CompiledTrigger>,
    declared: BTreeMap<String, vigil_api::playbook::InputSpec>,
    alert: Alert,
) -> Result<Mapped, Rejection> {
    tokio::task::spawn_blocking(move || compiled.map(&declared, &alert)).await.unwrap_or_else(
        |_| Err(Rejection::new(Reason::FilterFailed, "the trigger could not be evaluated")),
    )
}

/// The parts of a Run shared by every name it may be created under.
struct RunDraft<'a> {
    namespace: &'a str,
    playbook: &'a str,
    inputs: serde_json::Value,
    provenance: TriggerInfo,
    traceparent: String,
}

impl RunDraft<'_> {
    fn build(&self, name: &str, dedupe_digest: Option<String>) -> Run {
        let spec = RunSpec {
            playbook_ref: PlaybookRef { name: self.playbook.to_string() },
            inputs: Some(self.inputs.clone()),
            trigger: Some(self.provenance.clone()),
            cancel: None,
        };
        let mut run = Run::new(name, spec);
        run.metadata.namespace = Some(self.namespace.to_string());
        let mut labels = BTreeMap::from([(
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        )]);
        // Label values are capped at 63 characters; longer playbook names go without.
        if self.playbook.len() <= 63 {
            labels.insert(labels::PLAYBOOK.to_string(), self.playbook.to_string());
        }
        let mut annotations =
            BTreeMap::from([(labels::TRACEPARENT.to_string(), self.traceparent.clone())]);
        if let Some(digest) = dedupe_digest {
            annotations.insert(labels::DEDUPE_KEY.to_string(), digest);
        }
        run.metadata.labels = Some(labels);
        run.metadata.annotations = Some(annotations);
        run
    }
}

/// A Kubernetes object name: a DNS subdomain.
fn is_dns_name(s: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(ok_char)
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The sender's delivery id: the first of [`DELIVERY_ID_HEADERS`] that is short printable text.
pub fn delivery_id(headers: &HeaderMap) -> Option<String> {
    DELIVERY_ID_HEADERS
        .iter()
        .filter_map(|name| header_text(headers, name))
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

/// The peer address from the connection; `X-Forwarded-For`'s first entry only when trusted.
pub fn remote_addr(
    extensions: &http::Extensions,
    headers: &HeaderMap,
    trust_forwarded_for: bool,
) -> Option<String> {
    if trust_forwarded_for {
        let forwarded = header_text(headers, "x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok());
        if let Some(ip) = forwarded {
            return Some(ip.to_string());
        }
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}
