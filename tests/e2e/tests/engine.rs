//! The engine on a real cluster: each test applies a playbook, starts Runs and checks what a
//! user would check with kubectl. Skipped unless `VIGIL_E2E` is set (see the fixture).

use k8s_openapi::api::{batch::v1::Job, core::v1::ConfigMap};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use std::time::Duration;
use vigil_api::{RunPhase, StepPhase, labels};
use vigil_e2e::{Cluster, WAIT, label, step};

/// When the `step` container of a step pod started and ended.
fn step_container_span(pod: &k8s_openapi::api::core::v1::Pod) -> (String, String) {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let step = statuses.iter().find(|c| c.name == "step").expect("a step container status");
    let done = step.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("step container ended");
    let at = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string()).expect("container times")
    };
    (at(&done.started_at), at(&done.finished_at))
}

#[tokio::test]
async fn a_five_way_fan_out_runs_concurrently_and_its_join_sees_every_output() {
    let Some(c) = Cluster::start("fan-out").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: fan-out}
spec:
  steps:
    - {name: e1, image: "bash:5", script: 'sleep 3; echo "{\"n\": 1}" > "$VIGIL_OUTPUTS"'}
    - {name: e2, image: "bash:5", script: 'sleep 3; echo "{\"n\": 2}" > "$VIGIL_OUTPUTS"'}
    - {name: e3, image: "bash:5", script: 'sleep 3; echo "{\"n\": 3}" > "$VIGIL_OUTPUTS"'}
    - {name: e4, image: "bash:5", script: 'sleep 3; echo "{\"n\": 4}" > "$VIGIL_OUTPUTS"'}
    - {name: e5, image: "bash:5", script: 'sleep 3; echo "{\"n\": 5}" > "$VIGIL_OUTPUTS"'}
    - name: join
      dependsOn: [e1, e2, e3, e4, e5]
      image: python:3.12-slim
      inputs:
        seen: "[steps.e1.outputs.n, steps.e2.outputs.n, steps.e3.outputs.n, steps.e4.outputs.n, steps.e5.outputs.n]"
      script: |
        import json, os
        inputs = json.load(open(os.environ["VIGIL_INPUTS_FILE"]))
        json.dump({"seen": inputs["seen"]}, open(os.environ["VIGIL_OUTPUTS"], "w"))
"#,
    )
    .await;
    c.create_run("fan", "fan-out", json!({})).await;
    let run = c.wait_for_phase("fan", RunPhase::Succeeded, WAIT).await;

    assert_eq!(step(&run, "join").outputs, Some(json!({"seen": [1, 2, 3, 4, 5]})));

    let jobs = c.jobs_of("fan").await;
    let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["fan-e1-1", "fan-e2-1", "fan-e3-1", "fan-e4-1", "fan-e5-1", "fan-join-1"]);
    let created = |j: &Job| j.metadata.creation_timestamp.clone().expect("creationTimestamp").0;
    let join_created = created(&jobs[5]);
    for fan in &jobs[..5] {
        assert!(created(fan) < join_created, "{} was created after the join's Job", fan.name_any());
    }

    let spans: Vec<(String, String)> = c
        .pods_of("fan")
        .await
        .iter()
        .filter(|p| label(*p, labels::STEP) != Some("join"))
        .map(step_container_span)
        .collect();
    assert_eq!(spans.len(), 5, "one pod per fan-out step");
    let last_start = spans.iter().map(|s| s.0.clone()).max().expect("spans");
    let first_end = spans.iter().map(|s| s.1.clone()).min().expect("spans");
    assert!(last_start < first_end, "the five steps did not overlap: {spans:?}");
}

#[tokio::test]
async fn a_false_when_skips_its_branch_without_a_job() {
    let Some(c) = Cluster::start("when").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: branch}
spec:
  inputs:
    severity: {type: string, required: true}
  steps:
    - name: score
      image: "bash:5"
      inputs: {severity: inputs.severity}
      script: 'echo "{\"level\": \"$INPUT_SEVERITY\"}" > "$VIGIL_OUTPUTS"'
    - name: contain
      dependsOn: [score]
      when: "steps.score.outputs.level == 'high'"
      image: "bash:5"
      script: "true"
    - name: close
      dependsOn: [score]
      when: "steps.score.outputs.level == 'low'"
      image: "bash:5"
      script: "true"
