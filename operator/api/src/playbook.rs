//! `Playbook`: a reusable DAG of steps, each run as a Kubernetes Job, plus how alerts trigger it.

use crate::{condition::Condition, duration::Duration};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A security playbook: typed inputs, triggers, and a DAG of steps that vigil runs as Jobs.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "Playbook",
    namespaced,
    status = "PlaybookStatus",
    shortname = "pb",
    category = "vigil",
    printcolumn = r#"{"name":"Steps","type":"integer","jsonPath":".status.steps"}"#,
    printcolumn = r#"{"name":"Webhook","type":"string","jsonPath":".status.webhookPath"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.steps.all(s, self.steps.exists_one(t, t.name == s.name)) && \
     (!has(self.finally) || self.finally.all(s, \
        self.finally.exists_one(t, t.name == s.name) && \
        !self.steps.exists(t, t.name == s.name)))"
).message("step names must be unique across steps and finally"))]
#[x_kube(validation = Rule::new(
    "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.steps.exists(t, t.name == d)))"
).message("dependsOn must name steps of this playbook"))]
pub struct PlaybookSpec {
    /// What the playbook is for, in one or two sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// The typed inputs a Run must provide. Validated when a Run is created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,

    /// How alerts start this playbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,

    /// Caps how many Runs of this playbook run at once; the rest wait, in creation order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,

    /// The steps, a DAG by `dependsOn`. Steps without dependencies start at once, in parallel.
    #[schemars(length(min = 1, max = 64))]
    pub steps: Vec<Step>,

    /// Steps that always run once the DAG has ended, whatever its outcome (audit, cleanup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub finally: Vec<Step>,

    /// How long finished Runs of this playbook are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,

    /// The ServiceAccount step pods run as, unless a step names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// The most a whole Run may take before it fails with reason `RunTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A typed input of a playbook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// The JSON type of the value.
    #[serde(rename = "type", default)]
    pub type_: InputType,
    /// Whether a Run must provide it.
    #[serde(default)]
    pub required: bool,
    /// The value used when a Run leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub default: Option<serde_json::Value>,
    /// Allowed values, for strings.
    #[serde(default, rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub enum_: Vec<String>,
    /// What the input means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The JSON type of an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

/// How alerts start a playbook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// An HTTP webhook served by the gateway at `/hooks/{namespace}/{playbook}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTrigger>,
}

/// An HTTP webhook trigger: how requests are authenticated, mapped to inputs, filtered and
/// deduplicated.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTrigger {
    /// Set to false to refuse every request (403) without deleting the trigger.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How requests prove where they come from. Required: write `none: {}` to accept unsigned
    /// requests on purpose.
    pub auth: WebhookAuth,
    /// CEL over `body`, `headers` and `query`; when false the alert is accepted (200) and no Run
    /// is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub filter: Option<String>,
    /// Input name to CEL expression over `body`, `headers` and `query`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Alerts with the same key inside the window map to the same Run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<Dedupe>,
    /// Requests per second this trigger accepts before answering 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One of the webhook authentication modes. Exactly one must be set.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.hmacSha256), has(self.timestampedHmac), has(self.bearer), has(self.none)]\
     .filter(x, x).size() == 1"
).message("set exactly one of hmacSha256, timestampedHmac, bearer or none"))]
pub struct WebhookAuth {
    /// GitHub style: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<HmacAuth>,
    /// Slack/Stripe style: HMAC-SHA256 over `<version>:<timestamp>:<body>`, with a tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamped_hmac: Option<TimestampedHmacAuth>,
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// Accept unsigned requests. Only for sources that cannot sign, behind a trusted network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none: Option<NoAuth>,
}

/// HMAC-SHA256 of the raw body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HmacAuth {
    /// The Secret key holding the shared secret. Several lines in the value are several valid
    /// secrets, for rotation.
    pub secret_ref: SecretKeyRef,
    /// The header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// HMAC-SHA256 over a version, a timestamp and the body, Slack v0 / Stripe style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimestampedHmacAuth {
    /// The Secret key holding the shared secret; one secret per line for rotation.
    pub secret_ref: SecretKeyRef,
    /// The header carrying `v0=<hex>` (several comma-separated signatures are accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    /// The header carrying the Unix timestamp in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
    /// How far the timestamp may be from now. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Duration>,
}

/// A static bearer token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerAuth {
    /// The Secret key holding the token; one token per line for rotation.
    pub secret_ref: SecretKeyRef,
}

/// Explicitly unauthenticated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoAuth {}

/// A key of a Secret in the playbook's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// The key inside the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Deduplication of alerts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dedupe {
    /// CEL over `body`, `headers` and `query` giving the key.
    #[schemars(length(min = 1, max = 4096))]
    pub key: String,
    /// The window; alerts with the same key in the same window share a Run.
    pub window: Duration,
}

/// Limits on concurrently running Runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// Runs of this playbook that may run at once; more wait in phase Queued.
    #[schemars(range(min = 1))]
    pub max: u32,
}

/// Retention of finished Runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Finished Runs older than this are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    /// At most this many finished Runs of the playbook are kept; the oldest go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One node of the playbook's DAG: a container run as a Job, or a human approval.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.approval) ? !has(self.image) && !has(self.script) && !has(self.command) \
     && !has(self.forEach) : has(self.image)"
).message("a step either runs an image or is an approval, not both"))]
#[x_kube(validation = Rule::new("!has(self.script) || !has(self.args)")
    .message("script and args are mutually exclusive: the script is the program"))]
