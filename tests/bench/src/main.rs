//! `vigil-bench`: measures vigil-operator on a real cluster and prints every figure beside the
//! API server's own floor, measured in the same run. `make bench` runs it on a local cluster of
//! its own (`tests/bench/run.sh`); docs/benchmarks.md explains each figure.

mod cluster;
mod floor;
mod gateway;
mod machine;
mod memory;
mod playbooks;
mod report;
mod stats;
mod tax;
mod timeline;
mod transitions;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use std::{future::Future, path::PathBuf, time::Instant};

/// The figures, by the name `--only` takes.
const FIGURES: &[&str] = &["floor", "gateway", "transitions", "tax", "memory"];

#[derive(Parser, Clone, Debug, Default, Serialize)]
#[command(
    name = "vigil-bench",
    about = "Benchmarks of vigil-operator beside the API server's floor"
)]
pub struct Settings {
    /// The operator binary to measure (a release build).
    #[arg(long, env = "VIGIL_BENCH_OPERATOR")]
    operator: Option<PathBuf>,
    /// The local cluster's directory, to find kube-apiserver's pid for the CPU floor.
    #[arg(long, env = "VIGIL_CLUSTER_DIR")]
    cluster_dir: Option<PathBuf>,
    /// Sequential calls per API-floor operation.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Concurrent clients: raw creates, gateway senders, bulk Run creation.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Alerts posted to the gateway (and Runs created for the raw create rate).
    #[arg(long, default_value_t = 400)]
    pub alerts: usize,
    /// Steps in the transition chain.
    #[arg(long, default_value_t = 5)]
    pub chain: usize,
    /// Numbers of concurrent Runs for the transitions, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub concurrency: Vec<usize>,
    /// Runs made one after the other at concurrency 1.
    #[arg(long, default_value_t = 4)]
    pub serial_runs: usize,
    /// Incident-shape Runs for the orchestration tax.
    #[arg(long, default_value_t = 3)]
    pub tax_runs: usize,
    /// Active Runs for the memory figure.
    #[arg(long, default_value_t = 200)]
    pub active: usize,
    /// Finished Runs for the memory figure.
    #[arg(long, default_value_t = 2000)]
    pub finished: usize,
    /// Measure only these figures (gateway, transitions, tax, memory; the floor always), comma
    /// separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where to write the Markdown report; empty: do not write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out_md: String,
    /// Where to write the JSON report; empty: do not write.
    #[arg(long, default_value = "docs/benchmarks.json")]
    out_json: String,
    /// Where the operators' logs go.
    #[arg(long, default_value = "/tmp/vigil-bench-logs")]
    log_dir: PathBuf,
    /// Keep the bench's namespaces at the end.
    #[arg(long)]
    keep: bool,
}

impl Settings {
    /// Whether to measure `figure`. The floor is always measured: every figure is a ratio to it.
    fn wants(&self, figure: &str) -> bool {
        figure == "floor" || self.only.is_empty() || self.only.iter().any(|o| o == figure)
    }