"#,
    )
    .await;
    c.create_run("high", "branch", json!({"severity": "high"})).await;
    let run = c.wait_for_phase("high", RunPhase::Succeeded, WAIT).await;

    assert_eq!(step(&run, "contain").phase, StepPhase::Succeeded);
    let skipped = step(&run, "close");
    assert_eq!(skipped.phase, StepPhase::Skipped);
    assert_eq!(skipped.reason.as_deref(), Some("WhenFalse"));
    let jobs = c.jobs_of("high").await;
    assert!(jobs.iter().all(|j| label(j, labels::STEP) != Some("close")), "a Job ran the skipped step");
    assert_eq!(c.job_names("high").await, ["high-contain-1", "high-score-1"]);
}

#[tokio::test]
async fn a_step_that_fails_twice_succeeds_on_its_third_attempt() {
    let Some(c) = Cluster::start("retry").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: flaky}
spec:
  steps:
    - name: flaky
      image: "bash:5"
      retries: {limit: 4, backoff: {initial: 1s, factor: 1}}
      script: |
        echo "attempt $VIGIL_ATTEMPT"
        [ "$VIGIL_ATTEMPT" -ge 3 ] || exit 1
"#,
    )
    .await;
    c.create_run("r", "flaky", json!({})).await;
    let run = c.wait_for_phase("r", RunPhase::Succeeded, WAIT).await;

    assert_eq!(c.job_names("r").await, ["r-flaky-1", "r-flaky-2", "r-flaky-3"]);
    let flaky = step(&run, "flaky");
    assert_eq!(flaky.phase, StepPhase::Succeeded);
    assert_eq!(flaky.attempts, 3);
    assert_eq!(flaky.unit.expect("unit").attempt, 3);
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_and_its_job_is_deleted() {
    let Some(c) = Cluster::start("timeout").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: hang}
spec:
  steps:
    - {name: hang, image: "bash:5", script: "sleep 30", timeout: 2s}
"#,
    )
    .await;
    c.create_run("t", "hang", json!({})).await;
    let run = c.wait_for_phase("t", RunPhase::Failed, Duration::from_secs(25)).await;

    let hang = step(&run, "hang");
    assert_eq!(hang.phase, StepPhase::Failed);
    let message = hang.message.unwrap_or_default();
    assert!(message.contains("timed out"), "message: {message}");
    assert_eq!(run.status.as_ref().and_then(|s| s.reason.as_deref()), Some("StepFailed"));
    let jobs = c.api::<Job>();
    c.eventually("the timed-out Job to be deleted", WAIT, || async {
        jobs.get_opt("t-hang-1").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn for_each_runs_one_job_per_item_and_keeps_outputs_in_item_order() {
    let Some(c) = Cluster::start("for-each").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: isolate}
spec:
  inputs:
    hosts: {type: array, required: true}
  steps:
    - name: isolate
      image: python:3.12-slim
      forEach: inputs.hosts
      script: |
        import json, os, time
        inputs = json.load(open(os.environ["VIGIL_INPUTS_FILE"]))
        time.sleep(2 - inputs["index"])  # the first item ends last
        out = {"host": inputs["item"].upper(), "index": inputs["index"]}
        json.dump(out, open(os.environ["VIGIL_OUTPUTS"], "w"))
"#,
    )
    .await;
    c.create_run("fe", "isolate", json!({"hosts": ["alpha", "beta", "gamma"]})).await;
    let run = c.wait_for_phase("fe", RunPhase::Succeeded, WAIT).await;

    assert_eq!(c.job_names("fe").await, ["fe-isolate-0-1", "fe-isolate-1-1", "fe-isolate-2-1"]);
    let items = json!({"items": [
        {"host": "ALPHA", "index": 0},
        {"host": "BETA", "index": 1},
        {"host": "GAMMA", "index": 2},
    ]});
    assert_eq!(step(&run, "isolate").outputs, Some(items));
}

#[tokio::test]
async fn finally_runs_after_a_failed_step_and_the_run_fails() {
    let Some(c) = Cluster::start("finally").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: doomed}
spec:
  steps:
    - {name: boom, image: "bash:5", script: "echo failing >&2; exit 3"}
    - {name: after, dependsOn: [boom], image: "bash:5", script: "true"}
  finally:
    - name: cleanup
      image: "bash:5"
      script: 'echo "{\"cleaned\": true}" > "$VIGIL_OUTPUTS"'
"#,
    )
    .await;
    c.create_run("f", "doomed", json!({})).await;
    let run = c.wait_for_phase("f", RunPhase::Failed, WAIT).await;

    assert_eq!(run.status.as_ref().and_then(|s| s.reason.as_deref()), Some("StepFailed"));
    let boom = step(&run, "boom");
    assert_eq!(boom.phase, StepPhase::Failed);
    assert_eq!(boom.unit.and_then(|u| u.exit_code), Some(3));
    assert_eq!(step(&run, "after").phase, StepPhase::Skipped);
    let cleanup = step(&run, "cleanup");
    assert_eq!(cleanup.phase, StepPhase::Succeeded);
    assert_eq!(cleanup.outputs, Some(json!({"cleaned": true})));
}

