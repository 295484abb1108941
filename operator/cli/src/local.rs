//! `vigil run --local`: runs a playbook on this machine with the operator's planner and the
//! in-pod step protocol, each Job replaced by a local `vigil-step run -- PROGRAM` process.
//!
//! What differs from a cluster, on purpose: steps run in no container (the image only picks the
//! interpreter: `python*` → python3, `node*` → node, else /bin/sh, unless the step names its
//! `command`); they inherit this process's environment; Secrets and ConfigMaps of `envFrom` and
//! `valueFrom` come from `--env-file`; outputs of any size are read from the outputs file;
//! approvals are decided by flags or at the terminal.

use crate::{
    alert,
    cli::{Global, RunArgs, RunOutput},
    error::{EXIT_CANCELLED, EXIT_FAILED, Error, Result},
    manifest::{self, Parsed, PlaybookDoc},
    render::{self, Style},
};
use chrono::Utc;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{mpsc, oneshot},
};
use vigil_api::{
    Decision, Run, RunPhase, RunSpec, RunStatus, StepPhase,
    playbook::Step,
    run::{FrozenPlaybook, PlaybookRef, TriggerInfo},
};
use vigil_engine::{Action, ApprovalOutcome, CompiledPlaybook, JobRequest, JobState, Observed};

/// The Run name local Jobs and Approvals are named after.
const RUN_NAME: &str = "local";
/// Lines of a failed step's output shown when `--logs` is off.
const TAIL_LINES: usize = 15;

/// Runs the command. Progress goes to stderr; the result to stdout.
pub fn run(global: &Global, args: RunArgs) -> Result<ExitCode> {
    if !args.local {
        return Err(Error::usage(
            "vigil run needs --local; to run on the cluster, use `vigil trigger PLAYBOOK --input ALERT.json`",
        ));
    }
    let setup = Setup::from_args(&args)?;
    let progress_style = global.style(true);
    let style = global.style(false);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let workdir = tempfile::Builder::new().prefix("vigil-run-").tempdir()?;
    eprintln!(
        "{} playbook {} locally: {} steps",
        progress_style.bold("Running"),
        setup.name,
        setup.compiled.order.len() + setup.compiled.finally_order.len()
    );
    let inputs = setup.inputs.clone();
    let name = setup.name.clone();
    let runner = Runner::new(
        setup,
        workdir.path().to_path_buf(),
        progress_style,
        args.logs,
    );
    let (mut status, compiled) = runtime.block_on(runner.run())?;
    status.inputs = Some(inputs);
    if args.keep {
        let kept = workdir.keep();
        eprintln!("work directory kept: {}", kept.display());
    }

    match args.output {
        RunOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json_result(&status)).unwrap_or_default()
        ),
        RunOutput::Text => print!("{}", text_result(&name, &status, &compiled, &style)),
    }
    Ok(match status.phase {
        RunPhase::Succeeded => ExitCode::SUCCESS,
        RunPhase::Cancelled => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::from(EXIT_FAILED),
    })
}

/// Everything checked before the first step starts.
struct Setup {
    name: String,
    compiled: CompiledPlaybook,
    inputs: Value,
    step_bin: PathBuf,
    env: EnvSources,
    approvals: ApprovalPolicy,
}

impl Setup {
    fn from_args(args: &RunArgs) -> Result<Self> {
        let doc = load_playbook(&args.file, args.name.as_deref())?;
        let file = args.file.display().to_string();
        let compiled = vigil_engine::compile(&doc.spec).map_err(|issues| {
            let lines: Vec<String> = issues
                .iter()
                .map(|i| {
                    let line = i
                        .step
                        .as_ref()
                        .and_then(|s| manifest::step_line(&doc.document, s));
                    format!("{file}:{}: {i}", line.unwrap_or(doc.document.start_line))
                })
                .collect();
            Error::usage(format!(
                "the playbook does not compile:\n{}",
                lines.join("\n")
            ))
        })?;

        let alert = match &args.input {
            Some(path) => read_json(path)?,
            None => json!({}),
        };
        if let Some(Ok(false) | Err(_)) = alert::filter_passes(&doc.spec, &alert) {
            eprintln!(
                "note: the webhook filter does not pass this alert; the gateway would start no Run"
            );
        }
        let inputs = alert::inputs_from_alert(&doc.spec, &alert).map_err(|errors| {
            Error::usage(format!(
                "the inputs do not fit the playbook:\n  {}",
                errors.join("\n  ")
            ))
        })?;

        Ok(Self {
            name: doc.name.clone().unwrap_or_else(|| "playbook".into()),
            approvals: ApprovalPolicy::from_args(args, &compiled)?,
            env: EnvSources::from_args(&args.vars, &args.env_files)?,
            step_bin: locate_step_bin(args.step_bin.as_deref())?,
            compiled,
            inputs,
        })
    }
}

