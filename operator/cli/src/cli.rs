//! The command line: every command and flag, and the dispatch to the code that carries it out.

use crate::{cluster, error::Result, lint, local, render::Style};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

/// Security playbooks on Kubernetes: lint them, run them locally, trigger and follow Runs,
/// decide Approvals.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, spelled as kubectl spells them.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The namespace; defaults to the kube context's namespace, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file; defaults to $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Only when writing to a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

impl Global {
    /// The style for text written to stdout (or stderr, for progress lines).
    pub fn style(&self, stderr: bool) -> Style {
        let tty = if stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let color = match self.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var("TERM").map_or(true, |t| t != "dumb")
            }
        };
        Style { color }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check playbook files offline: schema, DAG, CEL and references.
    Lint(LintArgs),
    /// Run a playbook on this machine, without a cluster (`--local`).
    Run(RunArgs),
    /// Start a Run of a Playbook on the cluster.
    Trigger(TriggerArgs),
    /// List Runs, Playbooks or Approvals.
    Get(GetArgs),
    /// Show a Run and the tree of its steps.
    Describe(DescribeArgs),
    /// Print the logs of a Run's step pods.
    Logs(LogsArgs),
    /// Follow a Run until it ends; the exit code tells how it ended.
    Watch(WatchArgs),
    /// Approve an Approval.
    Approve(DecideArgs),
    /// Deny an Approval.
    Deny(DecideArgs),
    /// Cancel a Run: running steps stop, finally steps still run.
    Cancel(CancelArgs),
    /// Print a shell completion script: `source <(vigil completion bash)`.
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files or directories (their *.yaml and *.yml files) to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = LintOutput::Text)]
    pub output: LintOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintOutput {
    /// `file:line: step X: field: message`, one per line.
    Text,
    /// A JSON array of {file, line, step, field, message}.
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run on this machine: each step is a local process under vigil-step. Required: on a
    /// cluster, use `vigil trigger`.
    #[arg(long)]
    pub local: bool,
    /// The playbook file (the first Playbook in it, or the one named by --name).
    #[arg(short = 'f', long = "file", value_name = "PLAYBOOK.yaml")]
    pub file: PathBuf,
    /// Which Playbook of the file to run, when it holds several.
    #[arg(long)]
    pub name: Option<String>,
    /// The alert, as JSON (`-` for stdin); mapped by the webhook trigger's `inputs` if any.
    #[arg(short = 'i', long, value_name = "ALERT.json")]
    pub input: Option<PathBuf>,
    /// Approve every approval step.
    #[arg(long, conflicts_with = "deny")]
    pub approve: bool,
    /// Deny every approval step.
    #[arg(long)]
    pub deny: bool,
    /// Decide one approval step: STEP=approved or STEP=denied (repeatable).
    #[arg(long, value_name = "STEP=DECISION")]
    pub decision: Vec<String>,
    /// The vigil-step binary; default: next to this program, else on PATH.
    #[arg(long, value_name = "PATH")]
    pub step_bin: Option<PathBuf>,
    /// An environment variable for every step (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// KEY=VALUE lines standing in for the Secrets and ConfigMaps of `envFrom`; `NAME=FILE`
    /// binds a file to one Secret or ConfigMap (repeatable).
    #[arg(long = "env-file", value_name = "[NAME=]FILE")]
    pub env_files: Vec<String>,
    /// Print every line the steps write, prefixed by the step.
    #[arg(long)]
    pub logs: bool,
    /// Keep the working directory (inputs, scripts, outputs, logs) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// How to print the result: a step tree, or JSON with every step's outputs.
    #[arg(short = 'o', long, value_enum, default_value_t = RunOutput::Text)]
    pub output: RunOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunOutput {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The Playbook to run.
    pub playbook: String,
    /// The alert, as JSON (`-` for stdin); mapped by the webhook trigger's `inputs` if any.
    #[arg(short = 'i', long, value_name = "ALERT.json")]
    pub input: Option<PathBuf>,
    /// Follow the Run until it ends, like `vigil watch`.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub resource: Resource,
    /// Only this object.
    pub name: Option<String>,
    /// Output format; default a table.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<GetOutput>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `vigil.dev/playbook=incident-response`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "run", alias = "vrun")]
    Runs,
    #[value(alias = "playbook", alias = "pb")]
    Playbooks,
    #[value(alias = "approval", alias = "appr")]
    Approvals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    Json,
    Yaml,
    Wide,
    Name,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe; only `run` for now.
    pub kind: DescribeKind,
    pub name: String,
    /// Print the object instead of the tree.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ObjectOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    #[value(alias = "runs", alias = "vrun")]
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectOutput {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub run: String,
    /// Only this step's pods.
    pub step: Option<String>,
    /// Lines from the end of each log.
    #[arg(long)]
    pub tail: Option<i64>,
    /// Keep streaming the newest pod's log.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    pub run: String,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The Approval's name (`vigil get approvals` lists them).
    pub approval: String,
    /// Why, recorded with the decision.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    pub run: String,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let Cli { global, command } = cli;
    match command {
        Command::Lint(args) => Ok(run_lint(&args)),
        Command::Run(args) => local::run(&global, args),
        Command::Completion(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "vigil", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        cluster_command => cluster::run(&global, cluster_command),
    }
}

fn run_lint(args: &LintArgs) -> ExitCode {
    let report = lint::lint_paths(&args.files);
    match args.output {
        LintOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report.findings).unwrap_or_default()
            );
        }
        LintOutput::Text => {
            for finding in &report.findings {
                println!("{}", finding.to_line());
            }
            if report.playbooks == 0 && report.findings.is_empty() {
                eprintln!("vigil lint: no Playbook documents in the given files");
            }
        }
    }
    if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILED)
    }
}
