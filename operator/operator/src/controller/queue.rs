//! Concurrency caps: a Run starts only while its playbook has a free slot; the others wait in
//! phase Queued and start in creation order.

use super::Context;
use vigil_api::{Run, RunPhase};

/// Whether `run` may start now under `max` running Runs of its playbook. Registers it as
/// admitted when it may, so a concurrent reconcile of a sibling sees the slot taken even
/// before the store shows the new status.
pub async fn admit(ctx: &Context, run: &Run, max: Option<u32>) -> Result<(), usize> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let name = run.metadata.name.clone().unwrap_or_default();
    let playbook = run.spec.playbook_ref.name.clone();
    let Some(max) = max.map(|m| m as usize) else { return Ok(()) };

    let mut admitted = ctx.admitted.lock().await;
    let siblings: Vec<std::sync::Arc<Run>> = ctx
        .runs
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|r| r.spec.playbook_ref.name == playbook)
        .collect();
    let phase_of = |n: &str| siblings.iter().find(|r| r.metadata.name.as_deref() == Some(n)).map(|r| r.phase());

    let slot = admitted.entry((ns.clone(), playbook.clone())).or_default();
    // Forget admissions the store has caught up with, or whose Run is gone.
    slot.retain(|n| matches!(phase_of(n), Some(RunPhase::Pending | RunPhase::Queued)));
    if slot.contains(&name) {
        return Ok(());
    }
    let running = siblings.iter().filter(|r| r.phase() == RunPhase::Running).count() + slot.len();
    if running >= max {
        return Err(position(&siblings, &name));
    }
    // Older waiting Runs go first.
    let ahead = position(&siblings, &name);
    if ahead >= max - running {
        return Err(ahead);
    }
    slot.push(name);
    Ok(())
}

/// How many waiting Runs of the same playbook were created before `name`.
fn position(siblings: &[std::sync::Arc<Run>], name: &str) -> usize {
    let me = siblings.iter().find(|r| r.metadata.name.as_deref() == Some(name));
    let key = |r: &Run| (r.metadata.creation_timestamp.clone().map(|t| t.0), r.metadata.name.clone());
    let Some(me) = me else { return 0 };
    siblings
        .iter()
        .filter(|r| matches!(r.phase(), RunPhase::Pending | RunPhase::Queued))
        .filter(|r| r.metadata.name.as_deref() != Some(name))
        .filter(|r| key(r) < key(me))
        .count()
}

/// Runs of the same playbook still waiting, oldest first: reconciled again when a slot frees.
pub fn waiting(ctx: &Context, ns: &str, playbook: &str) -> Vec<String> {
    let mut runs: Vec<std::sync::Arc<Run>> = ctx
        .runs
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
        .filter(|r| r.spec.playbook_ref.name == playbook && r.phase() == RunPhase::Queued)
        .collect();
    runs.sort_by_key(|r| (r.metadata.creation_timestamp.clone().map(|t| t.0), r.metadata.name.clone()));
    runs.into_iter().filter_map(|r| r.metadata.name.clone()).collect()
}
