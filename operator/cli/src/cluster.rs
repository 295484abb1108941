//! The commands that talk to a cluster: trigger, get, describe, logs, watch, approve, deny and
//! cancel. They fetch and change objects; turning them into text is [`crate::render`]'s job.

use crate::{
    alert,
    cli::{
        Command, DecideArgs, DescribeArgs, GetArgs, GetOutput, Global, LogsArgs, ObjectOutput,
        Resource, TriggerArgs,
    },
    error::{EXIT_CANCELLED, EXIT_FAILED, Error, Result},
    local::read_json,
    render::{self, Style, table::Columns},
};
use chrono::Utc;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Event, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config, Resource as KubeResource, ResourceExt,
    api::{ListParams, LogParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, io::IsTerminal, process::ExitCode};
use vigil_api::{
    Approval, Decision, Playbook, Run, RunPhase, RunSpec, labels,
    run::{PlaybookRef, TriggerInfo},
};

/// Connects, then runs one cluster command.
pub fn run(global: &Global, command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cluster = Cluster::connect(global).await?;
        let style = global.style(false);
        match command {
            Command::Trigger(args) => cluster.trigger(args, &style).await,
            Command::Get(args) => cluster.get(args, &style).await,
            Command::Describe(args) => cluster.describe(args, &style).await,
            Command::Logs(args) => cluster.logs(args).await,
            Command::Watch(args) => cluster.watch(&args.run, &style).await,
            Command::Approve(args) => cluster.decide(args, Decision::Approved).await,
            Command::Deny(args) => cluster.decide(args, Decision::Denied).await,
            Command::Cancel(args) => cluster.cancel(&args.run).await,
            Command::Lint(_) | Command::Run(_) | Command::Completion(_) => {
                unreachable!("offline commands are dispatched before connecting")
            }
        }
    })
}

/// A client and the namespace commands work in.
pub struct Cluster {
    client: Client,
    namespace: String,
}

