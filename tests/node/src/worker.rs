//! One pod bound to this node: volumes, init containers in order, then all containers, status
//! reports, `activeDeadlineSeconds`, token refresh, and the final kill and removal.

use std::{
    fs,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::events::{Event as KubeEvent, EventType},
};
use serde_json::json;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    Ctx, container,
    status::{Board, Record, RestartPolicy, State, Terminated},
    volumes::{self, PodLayout},
};

/// The longest grace the node grants a container before SIGKILL.
const MAX_GRACE: Duration = Duration::from_secs(30);
const VOLUME_RETRY: Duration = Duration::from_secs(2);
const HOUSEKEEPING: Duration = Duration::from_secs(5);
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";
const HOSTS_HEADER: &str = "# Kubernetes-managed hosts file (vigil process node).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
";

/// Tells containers to stop, with the grace they get between SIGTERM and SIGKILL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop {
    pub grace: Duration,
}

/// Which container of the pod.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    Init(usize),
    Main(usize),
}

/// What the containers of one pod share with the pod worker.
pub struct PodRun {
    pub ctx: Arc<Ctx>,
    pub pod: Arc<Pod>,
    /// `namespace/name`, for logs.
    pub key: String,
    pub layout: PodLayout,
    pub stop: watch::Receiver<Option<Stop>>,
    board: Mutex<Board>,
    dirty: Notify,
    token_refresh: Mutex<Option<Instant>>,
}

impl PodRun {
    /// Changes one container's record and schedules a status write.
    pub fn update(&self, slot: Slot, change: impl FnOnce(&mut Record)) {
        if let Ok(mut board) = self.board.lock() {
            let record = match slot {
                Slot::Init(i) => board.init.get_mut(i),
                Slot::Main(i) => board.main.get_mut(i),
            };
            if let Some(record) = record {
                change(record);
            }
        }
        self.dirty.notify_one();
    }

    fn with_board<T>(&self, f: impl FnOnce(&mut Board) -> T) -> Option<T> {
        let out = self.board.lock().ok().map(|mut board| f(&mut board));
        self.dirty.notify_one();
        out
    }

