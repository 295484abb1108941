//! The end-to-end fixture: a fresh namespace on a real cluster with its own `vigil-operator`
//! process, plus the helpers tests use to apply playbooks, start Runs and wait for outcomes.
//!
//! Tests run only when `VIGIL_E2E` is set; otherwise [`Cluster::start`] returns `None` and the
//! test passes after printing why it was skipped, so `cargo test --workspace` needs no cluster.
//!
//! The cluster comes from `KUBECONFIG`, or `$VIGIL_CLUSTER_DIR/admin.kubeconfig` (default
//! `/tmp/vigil-cluster`) when that is unset. The operator binary is `$VIGIL_OPERATOR_BIN`, or
//! `vigil-operator` next to the test executable's profile directory; `vigil-step` must be built
//! beside it, since the process node runs step pods' `vigil-operator:dev` image from there.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Namespace, Pod, ServiceAccount},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use std::{
    fs,
    future::Future,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use vigil_api::{Playbook, Run, RunPhase, StepStatus, labels};

/// The field manager of everything the tests apply.
const MANAGER: &str = "vigil-e2e";
/// How long a wait lasts unless a test says otherwise.
pub const WAIT: Duration = Duration::from_secs(60);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(200);

/// One test's slice of the cluster: a namespace and an operator watching only it. Dropping it
/// kills the operator and deletes the namespace; the operator log is kept when the test failed.
pub struct Cluster {
    pub client: Client,
    pub ns: String,
    pub operator: Operator,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Sets up a namespace named after `test` and starts its operator. `None` when `VIGIL_E2E`
    /// is unset: the caller returns and the test counts as skipped.
    pub async fn start(test: &str) -> Option<Self> {
        if std::env::var_os("VIGIL_E2E").is_none() {
            // Straight to stderr: libtest would swallow eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: set VIGIL_E2E=1 to run the end-to-end tests on a cluster"
            );
            return None;
        }
        let kubeconfig = kubeconfig_path();
        let client = connect(&kubeconfig).await;
        let ns = format!("e2e-{}-{}", slug(test), suffix());
        let dir = std::env::temp_dir().join("vigil-e2e").join(&ns);
        fs::create_dir_all(&dir).expect("temp dir");

        create_namespace(&client, &ns).await;
        let mut operator = Operator::new(&kubeconfig, &ns, &dir);
        operator.spawn();
        operator.wait_ready().await;
        Some(Self { client, ns, operator, dir, kubeconfig })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn runs(&self) -> Api<Run> {
        self.api()
    }

    /// Applies a Playbook written as YAML (no namespace needed) and waits until the operator
    /// reports it `Ready`, so a Run created next finds it.
    pub async fn apply_playbook(&self, yaml: &str) -> Playbook {
        let mut pb: Playbook = serde_yaml::from_str(yaml).expect("playbook YAML");
        pb.metadata.namespace = Some(self.ns.clone());
        let name = pb.name_any();
        let api: Api<Playbook> = self.api();
        let pp = PatchParams::apply(MANAGER).force();
        api.patch(&name, &pp, &Patch::Apply(&pb)).await.expect("apply playbook");

        let what = format!("playbook {name} to be Ready");
        self.eventually(&what, WAIT, || async {
            let pb = api.get(&name).await.ok()?;
            let status = pb.status.as_ref()?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            let current = status.observed_generation == pb.metadata.generation;
            assert_ne!(ready.status, "False", "playbook {name} is not valid: {}", ready.message);
            (current && ready.status == "True").then_some(pb)
        })
        .await
    }

