//! Watches the Jobs, pods and Runs of one namespace and stamps each event with the bench's own
//! monotonic clock when it arrives.
//!
//! Kubernetes timestamps (`creationTimestamp`, `completionTime`, `finishedAt`) have one-second
//! resolution, too coarse for step transitions of tens of milliseconds. Every mark here is the
//! local receive time of a watch event instead: all marks share one clock, and each carries the
//! same API-server-to-watcher delay the operator's own watches see.

use futures::StreamExt;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};
use tokio::task::JoinHandle;
use vigil_api::{Run, labels};

/// Where a Job sits in its Run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unit {
    pub run: String,
    pub step: String,
    pub item: Option<u32>,
}

/// First-seen marks, by Job name (pods are filed under their Job) or Run name.
#[derive(Debug, Default)]
pub struct Marks {
    /// The Job's unit, from its labels.
    pub units: HashMap<String, Unit>,
    /// First event showing the Job.
    pub job_added: HashMap<String, Instant>,
    /// First event showing the Job ended: `SuccessCriteriaMet` or `Complete` (or `FailureTarget`
    /// or `Failed`).
    pub job_done: HashMap<String, Instant>,
    /// First event showing the pod's `step` container running (or already terminated).
    pub step_started: HashMap<String, Instant>,
    /// First event showing the pod's `step` container terminated.
    pub step_exited: HashMap<String, Instant>,
    /// First event showing the Run in a finished phase.
    pub run_finished: HashMap<String, Instant>,
}

impl Marks {
    /// The Job names of `run`, by unit.
    pub fn jobs_of(&self, run: &str) -> Vec<(String, Unit)> {
        let mut out: Vec<(String, Unit)> = self
            .units
            .iter()
            .filter(|(_, u)| u.run == run)
            .map(|(j, u)| (j.clone(), u.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The recorder: three watches feeding one set of marks.
pub struct Timeline {
    marks: Arc<Mutex<Marks>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Timeline {
    /// Starts watching `ns`. Call before creating the Runs to observe.
    pub async fn start(client: &Client, ns: &str) -> Self {
        let marks = Arc::new(Mutex::new(Marks::default()));
        let selector = watcher::Config::default().labels(labels::RUN);
        let mut tasks = Vec::new();

        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let m = marks.clone();
        tasks.push(tokio::spawn(
            watcher(jobs, selector.clone())
                .default_backoff()
                .applied_objects()
                .for_each(move |job| {
                    if let Ok(job) = job {
                        record_job(
                            &mut m.lock().unwrap_or_else(|e| e.into_inner()),
                            &job,
                            Instant::now(),
                        );
                    }
                    futures::future::ready(())
                }),
        ));

        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let m = marks.clone();
        tasks.push(tokio::spawn(
            watcher(pods, selector)
                .default_backoff()
                .applied_objects()
                .for_each(move |pod| {
                    if let Ok(pod) = pod {
                        record_pod(
                            &mut m.lock().unwrap_or_else(|e| e.into_inner()),
                            &pod,
                            Instant::now(),
                        );
                    }
                    futures::future::ready(())
                }),
        ));

        let runs: Api<Run> = Api::namespaced(client.clone(), ns);
        let m = marks.clone();
        tasks.push(tokio::spawn(
            watcher(runs, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(move |run| {
                    if let Ok(run) = run
                        && run.phase().is_finished()
                    {
                        let mut marks = m.lock().unwrap_or_else(|e| e.into_inner());
                        marks
                            .run_finished
                            .entry(run.name_any())
                            .or_insert_with(Instant::now);
                    }
                    futures::future::ready(())
                }),
        ));

        // Give the watches a moment to open, so the first events are not list results.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Self { marks, tasks }
    }

    /// Runs `f` over the marks so far.
    pub fn with<T>(&self, f: impl FnOnce(&Marks) -> T) -> T {
        f(&self.marks.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn record_job(marks: &mut Marks, job: &Job, at: Instant) {
    let name = job.name_any();
    let l = job.labels();
    let (Some(run), Some(step)) = (l.get(labels::RUN), l.get(labels::STEP)) else {
        return;
    };
    let item = l.get(labels::ITEM).and_then(|i| i.parse().ok());
    marks.units.entry(name.clone()).or_insert_with(|| Unit {
        run: run.clone(),
        step: step.clone(),
        item,
    });
    marks.job_added.entry(name.clone()).or_insert(at);
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    // The Job controller sets SuccessCriteriaMet (FailureTarget) before Complete (Failed), once
    // its pods are gone; the operator acts on the first, and so does this mark.
    let done = conditions.is_some_and(|cs| {
        cs.iter().any(|c| {
            let ended = matches!(
                c.type_.as_str(),
                "SuccessCriteriaMet" | "Complete" | "FailureTarget" | "Failed"
            );
            ended && c.status == "True"
        })
    });
    if done {
        marks.job_done.entry(name).or_insert(at);
    }
}

fn record_pod(marks: &mut Marks, pod: &Pod, at: Instant) {
    let l = pod.labels();
    let Some(job) = l
        .get("batch.kubernetes.io/job-name")
        .or_else(|| l.get("job-name"))
    else {
        return;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let Some(state) = statuses
        .into_iter()
        .flatten()
        .find(|c| c.name == "step")
        .and_then(|c| c.state.as_ref())
    else {
        return;
    };
    if state.running.is_some() || state.terminated.is_some() {
        marks.step_started.entry(job.clone()).or_insert(at);
    }
    if state.terminated.is_some() {
        marks.step_exited.entry(job.clone()).or_insert(at);
    }
}
