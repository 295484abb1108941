//! The bench's view of the cluster: namespaces, playbooks, Runs, and `vigil-operator` processes
//! started as children, with their memory and CPU time read from `/proc`.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use vigil_api::{Playbook, Run};

/// The field manager of everything the bench applies.
pub const MANAGER: &str = "vigil-bench";

/// What every figure needs: the client, the operator binary, where operator logs go, and the
/// local cluster's directory (for kube-apiserver's pid).
pub struct Bench {
    pub client: Client,
    pub bin: PathBuf,
    pub log_dir: PathBuf,
    pub cluster_dir: Option<PathBuf>,
}

impl Bench {
    /// Starts an operator for `ns` and waits until it is ready.
    pub async fn operator(&self, ns: &str, parts: Parts) -> anyhow::Result<Operator> {
        Operator::start(&self.bin, ns, parts, &self.log_dir).await
    }

    /// kube-apiserver's CPU time so far, seconds; 0 when its pid is unknown.
    pub fn apiserver_cpu(&self) -> f64 {
        let pid = component_pid(self.cluster_dir.as_deref(), "kube-apiserver");
        pid.and_then(|p| ProcSample::of(p).ok())
            .map_or(0.0, |s| s.cpu)
    }
}

/// Creates namespace `ns` (labelled as the bench's) and waits for its default ServiceAccount,
/// which step pods need.
pub async fn create_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({
        "metadata": {"name": ns, "labels": {"vigil.dev/bench": "true"}}
    }))?;
    match namespaces.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            bail!("namespace {ns} exists: a previous bench left it (delete it)")
        }
        Err(e) => return Err(e).context("creating the namespace"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while accounts.get_opt("default").await?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "namespace {ns} never got its default ServiceAccount"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Deletes the namespaces the bench made (in the background: the API server finishes the job).
pub async fn delete_namespaces(client: &Client, names: &[String]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in names {
        let _ = namespaces.delete(ns, &DeleteParams::background()).await;
    }
}

/// Applies a Playbook given as JSON into `ns`.
pub async fn apply_playbook(client: &Client, ns: &str, playbook: &Value) -> anyhow::Result<()> {
    let api: Api<Playbook> = Api::namespaced(client.clone(), ns);
    let name = playbook["metadata"]["name"]
        .as_str()
        .context("playbook without a name")?;
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(playbook))
        .await
        .with_context(|| format!("applying playbook {name}"))?;
    Ok(())
}

/// Waits until the operator reports the playbook `Ready` for its current generation.
pub async fn wait_playbook_ready(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<Playbook> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pb = api.get(name).await?;
        if let Some(status) = &pb.status {
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            if let Some(c) = ready.filter(|_| status.observed_generation == pb.metadata.generation)
            {
                anyhow::ensure!(
                    c.status != "False",
                    "playbook {name} is not valid: {}",
                    c.message
                );
                if c.status == "True" {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "playbook {name} not Ready after 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Run object of `playbook`, shaped like the ones the gateway creates.
pub fn run_object(ns: &str, name: &str, playbook: &str, inputs: Value) -> anyhow::Result<Run> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name, "namespace": ns, "labels": {"vigil.dev/playbook": playbook}},
        "spec": {
            "playbookRef": {"name": playbook},
            "inputs": inputs,
            "trigger": {"kind": "manual", "source": "vigil-bench"},
        },
    }))?)
}

/// Creates a Run and returns when the API server has answered.
pub async fn create_run(
    client: &Client,
    ns: &str,
    name: &str,
    playbook: &str,
    inputs: Value,
) -> anyhow::Result<()> {
    let api: Api<Run> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &run_object(ns, name, playbook, inputs)?,
    )
    .await
    .with_context(|| format!("creating run {name}"))?;
    Ok(())
}

/// Lists the Runs of `ns`.
pub async fn runs(client: &Client, ns: &str) -> anyhow::Result<Vec<Run>> {
    let api: Api<Run> = Api::namespaced(client.clone(), ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Polls until `done` holds for the Runs of `ns`, or fails after `timeout` naming the stragglers.
pub async fn wait_runs<F>(
    client: &Client,
    ns: &str,
    timeout: Duration,
    what: &str,
    done: F,
) -> anyhow::Result<Vec<Run>>
where
    F: Fn(&Run) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let all = runs(client, ns).await?;
        let waiting: Vec<String> = all
            .iter()
            .filter(|r| !done(r))
            .map(|r| r.name_any())
            .collect();
        if waiting.is_empty() {
            return Ok(all);
        }
        if Instant::now() >= deadline {
            let shown = waiting
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "{} Runs in {ns} not {what} after {timeout:?} (e.g. {shown})",
                waiting.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `vigil-operator` child process, watching one namespace, without leader election.
pub struct Operator {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

/// What an operator process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parts {
    /// Reconcilers and gateway, as deployed.
    All,
    /// The gateway only (`VIGIL_RECONCILER=false`).
    GatewayOnly,
}

impl Operator {
    /// Starts `bin` for namespace `ns` and waits until `/readyz` answers 200.
    pub async fn start(bin: &Path, ns: &str, parts: Parts, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("operator-{ns}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(bin)
            .env("VIGIL_LEADER_ELECTION", "false")
            .env("VIGIL_WATCH_NAMESPACE", ns)
            .env("VIGIL_LISTEN", &listen)
            .env(
                "VIGIL_OUTPUTS_URL",
                format!("http://{listen}/internal/v1/outputs"),
            )
            .env("VIGIL_RECONCILER", (parts == Parts::All).to_string())
            .env(
                "RUST_LOG",
                std::env::var("VIGIL_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut op = Self { port, log, child };
        op.wait_ready().await?;
        Ok(op)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait()? {
                bail!(
                    "vigil-operator exited ({exit}) before it was ready; see {}",
                    self.log.display()
                );
            }
            if let Ok(res) = http.get(&url).timeout(Duration::from_secs(2)).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "vigil-operator not ready after 60s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's memory and CPU time now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        ProcSample::of(self.pid())
    }

    /// Stops the operator (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// Resident set size (VmRSS), bytes.
    pub rss: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub hwm: u64,
    /// User plus system CPU time, seconds.
    pub cpu: f64,
}

impl ProcSample {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        Ok(Self {
            rss: status_kib(&status, "VmRSS:") * 1024,
            hwm: status_kib(&status, "VmHWM:") * 1024,
            cpu: cpu_seconds(&stat),
        })
    }
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The fields after the command name
/// (which may hold spaces and parentheses) are split after its last `)`.
fn cpu_seconds(stat: &str) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the line, utime 14 and stime 15, so indexes 11 and 12 here.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The pid of a control-plane component of the local cluster (`$VIGIL_CLUSTER_DIR/run/<c>.pid`).
pub fn component_pid(cluster_dir: Option<&Path>, component: &str) -> Option<u32> {
    let text =
        fs::read_to_string(cluster_dir?.join("run").join(format!("{component}.pid"))).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "42 (vigil (op) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(cpu_seconds(stat) * clock_ticks(), 300.0);
    }

    #[test]
    fn memory_is_read_in_kib() {
        let status = "Name:\tvigil\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            (status_kib(status, "VmRSS:"), status_kib(status, "VmHWM:")),
            (1024, 2048)
        );
    }
}
