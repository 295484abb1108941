//! Step transitions: in a chain of no-op steps, how long after one step's Job completes does
//! the next step's Job exist, at several numbers of concurrent Runs.

use crate::{
    cluster::{self, Bench, Parts, ProcSample},
    playbooks,
    stats::Summary,
    timeline::{Marks, Timeline},
};
use serde::Serialize;
use serde_json::json;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};
use vigil_api::RunPhase;

const PLAYBOOK: &str = "chain";

/// The figures at one number of concurrent Runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Level {
    /// Runs in flight at once.
    pub concurrent: usize,
    /// Runs made at this level (more than `concurrent` when they go one after another).
    pub runs: usize,
    pub failed_runs: usize,
    /// Job N seen `Complete` → Job N+1 seen: the operator's share.
    pub operator: Summary,
    /// Pod of Job N seen exited → Job N+1 seen: what a user waits, Job controller included.
    pub end_to_end: Summary,
    /// Pod of Job N seen exited → Job N seen `Complete`: the Job controller's share.
    pub job_controller: Summary,
    /// Wall time of the level, seconds.
    pub wall_s: f64,
    /// Step pods run per second at this level.
    pub pods_per_s: f64,
}

/// The transition figures, plus the operator's memory once they are done.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Transitions {
    pub chain: usize,
    pub levels: Vec<Level>,
    /// The operator after every level: its caches hold all those Runs, Jobs and pods.
    pub operator_after_rss: u64,
    pub operator_cpu_s: f64,
}

/// Runs the chain at each number of concurrent Runs in `levels`; at 1 it runs `serial` Runs one
/// after the other to get more than a handful of samples.
pub async fn measure(
    b: &Bench,
    ns: &str,
    chain: usize,
    levels: &[usize],
    serial: usize,
) -> anyhow::Result<Transitions> {
    let client = &b.client;
    cluster::create_namespace(client, ns).await?;
    let operator = b.operator(ns, Parts::All).await?;
    cluster::apply_playbook(client, ns, &playbooks::chain(PLAYBOOK, chain)).await?;
    cluster::wait_playbook_ready(client, ns, PLAYBOOK).await?;
    let timeline = Timeline::start(client, ns).await;
    let cpu_before = operator.sample()?.cpu;

    let mut out = Transitions {
        chain,
        ..Default::default()
    };
    for &concurrent in levels {
        let batches = if concurrent == 1 { serial.max(1) } else { 1 };
        let started = Instant::now();
        let mut names = Vec::new();
        for batch in 0..batches {
            let batch_names: Vec<String> = (0..concurrent)
                .map(|i| format!("chain-c{concurrent}-b{batch}-{i}"))
                .collect();
            let creates = batch_names
                .iter()
                .map(|name| cluster::create_run(client, ns, name, PLAYBOOK, json!({})));
            futures::future::try_join_all(creates).await?;
            let timeout = Duration::from_secs(120 + (concurrent * chain) as u64);
            wait_finished(&timeline, &batch_names, timeout).await?;
            names.extend(batch_names);
        }
        let wall = started.elapsed();
        let runs = cluster::runs(client, ns).await?;
        let phases: HashMap<String, RunPhase> = runs
            .iter()
            .map(|r| (r.metadata.name.clone().unwrap_or_default(), r.phase()))
            .collect();
        let failed_runs = names
            .iter()
            .filter(|n| phases.get(*n) != Some(&RunPhase::Succeeded))
            .count();
        let (operator_s, end_to_end, job_controller) = timeline.with(|m| samples(m, &names, chain));
        out.levels.push(Level {
            concurrent,
            runs: names.len(),
            failed_runs,
            operator: Summary::of(&operator_s),
            end_to_end: Summary::of(&end_to_end),
            job_controller: Summary::of(&job_controller),
            wall_s: wall.as_secs_f64(),
            pods_per_s: (names.len() * chain) as f64 / wall.as_secs_f64(),
        });
    }
    let after: ProcSample = operator.sample()?;
    out.operator_after_rss = after.rss;
    out.operator_cpu_s = after.cpu - cpu_before;
    operator.stop();
    Ok(out)
}

/// Waits until the timeline has seen every Run of `names` finish.
pub async fn wait_finished(
    timeline: &Timeline,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = timeline.with(|m| {
            names
                .iter()
                .filter(|n| !m.run_finished.contains_key(*n))
                .count()
        });
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} of {} Runs not finished after {timeout:?}",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The transition samples of the Runs `names` of a `chain`-step chain: operator, end to end,
/// Job controller. A transition whose marks are missing (a step failed) is left out.
fn samples(
    m: &Marks,
    names: &[String],
    chain: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let (mut operator, mut end_to_end, mut job_controller) = (Vec::new(), Vec::new(), Vec::new());
    for run in names {
        let by_step: HashMap<String, String> = m
            .jobs_of(run)
            .into_iter()
            .map(|(job, u)| (u.step, job))
            .collect();
        for i in 1..chain {
            let (Some(prev), Some(next)) = (
                by_step.get(&format!("s{}", i - 1)),
                by_step.get(&format!("s{i}")),
            ) else {
                continue;
            };
            let (Some(done), Some(exited), Some(added)) = (
                m.job_done.get(prev),
                m.step_exited.get(prev),
                m.job_added.get(next),
            ) else {
                continue;
            };
            operator.push(added.saturating_duration_since(*done));
            end_to_end.push(added.saturating_duration_since(*exited));
            job_controller.push(done.saturating_duration_since(*exited));
        }
    }
    (operator, end_to_end, job_controller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Unit;

    fn unit(run: &str, step: &str) -> Unit {
        Unit {
            run: run.into(),
            step: step.into(),
            item: None,
        }
    }

    #[test]
    fn a_transition_runs_from_one_jobs_end_to_the_next_jobs_start() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = Marks::default();
        m.units.insert("r-s0-1".into(), unit("r", "s0"));
        m.units.insert("r-s1-1".into(), unit("r", "s1"));
        m.step_exited.insert("r-s0-1".into(), at(100));
        m.job_done.insert("r-s0-1".into(), at(130));
        m.job_added.insert("r-s1-1".into(), at(150));

        let (op, e2e, jc) = samples(&m, &["r".to_string()], 2);
        assert_eq!(
            (op, e2e, jc),
            (
                vec![Duration::from_millis(20)],
                vec![Duration::from_millis(50)],
                vec![Duration::from_millis(30)]
            )
        );
    }

    #[test]
    fn a_transition_with_a_missing_mark_is_left_out() {
        let mut m = Marks::default();
        m.units.insert("r-s0-1".into(), unit("r", "s0"));
        m.job_done.insert("r-s0-1".into(), Instant::now());
        let (op, _, _) = samples(&m, &["r".to_string()], 2);
        assert!(op.is_empty());
    }
}