fn load_playbook(path: &Path, name: Option<&str>) -> Result<PlaybookDoc> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    let mut found = Vec::new();
    for doc in manifest::split_documents(&text) {
        match manifest::parse_document(&doc) {
            Parsed::Playbook(pb) => found.push(*pb),
            Parsed::Invalid(problem) => {
                return Err(Error::usage(format!(
                    "{}:{}: {}",
                    path.display(),
                    problem.line,
                    problem.message
                )));
            }
            Parsed::Other => {}
        }
    }
    let wanted = match name {
        Some(name) => found.into_iter().find(|d| d.name.as_deref() == Some(name)),
        None => found.into_iter().next(),
    };
    wanted.ok_or_else(|| {
        let which = name.map(|n| format!(" named {n}")).unwrap_or_default();
        Error::usage(format!("{} holds no Playbook{which}", path.display()))
    })
}

/// Reads a JSON file, or stdin for `-`.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?
    };
    serde_json::from_str(&text)
        .map_err(|e| Error::usage(format!("{} is not JSON: {e}", path.display())))
}

/// `--step-bin`, else `vigil-step` beside this program, else on PATH.
fn locate_step_bin(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return match path.is_file() {
            true => Ok(path.to_path_buf()),
            false => Err(Error::usage(format!(
                "--step-bin {} is not a file",
                path.display()
            ))),
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vigil-step")));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("vigil-step"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside.into_iter().chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        Error::usage("cannot find vigil-step beside vigil or on PATH; build it (cargo build -p vigil-step) or pass --step-bin")
    })
}

// === approvals ===

/// How approval steps are decided.
#[derive(Debug, Default)]
struct ApprovalPolicy {
    all: Option<Decision>,
    by_step: BTreeMap<String, Decision>,
}

impl ApprovalPolicy {
    fn from_args(args: &RunArgs, compiled: &CompiledPlaybook) -> Result<Self> {
        let mut policy = Self {
            all: match (args.approve, args.deny) {
                (true, _) => Some(Decision::Approved),
                (_, true) => Some(Decision::Denied),
                _ => None,
            },
            by_step: BTreeMap::new(),
        };
        for entry in &args.decision {
            let bad = || {
                Error::usage(format!(
                    "--decision {entry}: expected STEP=approved or STEP=denied"
                ))
            };
            let (step, decision) = entry.split_once('=').ok_or_else(bad)?;
            let decision = match decision {
                "approved" | "approve" => Decision::Approved,
                "denied" | "deny" => Decision::Denied,
                _ => return Err(bad()),
            };
            if compiled
                .spec
                .step(step)
                .and_then(|s| s.approval.as_ref())
                .is_none()
            {
                return Err(Error::usage(format!(
                    "--decision {entry}: the playbook has no approval step {step}"
                )));
            }
            policy.by_step.insert(step.to_string(), decision);
        }
        Ok(policy)
    }
}

// === environment ===

/// Where step environment values come from, besides this process's own environment.
#[derive(Debug, Default)]
struct EnvSources {
    vars: Vec<(String, String)>,
    /// `--env-file FILE`: stands in for every Secret and ConfigMap.
    shared: Vec<(String, String)>,
    /// `--env-file NAME=FILE`: stands in for the Secret or ConfigMap NAME.
    named: BTreeMap<String, Vec<(String, String)>>,
}