#[x_kube(validation = Rule::new("!has(self.dependsOn) || !self.dependsOn.exists(d, d == self.name)")
    .message("a step cannot depend on itself"))]
pub struct Step {
    /// Unique within the playbook; a DNS label.
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// What the step does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The container image. Any language: vigil injects its `vigil-step` wrapper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Source code run by the image's interpreter (`command`, or a default picked from the
    /// image: python3, node, or /bin/sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub script: Option<String>,

    /// The program to run. With `script`, the interpreter the script is passed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,

    /// Arguments to `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// Steps that must end before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub depends_on: Option<Vec<String>>,

    /// CEL over `inputs` and `steps`; false marks the step Skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub when: Option<String>,

    /// When the step may run, given how its dependencies ended. `AllSucceeded` (default): every
    /// dependency succeeded (or failed with `onError: continue`); otherwise the step is Skipped.
    /// `AllDone`: once every dependency ended, whatever the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,

    /// The step's inputs: name to CEL over `inputs`, `steps` (and `item` inside forEach).
    /// Given to the program as one JSON object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,

    /// Environment variables for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Environment from ConfigMaps or Secrets (API keys of the tools the step calls).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// How long one attempt may take. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,

    /// Retries of failed attempts, with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,

    /// What a failure does to the Run: `fail` (default) fails the Run; `continue` lets dependent
    /// steps run as if it had ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,

    /// CEL giving a list: the step runs once per item, in parallel, with `item` and `index` bound.
    /// Outputs are collected in item order as `steps.<name>.outputs.items`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub for_each: Option<String>,

    /// Most items of a forEach running at once. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<u32>,

    /// Makes this step a human approval gate instead of a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,

    /// Compute resources for the step's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The ServiceAccount of this step's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// See [`Step::run_policy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPolicy {
    #[default]
    AllSucceeded,
    AllDone,
}

/// See [`Step::on_error`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Fail,
    Continue,
}

/// Retry policy of a step. Retries are made by vigil, one Job per attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first attempt.
    #[schemars(range(max = 20))]
    pub limit: u32,
    /// The wait between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Exponential backoff: `initial * factor^(attempt-1)`, capped at `max`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The first wait. Default 1s.
    #[serde(default = "Backoff::default_initial")]
    pub initial: Duration,
    /// The multiplier per attempt. Default 2.
    #[serde(default = "Backoff::default_factor")]
    #[schemars(range(min = 1))]
    pub factor: u32,
    /// The longest wait. Default 5m.
    #[serde(default = "Backoff::default_max")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Self::default_initial(), factor: 2, max: Self::default_max() }
    }
}

impl Backoff {
    fn default_initial() -> Duration {
        Duration::from_secs(1)
    }

    fn default_factor() -> u32 {
        2
    }

    fn default_max() -> Duration {
        Duration::from_secs(300)
    }

    /// The wait before attempt `next_attempt` (2 for the first retry).
    pub fn delay(&self, next_attempt: u32) -> std::time::Duration {
        let exp = next_attempt.saturating_sub(2).min(30);
        let factor = u64::from(self.factor).saturating_pow(exp);
        let ms = (self.initial.0.as_millis() as u64).saturating_mul(factor);
        std::time::Duration::from_millis(ms).min(self.max.0)
    }
}

/// A human approval gate: pauses its branch until decided or timed out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGate {
    /// Shown to approvers; `{{ expr }}` parts are CEL over `inputs` and `steps`.
    #[schemars(length(max = 4096))]
    pub message: String,
    /// Who may decide.
    pub approvers: Approvers,
    /// How many distinct approvals are needed. Default 1. One denial denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub quorum: Option<u32>,
    /// How long to wait. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The decision applied when the timeout passes.
    #[serde(default)]
    pub on_timeout: TimeoutDecision,
    /// Refuse a decision by the user who triggered the Run.
    #[serde(default)]
    pub forbid_self_approval: bool,
    /// Context shown with the request: label to CEL over `inputs` and `steps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// Where to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Users and groups allowed to decide an approval.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.users) && size(self.users) > 0) || (has(self.groups) && size(self.groups) > 0)"
).message("name at least one approver user or group"))]
pub struct Approvers {
    /// Kubernetes user names (as authenticated by the API server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Kubernetes groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The decision taken when an approval times out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutDecision {
    Approve,
    #[default]
    Deny,
}

/// Notification channels for an approval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// Post an interactive message with approve and deny buttons to Slack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackNotify>,
}

/// Slack notification of an approval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackNotify {
    /// The channel to post in.
    pub channel: String,
    /// The bot token.
    pub secret_ref: SecretKeyRef,
}

/// What the operator reports about a Playbook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookStatus {
    /// `Ready` is True when the playbook compiled (DAG and CEL) and can run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of steps, finally included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// The gateway path of the webhook trigger, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
}

fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

impl PlaybookSpec {
    /// Every step, DAG first, then finally.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().chain(self.finally.iter())
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.all_steps().find(|s| s.name == name)
    }
}

impl Step {
    pub fn depends_on(&self) -> &[String] {
        self.depends_on.as_deref().unwrap_or_default()
    }

    pub fn on_error(&self) -> OnError {
        self.on_error.unwrap_or_default()
    }

    pub fn run_policy(&self) -> RunPolicy {
        self.run_policy.unwrap_or_default()
    }

    /// Attempts allowed in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        1 + self.retries.as_ref().map_or(0, |r| r.limit)
    }

    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(std::time::Duration::from_secs(600), |d| d.0)
    }
}