impl Cluster {
    /// Reads the kubeconfig as kubectl does (`--kubeconfig`, else $KUBECONFIG, else
    /// ~/.kube/config, with `--context`), falling back to the in-cluster service account.
    pub async fn connect(global: &Global) -> Result<Self> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(Error::Kubeconfig)?
            }
            None => match Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(err) => match (global.context.is_none(), Config::incluster()) {
                    (true, Ok(config)) => config,
                    _ => return Err(Error::Kubeconfig(err)),
                },
            },
        };
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(Error::Connect)?;
        Ok(Self { client, namespace })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: KubeResource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    // === trigger ===

    async fn trigger(&self, args: TriggerArgs, style: &Style) -> Result<ExitCode> {
        let playbook: Playbook = self
            .api()
            .get(&args.playbook)
            .await
            .map_err(|e| self.fetch_error("playbook", &args.playbook, e))?;
        let alert = match &args.input {
            Some(path) => read_json(path)?,
            None => json!({}),
        };
        let inputs = alert::inputs_from_alert(&playbook.spec, &alert).map_err(|errors| {
            Error::usage(format!(
                "the inputs do not fit playbook {}:\n  {}",
                args.playbook,
                errors.join("\n  ")
            ))
        })?;
        let digest = Sha256::digest(serde_json::to_vec(&alert).unwrap_or_default());

        let run = Run {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", args.playbook)),
                labels: Some(BTreeMap::from([(
                    labels::PLAYBOOK.to_string(),
                    args.playbook.clone(),
                )])),
                ..Default::default()
            },
            spec: RunSpec {
                playbook_ref: PlaybookRef {
                    name: args.playbook.clone(),
                },
                inputs: Some(inputs),
                trigger: Some(TriggerInfo {
                    kind: "cli".into(),
                    source: Some(format!("vigil-cli/{}", env!("CARGO_PKG_VERSION"))),
                    received_at: Some(Utc::now()),
                    body_digest: Some(format!("sha256:{}", hex::encode(digest))),
                    ..Default::default()
                }),
                cancel: None,
            },
            status: None,
        };
        let created = self
            .api::<Run>()
            .create(&PostParams::default(), &run)
            .await
            .map_err(|e| refused_or("creating the Run", e))?;
        let name = created.name_any();
        println!("{name}");
        if args.watch {
            return self.watch(&name, style).await;
        }
        eprintln!("follow it with: vigil watch {name} -n {}", self.namespace);
        Ok(ExitCode::SUCCESS)
    }

    // === get ===

    async fn get(&self, args: GetArgs, style: &Style) -> Result<ExitCode> {
        let cols = Columns {
            wide: args.output == Some(GetOutput::Wide),
            namespace: args.all_namespaces,
        };
        let now = Utc::now();
        let (table, count) = match args.resource {
            Resource::Runs => {
                let mut runs: Vec<Run> = self.list(&args).await?;
                runs.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
                if let Some(done) = print_objects(&runs, args.output)? {
                    return Ok(done);
                }
                (render::table::runs(&runs, cols, now), runs.len())
            }
            Resource::Playbooks => {
                let playbooks: Vec<Playbook> = self.list(&args).await?;
                if let Some(done) = print_objects(&playbooks, args.output)? {
                    return Ok(done);
                }
                (
                    render::table::playbooks(&playbooks, cols, now),
                    playbooks.len(),
                )
            }
            Resource::Approvals => {
                let approvals: Vec<Approval> = self.list(&args).await?;
                if let Some(done) = print_objects(&approvals, args.output)? {
                    return Ok(done);
                }
                (
                    render::table::approvals(&approvals, cols, now),
                    approvals.len(),
                )
            }
        };
        if count == 0 {
            match args.all_namespaces {
                true => eprintln!("No resources found"),
                false => eprintln!("No resources found in {} namespace.", self.namespace),
            }
        } else {
            print!("{}", render::table::colorize(&table, style));
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn list<K>(&self, args: &GetArgs) -> Result<Vec<K>>
    where
        K: KubeResource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = match args.all_namespaces {
            true => Api::all(self.client.clone()),
            false => self.api(),
        };
        let kind = K::kind(&()).to_lowercase();
        if let Some(name) = &args.name {
            return Ok(vec![
                api.get(name)
                    .await
                    .map_err(|e| self.fetch_error(&kind, name, e))?,
            ]);
        }
        let mut params = ListParams::default();
        if let Some(selector) = &args.selector {
            params = params.labels(selector);
        }
        let list = api
            .list(&params)
            .await
            .map_err(|e| Error::api(format!("listing {kind}s"), e))?;
        Ok(list.items)
    }

    // === describe ===

    async fn describe(&self, args: DescribeArgs, style: &Style) -> Result<ExitCode> {
        let run: Run = self
            .api()
            .get(&args.name)
            .await
            .map_err(|e| self.fetch_error("run", &args.name, e))?;
        match args.output {
            Some(ObjectOutput::Json) => println!("{}", to_json(&run)?),
            Some(ObjectOutput::Yaml) => print!("{}", to_yaml(&run)?),
            None => {
                print!(
                    "{}",
                    render::describe::describe_run(&run, Utc::now(), style)
                );
                let events = self.events("Run", &args.name).await;
                print!("{}", render::describe::events(&events, Utc::now()));
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The object's events, oldest first; none when they cannot be read (RBAC may hide them).
    async fn events(&self, kind: &str, name: &str) -> Vec<Event> {
        let params = ListParams::default().fields(&format!(
            "involvedObject.kind={kind},involvedObject.name={name}"
        ));
        let mut events = self
            .api::<Event>()
            .list(&params)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.sort_by_key(|e| {
            e.last_timestamp
                .clone()
                .or(e.first_timestamp.clone())
                .map(|t| t.0)
        });
        events
    }

    // === logs ===

    async fn logs(&self, args: LogsArgs) -> Result<ExitCode> {
        let mut selector = format!("{}={}", labels::RUN, args.run);
        if let Some(step) = &args.step {
            selector.push_str(&format!(",{}={step}", labels::STEP));
        }
        let pods: Api<Pod> = self.api();
        let mut list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::api("listing step pods", e))?
            .items;
        if list.is_empty() {
            let which = args
                .step
                .as_ref()
                .map(|s| format!(" step {s}"))
                .unwrap_or_default();
            return Err(Error::Local(format!(
                "no pods for run {}{which} in namespace {} (not started yet, or already cleaned up)",
                args.run, self.namespace
            )));
        }
        list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));

        let params = LogParams {
            container: Some("step".into()),
            tail_lines: args.tail,
            ..Default::default()
        };
        let many = list.len() > 1;
        let last = list.len() - 1;
        for (i, pod) in list.iter().enumerate() {
            let name = pod.name_any();
            if many {
                println!("==> {name} ({}) <==", pod_label(pod));
            }
            if args.follow && i == last {
                let params = LogParams {
                    follow: true,
                    ..params.clone()
                };
                let stream = pods
                    .log_stream(&name, &params)
                    .await
                    .map_err(|e| Error::api(format!("streaming the log of {name}"), e))?;
                let mut lines = stream.lines();
                while let Some(line) = lines.try_next().await? {
                    println!("{line}");
                }
                continue;
            }
            match pods.logs(&name, &params).await {
                Ok(text) => print!("{text}"),
                Err(err) => eprintln!(
                    "{}",
                    Error::api(format!("reading the log of {name}"), err).report()
                ),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    // === watch ===

    /// Follows a Run until it ends. On a terminal the view is redrawn on every change; elsewhere
    /// one line is printed per step transition.
    async fn watch(&self, name: &str, style: &Style) -> Result<ExitCode> {
        let api: Api<Run> = self.api();
        api.get(name)
            .await
            .map_err(|e| self.fetch_error("run", name, e))?;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).applied_objects().boxed();
        let tty = std::io::stdout().is_terminal();
        let mut last = vigil_api::RunStatus::default();

        while let Some(run) = stream
            .try_next()
            .await
            .map_err(|e| Error::Local(format!("watching run {name}: {e}")))?
        {
            let status = run.status.clone().unwrap_or_default();
            if tty {
                print!(
                    "\x1b[H\x1b[2J{}",
                    render::describe::describe_run(&run, Utc::now(), style)
                );
            } else {
                let order = match &status.frozen {
                    Some(f) => {
                        let (dag, finally) = render::step_order(&f.spec);
                        dag.into_iter().chain(finally).collect()
                    }
                    None => render::order_by_start(&status.steps),
                };
                for line in render::timeline::transitions(&last, &status, &order, style) {
                    println!("{line}");
                }
                if status.phase != last.phase {
                    let progress = status
                        .progress
                        .as_deref()
                        .map(|p| format!(" {p}"))
                        .unwrap_or_default();
                    println!(
                        "run {name}: {}{progress}",
                        style.phase(status.phase.as_str(), status.phase.as_str())
                    );
                }
            }
            last = status;
            if last.phase.is_finished() {
                break;
            }
        }
        if tty {
            println!();
        }
        if let Some(message) = &last.message {
            println!("{} {}: {message}", style.bold(name), last.phase.as_str());
        }
        Ok(match last.phase {
            RunPhase::Succeeded => ExitCode::SUCCESS,
            RunPhase::Cancelled => ExitCode::from(EXIT_CANCELLED),
            _ => ExitCode::from(EXIT_FAILED),
        })
    }

    // === approve, deny ===

    /// Appends a decision to `spec.decisions`. The admission webhook records who decided and
    /// refuses anyone who may not; its message is shown as it came.
    async fn decide(&self, args: DecideArgs, decision: Decision) -> Result<ExitCode> {
        let api: Api<Approval> = self.api();
        let name = &args.approval;
        for attempt in 0..3 {
            let approval = api
                .get(name)
                .await
                .map_err(|e| self.fetch_error("approval", name, e))?;
            if let Some(made) = approval.status.as_ref().and_then(|s| s.decision) {
                let by = approval
                    .status
                    .as_ref()
                    .and_then(|s| s.decided_by.clone())
                    .unwrap_or_default();
                return Err(Error::Local(format!(
                    "approval {name} was already decided: {} by {by}",
                    made.as_str()
                )));
            }
            let mut entry = json!({"decision": decision.as_str(), "via": "kubectl"});
            if let Some(reason) = &args.reason {
                entry["reason"] = json!(reason);
            }
            let patch = decision_patch(&approval, entry);
            let patch: json_patch::Patch =
                serde_json::from_value(patch).expect("a well-formed JSON patch");
            match api
                .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
            {
                Ok(updated) => {
                    let by = updated
                        .spec
                        .decisions
                        .last()
                        .map(|d| d.by.clone())
                        .filter(|b| !b.is_empty());
                    let by = by.map(|b| format!(" as {b}")).unwrap_or_default();
                    println!("approval {name} {}{by}", decision.as_str());
                    return Ok(ExitCode::SUCCESS);
                }
                // Someone else wrote the object between our read and our patch: read again.
                Err(kube::Error::Api(status))
                    if (status.code == 409 || status.code == 422)
                        && status.message.contains("test")
                        && attempt < 2 =>
                {
                    continue;
                }
                Err(err) => {
                    return Err(refused_or(&format!("the decision on approval {name}"), err));
                }
            }
        }
        Err(Error::Local(format!(
            "approval {name} kept changing; try again"
        )))
    }

    // === cancel ===

    async fn cancel(&self, name: &str) -> Result<ExitCode> {
        let api: Api<Run> = self.api();
        let patch = json!({"spec": {"cancel": true}});
        let run = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => self.fetch_error("run", name, e),
                _ => refused_or(&format!("cancelling run {name}"), e),
            })?;
        match run.phase() {
            phase if phase.is_finished() => {
                println!("run {name} had already ended: {}", phase.as_str())
            }
            _ => println!("run {name} cancelling (finally steps still run)"),
        }
        Ok(ExitCode::SUCCESS)
    }

    fn fetch_error(&self, kind: &str, name: &str, err: kube::Error) -> Error {
        match &err {
            kube::Error::Api(status) if status.code == 404 => Error::Local(format!(
                "{kind} {name} not found in namespace {}",
                self.namespace
            )),
            _ => Error::api(format!("reading {kind} {name}"), err),
        }
    }
}

