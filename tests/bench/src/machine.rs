//! A description of the machine and software a bench ran on.

use kube::Client;
use serde::Serialize;
use std::{fs, process::Command};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the bench started and when it ended.
    pub load_start: String,
    pub load_end: String,
    pub kubernetes: String,
    pub rustc: String,
    /// `$VIGIL_BENCH_VERSION`, or `git describe` of the working directory's checkout.
    pub vigil: String,
    pub date: String,
}

impl Machine {
    pub async fn describe(client: &Client) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            os: os_release
                .lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default(),
            load_start: load(),
            load_end: String::new(),
            kubernetes: client
                .apiserver_version()
                .await
                .map(|v| v.git_version)
                .unwrap_or_else(|_| "unknown".into()),
            rustc: command(&["rustc", "--version"]),
            vigil: std::env::var("VIGIL_BENCH_VERSION")
                .unwrap_or_else(|_| command(&["git", "describe", "--always", "--dirty"])),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

/// `/proc/loadavg`'s three averages.
pub fn load() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn command(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