    /// Records a Kubernetes Event about the pod, from "kubelet" like a real node.
    pub fn event(&self, warning: bool, reason: &str, note: String) {
        let ctx = self.ctx.clone();
        let reference = self.pod.object_ref(&());
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(error) = ctx.recorder.publish(&event, &reference).await {
                debug!(%error, "Publishing event");
            }
        });
    }

    async fn write_status(&self) -> Result<(), kube::Error> {
        let Some(mut status) = self.board.lock().ok().map(|mut b| b.render(Utc::now())) else {
            return Ok(());
        };
        if let Some(generation) = self.pod.metadata.generation {
            status["observedGeneration"] = json!(generation);
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        // The uid makes the patch fail on a newer pod of the same name, as with the kubelet.
        let patch = json!({"metadata": {"uid": self.pod.metadata.uid}, "status": status});
        api.patch_status(
            &self.pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Writes the status until it lands, the pod is gone, or `attempts` ran out.
    async fn flush(&self, attempts: u32) {
        for attempt in 1..=attempts {
            match self.write_status().await {
                Ok(()) => return,
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => return,
                // Invalid or forbidden: the same status will not do better the next time.
                Err(kube::Error::Api(status))
                    if (400..500).contains(&status.code) && status.code != 429 =>
                {
                    warn!(pod = %self.key, error = %status.message, "Pod status refused");
                    return;
                }
                Err(error) => {
                    warn!(pod = %self.key, %error, attempt, "Writing pod status");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn restart_policy(pod: &Pod) -> RestartPolicy {
    RestartPolicy::parse(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()))
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
}

fn containers(pod: &Pod) -> (Vec<Container>, Vec<Container>) {
    let spec = pod.spec.clone().unwrap_or_default();
    (spec.init_containers.unwrap_or_default(), spec.containers)
}

/// A board for a pod this process has not run before; with `restarted`, the containers
/// count as restarted once more than the status says.
fn fresh_board(pod: &Pod, restarted: bool) -> Board {
    let (init, main) = containers(pod);
    let status = pod.status.clone().unwrap_or_default();
    let previous =
        |name: &str, statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            statuses
                .iter()
                .flatten()
                .find(|s| s.name == name)
                .map(|s| s.restart_count + 1)
                .unwrap_or(0)
        };
    let first_reason = if init.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let record = |c: &Container, reason: &str, restarts: i32| Record {
        restarts: if restarted { restarts } else { 0 },
        ..Record::new(&c.name, c.image.as_deref().unwrap_or_default(), reason)
    };
    let init = init
        .iter()
        .map(|c| {
            record(
                c,
                "PodInitializing",
                previous(&c.name, &status.init_container_statuses),
            )
        })
        .collect();
    let main = main
        .iter()
        .map(|c| {
            record(
                c,
                first_reason,
                previous(&c.name, &status.container_statuses),
            )
        })
        .collect();
    let start = status
        .start_time
        .map(|t| chrono_of(&t.0))
        .unwrap_or_else(Utc::now);
    Board::new(start, init, main)
}

fn chrono_of(t: &k8s_openapi::jiff::Timestamp) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), 0).unwrap_or_else(Utc::now)
}

/// Drives one pod from its first sight to its removal. `pod_rx` carries the latest object,
/// `None` once it is gone from the API.
pub async fn run(ctx: Arc<Ctx>, mut pod_rx: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = pod_rx.borrow().clone() else {
        return;
    };
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let layout = PodLayout::new(&ctx.pods_dir, &pod);
    let policy = restart_policy(&pod);
    let restarted = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .is_some();
    let (stop_tx, stop_rx) = watch::channel(None);

    let run = Arc::new(PodRun {
        ctx: ctx.clone(),
        pod: pod.clone(),
        key: key.clone(),
        layout: layout.clone(),
        stop: stop_rx,
        board: Mutex::new(fresh_board(&pod, restarted)),
        dirty: Notify::new(),
        token_refresh: Mutex::new(None),
    });

    // The API server forbids a finished container to run again under Never and OnFailure,
    // and a step may not run twice anyway: such a pod fails, and its Job replaces it.
    if restarted && policy != RestartPolicy::Always {
        info!(pod = %key, "Failing pod: the node restarted while it ran");
        run.with_board(fail_after_node_restart);
        run.flush(10).await;
    } else {
        info!(pod = %key, restarted, "Running pod");
        drive_until_stopped(&run, &mut pod_rx, &stop_tx).await;
    }

    // A finished pod stays until it is deleted, like on a real node.
    let mut deleting = is_deleting(&pod_rx.borrow());
    while !deleting {
        if pod_rx.changed().await.is_err() {
            break;
        }
        deleting = is_deleting(&pod_rx.borrow());
    }
    remove(&ctx, &run).await;
}

fn is_deleting(pod: &Option<Arc<Pod>>) -> bool {
    pod.as_ref()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

fn fail_after_node_restart(board: &mut Board) {
    let now = Utc::now();
    for record in board.init.iter_mut().chain(board.main.iter_mut()) {
        record.done = true;
        record.state = State::Terminated(Terminated {
            exit_code: 137,
            reason: "Error".into(),
            message: Some("the process node restarted while the container ran".into()),
            started_at: None,
            finished_at: now,
            container_id: None,
        });
    }
    board.failure = Some((
        "NodeRestarted".into(),
        "The process node restarted while the pod ran.".into(),
    ));
}

/// Runs the pod's containers and watches for deletion, deadline and token expiry meanwhile.
async fn drive_until_stopped(
    run: &Arc<PodRun>,
    pod_rx: &mut watch::Receiver<Option<Arc<Pod>>>,
    stop_tx: &watch::Sender<Option<Stop>>,
) {
    let writer = tokio::spawn(status_writer(run.clone()));
    let deadline = run
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| {
            let start = run.with_board(|b| b.start_time).unwrap_or_else(Utc::now);
            let elapsed = (Utc::now() - start).to_std().unwrap_or_default();
            Instant::now() + Duration::from_secs(s).saturating_sub(elapsed)
        });

    let drive = drive(run.clone());
    tokio::pin!(drive);
    let mut watching = true;
    let mut deadline_armed = deadline.is_some();
    let deadline_at = deadline.unwrap_or_else(Instant::now);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            () = &mut drive => break,
            changed = pod_rx.changed(), if watching => {
                watching = changed.is_ok();
                let current = pod_rx.borrow().clone();
                if is_deleting(&current) && stop_tx.borrow().is_none() {
                    let grace = current.as_deref().map(grace_of).unwrap_or_default();
                    info!(pod = %run.key, ?grace, "Stopping pod: deleted");
                    let _ = stop_tx.send(Some(Stop { grace }));
                }
            }
            () = tokio::time::sleep_until(deadline_at), if deadline_armed => {
                deadline_armed = false;
                if stop_tx.borrow().is_none() {
                    info!(pod = %run.key, "Stopping pod: active deadline exceeded");
                    run.event(true, "DeadlineExceeded", DEADLINE_MESSAGE.into());
                    run.with_board(|b| {
                        b.failure = Some(("DeadlineExceeded".into(), DEADLINE_MESSAGE.into()));
                    });
                    let _ = stop_tx.send(Some(Stop { grace: grace_of(&run.pod) }));
                }
            }
            _ = housekeeping.tick() => housekeep(run).await,
        }
    }
    writer.abort();
    if !is_deleting_hard(&pod_rx.borrow()) {
        run.flush(10).await;
    }
}