    /// Creates a Run of `playbook` with `inputs`.
    pub async fn create_run(&self, name: &str, playbook: &str, inputs: Value) -> Run {
        let run: Run = serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Run",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "playbookRef": {"name": playbook},
                "inputs": inputs,
                "trigger": {"kind": "manual", "source": "vigil-e2e"},
            },
        }))
        .expect("run object");
        self.runs().create(&PostParams::default(), &run).await.expect("create run")
    }

    /// Waits until Run `name` is in `phase` and returns it. Fails at once when the Run ends in
    /// another phase, and after `timeout` with the Run's status and the operator's log.
    pub async fn wait_for_phase(&self, name: &str, phase: RunPhase, timeout: Duration) -> Run {
        let what = format!("run {name} to be {}", phase.as_str());
        let api = self.runs();
        let run = self
            .eventually(&what, timeout, || async {
                let run = api.get(name).await.ok()?;
                let now = run.phase();
                (now == phase || now.is_finished()).then_some(run)
            })
            .await;
        if run.phase() != phase {
            panic!(
                "run {name} ended {} while waiting for {}\n{}",
                run.phase().as_str(),
                phase.as_str(),
                self.diagnostics(Some(name)).await
            );
        }
        run
    }

    /// Polls `check` until it returns `Some`, or panics after `timeout` describing `what` with
    /// the namespace's Runs and the operator's log.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.diagnostics(None).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The Jobs of Run `run`, by the `vigil.dev/run` label, sorted by name.
    pub async fn jobs_of(&self, run: &str) -> Vec<Job> {
        let mut jobs = self.labelled::<Job>(run).await;
        jobs.sort_by_key(|j| j.name_any());
        jobs
    }

    /// The names of the Jobs of Run `run`, sorted.
    pub async fn job_names(&self, run: &str) -> Vec<String> {
        self.jobs_of(run).await.iter().map(|j| j.name_any()).collect()
    }

    /// The step pods of Run `run`.
    pub async fn pods_of(&self, run: &str) -> Vec<Pod> {
        self.labelled::<Pod>(run).await
    }

    /// The ConfigMaps (inputs and stored outputs) of Run `run`.
    pub async fn config_maps_of(&self, run: &str) -> Vec<ConfigMap> {
        self.labelled::<ConfigMap>(run).await
    }

    async fn labelled<K>(&self, run: &str) -> Vec<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let lp = ListParams::default().labels(&format!("{}={run}", labels::RUN));
        self.api::<K>().list(&lp).await.expect("list by run label").items
    }

    /// Runs kubectl against the cluster and returns its stdout; panics when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{stdout}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Everything worth reading when a wait fails: the Runs' status (or one Run's), the Jobs,
    /// and the end of the operator's log.
    pub async fn diagnostics(&self, run: Option<&str>) -> String {
        let mut text = String::new();
        let runs = match run {
            Some(name) => self.runs().get(name).await.into_iter().collect(),
            None => self.runs().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default(),
        };
        for r in runs {
            let status = serde_yaml::to_string(&r.status).unwrap_or_default();
            text += &format!("--- run {} status:\n{status}", r.name_any());
        }
        let jobs = self.api::<Job>().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        text += "--- jobs:\n";
        for job in jobs {
            let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
            let states: Vec<String> = conditions.iter().map(|c| format!("{}={}", c.type_, c.status)).collect();
            text += &format!("{} [{}]\n", job.metadata.name.unwrap_or_default(), states.join(","));
        }
        text += &format!("--- operator log ({}), last lines:\n", self.operator.log.display());
        text += &self.operator.log_tail(60);
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.operator.kill();
        let (kubeconfig, ns) = (self.kubeconfig.clone(), self.ns.clone());
        // The test's runtime is busy dropping us; delete the namespace from a runtime of its own.
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let client = connect(&kubeconfig).await;
                let api: Api<Namespace> = Api::all(client);
                api.delete(&ns, &DeleteParams::background()).await.ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!("could not delete namespace {}", self.ns);
        }
        if std::thread::panicking() {
            eprintln!("operator log kept: {}", self.operator.log.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `vigil-operator` process of one test, started with the settings the brief of the local
/// cluster gives: no leader election, no gateway, one namespace, a port of its own.
pub struct Operator {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
    port: u16,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Operator {
    /// The operator uses `VIGIL_E2E_OPERATOR_KUBECONFIG` when set (run-all.sh points it at the
    /// chart's ServiceAccount through impersonation, so a permission the chart lacks fails a
    /// test), else the fixture's own kubeconfig.
    fn new(kubeconfig: &Path, ns: &str, dir: &Path) -> Self {
        let kubeconfig = std::env::var_os("VIGIL_E2E_OPERATOR_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| kubeconfig.to_path_buf());
        Self {
            bin: operator_bin(),
            kubeconfig,
            ns: ns.to_string(),
            port: free_port(),
            log: dir.join("operator.log"),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("operator log");
        let err = log.try_clone().expect("operator log");
        let listen = format!("127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("VIGIL_LEADER_ELECTION", "false")
            .env("VIGIL_WATCH_NAMESPACE", &self.ns)
            .env("VIGIL_LISTEN", &listen)
            .env("VIGIL_OUTPUTS_URL", format!("http://{listen}/internal/v1/outputs"))
            .env("VIGIL_GATEWAY", "false")
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200: the caches are filled and the reconcilers run.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("vigil-operator exited ({exit}) before it was ready:\n{}", self.log_tail(40));
                }
            }
            if http_status(self.port, "/readyz") == Some(200) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("vigil-operator not ready after 30s:\n{}", self.log_tail(40));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills the operator with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the operator if it runs, starts a new one on the same port and waits until it is
    /// ready.
    pub async fn restart(&mut self) {
        self.kill();
        if let Ok(mut log) = fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "=== vigil-e2e: operator restarted ===");
        }
        self.spawn();
        self.wait_ready().await;
    }

    /// The last `lines` lines of the operator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of step `name` of `run`; panics with the Run's status when there is none.
pub fn step(run: &Run, name: &str) -> StepStatus {
    run.status
        .as_ref()
        .and_then(|s| s.steps.get(name))
        .cloned()
        .unwrap_or_else(|| panic!("run {} has no step {name}: {:?}", run.name_any(), run.status))
}

/// The value of label `key` of an object.
pub fn label<'a>(obj: &'a impl ResourceExt, key: &str) -> Option<&'a str> {
    obj.labels().get(key).map(String::as_str)
}

async fn connect(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("kube client")
}

/// Creates the namespace and waits for its default ServiceAccount, which step pods need.
async fn create_namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({
        "metadata": {"name": ns, "labels": {"vigil.dev/e2e": "true"}}
    }))
    .expect("namespace object");
    namespaces.create(&PostParams::default(), &object).await.expect("create namespace");

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while accounts.get_opt("default").await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "namespace {ns} never got its default ServiceAccount");
        tokio::time::sleep(POLL).await;
    }
}