    fn operator_bin(&self) -> PathBuf {
        self.operator.clone().unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/vigil/target")
                });
            target.join("release/vigil-operator")
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    if let Some(bad) = settings
        .only
        .iter()
        .find(|o| !FIGURES.contains(&o.as_str()))
    {
        anyhow::bail!("unknown figure {bad}; known: {}", FIGURES.join(", "));
    }
    let bin = settings.operator_bin();
    anyhow::ensure!(
        bin.exists(),
        "no operator binary at {} (cargo build --release -p vigil-operator)",
        bin.display()
    );
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (KUBECONFIG)")?;
    let started = Instant::now();
    let suffix = hex::encode(rand::random::<[u8; 2]>());
    let ns = |figure: &str| format!("bench-{figure}-{suffix}");
    let (ns_floor, ns_gateway, ns_transitions) = (ns("floor"), ns("gateway"), ns("transitions"));
    let (ns_tax, ns_memory) = (ns("tax"), ns("memory"));
    let bench = cluster::Bench {
        client: client.clone(),
        bin: bin.clone(),
        log_dir: settings.log_dir.clone(),
        cluster_dir: settings.cluster_dir.clone(),
    };

    let mut r = report::Report {
        machine: machine::Machine::describe(&client).await,
        settings: settings.clone(),
        ..Default::default()
    };
    eprintln!(
        "vigil-bench: {} CPUs, load {}, operator {}",
        r.machine.cpus,
        r.machine.load_start,
        bin.display()
    );

    if settings.wants("floor") {
        let f = floor::measure(
            &client,
            &ns_floor,
            settings.samples,
            settings.clients,
            settings.alerts,
        );
        r.floor = figure("floor", &mut r.errors, f).await;
        if let Some(f) = &r.floor {
            println!("{}", report::floor_table(f));
        }
    }
    if settings.wants("gateway") {
        let g = gateway::measure(&bench, &ns_gateway, settings.clients, settings.alerts);
        r.gateway = figure("gateway", &mut r.errors, g).await;
        if let Some(g) = &r.gateway {
            println!("{}", report::gateway_table(g));
        }
    }
    if settings.wants("transitions") {
        let t = transitions::measure(
            &bench,
            &ns_transitions,
            settings.chain.max(2),
            &settings.concurrency,
            settings.serial_runs,
        );
        r.transitions = figure("transitions", &mut r.errors, t).await;
        if let Some(t) = &r.transitions {
            println!("{}", report::transitions_table(t, r.floor.as_ref()));
        }
    }
    if settings.wants("tax") {
        let t = tax::measure(&bench, &ns_tax, settings.tax_runs);
        r.tax = figure("tax", &mut r.errors, t).await;
        if let Some(t) = &r.tax {
            println!("{}", report::tax_table(t, r.floor.as_ref()));
        }
    }
    if settings.wants("memory") {
        let template = r.tax.as_ref().and_then(|t| t.template.as_ref());
        let sizes = memory::Sizes {
            active: settings.active,
            finished: settings.finished,
            clients: settings.clients,
        };
        let m = memory::measure(&bench, &ns_memory, sizes, template);
        r.memory = figure("memory", &mut r.errors, m).await;
        if let Some(m) = &r.memory {
            println!("{}", report::memory_table(m, r.transitions.as_ref()));
        }
    }

    r.machine.load_end = machine::load();
    r.duration_s = started.elapsed().as_secs_f64();
    for e in &r.errors {
        println!("not measured: {e}");
    }
    if !settings.out_md.is_empty() {
        std::fs::write(&settings.out_md, report::markdown(&r))
            .with_context(|| format!("writing {}", settings.out_md))?;
        eprintln!("vigil-bench: wrote {}", settings.out_md);
    }
    if !settings.out_json.is_empty() {
        let json = serde_json::to_string_pretty(&r)? + "\n";
        std::fs::write(&settings.out_json, json)
            .with_context(|| format!("writing {}", settings.out_json))?;
        eprintln!("vigil-bench: wrote {}", settings.out_json);
    }
    if !settings.keep {
        let names: Vec<String> = FIGURES.iter().map(|f| ns(f)).collect();
        cluster::delete_namespaces(&client, &names).await;
    }
    eprintln!("vigil-bench: done in {:.0} s", r.duration_s);
    Ok(())
}

/// Awaits one figure; a failure is recorded (and printed) instead of ending the bench.
async fn figure<T>(
    name: &str,
    errors: &mut Vec<String>,
    f: impl Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    let started = Instant::now();
    eprintln!("vigil-bench: measuring {name}...");
    match f.await {
        Ok(v) => {
            eprintln!(
                "vigil-bench: {name} took {:.0} s",
                started.elapsed().as_secs_f64()
            );
            Some(v)
        }
        Err(e) => {
            eprintln!("vigil-bench: {name} failed: {e:#}");
            errors.push(format!("{name}: {e:#}"));
            None
        }
    }
}
