//! Carries out the engine's actions. Every action is idempotent: AlreadyExists means adopt,
//! NotFound on delete means done, so replaying a plan after a restart duplicates nothing.

use super::{Context, Error, jobs};
use k8s_openapi::{api::{batch::v1::Job, core::v1::ConfigMap}, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Resource,
    api::{DeleteParams, PostParams, PropagationPolicy},
    runtime::events::{Event, EventType},
};
use std::collections::BTreeMap;
use vigil_api::{
    Approval, ApprovalSpec, Run, labels,
    approval::RunRef,
    playbook::PlaybookSpec,
};
use vigil_engine::{Action, plan::ApprovalRequest};

/// Applies `actions` for `run`, whose frozen playbook is `spec`.
pub async fn apply(ctx: &Context, run: &Run, spec: &PlaybookSpec, actions: &[Action]) -> Result<(), Error> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let traceparent = run.metadata.annotations.as_ref().and_then(|a| a.get(labels::TRACEPARENT)).cloned();
    for action in actions {
        match action {
            Action::CreateJob(req) => {
                let step = spec.step(&req.step).ok_or_else(|| Error::Invalid(format!("unknown step {}", req.step)))?;
                let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                create_or_adopt(&cms, &jobs::input_config_map(run, step, req)).await?;
                let job = jobs::job(run, step, req, &ctx.settings, traceparent.as_deref());
                let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                if create_or_adopt(&api, &job).await? {
                    ctx.metrics.jobs_created.inc();
                }
            }
            Action::DeleteJob { name, reason } => {
                let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
                match api.delete(name, &dp).await {
                    Ok(_) => tracing::info!(job = %name, %reason, "Deleted job"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::CreateApproval(req) => {
                let gate = spec.step(&req.step).and_then(|s| s.approval.clone()).unwrap_or_default();
                let api: Api<Approval> = Api::namespaced(ctx.client.clone(), &ns);
                create_or_adopt(&api, &approval(run, req, &gate)).await?;
            }
            Action::Event { warning, reason, message } => {
                let event = Event {
                    type_: if *warning { EventType::Warning } else { EventType::Normal },
                    reason: (*reason).to_string(),
                    note: Some(truncate(message, 1024)),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
                    tracing::debug!(error = %e, "Cannot publish event");
                }
            }
        }
    }
    Ok(())
}

/// Creates `obj`; an object of that name already there is adopted. Returns whether it was new.
async fn create_or_adopt<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn approval(run: &Run, req: &ApprovalRequest, gate: &vigil_api::playbook::ApprovalGate) -> Approval {
    let labels = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
        (labels::RUN.to_string(), jobs::run_name(run)),
        (labels::PLAYBOOK.to_string(), run.spec.playbook_ref.name.clone()),
        (labels::STEP.to_string(), req.step.clone()),
    ]);
    let annotations = BTreeMap::from([(
        "vigil.dev/expires-at".to_string(),
        req.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )]);
    Approval {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: run.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![jobs::owner(run)]),
            ..Default::default()
        },
        spec: ApprovalSpec {
            run_ref: RunRef { name: jobs::run_name(run) },
            step: req.step.clone(),
            message: req.message.clone(),
            context: req.context.clone(),
            approvers: gate.approvers.clone(),
            quorum: gate.quorum.unwrap_or(1),
            on_timeout: gate.on_timeout,
            requester: run.spec.trigger.as_ref().and_then(|t| t.user.clone()),
            forbid_self_approval: gate.forbid_self_approval,
            notify: gate.notify.clone(),
            decisions: Vec::new(),
        },
        status: None,
    }
}

pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}
