//! The JSON and SSE handlers under `/ui/api`, and the pure shaping they share with the tests.

use crate::{AppState, auth::{Access, User}, error::ApiError};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, sse::{Event as SseEvent, KeepAlive, Sse}},
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use vigil_api::{Approval, Run, labels};

/// The most log bytes returned per pod.
const LOG_LIMIT_BYTES: i64 = 256 * 1024;

pub async fn whoami(user: User) -> Json<User> {
    Json(user)
}

/// The API's timestamps as chrono's.
fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

// === runs ===

#[derive(Debug, Default, Deserialize)]
pub struct RunFilter {
    pub namespace: Option<String>,
    pub playbook: Option<String>,
    pub phase: Option<String>,
    pub severity: Option<String>,
    /// Only Runs created at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

/// One row of the runs list.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub namespace: String,
    pub name: String,
    pub playbook: String,
    pub phase: String,
    pub progress: Option<String>,
    pub severity: Option<String>,
    pub reason: Option<String>,
    pub trigger: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `status.steps.score.outputs.severity`, when the playbook has a scoring step that set it.
pub fn severity(run: &Run) -> Option<String> {
    let outputs = run.status.as_ref()?.steps.get("score")?.outputs.as_ref()?;
    outputs.get("severity")?.as_str().map(str::to_owned)
}

pub fn summarize(run: &Run) -> RunSummary {
    let status = run.status.clone().unwrap_or_default();
    RunSummary {
        namespace: run.namespace().unwrap_or_default(),
        name: run.name_any(),
        playbook: run.spec.playbook_ref.name.clone(),
        phase: status.phase.as_str().into(),
        progress: status.progress,
        severity: severity(run),
        reason: status.reason,
        trigger: run.spec.trigger.as_ref().map(|t| t.source.clone().unwrap_or_else(|| t.kind.clone())),
        created_at: run.metadata.creation_timestamp.as_ref().map(|t| to_chrono(t.0)),
        started_at: status.started_at,
        finished_at: status.finished_at,
    }
}

/// The filtered rows, newest first, and the count per phase of the rows the other filters keep.
pub fn filter_runs(runs: &[Run], filter: &RunFilter) -> (Vec<RunSummary>, BTreeMap<String, usize>) {
    let mut counts = BTreeMap::new();
    let mut rows: Vec<RunSummary> = runs
        .iter()
        .map(summarize)
        .filter(|r| filter.playbook.as_deref().is_none_or(|p| p.is_empty() || r.playbook == p))
        .filter(|r| {
            filter.severity.as_deref().is_none_or(|s| s.is_empty() || r.severity.as_deref() == Some(s))
        })
        .filter(|r| filter.since.is_none_or(|since| r.created_at.is_some_and(|c| c >= since)))
        .inspect(|r| *counts.entry(r.phase.clone()).or_insert(0) += 1)
        .filter(|r| filter.phase.as_deref().is_none_or(|p| p.is_empty() || r.phase == p))
        .collect();
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.name.cmp(&b.name)));
    (rows, counts)
}

pub async fn list_runs(
    State(state): State<AppState>,
    user: User,
    Query(filter): Query<RunFilter>,
) -> Result<Json<Value>, ApiError> {
    let ns = filter.namespace.clone().or_else(|| state.namespace.clone()).filter(|n| !n.is_empty());
    state.require(&user, &[Access::vigil("list", "runs", ns.as_deref())]).await?;

    let api: Api<Run> = match &ns {
        Some(ns) => Api::namespaced(state.client.clone(), ns),
        None => Api::all(state.client.clone()),
    };
    let runs = api.list(&ListParams::default()).await?.items;
    let (rows, counts) = filter_runs(&runs, &filter);
    let playbooks: std::collections::BTreeSet<_> = runs.iter().map(|r| r.spec.playbook_ref.name.clone()).collect();
    Ok(Json(json!({ "runs": rows, "counts": counts, "playbooks": playbooks })))
}

/// A Run as the UI shows it: without managed fields.
fn for_ui(mut run: Run) -> Run {
    run.metadata.managed_fields = None;
    run
}

