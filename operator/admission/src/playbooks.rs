//! Which Playbooks may be stored: the rules behind `/validate/playbooks`. Pure.
//!
//! The object must read as a Playbook (durations, enums and types are checked by the same serde
//! code the operator uses) and compile with [`vigil_engine::compile`] (DAG, names, CEL). Every
//! issue is reported at once, each naming its step and field.

use serde_json::Value;
use vigil_api::{
    Playbook,
    playbook::{SecretKeyRef, Step},
};

/// Every problem of the Playbook in `object`; empty when it may be stored.
pub fn issues(object: &Value) -> Vec<String> {
    let playbook: Playbook = match serde_path_to_error::deserialize(object) {
        Ok(p) => p,
        Err(err) => return vec![format!("{}: {}", err.path(), err.inner())],
    };
    let spec = &playbook.spec;
    let mut found: Vec<String> = match vigil_engine::compile(spec) {
        Ok(_) => Vec::new(),
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    };
    for step in spec.all_steps() {
        found.extend(secret_ref_issues(step));
    }
    if let Some(hook) = spec.triggers.as_ref().and_then(|t| t.webhook.as_ref()) {
        let auth = &hook.auth;
        let refs = [
            auth.hmac_sha256.as_ref().map(|a| &a.secret_ref),
            auth.timestamped_hmac.as_ref().map(|a| &a.secret_ref),
            auth.bearer.as_ref().map(|a| &a.secret_ref),
        ];
        for r in refs.into_iter().flatten() {
            if let Some(problem) = secret_ref_problem(r) {
                found.push(format!("triggers.webhook.auth.secretRef: {problem}"));
            }
        }
    }
    found
}

/// The refusal message for `name` with `issues`.
pub fn message(name: &str, issues: &[String]) -> String {
    format!("playbook {name} is invalid: {}", issues.join("; "))
}

fn secret_ref_issues(step: &Step) -> Vec<String> {
    let mut found = Vec::new();
    for env in &step.env {
        let Some(key_ref) = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) else {
            continue;
        };
        let r = SecretKeyRef { name: key_ref.name.clone(), key: key_ref.key.clone() };
        if let Some(problem) = secret_ref_problem(&r) {
            found.push(format!("step {}: env.{}.valueFrom.secretKeyRef: {problem}", step.name, env.name));
        }
    }
    let slack = step.approval.as_ref().and_then(|a| a.notify.as_ref()).and_then(|n| n.slack.as_ref());
    if let Some(slack) = slack {
        if let Some(problem) = secret_ref_problem(&slack.secret_ref) {
            found.push(format!("step {}: approval.notify.slack.secretRef: {problem}", step.name));
        }
        if slack.channel.trim().is_empty() {
            found.push(format!("step {}: approval.notify.slack.channel: must not be empty", step.name));
        }
    }
    found
}

/// What is wrong with a Secret reference: a name that is not a DNS subdomain, or a bad key.
fn secret_ref_problem(r: &SecretKeyRef) -> Option<String> {
    let name_ok = !r.name.is_empty()
        && r.name.len() <= 253
        && r.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && r.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && r.name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let key_ok = !r.key.is_empty()
        && r.key.len() <= 253
        && r.key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    match (name_ok, key_ok) {
        (true, true) => None,
        (false, _) => Some(format!("{:?} is not a valid Secret name", r.name)),
        (true, false) => Some(format!("{:?} is not a valid Secret key", r.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn playbook(steps: Value) -> Value {
        json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "Playbook",
            "metadata": {"name": "ir", "namespace": "soc"},
            "spec": {"steps": steps}
        })
    }

    #[test]
    fn accepts_valid() {
        let pb = playbook(json!([
            {"name": "a", "image": "python:3.12", "script": "print(1)", "timeout": "30s"},
            {"name": "b", "dependsOn": ["a"], "when": "steps.a.outputs.x == 1",
             "approval": {"message": "ok {{ inputs.ip }}?", "approvers": {"groups": ["soc-leads"]},
                          "notify": {"slack": {"channel": "#sec", "secretRef": {"name": "slack", "key": "token"}}}}}
        ]));
        assert_eq!(issues(&pb), Vec::<String>::new());
    }

    #[test]
    fn rejects_every_issue_at_once_naming_step_and_field() {
        let pb = playbook(json!([
            {"name": "a", "image": "x", "command": ["true"], "dependsOn": ["b"]},
            {"name": "b", "image": "x", "command": ["true"], "dependsOn": ["a"]},
            {"name": "c", "image": "x", "command": ["true"], "dependsOn": ["nope"], "when": "steps.(("},
            {"name": "c", "image": "x", "command": ["true"],
             "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]}
        ]));
        let found = issues(&pb);
        let text = found.join("\n");
        assert!(text.contains("step c: name: duplicate step name"), "{text}");
        assert!(text.contains("step c: dependsOn: unknown step \"nope\""), "{text}");
        assert!(text.contains("dependency cycle"), "{text}");
        assert!(text.contains("step c: when:"), "{text}");
        assert!(text.contains("env.K.valueFrom.secretKeyRef: \"Bad_Name\" is not a valid Secret name"), "{text}");
    }

    #[test]
    fn rejects_bad_duration_with_its_path() {
        let pb = playbook(json!([{"name": "a", "image": "x", "command": ["true"], "timeout": "soon"}]));
        let found = issues(&pb);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.steps[0].timeout: "), "{found:?}");
    }

    #[test]
    fn rejects_malformed_slack_secret_ref() {
        let pb = playbook(json!([
            {"name": "ask", "approval": {"message": "ok?", "approvers": {"users": ["alice"]},
             "notify": {"slack": {"channel": "#sec", "secretRef": {"name": "slack", "key": "to ken"}}}}}
        ]));
        assert_eq!(
            issues(&pb),
            vec!["step ask: approval.notify.slack.secretRef: \"to ken\" is not a valid Secret key"]
        );
    }
}
