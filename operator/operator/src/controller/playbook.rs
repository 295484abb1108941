//! Reports whether each Playbook compiles, as a `Ready` condition that `kubectl wait` and GitOps
//! tools read.

use super::{Context, Error, MANAGER};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use vigil_api::{
    Playbook,
    condition::{Condition, set_condition},
    playbook::PlaybookStatus,
};

pub async fn reconcile(pb: Arc<Playbook>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = pb.status.clone().unwrap_or_default();
    let mut next = PlaybookStatus {
        observed_generation: pb.metadata.generation,
        steps: Some((pb.spec.steps.len() + pb.spec.finally.len()) as u32),
        webhook_path: pb.spec.triggers.as_ref().and_then(|t| t.webhook.as_ref()).map(|_| {
            format!("/hooks/{}/{}", pb.namespace().unwrap_or_default(), pb.name_any())
        }),
        conditions: status.conditions.clone(),
    };
    let mut ready = match vigil_engine::compile(&pb.spec) {
        Ok(_) => Condition::new("Ready", true, "Compiled", "the DAG and every expression check out"),
        Err(issues) => {
            let msg = issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            Condition::new("Ready", false, "InvalidPlaybook", msg)
        }
    };
    ready.observed_generation = pb.metadata.generation;
    set_condition(&mut next.conditions, ready);
    if next != status {
        let api: Api<Playbook> = Api::namespaced(ctx.client.clone(), &pb.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": format!("{}/{}", vigil_api::GROUP, vigil_api::VERSION),
            "kind": "Playbook",
            "status": next,
        });
        api.patch_status(&pb.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    Ok(Action::await_change())
}

pub fn error_policy(pb: Arc<Playbook>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(playbook = %pb.name_any(), error = %error, "Reconcile failed");
    Action::requeue(Duration::from_secs(10))
}