impl EnvSources {
    fn from_args(vars: &[String], files: &[String]) -> Result<Self> {
        let mut sources = Self::default();
        for var in vars {
            let (k, v) = var
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("--var {var}: expected KEY=VALUE")))?;
            sources.vars.push((k.to_string(), v.to_string()));
        }
        for spec in files {
            let (name, file) = match spec.split_once('=') {
                Some((name, file)) if !name.contains('/') && !Path::new(spec).exists() => {
                    (Some(name), file)
                }
                _ => (None, spec.as_str()),
            };
            let path = Path::new(file);
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.into(),
                source,
            })?;
            let pairs = parse_env_file(&text);
            match name {
                Some(name) => sources
                    .named
                    .entry(name.to_string())
                    .or_default()
                    .extend(pairs),
                None => sources.shared.extend(pairs),
            }
        }
        Ok(sources)
    }

    /// The values standing in for the Secret or ConfigMap `name`.
    fn source(&self, name: &str) -> impl Iterator<Item = &(String, String)> {
        self.named
            .get(name)
            .into_iter()
            .flatten()
            .chain(&self.shared)
    }

    /// The variables a step gets on top of the inherited environment, later ones winning.
    fn for_step(&self, step: &Step) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for from in &step.env_from {
            let name = from
                .secret_ref
                .as_ref()
                .map(|r| r.name.as_str())
                .or(from.config_map_ref.as_ref().map(|r| r.name.as_str()));
            let prefix = from.prefix.clone().unwrap_or_default();
            for (k, v) in name.into_iter().flat_map(|n| self.source(n)) {
                env.push((format!("{prefix}{k}"), v.clone()));
            }
        }
        for var in &step.env {
            if let Some(value) = &var.value {
                env.push((var.name.clone(), value.clone()));
                continue;
            }
            let Some(from) = &var.value_from else {
                continue;
            };
            let key_ref = from
                .secret_key_ref
                .as_ref()
                .map(|r| (r.name.as_str(), r.key.as_str()))
                .or(from
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| (r.name.as_str(), r.key.as_str())));
            let found =
                key_ref.and_then(|(source, key)| self.source(source).find(|(k, _)| k == key));
            if let Some((_, v)) = found {
                env.push((var.name.clone(), v.clone()));
            }
        }
        env.extend(self.vars.iter().cloned());
        env
    }
}

/// `KEY=VALUE` lines; blank lines, `#` comments and a leading `export ` are allowed, and values
/// may be quoted.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

// === programs ===

/// The interpreter the operator picks for a script, from the image name.
pub fn interpreter(image: &str) -> &'static str {
    let base = image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .to_ascii_lowercase();
    if base.starts_with("python") {
        "python3"
    } else if base.starts_with("node") {
        "node"
    } else {
        "/bin/sh"
    }
}

fn script_extension(program: &str) -> &'static str {
    match program.rsplit('/').next().unwrap_or(program) {
        p if p.starts_with("python") => "py",
        p if p.starts_with("node") => "js",
        _ => "sh",
    }
}

/// Writes the step's files into `dir` and returns the program line for vigil-step.
fn prepare(step: &Step, request: &JobRequest, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir.join("out"))?;
    std::fs::write(
        dir.join("inputs.json"),
        serde_json::to_vec_pretty(&request.inputs)?,
    )?;
    let image = step.image.as_deref().unwrap_or("");
    match &step.script {
        Some(script) => {
            let mut program = step
                .command
                .clone()
                .unwrap_or_else(|| vec![interpreter(image).to_string()]);
            let file = dir.join(format!("script.{}", script_extension(&program[0])));
            std::fs::write(&file, script)?;
            program.push(file.display().to_string());
            Ok(program)
        }
        None => {
            let mut program = step.command.clone().unwrap_or_default();
            program.extend(step.args.clone().unwrap_or_default());
            Ok(program)
        }
    }
}

// === the loop ===

/// What a finished local Job reports.
struct Done {
    job: String,
    label: String,
    state: JobState,
    tail: Vec<String>,
}

struct Runner {
    compiled: CompiledPlaybook,
    inputs: Value,
    step_bin: PathBuf,
    env: EnvSources,
    approvals: ApprovalPolicy,
    workdir: PathBuf,
    style: Style,
    logs: bool,
    order: Vec<String>,
    kills: HashMap<String, oneshot::Sender<()>>,
    /// The last lines of each step's (or item's) latest failed attempt, by label.
    tails: HashMap<String, Vec<String>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl Runner {
    fn new(setup: Setup, workdir: PathBuf, style: Style, logs: bool) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let order = setup
            .compiled
            .order
            .iter()
            .chain(&setup.compiled.finally_order)
            .cloned()
            .collect();
        Self {
            compiled: setup.compiled,
            inputs: setup.inputs,
            step_bin: setup.step_bin,
            env: setup.env,
            approvals: setup.approvals,
            workdir,
            style,
            logs,
            order,
            kills: HashMap::new(),
            tails: HashMap::new(),
            done_tx,
            done_rx,
        }
    }

