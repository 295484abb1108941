//! The vigil webhook gateway: turns signed alerts from a SIEM, IDS or EDR into Runs.
//!
//! [`Gateway::router`] serves `POST /hooks/{namespace}/{playbook}`. The gateway keeps no state
//! that matters between requests: deduplication lives in the Run names it derives, so any
//! number of replicas give the same answers. See `docs/gateway.md` for the user's view.
//!
//! The pure parts ([`auth`], [`body`], [`mapping`], [`naming`], [`ratelimit`]) are tested
//! without a cluster; cluster access goes through [`backend::Backend`].

pub mod auth;
pub mod backend;
pub mod body;
mod hook;
pub mod mapping;
pub mod metrics;
pub mod naming;
pub mod ratelimit;
pub mod reject;

pub use backend::{Backend, BackendError, KubeBackend, MemoryBackend};
pub use hook::{DELIVERY_ID_HEADERS, delivery_id, remote_addr};
pub use reject::{Reason, Rejection};

use axum::{Router, routing::post};
use http::{HeaderName, Request};
use mapping::CompiledTrigger;
use metrics::Metrics;
use ratelimit::RateLimiter;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use vigil_api::playbook::WebhookTrigger;
use vigil_audit::AuditHook;

/// How the gateway bounds the work one request may cause.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The largest body accepted (413 above). Default 1 MiB.
    pub max_body_bytes: usize,
    /// How deeply the JSON body may nest (400 above). Default 64.
    pub max_depth: usize,
    /// Requests handled at once by this replica (429 above). Default 256.
    pub max_in_flight: usize,
    /// The longest any request takes before it is answered. Default 10s.
    pub request_timeout: Duration,
    /// The longest one Kubernetes API call may take (503 after). Default 5s.
    pub api_timeout: Duration,
    /// The namespaces whose Playbooks are served; `None` serves all.
    pub namespaces: Option<Vec<String>>,
    /// Take the Run's `remoteAddr` from the first `X-Forwarded-For` entry. Only behind a proxy
    /// that sets it. Default false.
    pub trust_forwarded_for: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_depth: 64,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(10),
            api_timeout: Duration::from_secs(5),
            namespaces: None,
            trust_forwarded_for: false,
        }
    }
}

/// The webhook gateway: a Playbook and Secret cache, a Run writer, metrics and the router.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// Everything a request handler needs.
pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    config: GatewayConfig,
    metrics: Metrics,
    limiter: RateLimiter,
    in_flight: Arc<Semaphore>,
    /// Compiled triggers by playbook, recompiled when the trigger changes.
    compiled: Mutex<HashMap<(String, String), CachedTrigger>>,
    /// Takes a `trigger.accepted` or `trigger.rejected` record per answered request.
    audit: OnceLock<Arc<dyn AuditHook>>,
}

type CachedTrigger = (WebhookTrigger, Result<Arc<CompiledTrigger>, Vec<String>>);

impl Gateway {
    /// Starts watching Playbooks and Secrets in the configured namespaces and registers the
    /// `vigil_webhook_*` metrics. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A configuration that cannot serve anything (an empty namespace list, a zero body cap).
    pub async fn new(
        client: kube::Client,
        config: GatewayConfig,
        registry: &mut prometheus_client::registry::Registry,
    ) -> anyhow::Result<Self> {
        check(&config)?;
        let backend = KubeBackend::start(client, config.namespaces.as_deref());
        Ok(Self::with_backend(Arc::new(backend), config, registry))
    }

    /// A gateway over any [`Backend`], e.g. [`MemoryBackend`] in tests.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: GatewayConfig,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let shared = Shared {
            backend,
            metrics: Metrics::register(registry),
            limiter: RateLimiter::new(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            compiled: Mutex::default(),
            audit: OnceLock::new(),
            config,
        };
        Self { shared: Arc::new(shared) }
    }

    /// Sends an audit record for every answered request to `hook` (the first hook set stays).
    pub fn with_audit(self, hook: Arc<dyn AuditHook>) -> Self {
        let _ = self.shared.audit.set(hook);
        self
    }

    /// `POST /hooks/{namespace}/{playbook}`, with request ids (`x-request-id`, kept when the
    /// sender sets one) and a tracing span per request.
    pub fn router(&self) -> Router {
        let route = post(hook::hook).fallback(hook::not_post);
        let x_request_id = HeaderName::from_static("x-request-id");
        let layers = ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok());
                tracing::info_span!("webhook", request_id = id.unwrap_or_default())
            }))
            .layer(PropagateRequestIdLayer::new(x_request_id));
        Router::new()
            .route("/hooks/{namespace}/{playbook}", route)
            .layer(layers)
            .with_state(self.shared.clone())
    }

    /// True once the Playbook and Secret caches are synced.
    pub fn ready(&self) -> bool {
        self.shared.backend.ready()
    }
}

fn check(config: &GatewayConfig) -> anyhow::Result<()> {
    if config.namespaces.as_ref().is_some_and(Vec::is_empty) {
        anyhow::bail!("the gateway's namespace list is empty; leave it unset to serve all");
    }
    if config.max_body_bytes == 0 {
        anyhow::bail!("the gateway's body cap is zero");
    }
    Ok(())
}

impl Shared {
    /// How long reading the body may take: what the request timeout leaves after one API call.
    fn body_deadline(&self) -> Duration {
        let (total, api) = (self.config.request_timeout, self.config.api_timeout);
        if total > api { total - api } else { total / 2 }
    }

    /// The compiled trigger of a playbook, compiled again only when the trigger changed.
    fn compiled(
        &self,
        namespace: &str,
        name: &str,
        trigger: &WebhookTrigger,
    ) -> Result<Arc<CompiledTrigger>, Vec<String>> {
        let key = (namespace.to_string(), name.to_string());
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, compiled)) = cache.get(&key)
            && seen == trigger
        {
            return compiled.clone();
        }
        let compiled = CompiledTrigger::compile(trigger).map(Arc::new);
        cache.insert(key, (trigger.clone(), compiled.clone()));
        compiled
    }
}
