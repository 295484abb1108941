//! The Run reconciler: observes a Run's Jobs, pods and Approvals, asks the engine what to do
//! next, carries it out, and writes status with server-side apply.

pub mod actions;
pub mod approval;
pub mod jobs;
pub mod observe;
pub mod playbook;
pub mod queue;
pub mod run;

use crate::metrics::Metrics;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::runtime::{events::Recorder, reflector::Store};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::Mutex;
use vigil_api::{Approval, Playbook, Run};

/// The field manager of every status vigil writes.
pub const MANAGER: &str = "vigil-operator";

/// Settings of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The image that carries `vigil-step` (the operator's own).
    pub step_image: String,
    /// Where step pods upload large outputs.
    pub outputs_url: String,
    /// Finished Runs older than this are deleted, unless their playbook says otherwise.
    pub run_ttl: Duration,
    /// The ServiceAccount step pods run as when the playbook names none.
    pub step_service_account: Option<String>,
}

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: kube::Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub runs: Store<Run>,
    pub playbooks: Store<Playbook>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub approvals: Store<Approval>,
    /// Runs admitted past their playbook's concurrency cap whose status may not be in the store
    /// yet, by (namespace, playbook).
    pub admitted: Mutex<HashMap<(String, String), Vec<String>>>,
    /// The last status written per Run uid, with the resourceVersion it produced, so a stale
    /// store read never rolls status back.
    pub written: Mutex<HashMap<String, (String, vigil_api::RunStatus)>>,
    /// Large outputs already loaded, by ConfigMap name + digest.
    pub outputs_cache: Mutex<HashMap<String, serde_json::Value>>,
    /// Where audit records go (`--audit-url`); `None` when auditing is off.
    pub audit: Option<vigil_audit::Sink>,
    /// Runs to reconcile now (queued Runs behind one that finished).
    pub wake: tokio::sync::mpsc::Sender<kube::runtime::reflector::ObjectRef<Run>>,
}

/// Errors of a reconcile. Each one a user can act on also becomes a Warning event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing: {0}")]
    Serde(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The event reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "ApiError",
            Self::Serde(_) => "SerializationError",
            Self::Invalid(_) => "Invalid",
        }
    }
}

/// Converts the API's timestamps (jiff) to chrono, which the vigil types use.
pub fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Converts chrono to the API's timestamps.
pub fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).unwrap_or_default()
}
