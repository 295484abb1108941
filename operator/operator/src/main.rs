//! `vigil-operator`: the Run, Approval and Playbook reconcilers (leader-elected), the webhook
//! gateway and the HTTP endpoints, each of which can be switched on or off.

mod controller;
mod leader;
mod metrics;
mod outputs;

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::{get, post}};
use clap::Parser;
use futures::{StreamExt, future::ready};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use prometheus_client::registry::Registry;
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::{Mutex, watch};
use vigil_api::{Approval, Playbook, Run, labels};

#[derive(Parser, Debug, Clone)]
#[command(name = "vigil-operator", version, about = "vigil: security playbooks as Kubernetes Jobs")]
struct Args {
    /// Address of the HTTP server (gateway, /healthz, /readyz, /metrics).
    #[arg(long, env = "VIGIL_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run the reconcilers (under leader election).
    #[arg(long, env = "VIGIL_RECONCILER", default_value_t = true, action = clap::ArgAction::Set)]
    reconciler: bool,
    /// Serve the webhook gateway.
    #[arg(long, env = "VIGIL_GATEWAY", default_value_t = true, action = clap::ArgAction::Set)]
    gateway: bool,
    /// Serve the investigation dashboard at /ui (see docs/dashboard.md).
    #[arg(long, env = "VIGIL_DASHBOARD", default_value_t = true, action = clap::ArgAction::Set)]
    dashboard: bool,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "VIGIL_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// The image that carries vigil-step, injected into every step pod.
    #[arg(long, env = "VIGIL_STEP_IMAGE", default_value = "vigil-operator:dev")]
    step_image: String,
    /// Where step pods upload large outputs (this server's /internal/v1/outputs).
    #[arg(long, env = "VIGIL_OUTPUTS_URL", default_value = "http://127.0.0.1:8080/internal/v1/outputs")]
    outputs_url: String,
    /// ServiceAccount of step pods when a playbook names none.
    #[arg(long, env = "VIGIL_STEP_SERVICE_ACCOUNT")]
    step_service_account: Option<String>,
    /// Finished Runs are deleted after this long, unless their playbook says otherwise.
    #[arg(long, env = "VIGIL_RUN_TTL", default_value = "168h")]
    run_ttl: vigil_api::Duration,
    /// Take part in leader election (off: always lead, for a single replica).
    #[arg(long, env = "VIGIL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long the Lease holds without renewal.
    #[arg(long, env = "VIGIL_LEASE_DURATION", default_value = "15s")]
    lease_duration: vigil_api::Duration,
    /// Reconciles running at once per kind.
    #[arg(long, env = "VIGIL_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// The largest webhook body accepted, in bytes.
    #[arg(long, env = "VIGIL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Ship audit records (JSON arrays, POST) to this URL, e.g. a SIEM's HTTP collector. Off
    /// when unset. See docs/observability.md.
    #[arg(long, env = "VIGIL_AUDIT_URL")]
    audit_url: Option<String>,
    /// File holding the bearer token for --audit-url (read before every POST).
    #[arg(long, env = "VIGIL_AUDIT_TOKEN_FILE")]
    audit_token_file: Option<std::path::PathBuf>,
    /// Audit records kept in memory while the endpoint is down; beyond, new ones are dropped
    /// and counted.
    #[arg(long, env = "VIGIL_AUDIT_BUFFER", default_value_t = 10_000)]
    audit_buffer: usize,
    /// Log as JSON lines.
    #[arg(long, env = "VIGIL_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    log_json: bool,
    /// Serve the admission webhooks (TLS). See docs/approvals.md.
    #[arg(long, env = "VIGIL_ADMISSION", default_value_t = false, action = clap::ArgAction::Set)]
    admission: bool,
    /// Address of the admission webhooks.
    #[arg(long, env = "VIGIL_ADMISSION_LISTEN", default_value = "0.0.0.0:8443")]
    admission_listen: SocketAddr,
    /// PEM certificate chain of the admission webhooks (reloaded when it changes).
    #[arg(long, env = "VIGIL_TLS_CERT_FILE", default_value = "/etc/vigil/webhook-tls/tls.crt")]
    tls_cert_file: std::path::PathBuf,
    /// PEM private key of the admission webhooks.
    #[arg(long, env = "VIGIL_TLS_KEY_FILE", default_value = "/etc/vigil/webhook-tls/tls.key")]
    tls_key_file: std::path::PathBuf,
    /// The user this operator acts as, trusted to record Slack decisions and write Approval
    /// status (default: asked from the API server).
    #[arg(long, env = "VIGIL_OPERATOR_USER")]
    operator_user: Option<String>,
    /// More users trusted like the operator (repeatable).
    #[arg(long = "trusted-user", env = "VIGIL_TRUSTED_USERS", value_delimiter = ',')]
    trusted_users: Vec<String>,
    /// Slack Web API base URL.
    #[arg(long, env = "VIGIL_SLACK_API_URL", default_value = "https://slack.com/api")]
    slack_api_url: String,
    /// File holding Slack's signing secret (else env VIGIL_SLACK_SIGNING_SECRET).
    #[arg(long, env = "VIGIL_SLACK_SIGNING_SECRET_FILE")]
    slack_signing_secret_file: Option<std::path::PathBuf>,
    /// ConfigMap, in this operator's namespace, mapping Slack users to Kubernetes users.
    #[arg(long, env = "VIGIL_SLACK_USERS_CONFIGMAP", default_value = "vigil-slack-users")]
    slack_users_configmap: String,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
    gateway: Option<Arc<vigil_gateway::Gateway>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);
    let client = Client::try_default().await.context("no Kubernetes client configuration")?;

    let mut registry = Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    let audit = audit_sink(&args, &mut registry);
    let (ready_tx, ready_rx) = watch::channel(!args.reconciler);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut tasks = tokio::task::JoinSet::new();
    controller::approval::configure_slack(vigil_admission::slack::SlackApi::new(&args.slack_api_url));
    let mut trusted = args.trusted_users.clone();
    trusted.extend(args.operator_user.clone().or(vigil_admission::whoami(&client).await));
    if args.admission {
        let router = vigil_admission::router(vigil_admission::AdmissionConfig { trusted_users: trusted.clone() });
        let (addr, cert, key) = (args.admission_listen, args.tls_cert_file.clone(), args.tls_key_file.clone());
        tracing::info!(?trusted, "Admission webhooks on");
        tasks.spawn(async move { vigil_admission::serve_tls(addr, cert, key, router).await });
    }
    let slack_callback = vigil_admission::slack::callback_router(vigil_admission::slack::CallbackConfig {
        client: client.clone(),
        signing_secret: vigil_admission::slack::signing_secret(args.slack_signing_secret_file.as_deref())
            .context("cannot read the Slack signing secret")?,
        users_namespace: args.lease_namespace.clone(),
        users_config_map: args.slack_users_configmap.clone(),
        namespaces: args.watch_namespace.clone().map(|ns| vec![ns]),
    });
    if args.reconciler {
        let args = args.clone();
        let client = client.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown_rx.clone();
        let audit = audit.clone();
        tasks.spawn(async move { run_reconcilers(args, client, metrics, audit, ready_tx, shutdown).await });
    }

    let gateway = if args.gateway {
        let config = vigil_gateway::GatewayConfig {
            namespaces: args.watch_namespace.clone().map(|ns| vec![ns]),
            max_body_bytes: args.max_body_bytes,
            ..Default::default()
        };
        let mut gateway = vigil_gateway::Gateway::new(client.clone(), config, &mut registry).await?;
        if let Some(sink) = &audit {
            gateway = gateway.with_audit(Arc::new(sink.clone()));
        }
        Some(Arc::new(gateway))
    } else {
        None
    };
    let hooks = gateway.as_ref().map(|g| g.router()).unwrap_or_default();

    let dashboard = match args.dashboard {
        true => {
            let config = vigil_dashboard::DashboardConfig { namespace: args.watch_namespace.clone(), ..Default::default() };
            vigil_dashboard::router(client.clone(), config).await?
        }
        false => Router::new(),
    };
    let state = AppState { registry: Arc::new(registry), ready: ready_rx, gateway };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(Router::new().route("/internal/v1/outputs", post(outputs::receive)).with_state(client.clone()))
        .merge(hooks)
        .merge(dashboard)
        .merge(slack_callback);

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "Serving HTTP");
    let mut http_shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|s| *s).await;
            })
            .await
            .context("HTTP server failed")
    });

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("Shutting down"),
        Some(result) = tasks.join_next() => {
            match result {
                Ok(Ok(())) => tracing::info!("A component stopped"),
                Ok(Err(error)) => tracing::error!(error = format!("{error:#}"), "A component failed"),
                Err(error) => tracing::error!(%error, "A component panicked"),
            }
        }
    }
    let _ = shutdown_tx.send(true);
    if let Some(sink) = &audit
        && !sink.flush(Duration::from_secs(5)).await
    {
        tracing::warn!(left = sink.buffered(), "Audit records not shipped before exit");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// With the gateway on, ready once its caches are filled: a replica waiting for leadership
/// still serves webhooks. Without it, ready once this replica leads and its caches are filled.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = match &state.gateway {
        Some(gateway) => gateway.ready(),
        None => *state.ready.borrow(),
    };
    if ready { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        ),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], String::new()),
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits for leadership, then runs the reconcilers until shutdown or lost leadership.
async fn run_reconcilers(
    args: Args,
    client: Client,
    metrics: Arc<metrics::Metrics>,
    audit: Option<vigil_audit::Sink>,
    ready_tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_election);
    let election = leader::Election {
        namespace: args.lease_namespace.clone(),
        lease: "vigil-operator".into(),
        identity: identity.clone(),
        duration: args.lease_duration.0,
    };
    if args.leader_election {
        tokio::spawn(election.clone().run(client.clone(), leader_tx));
        tracing::info!(%identity, "Waiting for leadership");
        tokio::select! {
            r = leader_rx.wait_for(|l| *l) => { r.context("election stopped")?; }
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
    metrics.is_leader.set(1);
    tracing::info!(%identity, "Leading: starting reconcilers");

    let ns = args.watch_namespace.clone();
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE));

    let (jobs, jobs_writer) = reflector::store_shared::<Job>(1024);
    let jobs_sub = jobs_writer.subscribe().context("job subscription")?;
    tokio::spawn(watcher(api::<Job>(&client, &ns), managed.clone()).default_backoff().reflect_shared(jobs_writer).for_each(|_| ready(())));

    let (pods, pods_writer) = reflector::store_shared::<Pod>(1024);
    let pods_sub = pods_writer.subscribe().context("pod subscription")?;
    let pod_cfg = watcher::Config::default().labels(labels::RUN);
    tokio::spawn(watcher(api::<Pod>(&client, &ns), pod_cfg).default_backoff().reflect_shared(pods_writer).for_each(|_| ready(())));

    let (approvals, approvals_writer) = reflector::store_shared::<Approval>(256);
    let approvals_for_runs = approvals_writer.subscribe().context("approval subscription")?;
    let approvals_for_self = approvals_writer.subscribe().context("approval subscription")?;
    tokio::spawn(watcher(api::<Approval>(&client, &ns), watcher::Config::default()).default_backoff().reflect_shared(approvals_writer).for_each(|_| ready(())));

    let (playbooks, playbooks_writer) = reflector::store_shared::<Playbook>(256);
    let playbooks_sub = playbooks_writer.subscribe().context("playbook subscription")?;
    tokio::spawn(watcher(api::<Playbook>(&client, &ns), watcher::Config::default()).default_backoff().reflect_shared(playbooks_writer).for_each(|_| ready(())));

    let reporter = Reporter { controller: "vigil-operator".into(), instance: Some(identity) };
    let recorder = Recorder::new(client.clone(), reporter);
    let (wake_tx, wake_rx) = tokio::sync::mpsc::channel::<ObjectRef<Run>>(1024);

    let run_controller = Controller::new(api::<Run>(&client, &ns), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(args.concurrency));
    let runs = run_controller.store();
    let ctx = Arc::new(controller::Context {
        client: client.clone(),
        settings: controller::Settings {
            step_image: args.step_image.clone(),
            outputs_url: args.outputs_url.clone(),
            run_ttl: args.run_ttl.0,
            step_service_account: args.step_service_account.clone(),
        },
        recorder,
        metrics: metrics.clone(),
        runs,
        playbooks: playbooks.clone(),
        jobs: jobs.clone(),
        pods: pods.clone(),
        approvals: approvals.clone(),
        admitted: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        outputs_cache: Mutex::new(HashMap::new()),
        audit,
        wake: wake_tx,
    });

    for (what, ok) in [
        ("jobs", jobs.wait_until_ready().await.is_ok()),
        ("pods", pods.wait_until_ready().await.is_ok()),
        ("approvals", approvals.wait_until_ready().await.is_ok()),
        ("playbooks", playbooks.wait_until_ready().await.is_ok()),
    ] {
        anyhow::ensure!(ok, "the {what} cache never filled");
    }
    let _ = ready_tx.send(true);

    let stop = {
        let mut s = shutdown.clone();
        let mut l = leader_rx.clone();
        async move {
            tokio::select! {
                _ = s.wait_for(|s| *s) => {}
                _ = l.wait_for(|l| !*l) => tracing::error!("Lost leadership"),
            }
        }
    };
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopper = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let wake_stream = tokio_stream_from(wake_rx);
    let runs_task = run_controller
        .owns_shared_stream(jobs_sub)
        .owns_shared_stream(approvals_for_runs)
        .watches_shared_stream(pods_sub, |pod: Arc<Pod>| {
            let run = pod.metadata.labels.as_ref()?.get(labels::RUN)?.clone();
            Some(ObjectRef::<Run>::new(&run).within(pod.metadata.namespace.as_deref()?))
        })
        .reconcile_on(wake_stream)
        .graceful_shutdown_on(stopper(&stop_tx))
        .run(controller::run::reconcile, controller::run::error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let approvals_task = Controller::for_shared_stream(approvals_for_self, approvals.clone())
        .graceful_shutdown_on(stopper(&stop_tx))
        .run(controller::approval::reconcile, controller::approval::error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let playbooks_task = Controller::for_shared_stream(playbooks_sub, playbooks.clone())
        .graceful_shutdown_on(stopper(&stop_tx))
        .run(controller::playbook::reconcile, controller::playbook::error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let gauges = gauge_loop(ctx.clone());

    let lost = tokio::select! {
        _ = async { tokio::join!(runs_task, approvals_task, playbooks_task) } => false,
        _ = gauges => false,
        _ = stop => { let _ = stop_tx.send(()); true }
    };
    if lost && !*shutdown.borrow() {
        anyhow::bail!("lost leadership");
    }
    if args.leader_election {
        election.release(client).await;
    }
    Ok(())
}

/// Keeps the gauges (active, queued, pending approvals) in step with the caches.
async fn gauge_loop(ctx: Arc<controller::Context>) {
    loop {
        let runs = ctx.runs.state();
        let count = |p: vigil_api::RunPhase| runs.iter().filter(|r| r.phase() == p).count() as i64;
        ctx.metrics.runs_active.set(count(vigil_api::RunPhase::Running));
        ctx.metrics.runs_queued.set(count(vigil_api::RunPhase::Queued));
        let pending: Vec<_> = ctx.approvals.state().into_iter().filter(|a| a.status.as_ref().and_then(|s| s.decision).is_none()).collect();
        ctx.metrics.approvals_pending.set(pending.len() as i64);
        let oldest = pending
            .iter()
            .filter_map(|a| a.metadata.creation_timestamp.as_ref())
            .map(|t| (chrono::Utc::now() - controller::to_chrono(t.0)).num_seconds())
            .max()
            .unwrap_or(0);
        ctx.metrics.oldest_pending_approval_seconds.set(oldest);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The audit sink, shipping to `--audit-url`; `None` when that is unset.
fn audit_sink(args: &Args, registry: &mut Registry) -> Option<vigil_audit::Sink> {
    let url = args.audit_url.clone().filter(|u| !u.is_empty())?;
    let mut config = vigil_audit::SinkConfig::new(url);
    config.token_file = args.audit_token_file.clone();
    config.capacity = args.audit_buffer.max(1);
    tracing::info!(capacity = config.capacity, "Shipping audit records");
    Some(vigil_audit::Sink::start(config, registry))
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json { builder.json().init() } else { builder.init() }
}
