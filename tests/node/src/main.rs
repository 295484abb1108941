//! `vigil-node`: a test-only Kubernetes node that runs pods as host processes. Wiring only.

mod container;
mod env;
mod fields;
mod images;
mod logs;
mod node;
mod pods;
mod probes;
mod runtime;
mod status;
mod volumes;
mod worker;

use std::{fs, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tracing::{info, warn};

use crate::{env::ApiEndpoint, images::ImageStore};

/// Runs the pods bound to one node as local processes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The Node object's name.
    #[arg(long, env = "VIGIL_NODE_NAME", default_value = "vigil-node")]
    node_name: String,

    /// State directory of the local cluster; pods live under `<dir>/pods`.
    #[arg(long, env = "VIGIL_CLUSTER_DIR", default_value = "/tmp/vigil-cluster")]
    cluster_dir: PathBuf,

    /// Where the executables of `vigil-*` images come from
    /// [default: `$CARGO_TARGET_DIR/debug`, else this program's directory].
    #[arg(long, env = "VIGIL_NODE_IMAGE_BIN")]
    image_bin: Option<PathBuf>,

    /// The address pods and the node report. Use a non-loopback address of the host: the API
    /// server refuses loopback endpoints, so Services (and webhooks behind them) need it.
    #[arg(long, env = "VIGIL_NODE_IP", default_value = "127.0.0.1")]
    node_ip: String,

    /// Port of the kubelet-style log endpoint (`kubectl logs`); 0, or a taken port, picks a
    /// free one, announced in the Node's `daemonEndpoints`.
    #[arg(long, env = "VIGIL_NODE_PORT", default_value_t = 11250)]
    port: u16,

    /// Serving certificate of the log endpoint (PEM); without it the endpoint is off.
    #[arg(
        long,
        env = "VIGIL_NODE_TLS_CERT",
        requires = "tls_key",
        requires = "client_ca"
    )]
    tls_cert: Option<PathBuf>,

    /// Private key of the serving certificate (PEM, PKCS#8).
    #[arg(long, env = "VIGIL_NODE_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// CA whose client certificates may read logs (the API server's kubelet client).
    #[arg(long, env = "VIGIL_NODE_CLIENT_CA")]
    client_ca: Option<PathBuf>,
}

/// What every part of the node shares.
pub struct Ctx {
    pub client: Client,
    pub node_name: String,
    pub cluster_dir: PathBuf,
    pub pods_dir: PathBuf,
    pub images: ImageStore,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api: ApiEndpoint,
    pub kubelet_version: String,
    /// Port of the log endpoint, 0 when it is off.
    pub port: u16,
    pub recorder: Recorder,
    /// All Services, for the pods' `/etc/hosts`.
    pub services: Store<Service>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_runtime=warn".into()),
        )
        .init();
    let args = Args::parse();
    fields::set_node_ip(args.node_ip.clone());

    let config = kube::Config::infer().await.context("loading kubeconfig")?;
    let api = ApiEndpoint {
        host: config.cluster_url.host().unwrap_or("127.0.0.1").to_string(),
        port: config.cluster_url.port_u16().unwrap_or(443),
    };
    let client = Client::try_from(config).context("building client")?;
    let kubelet_version = match client.apiserver_version().await {
        Ok(info) => info.git_version,
        Err(error) => {
            warn!(%error, "Reading the API server version");
            "v0.0.0".to_string()
        }
    };

    let pods_dir = args.cluster_dir.join("pods");
    fs::create_dir_all(&pods_dir).context("creating the pods directory")?;
    // Two nodes on one cluster directory would run every pod twice.
    let lock_file = fs::File::create(args.cluster_dir.join("vigil-node.lock"))
        .context("creating the node lock file")?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let dir = args.cluster_dir.display();
        anyhow::anyhow!("another vigil-node runs with {dir} ({errno})")
    })?;
    kill_leftover_processes(&pods_dir);

    let image_bin = args.image_bin.unwrap_or_else(default_image_bin);
    let endpoint = format!("{}:{}", api.host, api.port);
    info!(node = %args.node_name, image_bin = %image_bin.display(), api = %endpoint, "Starting");

    let (services, writer) = reflector::store();
    let service_stream = reflector::reflector(
        writer,
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));

    let tls = match (args.tls_cert, args.tls_key, args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(logs::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    };
    let ip = args
        .node_ip
        .parse()
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let listener = match &tls {
        Some(_) => Some(logs::bind(std::net::SocketAddr::new(ip, args.port)).await?),
        None => None,
    };
    let port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let log_server = async {
        let (Some(tls), Some(listener)) = (tls, listener) else {
            return std::future::pending().await;
        };
        if let Err(error) = logs::serve(listener, tls, pods_dir.clone()).await {
            let error = format!("{error:#}");
            warn!(error, "Log endpoint stopped; kubectl logs will not work");
        }
        std::future::pending().await
    };

    let reporter = Reporter {
        controller: "kubelet".into(),
        instance: Some(args.node_name.clone()),
    };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node_name: args.node_name,
        images: ImageStore::new(args.cluster_dir.join("images"), image_bin),
        cluster_dir: args.cluster_dir,
        pods_dir: pods_dir.clone(),
        api,
        kubelet_version,
        port,
        services,
    });

    tokio::select! {
        () = node::run(ctx.clone()) => {}
        () = pods::run(ctx.clone()) => {}
        () = service_stream => {}
        () = log_server => {}
        () = shutdown_signal() => info!("Shutting down"),
    }
    kill_leftover_processes(&pods_dir);
    Ok(())
}

fn default_image_bin() -> PathBuf {
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("debug");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Kills the process groups recorded under `pods/*/pids/`: containers of a previous node
/// process (this one does not adopt them) or, at shutdown, of this one.
fn kill_leftover_processes(pods_dir: &std::path::Path) {
    let Ok(pods) = fs::read_dir(pods_dir) else {
        return;
    };
    let mut killed = 0;
    for pod in pods.flatten() {
        let Ok(pids) = fs::read_dir(pod.path().join("pids")) else {
            continue;
        };
        for file in pids.flatten() {
            let pgid = fs::read_to_string(file.path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pgid) = pgid.filter(|p| *p > 1) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
                std::thread::sleep(Duration::from_millis(100));
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                killed += 1;
            }
            let _ = fs::remove_file(file.path());
        }
    }
    if killed > 0 {
        info!(killed, "Killed leftover container processes");
    }
}