pub async fn get_run(
    State(state): State<AppState>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Run>, ApiError> {
    state.require(&user, &[Access::vigil("get", "runs", Some(&ns)).named(&name)]).await?;
    let run = Api::<Run>::namespaced(state.client.clone(), &ns).get(&name).await?;
    Ok(Json(for_ui(run)))
}

/// Server-Sent Events: `run` with the whole Run on every change, `deleted` when it goes away.
pub async fn watch_run(
    State(state): State<AppState>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    state
        .require(&user, &[
            Access::vigil("get", "runs", Some(&ns)).named(&name),
            Access::vigil("watch", "runs", Some(&ns)).named(&name),
        ])
        .await?;

    let api = Api::<Run>::namespaced(state.client.clone(), &ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff().filter_map(|event| async move {
        let sse = match event {
            Ok(watcher::Event::Apply(run) | watcher::Event::InitApply(run)) => {
                SseEvent::default().event("run").json_data(for_ui(run)).ok()?
            }
            Ok(watcher::Event::Delete(run)) => SseEvent::default().event("deleted").data(run.name_any()),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => return None,
            Err(error) => {
                tracing::debug!(%error, "Run watch interrupted");
                SseEvent::default().event("interrupted").data(error.to_string())
            }
        };
        Some(Ok(sse))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// === audit timeline ===

/// One entry of the audit timeline.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub time: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub source: String,
    pub count: i32,
}

/// The Events of a Run, oldest first.
pub fn timeline(events: Vec<Event>) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = events
        .into_iter()
        .map(|e| TimelineEntry {
            time: e
                .last_timestamp
                .map(|t| t.0)
                .or(e.event_time.map(|t| t.0))
                .or(e.first_timestamp.map(|t| t.0))
                .or(e.metadata.creation_timestamp.map(|t| t.0))
                .map(to_chrono),
            type_: e.type_.unwrap_or_else(|| "Normal".into()),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            source: e
                .reporting_component
                .filter(|c| !c.is_empty())
                .or(e.source.and_then(|s| s.component))
                .unwrap_or_default(),
            count: e.count.unwrap_or(1).max(1),
        })
        .collect();
    entries.sort_by(|a, b| a.time.cmp(&b.time));
    entries
}

pub async fn run_events(
    State(state): State<AppState>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Vec<TimelineEntry>>, ApiError> {
    state.require(&user, &[Access::core("list", "events", &ns)]).await?;
    let fields = format!("involvedObject.kind=Run,involvedObject.name={name}");
    let events = Api::<Event>::namespaced(state.client.clone(), &ns).list(&ListParams::default().fields(&fields)).await?;
    Ok(Json(timeline(events.items)))
}

// === logs ===

pub async fn step_logs(
    State(state): State<AppState>,
    user: User,
    Path((ns, run, step)): Path<(String, String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    state.require(&user, &[Access::core("list", "pods", &ns), Access::core("get", "pods", &ns).sub("log")]).await?;

    let pods = Api::<Pod>::namespaced(state.client.clone(), &ns);
    let selector = format!("{}={run},{}={step}", labels::RUN, labels::STEP);
    let mut found = pods.list(&ListParams::default().labels(&selector)).await?.items;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("no pods of step {step} of run {run} (yet, or any more)")));
    }
    found.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));

    let mut text = String::new();
    for pod in found {
        let name = pod.name_any();
        let params = LogParams { container: Some("step".into()), limit_bytes: Some(LOG_LIMIT_BYTES), ..Default::default() };
        text.push_str(&format!("==> pod {name} <==\n"));
        match pods.logs(&name, &params).await {
            Ok(log) => text.push_str(&log),
            Err(kube::Error::Api(s)) => text.push_str(&format!("(no log: {})\n", s.message)),
            Err(e) => return Err(e.into()),
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

// === approvals ===

#[derive(Debug, Default, Deserialize)]
pub struct NamespaceQuery {
    pub namespace: Option<String>,
}

/// One card of the approvals inbox.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    pub namespace: String,
    pub name: String,
    pub run: String,
    pub step: String,
    pub message: String,
    pub context: BTreeMap<String, String>,
    pub approvers: Value,
    pub quorum: u32,
    pub decisions: Value,
    pub pending: bool,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Pending first (oldest first: they wait longest), then decided (newest first).
pub fn inbox(approvals: &[Approval]) -> Vec<ApprovalView> {
    let mut views: Vec<ApprovalView> = approvals
        .iter()
        .map(|a| {
            let status = a.status.clone().unwrap_or_default();
            ApprovalView {
                namespace: a.namespace().unwrap_or_default(),
                name: a.name_any(),
                run: a.spec.run_ref.name.clone(),
                step: a.spec.step.clone(),
                message: a.spec.message.clone(),
                context: a.spec.context.clone(),
                approvers: serde_json::to_value(&a.spec.approvers).unwrap_or_default(),
                quorum: a.spec.quorum,
                decisions: serde_json::to_value(&a.spec.decisions).unwrap_or_default(),
                pending: status.decision.is_none(),
                decision: status.decision.map(|d| d.as_str().into()),
                decided_by: status.decided_by,
                decided_at: status.decided_at,
                reason: status.reason,
                expires_at: status.expires_at,
                created_at: a.metadata.creation_timestamp.as_ref().map(|t| to_chrono(t.0)),
            }
        })
        .collect();
    views.sort_by(|a, b| {
        b.pending.cmp(&a.pending).then_with(|| {
            if a.pending { a.created_at.cmp(&b.created_at) } else { b.created_at.cmp(&a.created_at) }
        })
    });
    views
}

pub async fn list_approvals(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let ns = q.namespace.or_else(|| state.namespace.clone()).filter(|n| !n.is_empty());
    state.require(&user, &[Access::vigil("list", "approvals", ns.as_deref())]).await?;
    let api: Api<Approval> = match &ns {
        Some(ns) => Api::namespaced(state.client.clone(), ns),
        None => Api::all(state.client.clone()),
    };
    Ok(Json(inbox(&api.list(&ListParams::default()).await?.items)))
}

#[derive(Debug, Deserialize)]
pub struct DecisionRequest {
    pub decision: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The JSON patch appending one decision. `by` carries the reviewed user for clusters without
/// the admission webhook; the webhook overwrites it from the request's own user anyway.
pub fn decision_patch(approval: &Approval, user: &User, request: &DecisionRequest) -> Result<Value, ApiError> {
    let decision = match request.decision.as_str() {
        "approved" | "approve" => "approved",
        "denied" | "deny" => "denied",
        other => return Err(ApiError::BadRequest(format!("decision must be approved or denied, not {other:?}"))),
    };
    let reason = request.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::BadRequest("the reason is longer than 1024 bytes".into()));
    }
    let mut entry = json!({"decision": decision, "by": user.username, "via": "ui"});
    if let Some(reason) = reason {
        entry["reason"] = json!(reason);
    }

    let patch = if approval.spec.decisions.is_empty() {
        // `add` on an existing member replaces it: test the version so a concurrent first
        // decision is never overwritten.
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": approval.resource_version()},
            {"op": "add", "path": "/spec/decisions", "value": [entry]},
        ])
    } else {
        json!([{"op": "add", "path": "/spec/decisions/-", "value": entry}])
    };
    Ok(patch)
}