fn kubeconfig_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECONFIG") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("VIGIL_CLUSTER_DIR").unwrap_or_else(|| "/tmp/vigil-cluster".into());
    PathBuf::from(dir).join("admin.kubeconfig")
}

fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("VIGIL_KUBECTL") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("VIGIL_CLUSTER_DIR").unwrap_or_else(|| "/tmp/vigil-cluster".into());
    let local = PathBuf::from(dir).join("bin/kubectl");
    if local.exists() { local } else { PathBuf::from("kubectl") }
}

/// `vigil-operator` from `$VIGIL_OPERATOR_BIN`, or from the profile directory this test was
/// built into (`target/debug/deps/<test>` → `target/debug`).
fn operator_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VIGIL_OPERATOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe.parent().and_then(Path::parent).expect("profile directory");
    let bin = profile.join("vigil-operator");
    for needed in [&bin, &profile.join("vigil-step")] {
        assert!(
            needed.exists(),
            "{} is missing: run `cargo build -p vigil-operator -p vigil-step` first",
            needed.display()
        );
    }
    bin
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("local address").port()
}

/// The status code of a plain HTTP GET on loopback, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `test` as a DNS label fragment.
fn slug(test: &str) -> String {
    let s: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-").chars().take(30).collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn suffix() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..5).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}
