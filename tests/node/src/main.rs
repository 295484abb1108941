//! `vigil-node`: a test-only Kubernetes node that runs pods as host processes. Wiring only.

mod container;
mod env;
mod fields;
mod images;
mod node;
mod pods;
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
    kill_leftover_processes(&pods_dir);

    let image_bin = args.image_bin.unwrap_or_else(default_image_bin);
    info!(node = %args.node_name, image_bin = %image_bin.display(), api = %format!("{}:{}", api.host, api.port), "Starting");

    let (services, writer) = reflector::store();
    let service_stream = reflector::reflector(writer, watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));

    let reporter = Reporter { controller: "kubelet".into(), instance: Some(args.node_name.clone()) };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node_name: args.node_name,
        images: ImageStore::new(args.cluster_dir.join("images"), image_bin),
        cluster_dir: args.cluster_dir,
        pods_dir: pods_dir.clone(),
        api,
        kubelet_version,
        services,
    });

    tokio::select! {
        () = node::run(ctx.clone()) => {}
        () = pods::run(ctx.clone()) => {}
        () = service_stream => {}
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
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
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
    let Ok(pods) = fs::read_dir(pods_dir) else { return };
    let mut killed = 0;
    for pod in pods.flatten() {
        let Ok(pids) = fs::read_dir(pod.path().join("pids")) else { continue };
        for file in pids.flatten() {
            let pgid = fs::read_to_string(file.path()).ok().and_then(|s| s.trim().parse::<i32>().ok());
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