pub async fn decide(
    State(state): State<AppState>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    Json(request): Json<DecisionRequest>,
) -> Result<Json<Value>, ApiError> {
    state
        .require(&user, &[
            Access::vigil("update", "approvals", Some(&ns)).named(&name),
            Access::vigil("patch", "approvals", Some(&ns)).named(&name),
        ])
        .await?;

    let approval = Api::<Approval>::namespaced(state.client.clone(), &ns).get(&name).await?;
    if approval.status.as_ref().is_some_and(|s| s.decision.is_some()) {
        return Err(ApiError::Refused { code: 409, message: format!("approval {name} is already decided") });
    }
    let patch = decision_patch(&approval, &user, &request)?;

    let url = format!("/apis/vigil.dev/v1alpha1/namespaces/{ns}/approvals/{name}?fieldManager=vigil-dashboard");
    let body = serde_json::to_vec(&patch).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let req = http::Request::patch(url)
        .header(header::CONTENT_TYPE, "application/json-patch+json")
        .body(body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let updated: Approval = state.client_as(&user)?.request(req).await.map_err(|e| match e {
        kube::Error::Api(s) => ApiError::Refused { code: s.code, message: s.message },
        e => ApiError::Kube(e),
    })?;

    tracing::info!(user = %user.username, %ns, approval = %name, decision = %request.decision, "Decision from the dashboard");
    Ok(Json(json!({"approval": name, "decisions": updated.spec.decisions})))
}
