//! End-to-end checks of the `vigil` binary and its renderers: golden output for lint and
//! describe, and real local runs under the built vigil-step.

use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `vigil ARGS` from the crate directory with no terminal attached.
fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL)
        .args(args)
        .current_dir(crate_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("vigil runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Compares `actual` with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites the file instead.
fn assert_golden(name: &str, actual: &str) {
    let path = crate_dir().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("golden file written");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        actual,
        expected,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

// === lint ===

#[test]
fn lint_of_a_clean_playbook_prints_nothing_and_exits_zero() {
    let out = vigil(&["lint", "tests/fixtures/good.yaml"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn lint_reports_cycles_unknown_dependencies_bad_cel_and_schema_errors_by_line() {
    let out = vigil(&[
        "lint",
        "tests/fixtures/good.yaml",
        "tests/fixtures/bad.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_golden("lint-bad.txt", &stdout(&out));
}

#[test]
fn lint_json_lists_each_finding_with_its_location() {
    let out = vigil(&["lint", "-o", "json", "tests/fixtures/bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        findings.len(),
        stdout(&vigil(&["lint", "tests/fixtures/bad.yaml"]))
            .lines()
            .count()
    );
    let cycle = findings
        .iter()
        .find(|f| f["message"].as_str().unwrap_or("").contains("cycle"))
        .expect("a cycle");
    assert_eq!(cycle["file"], "tests/fixtures/bad.yaml");
    assert_eq!(cycle["step"], "ping");
    assert_eq!(cycle["field"], "dependsOn");
    assert_eq!(cycle["line"], 21);
}

#[test]
fn lint_of_a_missing_file_fails() {
    let out = vigil(&["lint", "tests/fixtures/nope.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("tests/fixtures/nope.yaml: cannot read"),
        "{}",
        stdout(&out)
    );
}

// === describe ===

#[test]
fn describe_renders_a_run_as_a_tree_in_dag_order() {
    let text = std::fs::read_to_string(crate_dir().join("tests/fixtures/run.yaml")).unwrap();
    let run: vigil_api::Run = serde_yaml::from_str(&text).expect("the fixture is a Run");
    let now = "2025-01-01T10:05:00Z".parse().unwrap();
    let rendered =
        vigil_cli::render::describe::describe_run(&run, now, &vigil_cli::render::Style::PLAIN);
    assert_golden("describe-run.txt", &rendered);
}

// === run --local ===

/// The vigil-step binary of this workspace, built once per test process.
fn step_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // tests run from <target>/debug/deps; vigil-step lands in <target>/debug.
        let exe = std::env::current_exe().expect("test path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/debug").to_path_buf();
        let target_dir = profile_dir.parent().expect("target").to_path_buf();
        let workspace = crate_dir().join("../../Cargo.toml");
        let built = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "vigil-step", "--manifest-path"])
            .arg(&workspace)
            .arg("--target-dir")
            .arg(&target_dir)
            .status();
        let bin = profile_dir.join("vigil-step");
        if !bin.is_file() {
            panic!(
                "vigil-step is not at {} (cargo build said {built:?}); run `cargo build -p vigil-step` first",
                bin.display()
            );
        }
        bin
    })
}

fn run_local(playbook: &str, extra: &[&str]) -> (Output, Value) {
    let bin = step_bin().display().to_string();
    let mut args = vec![
        "run",
        "--local",
        "-f",
        playbook,
        "--step-bin",
        &bin,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = vigil(&args);
    let result = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}); stderr:\n{}", stderr(&out)));
    (out, result)
}

#[test]
fn local_run_follows_the_branches_fans_out_and_runs_finally() {
    let (out, result) = run_local(
        "tests/fixtures/local.yaml",
        &[
            "--input",
            "tests/fixtures/alert.json",
            "--env-file",
            "audit-creds=tests/fixtures/audit.env",
            "--var",
            "SITE=lab",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(result["phase"], "Succeeded");
    let steps = &result["steps"];
    assert_eq!(
        steps["lookup"]["outputs"],
        serde_json::json!({"user": "JDOE", "risk": 80})
    );
    assert_eq!(steps["contain"]["outputs"]["action"], "contain JDOE");
    assert_eq!(steps["contain"]["outputs"]["greeting"], "hello");
    assert_eq!(steps["contain"]["outputs"]["site"], "lab");
    assert_eq!(steps["monitor"]["phase"], "Skipped");
    assert_eq!(
        steps["isolate"]["outputs"]["items"],
        serde_json::json!([{"host": "ws-1", "index": 0}, {"host": "ws-2", "index": 1}])
    );
    assert_eq!(
        steps["approve"]["phase"], "Denied",
        "no terminal and no flag: denied"
    );
    assert!(
        stderr(&out).contains("stdin is not a terminal"),
        "{}",
        stderr(&out)
    );
    assert_eq!(steps["disable"]["phase"], "Skipped");
    assert_eq!(
        steps["audit"]["outputs"],
        serde_json::json!({"isolated": 2, "token": "s3cret"})
    );
}

#[test]
fn local_run_applies_decisions_and_kills_steps_past_their_timeout() {
    let alert = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        alert.path(),
        r#"{"account": {"name": "amy"}, "devices": ["a"], "slow": true}"#,
    )
    .unwrap();
    let (out, result) = run_local(
        "tests/fixtures/local.yaml",
        &[
            "--input",
            alert.path().to_str().unwrap(),
            "--decision",
            "approve=approved",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let steps = &result["steps"];
    assert_eq!(steps["approve"]["outputs"]["decision"], "approved");
    assert_eq!(
        steps["disable"]["outputs"],
        serde_json::json!({"disabled": true})
    );
    assert_eq!(steps["wait"]["phase"], "Failed");
    assert!(
        steps["wait"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{}",
        steps["wait"]
    );
}

#[test]
fn local_run_of_a_failing_step_exits_one_and_shows_its_output() {
    let (out, result) = run_local("tests/fixtures/failing.yaml", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result["phase"], "Failed");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{result}"
    );
    assert!(
        stderr(&out).contains("cannot reach the SIEM"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn local_run_refuses_inputs_that_do_not_fit() {
    let out = vigil(&[
        "run",
        "--local",
        "-f",
        "tests/fixtures/local.yaml",
        "--input",
        "tests/fixtures/audit.env",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let alert = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(alert.path(), r#"{"devices": []}"#).unwrap();
    let out = vigil(&[
        "run",
        "--local",
        "-f",
        "tests/fixtures/local.yaml",
        "--input",
        alert.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("input user: is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_without_local_is_a_usage_error() {
    let out = vigil(&["run", "-f", "tests/fixtures/local.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("vigil trigger"), "{}", stderr(&out));
}

#[test]
fn completion_scripts_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = vigil(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            stdout(&out).contains("describe"),
            "{shell} completion lacks subcommands"
        );
    }
}
