//! Checks a playbook and compiles its expressions: the DAG, names, references, CEL.
//!
//! The same checks serve `vigil lint`, the admission webhook, the Playbook `Ready` condition and
//! the reconciler, so a playbook that lints clean is one the operator runs.

use crate::expr::{Expr, ExprError, Template};
use std::collections::{BTreeMap, BTreeSet};
use vigil_api::playbook::{PlaybookSpec, Step};

/// One problem in a playbook, naming the step and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{field}: {message}", step.as_ref().map(|s| format!("step {s}: ")).unwrap_or_default())]
pub struct Issue {
    /// The step, when the problem is inside one.
    pub step: Option<String>,
    /// The field, as a path (`when`, `inputs.ip`, `approval.message`, `dependsOn`).
    pub field: String,
    pub message: String,
}

impl Issue {
    fn step(step: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { step: Some(step.into()), field: field.into(), message: message.into() }
    }

    fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { step: None, field: field.into(), message: message.into() }
    }
}

/// The compiled expressions of one step.
#[derive(Clone, Debug, Default)]
pub struct CompiledStep {
    pub when: Option<Expr>,
    pub for_each: Option<Expr>,
    pub inputs: Vec<(String, Expr)>,
    pub approval_message: Option<Template>,
    pub approval_context: Vec<(String, Expr)>,
}

/// A playbook whose DAG checked out and whose expressions compiled.
#[derive(Clone, Debug)]
pub struct CompiledPlaybook {
    pub spec: PlaybookSpec,
    pub steps: BTreeMap<String, CompiledStep>,
    /// DAG steps in a topological order.
    pub order: Vec<String>,
    /// Finally steps in a topological order.
    pub finally_order: Vec<String>,
}

impl CompiledPlaybook {
    pub fn compiled(&self, step: &str) -> &CompiledStep {
        static EMPTY: std::sync::OnceLock<CompiledStep> = std::sync::OnceLock::new();
        self.steps.get(step).unwrap_or_else(|| EMPTY.get_or_init(CompiledStep::default))
    }

    pub fn is_finally(&self, step: &str) -> bool {
        self.spec.finally.iter().any(|s| s.name == step)
    }
}

/// Checks `spec` and compiles every expression. Returns every issue found, not just the first.
pub fn compile(spec: &PlaybookSpec) -> Result<CompiledPlaybook, Vec<Issue>> {
    let mut issues = Vec::new();
    if spec.steps.is_empty() {
        issues.push(Issue::spec("steps", "a playbook needs at least one step"));
    }

    let mut seen = BTreeSet::new();
    for step in spec.all_steps() {
        if !seen.insert(step.name.as_str()) {
            issues.push(Issue::step(&step.name, "name", "duplicate step name"));
        }
        if !is_dns_label(&step.name) {
            issues.push(Issue::step(
                &step.name,
                "name",
                "must be a lowercase DNS label of at most 40 characters",
            ));
        }
    }

    let order = topo_order(&spec.steps, "steps", &mut issues);
    let finally_order = topo_order(&spec.finally, "finally", &mut issues);

    let mut steps = BTreeMap::new();
    for step in spec.all_steps() {
        steps.insert(step.name.clone(), compile_step(step, &mut issues));
    }
    check_triggers(spec, &mut issues);

    if issues.is_empty() {
        Ok(CompiledPlaybook { spec: spec.clone(), steps, order, finally_order })
    } else {
        Err(issues)
    }
}

