//! One container's life: start it, wait for it, read its termination message, restart it
//! as the restart policy says, and kill its process group when the pod stops.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::Path,
    time::{Duration, Instant},
};

use chrono::Utc;
use k8s_openapi::api::core::v1::Container;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{process::Child, sync::watch};
use tracing::{info, warn};

use crate::{
    env::{self, EnvError, Sources},
    images::Image,
    probes::Readiness,
    runtime::{self, Identity, Launch, StartError},
    status::{RestartPolicy, State, Terminated},
    volumes::Volumes,
    worker::{PodRun, Slot, Stop},
};

const MESSAGE_CAP: u64 = 4096;
const FALLBACK_LOG_BYTES: usize = 2048;
const FALLBACK_LOG_LINES: usize = 80;
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the restart back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
const CONFIG_RETRY: Duration = Duration::from_secs(3);
/// The exit code of a container that could not be started (as containerd reports it).
const START_ERROR_EXIT: i32 = 128;

/// Why a launch could not be prepared.
enum LaunchError {
    /// Missing ConfigMap, Secret or key: the kubelet waits and retries.
    Config(EnvError),
    /// Anything else: the start fails like a process that exited.
    Start(StartError),
}

/// Runs one container until it will not run again or the pod stops; returns its last exit code.
pub async fn supervise(
    run: &PodRun,
    slot: Slot,
    container: &Container,
    policy: RestartPolicy,
    volumes: &Volumes,
) -> i32 {
    let mut stop = run.stop.clone();
    let mut backoff = BACKOFF_INITIAL;
    loop {
        if stop.borrow().is_some() {
            run.update(slot, |r| r.done = true);
            return START_ERROR_EXIT;
        }

        let outcome = match prepare(run, container, volumes).await {
            Ok(launch) => run_once(run, slot, container, &launch, &mut stop).await,
            Err(LaunchError::Config(error)) => {
                let message = error.to_string();
                let name = &container.name;
                warn!(pod = %run.key, container = %name, %message, "Container config error");
                run.event(true, "Failed", format!("Error: {message}"));
                run.update(slot, |r| {
                    r.state = State::waiting("CreateContainerConfigError", Some(message.clone()))
                });
                if !sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    continue;
                }
                run.update(slot, |r| r.done = true);
                return START_ERROR_EXIT;
            }
            Err(LaunchError::Start(error)) => {
                let message = error.to_string();
                let name = &container.name;
                warn!(pod = %run.key, container = %name, %message, "Container start error");
                run.event(true, "Failed", format!("Error: {message}"));
                let now = Utc::now();
                let terminated = Terminated {
                    exit_code: START_ERROR_EXIT,
                    reason: "StartError".into(),
                    message: Some(message),
                    started_at: None,
                    finished_at: now,
                    container_id: None,
                };
                Outcome {
                    terminated,
                    ran_for: Duration::ZERO,
                    stopped: false,
                }
            }
        };

        let exit_code = outcome.terminated.exit_code;
        let restart = !outcome.stopped && policy.restarts(exit_code) && stop.borrow().is_none();
        run.update(slot, |r| {
            r.state = State::Terminated(outcome.terminated.clone());
            r.ready = false;
            r.done = !restart;
        });
        if !restart {
            return exit_code;
        }

        if outcome.ran_for >= BACKOFF_RESET_AFTER {
            backoff = BACKOFF_INITIAL;
        }
        let message = format!(
            "back-off {}s restarting failed container={} pod={}",
            backoff.as_secs(),
            container.name,
            run.key
        );
        run.event(true, "BackOff", message.clone());
        run.update(slot, |r| {
            r.last = Some(outcome.terminated.clone());
            r.state = State::waiting("CrashLoopBackOff", Some(message.clone()));
        });
        if sleep_or_stop(&mut stop, backoff).await {
            run.update(slot, |r| r.done = true);
            return exit_code;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        run.update(slot, |r| r.restarts += 1);
    }
}

/// Sleeps; `true` when the pod was told to stop meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<Option<Stop>>, duration: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(Option::is_some) => true,
    };
    stopped || stop.borrow().is_some()
}

async fn prepare(
    run: &PodRun,
    container: &Container,
    volumes: &Volumes,
) -> Result<Launch, LaunchError> {
    let pod = &run.pod;
    let image_ref = container.image.clone().unwrap_or_default();
    let image = Image::parse(&image_ref);
    let image_dir = run.ctx.images.prepare(&image).map_err(|source| {
        LaunchError::Start(StartError::Image {
            image: image_ref.clone(),
            source,
        })
    })?;

    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut sources = Sources::new(run.ctx.client.clone(), &namespace);
    let env = env::container_env(pod, container, &run.ctx.api, &mut sources)
        .await
        .map_err(LaunchError::Config)?;

    let termination = run.layout.termination(&container.name);
    fresh_file(&termination, 0o666).map_err(|source| {
        LaunchError::Start(StartError::Mountpoint {
            path: termination.clone(),
            source,
        })
    })?;
    let mounts = runtime::plan_mounts(container, volumes, &run.layout, image_dir.as_deref())
        .map_err(LaunchError::Start)?;
    runtime::prepare_mountpoints(&mounts).map_err(LaunchError::Start)?;
    let working_dir = container.working_dir.clone().filter(|w| !w.is_empty());
    if let Some(dir) = &working_dir {
        // Like runc, create a missing working directory (inside its volume when it is in one).
        let host = runtime::host_path_of(Path::new(dir), &mounts);
        fs::create_dir_all(&host).map_err(|source| {
            LaunchError::Start(StartError::Mountpoint {
                path: host.clone(),
                source,
            })
        })?;
    }
    let argv =
        runtime::resolve_argv(&image, container, &env, &mounts).map_err(LaunchError::Start)?;

    Ok(Launch {
        argv,
        env,
        working_dir,
        mounts,
        hostname: pod.metadata.name.clone().unwrap_or_default(),
        identity: Identity::of(pod, container),
        log: run.layout.log(&container.name),
    })
}

