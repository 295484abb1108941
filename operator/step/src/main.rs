//! `vigil-step`: the wrapper every step container runs. It hands the user's program its inputs,
//! runs it, and reports its outputs through the termination message, so step images need
//! nothing of vigil's installed.
//!
//! ```text
//! vigil-step install DIR          copy this binary into DIR (the init container does this)
//! vigil-step run -- PROGRAM ARGS  run a step (the main container does this)
//! ```
//!
//! The protocol, the same in the cluster and under `vigil run --local`:
//! - inputs: the JSON object in `$VIGIL_INPUTS_FILE` (default `/vigil/in/inputs.json`); each
//!   top-level input up to [`ENV_LIMIT`] bytes is also in the environment as `INPUT_<NAME>`
//!   (strings raw, others JSON); larger ones are only in the file;
//! - outputs: the program writes one JSON object to `$VIGIL_OUTPUTS` (default
//!   `/vigil/out/outputs.json`); no file means `{}`;
//! - result: written to `$VIGIL_TERMINATION_LOG` (default `/dev/termination-log`) as
//!   `{"v":1,"outputs":{...}}` when small, or, for outputs over [`INLINE_LIMIT`], uploaded to
//!   `$VIGIL_OUTPUTS_URL` with the pod's projected token and referenced as
//!   `{"v":1,"digest":"sha256:...","bytes":N}`;
//! - exit code: the program's; 65 when its outputs are not a JSON object, 70 when the outputs
//!   could not be delivered, 127 when the program cannot start.

use sha2::{Digest, Sha256};
use std::{
    env, fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// Outputs up to this size travel in the termination message (the kubelet caps it at 4 KiB).
const INLINE_LIMIT: usize = 3 * 1024;
/// The largest outputs document accepted.
const MAX_OUTPUTS: usize = 1024 * 1024;
/// The largest input also passed as `INPUT_<NAME>`. Linux refuses to start a program with one
/// variable over 128 KiB (`E2BIG`), and all of them share the argument space.
const ENV_LIMIT: usize = 32 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("install") if args.len() == 2 => install(Path::new(&args[1])),
        Some("run") => {
            let program: Vec<String> = args[1..].iter().skip_while(|a| *a == "--").cloned().collect();
            if program.is_empty() {
                eprintln!("vigil-step: run needs a program: vigil-step run -- PROGRAM [ARGS]");
                return ExitCode::from(2);
            }
            run(&program)
        }
        Some("--version") => {
            println!("vigil-step {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: vigil-step install DIR | vigil-step run -- PROGRAM [ARGS]");
            ExitCode::from(2)
        }
    }
}

fn install(dir: &Path) -> ExitCode {
    let result = (|| -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let target = dir.join("vigil-step");
        fs::copy(env::current_exe()?, &target)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vigil-step: cannot install into {}: {err}", dir.display());
            ExitCode::from(1)
        }
    }
}

fn path_var(name: &str, default: &str) -> PathBuf {
    env::var_os(name).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

fn run(program: &[String]) -> ExitCode {
    let inputs_file = path_var("VIGIL_INPUTS_FILE", "/vigil/in/inputs.json");
    let outputs_file = path_var("VIGIL_OUTPUTS", "/vigil/out/outputs.json");
    let termination = path_var("VIGIL_TERMINATION_LOG", "/dev/termination-log");

    let inputs = match fs::read(&inputs_file) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
        Err(_) => serde_json::json!({}),
    };
    if let Some(parent) = outputs_file.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let _ = fs::remove_file(&outputs_file);

    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]).env("VIGIL_INPUTS_FILE", &inputs_file).env("VIGIL_OUTPUTS", &outputs_file);
    if let Some(map) = inputs.as_object() {
        for (name, value) in map {
            let key = format!("INPUT_{}", env_name(name));
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if text.len() > ENV_LIMIT {
                eprintln!("vigil-step: input {name} is only in {}: too large for {key}", inputs_file.display());
            } else if !text.contains('\0') {
                cmd.env(key, text);
            }
        }
    }

    let status = match cmd.status() {
        Ok(status) => status,
        Err(err) => {
            let message = format!("cannot start {}: {err}", program[0]);
            report(&termination, &serde_json::json!({"v": 1, "error": message}));
            eprintln!("vigil-step: {message}");
            return ExitCode::from(127);
        }
    };
    let code = status.code().unwrap_or(128 + 9);

    let outputs = match read_outputs(&outputs_file) {
        Ok(outputs) => outputs,
        Err(message) => {
            report(&termination, &serde_json::json!({"v": 1, "error": message}));
            eprintln!("vigil-step: {message}");
            return ExitCode::from(if code == 0 { 65 } else { code as u8 });
        }
    };
    if code != 0 {
        let message = format!("program exited with code {code}");
        report(&termination, &serde_json::json!({"v": 1, "error": message, "exitCode": code}));
        return ExitCode::from(code.clamp(1, 255) as u8);
    }

    let text = outputs.to_string();
    if text.len() <= INLINE_LIMIT {
        report(&termination, &serde_json::json!({"v": 1, "outputs": outputs}));
        return ExitCode::SUCCESS;
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
    match upload(&text, &digest) {
        Ok(()) => {
            report(&termination, &serde_json::json!({"v": 1, "digest": digest, "bytes": text.len()}));
            ExitCode::SUCCESS
        }
        Err(message) => {
            report(&termination, &serde_json::json!({"v": 1, "error": message}));
            eprintln!("vigil-step: {message}");
            ExitCode::from(70)
        }
    }
}

fn read_outputs(file: &Path) -> Result<serde_json::Value, String> {
    let bytes = match fs::read(file) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::json!({})),
        Err(err) => return Err(format!("cannot read outputs {}: {err}", file.display())),
    };
    if bytes.len() > MAX_OUTPUTS {
        return Err(format!("outputs of {} bytes exceed the {MAX_OUTPUTS}-byte limit", bytes.len()));
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("outputs must be a JSON object".into()),
        Err(err) => Err(format!("outputs are not valid JSON: {err}")),
    }
}

/// Sends large outputs to the operator, which stores them beside the Run. The projected token
/// proves which pod is speaking, so a step can only report its own outputs.
fn upload(body: &str, digest: &str) -> Result<(), String> {
    let url = env::var("VIGIL_OUTPUTS_URL").map_err(|_| "outputs too large for the termination message and VIGIL_OUTPUTS_URL is not set".to_string())?;
    let token_file = path_var("VIGIL_TOKEN_FILE", "/vigil/token/token");
    let token = fs::read_to_string(&token_file)
        .map_err(|err| format!("cannot read token {}: {err}", token_file.display()))?;
    let agent = ureq::Agent::new_with_defaults();
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
        }
        let result = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .header("Content-Type", "application/json")
            .header("X-Vigil-Digest", digest)
            .send(body.as_bytes());
        match result {
            Ok(_) => return Ok(()),
            Err(err) => last = err.to_string(),
        }
    }
    Err(format!("cannot upload outputs to {url}: {last}"))
}

fn report(file: &Path, message: &serde_json::Value) {
    let written = fs::File::create(file).and_then(|mut f| f.write_all(message.to_string().as_bytes()));
    if let Err(err) = written {
        eprintln!("vigil-step: cannot write {}: {err}", file.display());
    }
}

fn env_name(input: &str) -> String {
    input.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}