fn compile_step(step: &Step, issues: &mut Vec<Issue>) -> CompiledStep {
    let name = &step.name;
    let mut one = |field: String, source: &str| match Expr::compile(source) {
        Ok(e) => Some(e),
        Err(err) => {
            issues.push(Issue::step(name, field, err.to_string()));
            None
        }
    };
    let mut compiled = CompiledStep {
        when: step.when.as_deref().and_then(|s| one("when".into(), s)),
        for_each: step.for_each.as_deref().and_then(|s| one("forEach".into(), s)),
        ..Default::default()
    };
    for (input, source) in &step.inputs {
        if let Some(e) = one(format!("inputs.{input}"), source) {
            compiled.inputs.push((input.clone(), e));
        }
    }
    if let Some(approval) = &step.approval {
        for (label, source) in &approval.context {
            if let Some(e) = one(format!("approval.context.{label}"), source) {
                compiled.approval_context.push((label.clone(), e));
            }
        }
        match Template::compile(&approval.message) {
            Ok(t) => compiled.approval_message = Some(t),
            Err(err) => issues.push(Issue::step(name, "approval.message", err.to_string())),
        }
    }

    let runs_image = step.image.is_some();
    match (&step.approval, runs_image) {
        (Some(_), true) => {
            issues.push(Issue::step(name, "approval", "an approval step cannot also run an image"))
        }
        (None, false) => issues.push(Issue::step(name, "image", "a step needs an image or an approval")),
        _ => {}
    }
    if step.approval.is_some() && step.for_each.is_some() {
        issues.push(Issue::step(name, "forEach", "an approval step cannot use forEach"));
    }
    if step.script.is_some() && step.args.is_some() {
        issues.push(Issue::step(name, "args", "script and args are mutually exclusive"));
    }
    if runs_image && step.script.is_none() && step.command.is_none() {
        issues.push(Issue::step(name, "command", "a step runs a script or a command"));
    }
    for env_from in &step.env_from {
        let named = env_from.secret_ref.as_ref().map(|r| r.name.as_str())
            .or(env_from.config_map_ref.as_ref().map(|r| r.name.as_str()));
        if named.is_some_and(|n| n.is_empty() || !is_dns_subdomain(n)) {
            issues.push(Issue::step(name, "envFrom", "malformed Secret or ConfigMap name"));
        }
    }
    compiled
}

fn check_triggers(spec: &PlaybookSpec, issues: &mut Vec<Issue>) {
    let Some(hook) = spec.triggers.as_ref().and_then(|t| t.webhook.as_ref()) else { return };
    let one = |issues: &mut Vec<Issue>, field: String, source: &str| {
        if let Err(err) = Expr::compile(source) {
            issues.push(Issue::spec(field, err.to_string()));
        }
    };
    if let Some(filter) = &hook.filter {
        one(issues, "triggers.webhook.filter".into(), filter);
    }
    for (input, source) in &hook.inputs {
        one(issues, format!("triggers.webhook.inputs.{input}"), source);
        if !spec.inputs.contains_key(input) {
            issues.push(Issue::spec(
                format!("triggers.webhook.inputs.{input}"),
                "maps to an input the playbook does not declare",
            ));
        }
    }
    if let Some(dedupe) = &hook.dedupe {
        one(issues, "triggers.webhook.dedupe.key".into(), &dedupe.key);
    }
    let auth = &hook.auth;
    let modes = [
        auth.hmac_sha256.is_some(),
        auth.timestamped_hmac.is_some(),
        auth.bearer.is_some(),
        auth.none.is_some(),
    ];
    if modes.iter().filter(|m| **m).count() != 1 {
        issues.push(Issue::spec(
            "triggers.webhook.auth",
            "set exactly one of hmacSha256, timestampedHmac, bearer or none",
        ));
    }
}

/// Orders `steps` so that every step comes after its dependencies; reports unknown
/// dependencies and cycles.
fn topo_order(steps: &[Step], section: &str, issues: &mut Vec<Issue>) -> Vec<String> {
    let names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for step in steps {
        for dep in step.depends_on() {
            if dep == &step.name {
                issues.push(Issue::step(&step.name, "dependsOn", "a step cannot depend on itself"));
            } else if !names.contains(dep.as_str()) {
                issues.push(Issue::step(
                    &step.name,
                    "dependsOn",
                    format!("unknown step {dep:?} (dependencies must be in {section})"),
                ));
            }
        }
    }

    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let ready: Vec<&Step> = steps
            .iter()
            .filter(|s| !done.contains(s.name.as_str()))
            .filter(|s| s.depends_on().iter().all(|d| done.contains(d.as_str()) || !names.contains(d.as_str()) || d == &s.name))
            .collect();
        if ready.is_empty() {
            break;
        }
        for step in ready {
            done.insert(&step.name);
            order.push(step.name.clone());
        }
    }
    let stuck: Vec<&str> =
        steps.iter().map(|s| s.name.as_str()).filter(|n| !done.contains(n)).collect();
    if !stuck.is_empty() {
        issues.push(Issue::step(
            stuck[0],
            "dependsOn",
            format!("dependency cycle among {}", stuck.join(", ")),
        ));
    }
    order
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Turns an expression error into an issue for the given step and field.
pub fn expr_issue(step: &str, field: &str, err: &ExprError) -> Issue {
    Issue::step(step, field, err.to_string())
}