#[tokio::test]
async fn cancelling_a_run_stops_its_running_job_and_still_runs_finally() {
    let Some(c) = Cluster::start("cancel").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: slow}
spec:
  steps:
    - {name: wait, image: "bash:5", script: "sleep 300"}
  finally:
    - name: audit
      image: "bash:5"
      script: 'echo "{\"audited\": true}" > "$VIGIL_OUTPUTS"'
"#,
    )
    .await;
    c.create_run("x", "slow", json!({})).await;
    let jobs = c.api::<Job>();
    c.eventually("the long step's Job to run", WAIT, || async {
        let job = jobs.get_opt("x-wait-1").await.ok()??;
        (job.status?.active? > 0).then_some(())
    })
    .await;

    let cancel = Patch::Merge(json!({"spec": {"cancel": true}}));
    c.runs().patch("x", &PatchParams::default(), &cancel).await.expect("cancel the run");
    let run = c.wait_for_phase("x", RunPhase::Cancelled, WAIT).await;

    assert_eq!(step(&run, "wait").phase, StepPhase::Cancelled);
    let audit = step(&run, "audit");
    assert_eq!(audit.phase, StepPhase::Succeeded);
    assert_eq!(audit.outputs, Some(json!({"audited": true})));
    c.eventually("the cancelled Job to be deleted", WAIT, || async {
        jobs.get_opt("x-wait-1").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_operator_killed_mid_run_resumes_without_duplicating_jobs() {
    let Some(mut c) = Cluster::start("restart").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: chain}
spec:
  steps:
    - {name: first, image: "bash:5", script: "sleep 3"}
    - {name: second, dependsOn: [first], image: "bash:5", script: "sleep 2"}
    - {name: third, dependsOn: [second], image: "bash:5", script: "true"}
"#,
    )
    .await;
    c.create_run("k", "chain", json!({})).await;
    let jobs = c.api::<Job>();
    let exists = |name: &'static str| {
        let jobs = jobs.clone();
        move || {
            let jobs = jobs.clone();
            async move { jobs.get_opt(name).await.ok()?.map(|_| ()) }
        }
    };

    // Killed while the first step runs; it ends while no operator is there to see it.
    c.eventually("the first Job", WAIT, exists("k-first-1")).await;
    c.operator.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.operator.restart().await;

    // Killed again right after the next Job is created, and back at once.
    c.eventually("the second Job", WAIT, exists("k-second-1")).await;
    c.operator.kill();
    c.operator.restart().await;

    let run = c.wait_for_phase("k", RunPhase::Succeeded, WAIT).await;
    assert_eq!(c.job_names("k").await, ["k-first-1", "k-second-1", "k-third-1"]);
    for name in ["first", "second", "third"] {
        let s = step(&run, name);
        assert_eq!((s.phase, s.attempts), (StepPhase::Succeeded, 1), "step {name}");
    }
}

#[tokio::test]
async fn a_256_kib_output_reaches_the_next_step_and_stays_out_of_the_run() {
    let Some(c) = Cluster::start("large-output").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: big}
spec:
  steps:
    - name: collect
      image: python:3.12-slim
      script: |
        import json, os
        json.dump({"evidence": "x" * 262144}, open(os.environ["VIGIL_OUTPUTS"], "w"))
    - name: measure
      dependsOn: [collect]
      image: python:3.12-slim
      inputs: {evidence: steps.collect.outputs.evidence}
      script: |
        import json, os
        inputs = json.load(open(os.environ["VIGIL_INPUTS_FILE"]))
        json.dump({"length": len(inputs["evidence"])}, open(os.environ["VIGIL_OUTPUTS"], "w"))
"#,
    )
    .await;
    c.create_run("big", "big", json!({})).await;
    let run = c.wait_for_phase("big", RunPhase::Succeeded, WAIT).await;

    assert_eq!(step(&run, "measure").outputs, Some(json!({"length": 262144})));
    let json = c.kubectl(&["get", "run", "big", "-n", &c.ns, "-o", "json"]);
    assert!(json.len() < 32 * 1024, "the Run object is {} bytes", json.len());

    let stored = step(&run, "collect").unit.and_then(|u| u.outputs_ref).expect("an outputsRef");
    assert_eq!(stored.config_map, "big-collect-1-out");
    assert!(stored.bytes > 262144, "{stored:?}");
    let cm = c.api::<ConfigMap>().get("big-collect-1-out").await.expect("the outputs ConfigMap");
    let owner = cm.owner_references().first().cloned().expect("an ownerReference");
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Run", "big"));
    assert_eq!(Some(owner.uid), run.metadata.uid);
}