    /// Plans, acts and waits until the Run ends. Ctrl-C cancels (finally steps still run); a
    /// second Ctrl-C stops everything at once.
    async fn run(mut self) -> Result<(RunStatus, CompiledPlaybook)> {
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if sig_tx.send(()).is_err() {
                    break;
                }
            }
        });

        let mut status = RunStatus {
            started_at: Some(Utc::now()),
            ..Default::default()
        };
        let mut obs = Observed {
            now: Utc::now(),
            ..Default::default()
        };
        loop {
            obs.now = Utc::now();
            let plan = vigil_engine::plan(&self.compiled, RUN_NAME, &self.inputs, &status, &obs);
            for line in
                render::timeline::transitions(&status, &plan.status, &self.order, &self.style)
            {
                eprintln!("{line}");
            }
            self.show_failed_output(&status, &plan.status);
            status = plan.status;

            let mut decided = false;
            for action in plan.actions {
                match action {
                    Action::CreateJob(request) => {
                        obs.jobs.insert(request.name.clone(), JobState::Active);
                        self.start(request);
                    }
                    Action::DeleteJob { name, .. } => {
                        if let Some(kill) = self.kills.remove(&name) {
                            let _ = kill.send(());
                        }
                    }
                    Action::CreateApproval(request) => {
                        let outcome = self.decide(&request).await;
                        obs.approvals.insert(request.step.clone(), outcome);
                        decided = true;
                    }
                    Action::Event { .. } => {}
                }
            }
            if status.phase.is_finished() {
                break;
            }
            if decided {
                continue;
            }
            if self.kills.is_empty() && plan.requeue_after.is_none() {
                return Err(Error::Local(
                    "the planner is waiting for nothing; this is a bug in vigil".into(),
                ));
            }

            let wait = plan
                .requeue_after
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_millis(10));
            tokio::select! {
                Some(done) = self.done_rx.recv() => {
                    self.record(done, &mut obs);
                    while let Ok(more) = self.done_rx.try_recv() {
                        self.record(more, &mut obs);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                Some(()) = sig_rx.recv() => {
                    if obs.cancel {
                        eprintln!("stopping at once");
                        self.kills.clear();
                        status.phase = RunPhase::Cancelled;
                        break;
                    }
                    eprintln!("cancelling: running steps stop, finally steps still run (Ctrl-C again to stop at once)");
                    obs.cancel = true;
                }
            }
        }
        Ok((status, self.compiled))
    }

    fn record(&mut self, done: Done, obs: &mut Observed) {
        self.kills.remove(&done.job);
        if let JobState::Failed { .. } = &done.state {
            self.tails.insert(done.label, done.tail);
        }
        obs.jobs.insert(done.job, done.state);
    }

    /// Prints the last lines a step wrote once it has failed for good (not between retries),
    /// unless `--logs` already showed them.
    fn show_failed_output(&mut self, before: &RunStatus, after: &RunStatus) {
        let mut failed = Vec::new();
        for (name, now) in &after.steps {
            let was = before.steps.get(name);
            let units_before = was.and_then(|w| w.items.clone()).unwrap_or_default();
            for (i, unit) in now.items.iter().flatten().enumerate() {
                let old = units_before.get(i).map(|u| u.phase);
                if unit.phase == StepPhase::Failed && old != Some(StepPhase::Failed) {
                    failed.push(format!("{name}[{i}]"));
                }
            }
            if now.items.is_none()
                && now.phase == StepPhase::Failed
                && was.map(|w| w.phase) != Some(StepPhase::Failed)
            {
                failed.push(name.clone());
            }
        }
        for label in failed {
            let Some(tail) = self.tails.remove(&label) else {
                continue;
            };
            if self.logs || tail.is_empty() {
                continue;
            }
            eprintln!("    {} last output of {label}:", self.style.dim("│"));
            for line in &tail {
                eprintln!("    {} {line}", self.style.dim("│"));
            }
        }
    }

    /// Starts one Job as a local process under vigil-step.
    fn start(&mut self, request: JobRequest) {
        let label = match request.item {
            Some(i) => format!("{}[{i}]", request.step),
            None => request.step.clone(),
        };
        let step = self
            .compiled
            .spec
            .step(&request.step)
            .cloned()
            .unwrap_or_default();
        let dir = self.workdir.join(&request.name);
        let tx = self.done_tx.clone();
        let program = match prepare(&step, &request, &dir) {
            Ok(program) => program,
            Err(err) => {
                let message = format!("cannot prepare {}: {err}", dir.display());
                let state = JobState::Failed {
                    exit_code: None,
                    message,
                };
                let _ = tx.send(Done {
                    job: request.name,
                    label,
                    state,
                    tail: Vec::new(),
                });
                return;
            }
        };
        let (kill_tx, kill_rx) = oneshot::channel();
        self.kills.insert(request.name.clone(), kill_tx);
        let job = LocalJob {
            name: request.name,
            label,
            dir,
            program,
            env: self.env.for_step(&step),
            step_bin: self.step_bin.clone(),
            logs: self.logs,
            style: self.style,
        };
        tokio::spawn(job.execute(kill_rx, tx));
    }

    /// Decides an approval by flag, at the terminal, or denies it.
    async fn decide(&self, request: &vigil_engine::plan::ApprovalRequest) -> ApprovalOutcome {
        let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
        eprintln!("      {}", request.message);
        for (label, value) in &request.context {
            eprintln!("      {label}: {value}");
        }
        let flagged = self
            .approvals
            .by_step
            .get(&request.step)
            .copied()
            .or(self.approvals.all);
        let (decision, reason) = match flagged {
            Some(decision) => (decision, "decided by a command-line flag".to_string()),
            None if std::io::stdin().is_terminal() => {
                let answer = tokio::task::spawn_blocking(|| {
                    eprint!("      approve? [y/N] ");
                    let _ = std::io::stderr().flush();
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map(|_| line)
                        .unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
                (
                    if yes {
                        Decision::Approved
                    } else {
                        Decision::Denied
                    },
                    "answered at the terminal".into(),
                )
            }
            None => {
                eprintln!(
                    "      denied: stdin is not a terminal (pass --approve, --deny or --decision {}=approved)",
                    request.step
                );
                (Decision::Denied, "no terminal to ask at".into())
            }
        };
        ApprovalOutcome {
            decision,
            decided_by: user,
            reason: Some(reason),
        }
    }
}

/// One local Job: a vigil-step process and the files around it.
struct LocalJob {
    name: String,
    label: String,
    dir: PathBuf,
    program: Vec<String>,
    env: Vec<(String, String)>,
    step_bin: PathBuf,
    logs: bool,
    style: Style,
}

impl LocalJob {
    /// Runs to the end, or until killed (then nothing is reported: the planner has moved on).
    async fn execute(self, kill: oneshot::Receiver<()>, done: mpsc::UnboundedSender<Done>) {
        let mut command = tokio::process::Command::new(&self.step_bin);
        command
            .arg("run")
            .arg("--")
            .args(&self.program)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("VIGIL_INPUTS_FILE", self.dir.join("inputs.json"))
            .env("VIGIL_OUTPUTS", self.dir.join("out/outputs.json"))
            .env("VIGIL_TERMINATION_LOG", self.dir.join("termination.json"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);

        let report = |state, tail| {
            let _ = done.send(Done {
                job: self.name.clone(),
                label: self.label.clone(),
                state,
                tail,
            });
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let message = format!("cannot start {}: {err}", self.step_bin.display());
                return report(
                    JobState::Failed {
                        exit_code: None,
                        message,
                    },
                    Vec::new(),
                );
            }
        };
        let pid = child.id();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let log = Arc::new(Mutex::new(
            std::fs::File::create(self.dir.join("output.log")).ok(),
        ));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(self.collect(out, tail.clone(), log.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(self.collect(err, tail.clone(), log.clone())));
        }

        let status = tokio::select! {
            status = child.wait() => status,
            _ = kill => {
                if let Some(pid) = pid {
                    // The whole process group: vigil-step and the program it started.
                    // SAFETY: kill(2) with a negative pid signals a group; no memory is touched.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                return;
            }
        };
        for reader in readers {
            let _ = reader.await;
        }
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let state = match status {
            Ok(status) => outcome(status.code(), &self.dir),
            Err(err) => JobState::Failed {
                exit_code: None,
                message: format!("waiting for vigil-step: {err}"),
            },
        };
        report(state, tail);
    }

    fn collect<R>(
        &self,
        stream: R,
        tail: Arc<Mutex<VecDeque<String>>>,
        log: Arc<Mutex<Option<std::fs::File>>>,
    ) -> impl std::future::Future<Output = ()> + use<R>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let prefix = self
            .logs
            .then(|| self.style.dim(&format!("{} │", self.label)));
        async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(prefix) = &prefix {
                    eprintln!("    {prefix} {line}");
                }
                if let Ok(mut guard) = log.lock()
                    && let Some(file) = guard.as_mut()
                {
                    let _ = writeln!(file, "{line}");
                }
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        }
    }
}

