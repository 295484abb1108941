//! The playbooks the bench runs: no-op steps in the shapes that matter.

use serde_json::{Value, json};

/// The image of every no-op step; the process node runs it with the host's shell.
pub const NOOP_IMAGE: &str = "bash:5";
/// The body of every no-op step: outputs `{}` and ends.
pub const NOOP: &str = r#"echo '{}' > "$VIGIL_OUTPUTS""#;

fn noop(name: &str, depends_on: &[&str]) -> Value {
    let mut step = json!({"name": name, "image": NOOP_IMAGE, "script": NOOP});
    if !depends_on.is_empty() {
        step["dependsOn"] = json!(depends_on);
    }
    step
}

fn playbook(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Playbook",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A chain of `len` no-op steps, each depending on the one before.
pub fn chain(name: &str, len: usize) -> Value {
    let names: Vec<String> = (0..len).map(|i| format!("s{i}")).collect();
    let steps: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i == 0 {
                noop(n, &[])
            } else {
                noop(n, &[&names[i - 1]])
            }
        })
        .collect();
    playbook(
        name,
        json!({"description": "vigil-bench: a chain of no-op steps", "steps": steps}),
    )
}

/// The DAG of `playbooks/incident-response.yaml` with no-op steps: five enrichments in
/// parallel, a join (score, which picks the `critical` branch and three devices), two steps in
/// sequence, a set of `when` branches of which two run (one a forEach of three), and a finally
/// step. The approval branch is left out: it waits for a person.
pub fn incident_shape(name: &str) -> Value {
    let enrich = [
        "siem",
        "threat-intel",
        "identity",
        "malware-scan",
        "compliance",
    ];
    let mut steps: Vec<Value> = enrich.iter().map(|n| noop(n, &[])).collect();
    steps.push(json!({
        "name": "score", "image": NOOP_IMAGE, "dependsOn": enrich,
        "script": r#"echo '{"severity":"critical","devices":["ws-1","ws-2","ws-3"]}' > "$VIGIL_OUTPUTS""#,
    }));
    steps.push(noop("summary", &["score"]));
    steps.push(noop("ticket", &["summary"]));
    for (branch, severity) in [
        ("log-low", "low"),
        ("notify-medium", "medium"),
        ("disable-account", "critical"),
    ] {
        let mut step = noop(branch, &["ticket"]);
        step["when"] = json!(format!("steps.score.outputs.severity == '{severity}'"));
        steps.push(step);
    }
    let mut each = noop("quarantine-devices", &["ticket"]);
    each["when"] = json!("steps.score.outputs.severity == 'critical'");
    each["forEach"] = json!("steps.score.outputs.devices");
    steps.push(each);
    playbook(
        name,
        json!({
            "description": "vigil-bench: the incident-response DAG with no-op steps",
            "inputs": {"username": {"type": "string", "required": true}},
            "steps": steps,
            "finally": [noop("audit", &[])],
        }),
    )
}

/// The Job-backed levels of [`incident_shape`] on its critical path, in order: each starts when
/// the one before has ended.
pub const INCIDENT_LEVELS: &[&[&str]] = &[
    &[
        "siem",
        "threat-intel",
        "identity",
        "malware-scan",
        "compliance",
    ],
    &["score"],
    &["summary"],
    &["ticket"],
    &["disable-account", "quarantine-devices"],
    &["audit"],
];

/// One approval step that nobody decides: its Runs stay `Running`, holding an Approval.
pub fn hold(name: &str) -> Value {
    playbook(
        name,
        json!({
            "description": "vigil-bench: Runs that wait for an approval",
            "inputs": {"username": {"type": "string", "required": true}},
            "steps": [{
                "name": "hold",
                "approval": {
                    "message": "vigil-bench: hold {{ inputs.username }}",
                    "approvers": {"groups": ["vigil-bench"]},
                    "timeout": "24h",
                },
            }],
        }),
    )
}

/// A playbook with the incident-response webhook trigger (HMAC, filter, mapping, dedupe) and
/// one no-op step.
pub fn webhook(name: &str, secret: &str) -> Value {
    playbook(
        name,
        json!({
            "description": "vigil-bench: alerts in through the gateway",
            "inputs": {
                "username": {"type": "string", "required": true},
                "ip": {"type": "string", "required": true},
                "hostname": {"type": "string", "default": ""},
            },
            "triggers": {"webhook": {
                "auth": {"hmacSha256": {"secretRef": {"name": secret, "key": "secret"}}},
                "filter": "has(body.event_type) && body.event_type == 'alert'",
                "inputs": {
                    "username": "body.user",
                    "ip": "body.src_ip",
                    "hostname": "has(body.host) ? body.host : ''",
                },
                "dedupe": {"key": "body.alert_id", "window": "10m"},
            }},
            "steps": [noop("noop", &[])],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_api::Playbook;

    fn parses(v: Value) -> Playbook {
        serde_json::from_value(v).expect("a Playbook")
    }

    #[test]
    fn every_bench_playbook_is_a_valid_playbook() {
        for pb in [
            chain("c", 4),
            incident_shape("i"),
            hold("h"),
            webhook("w", "s"),
        ] {
            let pb = parses(pb);
            if let Err(issues) = vigil_engine::compile(&pb.spec) {
                panic!("{:?} does not compile: {issues:?}", pb.metadata.name);
            }
        }
    }

    #[test]
    fn a_chain_depends_step_by_step() {
        let pb = parses(chain("c", 3));
        let deps: Vec<Option<Vec<String>>> =
            pb.spec.steps.iter().map(|s| s.depends_on.clone()).collect();
        assert_eq!(
            deps,
            vec![None, Some(vec!["s0".into()]), Some(vec!["s1".into()])]
        );
    }

    #[test]
    fn the_incident_levels_name_steps_of_the_incident_shape() {
        let pb = parses(incident_shape("i"));
        for step in INCIDENT_LEVELS.iter().flat_map(|l| l.iter()) {
            assert!(pb.spec.step(step).is_some(), "no step {step}");
        }
    }
}
