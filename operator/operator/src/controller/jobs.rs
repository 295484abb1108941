//! Builds the Job and the input ConfigMap of one step attempt.

use super::Settings;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
            PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource, SeccompProfile,
            SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use std::collections::BTreeMap;
use vigil_api::{Run, labels, playbook::Step};
use vigil_engine::{JobRequest, names};

/// The uid and gid step containers run as (the conventional "nonroot" user).
pub const STEP_UID: i64 = 65532;
/// The audience of the token a step pod proves itself with when it uploads outputs.
pub const TOKEN_AUDIENCE: &str = "vigil";

const BIN_DIR: &str = "/vigil/bin";
const IN_DIR: &str = "/vigil/in";
const OUT_DIR: &str = "/vigil/out";
const TOKEN_DIR: &str = "/vigil/token";

/// Labels every object of one attempt carries.
pub fn attempt_labels(run: &Run, req: &JobRequest) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
        (labels::RUN.to_string(), run_name(run)),
        (labels::PLAYBOOK.to_string(), run.spec.playbook_ref.name.clone()),
        (labels::STEP.to_string(), req.step.clone()),
        (labels::ATTEMPT.to_string(), req.attempt.to_string()),
    ]);
    if let Some(item) = req.item {
        l.insert(labels::ITEM.to_string(), item.to_string());
    }
    l
}

pub fn run_name(run: &Run) -> String {
    run.metadata.name.clone().unwrap_or_default()
}

/// The ownerReference that makes deleting a Run delete what it made.
pub fn owner(run: &Run) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", vigil_api::GROUP, vigil_api::VERSION),
        kind: "Run".into(),
        name: run_name(run),
        uid: run.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ConfigMap holding the attempt's inputs and the step's script.
pub fn input_config_map(run: &Run, step: &Step, req: &JobRequest) -> ConfigMap {
    let mut data = BTreeMap::from([("inputs.json".to_string(), req.inputs.to_string())]);
    if let Some(script) = &step.script {
        data.insert("script".to_string(), script.clone());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::job_config_name(&req.name)),
            namespace: run.metadata.namespace.clone(),
            labels: Some(attempt_labels(run, req)),
            owner_references: Some(vec![owner(run)]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// The program a step runs: its command, or an interpreter picked from the image for its
/// script.
pub fn program(step: &Step) -> Vec<String> {
    let mut argv = match (&step.command, &step.script) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => vec![interpreter(step.image.as_deref().unwrap_or_default()).to_string()],
        (None, None) => Vec::new(),
    };
    if step.script.is_some() {
        argv.push(format!("{IN_DIR}/script"));
    }
    argv.extend(step.args.iter().flatten().cloned());
    argv
}

/// The interpreter of a script for an image: python3, node, or the POSIX shell.
pub fn interpreter(image: &str) -> &'static str {
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo);
    if repo.starts_with("python") {
        "python3"
    } else if repo.starts_with("node") {
        "node"
    } else {
        "/bin/sh"
    }
}

/// The Job of one attempt.
pub fn job(run: &Run, step: &Step, req: &JobRequest, settings: &Settings, traceparent: Option<&str>) -> Job {
    let labels = attempt_labels(run, req);
    let mut command = vec![format!("{BIN_DIR}/vigil-step"), "run".into(), "--".into()];
    command.extend(program(step));

    let mut env = vec![
        env_var("VIGIL_RUN", &run_name(run)),
        env_var("VIGIL_STEP", &req.step),
        env_var("VIGIL_ATTEMPT", &req.attempt.to_string()),
        env_var("VIGIL_INPUTS_FILE", &format!("{IN_DIR}/inputs.json")),
        env_var("VIGIL_OUTPUTS", &format!("{OUT_DIR}/outputs.json")),
        env_var("VIGIL_OUTPUTS_URL", &settings.outputs_url),
        env_var("VIGIL_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
    ];
    if let Some(item) = req.item {
        env.push(env_var("VIGIL_ITEM", &item.to_string()));
    }
    if let Some(tp) = traceparent {
        env.push(env_var("TRACEPARENT", tp));
    }
    env.extend(step.env.iter().cloned());

    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let step_container = Container {
        name: "step".into(),
        image: step.image.clone(),
        command: Some(command),
        env: Some(env),
        env_from: (!step.env_from.is_empty()).then(|| step.env_from.clone()),
        resources: step.resources.clone(),
        volume_mounts: Some(vec![
            mount("vigil-bin", BIN_DIR, true),
            mount("vigil-in", IN_DIR, true),
            mount("vigil-out", OUT_DIR, false),
            mount("vigil-token", TOKEN_DIR, true),
        ]),
        security_context: Some(restricted()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let install = Container {
        name: "vigil-step".into(),
        image: Some(settings.step_image.clone()),
        command: Some(vec!["vigil-step".into(), "install".into(), BIN_DIR.into()]),
        volume_mounts: Some(vec![mount("vigil-bin", BIN_DIR, false)]),
        security_context: Some(restricted()),
        ..Default::default()
    };

    let timeout = i64::try_from(req.timeout.as_secs()).unwrap_or(i64::MAX).max(1);
    let service_account = step
        .service_account_name
        .clone()
        .or_else(|| settings.step_service_account.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: run.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner(run)]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // The engine enforces the timeout; this is the backstop if the operator is away.
            active_deadline_seconds: Some(timeout + 30),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: service_account,
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(STEP_UID),
                        run_as_group: Some(STEP_UID),
                        fs_group: Some(STEP_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    init_containers: Some(vec![install]),
                    containers: vec![step_container],
                    volumes: Some(volumes(&req.name)),
                    termination_grace_period_seconds: Some(10),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes(job: &str) -> Vec<Volume> {
    vec![
        Volume {
            name: "vigil-bin".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "vigil-out".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "vigil-in".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::job_config_name(job),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "vigil-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                default_mode: Some(0o444),
            }),
            ..Default::default()
        },
    ]
}

/// The restricted Pod Security profile, per container.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_follows_the_image() {
        assert_eq!(interpreter("python:3.12-slim"), "python3");
        assert_eq!(interpreter("docker.io/library/node:22"), "node");
        assert_eq!(interpreter("registry.local/team/python-tools@sha256:abc"), "python3");
        assert_eq!(interpreter("bash:5"), "/bin/sh");
    }

    #[test]
    fn a_script_step_runs_through_vigil_step() {
        let step: Step = serde_json::from_value(serde_json::json!({
            "name": "score", "image": "python:3.12-slim", "script": "print(1)"
        }))
        .unwrap();
        assert_eq!(program(&step), vec!["python3", "/vigil/in/script"]);
    }
}