fn is_deleting_hard(pod: &Option<Arc<Pod>>) -> bool {
    pod.is_none()
}

/// Volumes, then init containers one by one, then all containers together.
async fn drive(run: Arc<PodRun>) {
    let mut stop = run.stop.clone();
    let mut last_error = String::new();
    let volumes = loop {
        match volumes::prepare(&run.ctx, &run.pod, &run.layout).await {
            Ok((volumes, token_ttl)) => {
                if let (Some(ttl), Ok(mut at)) = (token_ttl, run.token_refresh.lock()) {
                    *at = Some(Instant::now() + ttl.mul_f32(0.8));
                }
                break volumes;
            }
            Err(error) => {
                let message = error.to_string();
                if message != last_error {
                    warn!(pod = %run.key, %message, "Volume setup failed");
                    run.event(true, "FailedMount", message.clone());
                    last_error = message;
                }
                tokio::select! {
                    _ = tokio::time::sleep(VOLUME_RETRY) => {}
                    _ = stop.wait_for(Option::is_some) => return,
                }
            }
        }
    };
    write_hosts(&run);
    run.with_board(|b| b.volumes_ready = true);

    let policy = restart_policy(&run.pod);
    let (init, main) = containers(&run.pod);
    for (i, c) in init.iter().enumerate() {
        let exit_code =
            container::supervise(&run, Slot::Init(i), c, policy.for_init(), &volumes).await;
        if exit_code != 0 || run.stop.borrow().is_some() {
            return;
        }
    }
    run.with_board(|b| {
        for record in &mut b.main {
            record.state = State::waiting("ContainerCreating", None);
        }
    });
    let mains = main
        .iter()
        .enumerate()
        .map(|(i, c)| container::supervise(&run, Slot::Main(i), c, policy, &volumes));
    futures::future::join_all(mains).await;
}

/// Writes the status whenever a container record changed, coalescing bursts.
async fn status_writer(run: Arc<PodRun>) {
    loop {
        run.dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        run.flush(u32::MAX).await;
    }
}

async fn housekeep(run: &PodRun) {
    write_hosts(run);
    let due = run
        .token_refresh
        .lock()
        .ok()
        .and_then(|at| *at)
        .is_some_and(|at| at <= Instant::now());
    if !due {
        return;
    }
    match volumes::refresh_tokens(&run.ctx, &run.pod, &run.layout).await {
        Ok(ttl) => {
            if let Ok(mut at) = run.token_refresh.lock() {
                *at = ttl.map(|ttl| Instant::now() + ttl.mul_f32(0.8));
            }
        }
        Err(error) => warn!(pod = %run.key, %error, "Refreshing service account tokens"),
    }
}

/// The pod's `/etc/hosts`: itself, and every Service as `127.0.0.1` (pods share the host's
/// network, so a Service answers where its pods listen). Written in place: it is bind-mounted.
fn write_hosts(run: &PodRun) {
    let namespace = run.pod.namespace().unwrap_or_default();
    let mut hosts = format!("{HOSTS_HEADER}127.0.0.1\t{}\n", run.pod.name_any());
    let mut names: Vec<String> = run
        .ctx
        .services
        .state()
        .iter()
        .map(|svc| {
            let (name, ns) = (svc.name_any(), svc.namespace().unwrap_or_default());
            let short = if ns == namespace {
                format!(" {name}")
            } else {
                String::new()
            };
            format!("127.0.0.1\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}{short}\n")
        })
        .collect();
    names.sort();
    hosts.extend(names);
    let path = run.layout.hosts();
    if fs::read_to_string(&path).ok().as_deref() != Some(hosts.as_str())
        && let Err(error) = fs::write(&path, hosts)
    {
        warn!(pod = %run.key, %error, "Writing /etc/hosts");
    }
}

/// Deletes the pod object with grace 0 (its processes are gone) and its directory.
async fn remove(ctx: &Ctx, run: &PodRun) {
    let api: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &run.pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: run.pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 1..=10 {
        match api.delete(&run.pod.name_any(), &params).await {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => break,
            Err(error) => {
                warn!(pod = %run.key, %error, attempt, "Deleting pod");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if let Err(error) = fs::remove_dir_all(&run.layout.root)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(pod = %run.key, %error, "Removing pod directory");
    }
    info!(pod = %run.key, "Removed");
}