/// The JSON patch that appends `entry`. An empty list does not exist in the stored object, so
/// the first decision creates it, guarded by the resourceVersion against a concurrent first.
pub fn decision_patch(approval: &Approval, entry: serde_json::Value) -> serde_json::Value {
    if approval.spec.decisions.is_empty() {
        let version = approval
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/spec/decisions", "value": [entry]},
        ])
    } else {
        json!([{"op": "add", "path": "/spec/decisions/-", "value": entry}])
    }
}

/// Admission and validation refusals (400, 403, 409, 422) become [`Error::Refused`] with the
/// server's own message; anything else stays an API error.
fn refused_or(what: &str, err: kube::Error) -> Error {
    match &err {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 409 | 422) => {
            Error::Refused {
                what: what.to_string(),
                message: status.message.clone(),
            }
        }
        _ => Error::api(what.to_string(), err),
    }
}

fn pod_label(pod: &Pod) -> String {
    let labels = pod.labels();
    let mut parts = Vec::new();
    if let Some(step) = labels.get(labels::STEP) {
        parts.push(format!("step {step}"));
    }
    if let Some(item) = labels.get(labels::ITEM) {
        parts.push(format!("item {item}"));
    }
    if let Some(attempt) = labels.get(labels::ATTEMPT) {
        parts.push(format!("attempt {attempt}"));
    }
    parts.join(", ")
}

/// Prints objects for `-o json|yaml|name`; `None` when a table is wanted.
fn print_objects<K: Serialize + KubeResource<DynamicType = ()>>(
    items: &[K],
    output: Option<GetOutput>,
) -> Result<Option<ExitCode>> {
    let list = || json!({"apiVersion": "v1", "kind": "List", "items": items});
    match output {
        Some(GetOutput::Json) => println!("{}", to_json(&list())?),
        Some(GetOutput::Yaml) => print!("{}", to_yaml(&list())?),
        Some(GetOutput::Name) => {
            for item in items {
                let kind = K::kind(&()).to_lowercase();
                let name = item.meta().name.clone().unwrap_or_default();
                println!("{kind}.{}/{name}", K::group(&()));
            }
        }
        Some(GetOutput::Wide) | None => return Ok(None),
    }
    Ok(Some(ExitCode::SUCCESS))
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Local(format!("cannot encode JSON: {e}")))
}

fn to_yaml<T: Serialize>(value: &T) -> Result<String> {
    serde_yaml::to_string(value).map_err(|e| Error::Local(format!("cannot encode YAML: {e}")))
}