/// Reads what vigil-step left in the termination file, as the operator reads the termination
/// message.
fn outcome(code: Option<i32>, dir: &Path) -> JobState {
    let termination: Option<Value> = std::fs::read(dir.join("termination.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let outputs_file = || -> Option<Value> {
        let bytes = std::fs::read(dir.join("out/outputs.json")).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let field = |name: &str| termination.as_ref().and_then(|t| t.get(name)).cloned();
    match code {
        Some(0) => {
            let outputs = field("outputs")
                .filter(Value::is_object)
                .or_else(outputs_file)
                .unwrap_or(json!({}));
            JobState::Succeeded {
                outputs,
                stored: None,
            }
        }
        // vigil-step could not hand over large outputs (no upload URL here): read the file.
        Some(70) if outputs_file().is_some() => JobState::Succeeded {
            outputs: outputs_file().unwrap_or_default(),
            stored: None,
        },
        _ => {
            let exit_code = field("exitCode")
                .and_then(|c| c.as_i64())
                .map(|c| c as i32)
                .or(code);
            let message = field("error")
                .and_then(|e| e.as_str().map(str::to_string))
                .unwrap_or_else(|| match code {
                    Some(c) => format!("exited with code {c}"),
                    None => "killed by a signal".into(),
                });
            JobState::Failed { exit_code, message }
        }
    }
}

// === results ===

fn json_result(status: &RunStatus) -> Value {
    let steps: serde_json::Map<String, Value> = status
        .steps
        .iter()
        .map(|(name, s)| {
            let outputs = s.outputs.clone().unwrap_or(json!({}));
            let mut entry = json!({"phase": s.phase.as_str(), "outputs": outputs});
            if let Some(message) = &s.message {
                entry["message"] = json!(message);
            }
            (name.clone(), entry)
        })
        .collect();
    json!({
        "phase": status.phase.as_str(),
        "reason": status.reason,
        "message": status.message,
        "inputs": status.inputs,
        "steps": steps,
    })
}

fn text_result(
    playbook: &str,
    status: &RunStatus,
    compiled: &CompiledPlaybook,
    style: &Style,
) -> String {
    let mut run = Run::new(
        RUN_NAME,
        RunSpec {
            playbook_ref: PlaybookRef {
                name: playbook.into(),
            },
            inputs: None,
            trigger: Some(TriggerInfo {
                kind: "local".into(),
                ..Default::default()
            }),
            cancel: None,
        },
    );
    let mut shown = status.clone();
    shown.frozen = Some(FrozenPlaybook {
        generation: 0,
        uid: String::new(),
        spec: compiled.spec.clone(),
    });
    run.status = Some(shown);
    let mut out = format!(
        "\n{}",
        render::describe::describe_run(&run, Utc::now(), style)
    );
    let with_outputs: Vec<(&String, &Value)> = status
        .steps
        .iter()
        .filter_map(|(n, s)| {
            s.outputs
                .as_ref()
                .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
                .map(|o| (n, o))
        })
        .collect();
    if !with_outputs.is_empty() {
        out.push_str("\nOutputs:\n");
        for name in &compiled_order(compiled) {
            if let Some((_, outputs)) = with_outputs.iter().find(|(n, _)| *n == name) {
                out.push_str(&format!("  {name}: {outputs}\n"));
            }
        }
    }
    out
}

fn compiled_order(compiled: &CompiledPlaybook) -> Vec<String> {
    compiled
        .order
        .iter()
        .chain(&compiled.finally_order)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_follows_the_image_name() {
        assert_eq!(interpreter("python:3.12-slim"), "python3");
        assert_eq!(interpreter("docker.io/library/node:22"), "node");
        assert_eq!(interpreter("ghcr.io/acme/python-tools:1"), "python3");
        assert_eq!(interpreter("alpine:3"), "/bin/sh");
    }

    #[test]
    fn env_files_accept_comments_exports_and_quotes() {
        let pairs = parse_env_file("# c\nexport A=1\nB=\"two words\"\n\nC='x=y'\n");
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
            ]
        );
    }

    #[test]
    fn a_failed_step_reports_the_wrappers_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("termination.json"),
            r#"{"v":1,"error":"program exited with code 3","exitCode":3}"#,
        )
        .unwrap();
        assert_eq!(
            outcome(Some(3), dir.path()),
            JobState::Failed {
                exit_code: Some(3),
                message: "program exited with code 3".into()
            }
        );
    }
}