#[tokio::test]
async fn kubectl_get_runs_shows_playbook_phase_progress_and_age() {
    let Some(c) = Cluster::start("columns").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: triage}
spec:
  steps:
    - {name: a, image: "bash:5", script: "true"}
    - {name: b, dependsOn: [a], image: "bash:5", script: "true"}
    - {name: c, dependsOn: [a], image: "bash:5", script: "true"}
  finally:
    - {name: d, image: "bash:5", script: "true"}
"#,
    )
    .await;
    c.create_run("cols", "triage", json!({})).await;
    c.wait_for_phase("cols", RunPhase::Succeeded, WAIT).await;

    let table = c.kubectl(&["get", "runs", "-n", &c.ns]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "PLAYBOOK", "PHASE", "PROGRESS", "AGE"], "{table}");
    assert_eq!(rows[1][..4], ["cols", "triage", "Succeeded", "4/4"], "{table}");
    assert!(rows[1][4].ends_with('s'), "{table}");
}

#[tokio::test]
async fn deleting_a_run_garbage_collects_its_jobs_and_config_maps() {
    let Some(c) = Cluster::start("gc").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: litter}
spec:
  steps:
    - name: notes
      image: python:3.12-slim
      script: |
        import json, os
        json.dump({"notes": "y" * 8192}, open(os.environ["VIGIL_OUTPUTS"], "w"))
    - {name: done, dependsOn: [notes], image: "bash:5", script: "true"}
"#,
    )
    .await;
    c.create_run("gc", "litter", json!({})).await;
    c.wait_for_phase("gc", RunPhase::Succeeded, WAIT).await;

    assert_eq!(c.jobs_of("gc").await.len(), 2);
    let mut cms: Vec<String> = c.config_maps_of("gc").await.iter().map(|m| m.name_any()).collect();
    cms.sort();
    assert_eq!(cms, ["gc-done-1-in", "gc-notes-1-in", "gc-notes-1-out"]);

    c.runs().delete("gc", &DeleteParams::default()).await.expect("delete the run");
    c.eventually("the Run's Jobs, pods and ConfigMaps to be collected", WAIT, || async {
        let left = c.jobs_of("gc").await.len() + c.pods_of("gc").await.len() + c.config_maps_of("gc").await.len();
        (left == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_concurrency_cap_of_one_runs_queued_runs_one_at_a_time_in_creation_order() {
    let Some(c) = Cluster::start("concurrency").await else { return };
    c.apply_playbook(
        r#"
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: serial}
spec:
  concurrency: {max: 1}
  steps:
    - {name: work, image: "bash:5", script: "sleep 2"}
"#,
    )
    .await;
    let names = ["q-1", "q-2", "q-3"];
    for name in names {
        c.create_run(name, "serial", json!({})).await;
    }

    // Sampled while they run: never two Running at once, and the order they start in.
    let mut started: Vec<String> = Vec::new();
    let mut saw_queued = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let list = c.runs().list(&ListParams::default()).await.expect("list runs").items;
        let running: Vec<String> =
            list.iter().filter(|r| r.phase() == RunPhase::Running).map(|r| r.name_any()).collect();
        assert!(running.len() <= 1, "more than one Run running at once: {running:?}");
        saw_queued |= list.iter().any(|r| r.phase() == RunPhase::Queued);
        for name in running {
            if !started.contains(&name) {
                started.push(name);
            }
        }
        if list.len() == 3 && list.iter().all(|r| r.phase().is_finished()) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            panic!("the three Runs did not finish in 90s\n{}", c.diagnostics(None).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(saw_queued, "no Run was ever Queued");
    assert_eq!(started, names, "Runs started out of creation order");
    let mut previous_end = None;
    for name in names {
        let run = c.runs().get(name).await.expect("run");
        let status = run.status.expect("status");
        assert_eq!(status.phase, RunPhase::Succeeded, "{name}");
        let (start, end) = (status.started_at.expect("startedAt"), status.finished_at.expect("finishedAt"));
        if let Some(previous_end) = previous_end {
            assert!(start >= previous_end, "{name} started before the Run ahead of it finished");
        }
        previous_end = Some(end);
    }
}
