//! The `mock-services` binary: reads the environment, serves the router, stops on SIGTERM.

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vigil_mock_services::{AppState, Config, router};

/// Deterministic stand-ins for the SOC tools vigil playbooks call.
#[derive(Parser)]
#[command(name = "mock-services", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "MOCK_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);

    let (mut config, defaulted) = Config::from_env();
    if defaulted.contains(&"MOCK_PUBLIC_URL") {
        config.public_url = format!("http://{}", args.listen);
    }
    // Names only: the values are credentials.
    if !defaulted.is_empty() {
        let defaulted = defaulted.join(",");
        tracing::warn!(defaulted, "Dev defaults in use");
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "Serving");
    axum::serve(listener, router(AppState::new(config)))
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("Stopped");
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "No SIGTERM handler"
                );
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down");
}