/// Creates an empty file with `mode`, replacing what a previous run left.
fn fresh_file(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, b"")?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

struct Outcome {
    terminated: Terminated,
    ran_for: Duration,
    stopped: bool,
}

async fn run_once(
    run: &PodRun,
    slot: Slot,
    container: &Container,
    launch: &Launch,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Outcome {
    let log_offset = fs::metadata(&launch.log).map(|m| m.len()).unwrap_or(0);
    let started_at = Utc::now();
    let started = Instant::now();
    let mut child = match runtime::spawn(launch) {
        Ok(child) => child,
        Err(error) => {
            let message = error.to_string();
            let name = &container.name;
            warn!(pod = %run.key, container = %name, %message, "Container start error");
            run.event(true, "Failed", format!("Error: {message}"));
            let terminated = Terminated {
                exit_code: START_ERROR_EXIT,
                reason: "StartError".into(),
                message: Some(message),
                started_at: None,
                finished_at: Utc::now(),
                container_id: None,
            };
            return Outcome {
                terminated,
                ran_for: Duration::ZERO,
                stopped: false,
            };
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let pid_file = run.layout.pid(&container.name);
    if let Err(error) = fs::write(&pid_file, pid.to_string()) {
        warn!(pod = %run.key, %error, "Writing pid file");
    }
    let container_id = format!("vigil-node://{pid}");
    info!(pod = %run.key, container = %container.name, pid, argv0 = %launch.argv[0], "Started");
    run.event(
        false,
        "Started",
        format!("Started container {}", container.name),
    );
    let readiness = Readiness::of(container);
    run.update(slot, |r| {
        r.state = State::Running { started_at };
        r.ready = readiness.is_none();
        r.container_id = Some(container_id.clone());
    });

    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = probe_readiness(run, slot, readiness) => child.wait().await,
        grace = stop_grace(stop) => {
            stopped = true;
            let grace = grace.unwrap_or_default();
            run.event(false, "Killing", format!("Stopping container {}", container.name));
            kill_group(&mut child, pid, grace).await
        }
    };
    // Whatever the main process left behind goes with it, as with a container's cgroup.
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = fs::remove_file(&pid_file);

    let exit_code = match &status {
        Ok(status) => exit_code_of(status),
        Err(error) => {
            warn!(pod = %run.key, container = %container.name, %error, "Waiting for container");
            START_ERROR_EXIT
        }
    };
    info!(pod = %run.key, container = %container.name, exit_code, "Exited");
    let message = termination_message(run, container, exit_code, &launch.log, log_offset);
    let terminated = Terminated {
        exit_code,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at: Some(started_at),
        finished_at: Utc::now(),
        container_id: Some(container_id),
    };
    Outcome {
        terminated,
        ran_for: started.elapsed(),
        stopped,
    }
}

/// Waits until the pod stops; the grace its containers get.
async fn stop_grace(stop: &mut watch::Receiver<Option<Stop>>) -> Option<Duration> {
    stop.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|s| s.map(|s| s.grace))
}

/// Keeps the container's `ready` flag up to date; never returns while a probe is defined.
async fn probe_readiness(run: &PodRun, slot: Slot, readiness: Option<Readiness>) {
    let Some(probe) = readiness else {
        return std::future::pending().await;
    };
    tokio::time::sleep(probe.initial_delay).await;
    let (mut successes, mut failures, mut ready) = (0u32, 0u32, false);
    loop {
        if probe.passes().await {
            (successes, failures) = (successes + 1, 0);
        } else {
            (successes, failures) = (0, failures + 1);
        }
        let now_ready = if ready {
            failures < probe.failure_threshold
        } else {
            successes >= probe.success_threshold
        };
        if now_ready != ready {
            ready = now_ready;
            run.update(slot, |r| r.ready = ready);
        }
        tokio::time::sleep(probe.period).await;
    }
}

fn exit_code_of(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(START_ERROR_EXIT)
}

/// SIGTERM to the group, SIGKILL after `grace`.
async fn kill_group(
    child: &mut Child,
    pid: i32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if pid > 0 {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            child.wait().await
        }
    }
}

/// The message file's content (at most 4 KiB) or, with `FallbackToLogsOnError` after a
/// failure and an empty file, the log's tail.
fn termination_message(
    run: &PodRun,
    container: &Container,
    exit_code: i32,
    log: &Path,
    log_offset: u64,
) -> Option<String> {
    let path = run.layout.termination(&container.name);
    let mut bytes = Vec::new();
    if let Ok(file) = fs::File::open(&path) {
        let _ = file.take(MESSAGE_CAP).read_to_end(&mut bytes);
    }
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if bytes.iter().all(u8::is_ascii_whitespace) && fallback && exit_code != 0 {
        bytes = log_tail(log, log_offset);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (!text.is_empty()).then_some(text)
}

fn log_tail(log: &Path, offset: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(log) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(FALLBACK_LOG_LINES)..].join("\n");
    let start = tail.len().saturating_sub(FALLBACK_LOG_BYTES);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    tail.as_bytes()[start..].to_vec()
}
