//! The orchestration tax: a Run's wall time minus the time its step processes ran, for the
//! incident-response DAG with no-op steps, split into the operator's share and the rest.

use crate::{
    cluster::{self, Bench, Parts},
    playbooks::{self, INCIDENT_LEVELS},
    stats::Summary,
    timeline::{Marks, Timeline},
    transitions::wait_finished,
};
use kube::Api;
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};
use vigil_api::{Run, RunPhase};

const PLAYBOOK: &str = "incident-noop";

/// One Run's account.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Account {
    /// Create call sent → Run seen finished, ms.
    pub wall_ms: f64,
    /// Time at least one step process ran (pod seen running → seen exited, as a union), ms.
    pub in_steps_ms: f64,
    /// `wall - in_steps`, ms.
    pub tax_ms: f64,
    /// On the critical path: Run created or level N ended → level N+1's first Job seen, plus
    /// the last level's end → Run seen finished, ms.
    pub operator_ms: f64,
    /// Jobs the Run made.
    pub jobs: usize,
}

/// The tax figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tax {
    pub runs: Vec<Account>,
    pub failed_runs: usize,
    /// Job-backed levels on the critical path.
    pub levels: usize,
    pub wall: Summary,
    pub tax: Summary,
    pub operator: Summary,
    /// A finished Run, for the memory figure to copy.
    #[serde(skip)]
    pub template: Option<Run>,
}

/// Runs `count` incident-shape Runs one after the other under a fresh operator for `ns`.
pub async fn measure(b: &Bench, ns: &str, count: usize) -> anyhow::Result<Tax> {
    let client = &b.client;
    cluster::create_namespace(client, ns).await?;
    let operator = b.operator(ns, Parts::All).await?;
    cluster::apply_playbook(client, ns, &playbooks::incident_shape(PLAYBOOK)).await?;
    cluster::wait_playbook_ready(client, ns, PLAYBOOK).await?;
    let timeline = Timeline::start(client, ns).await;

    let mut out = Tax {
        levels: INCIDENT_LEVELS.len(),
        ..Default::default()
    };
    for i in 0..count.max(1) {
        let name = format!("incident-{i}");
        let created = Instant::now();
        cluster::create_run(client, ns, &name, PLAYBOOK, json!({"username": "jdoe"})).await?;
        wait_finished(
            &timeline,
            std::slice::from_ref(&name),
            Duration::from_secs(300),
        )
        .await?;
        let run = Api::<Run>::namespaced(client.clone(), ns)
            .get(&name)
            .await?;
        if run.phase() != RunPhase::Succeeded {
            out.failed_runs += 1;
            continue;
        }
        if let Some(account) = timeline.with(|m| account(m, &name, created)) {
            out.runs.push(account);
        }
        out.template = Some(run);
    }
    operator.stop();

    let ms = |f: fn(&Account) -> f64| -> Vec<Duration> {
        out.runs
            .iter()
            .map(|a| Duration::from_secs_f64(f(a) / 1000.0))
            .collect()
    };
    out.wall = Summary::of(&ms(|a| a.wall_ms));
    out.tax = Summary::of(&ms(|a| a.tax_ms));
    out.operator = Summary::of(&ms(|a| a.operator_ms));
    Ok(out)
}

/// The account of Run `run` created at `created`; `None` when a mark is missing.
fn account(m: &Marks, run: &str, created: Instant) -> Option<Account> {
    let finished = *m.run_finished.get(run)?;
    let jobs = m.jobs_of(run);

    let mut spans: Vec<(Instant, Instant)> = jobs
        .iter()
        .filter_map(|(j, _)| Some((*m.step_started.get(j)?, *m.step_exited.get(j)?)))
        .collect();
    let in_steps = union(&mut spans);

    let mut operator = Duration::ZERO;
    let mut previous_end = created;
    for level in INCIDENT_LEVELS {
        let of_level: Vec<&String> = jobs
            .iter()
            .filter(|(_, u)| level.contains(&u.step.as_str()))
            .map(|(j, _)| j)
            .collect();
        let start = of_level.iter().filter_map(|j| m.job_added.get(*j)).min()?;
        let end = of_level.iter().filter_map(|j| m.job_done.get(*j)).max()?;
        operator += start.saturating_duration_since(previous_end);
        previous_end = *end;
    }
    operator += finished.saturating_duration_since(previous_end);

    let wall = finished.saturating_duration_since(created);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Some(Account {
        wall_ms: ms(wall),
        in_steps_ms: ms(in_steps),
        tax_ms: ms(wall.saturating_sub(in_steps)),
        operator_ms: ms(operator),
        jobs: jobs.len(),
    })
}

/// The total length of the union of `spans`.
fn union(spans: &mut [(Instant, Instant)]) -> Duration {
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for &(s, e) in spans.iter() {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += ce - cs;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_spans_count_once() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let mut spans = vec![(at(0), at(10)), (at(5), at(20)), (at(30), at(40))];
        assert_eq!(union(&mut spans), Duration::from_millis(30));
        assert_eq!(union(&mut []), Duration::ZERO);
    }
}
