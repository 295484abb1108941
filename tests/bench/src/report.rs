//! The tables: printed as each figure is measured, and written to `docs/benchmarks.md` and
//! `docs/benchmarks.json` at the end.

use crate::{
    Settings,
    floor::Floor,
    gateway::Gateway,
    machine::Machine,
    memory,
    memory::Memory,
    stats::{mib, ms, percent, ratio, times},
    tax::Tax,
    transitions::Transitions,
};
use serde::Serialize;
use std::fmt::Write as _;

/// The target of the step-transition p99, ms.
pub const TRANSITION_TARGET_MS: f64 = 100.0;
/// The target of the gateway's rate relative to raw creates.
pub const GATEWAY_TARGET: f64 = 0.9;
/// The memory target, bytes, and the number of active Runs it is stated for.
pub const MEMORY_TARGET: u64 = 256 * 1024 * 1024;
pub const MEMORY_TARGET_ACTIVE: usize = 1000;

/// Everything one bench measured. A figure that could not be measured is `None`, with the
/// reason in `errors`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub floor: Option<Floor>,
    pub gateway: Option<Gateway>,
    pub transitions: Option<Transitions>,
    pub tax: Option<Tax>,
    pub memory: Option<Memory>,
    pub errors: Vec<String>,
    pub duration_s: f64,
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn header(cells: &[&str]) -> String {
    let mut s = row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    s += &row(&cells.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
    s
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

pub fn floor_table(f: &Floor) -> String {
    let mut s = String::from("### 1. API-server floor\n\n");
    s += &header(&["operation", "n", "p50", "p99", "rate"]);
    for (what, sum) in [
        ("create ConfigMap (1 client)", &f.create_config_map),
        ("create Run (1 client)", &f.create_run),
        (
            "patch Run status, server-side apply (1 client)",
            &f.patch_status,
        ),
        (
            "create ConfigMap, then Job (1 client, in sequence)",
            &f.create_step_objects,
        ),
    ] {
        s += &row(&[
            what.into(),
            sum.n.to_string(),
            ms(sum.p50_ms),
            ms(sum.p99_ms),
            "—".into(),
        ]);
    }
    let c = &f.concurrent_create;
    s += &row(&[
        format!("create Run, {} clients at once", f.clients),
        c.n.to_string(),
        ms(c.p50_ms),
        ms(c.p99_ms),
        format!("{:.0} Runs/s", f.create_rate),
    ]);
    s
}

pub fn gateway_table(g: &Gateway) -> String {
    let mut s = String::from("### 2. Gateway: signed webhook → Run\n\n");
    let _ = writeln!(
        s,
        "Floor: the same {} clients creating {} Runs straight to the API server, right before ({:.0}/s) \
         and right after ({:.0}/s) the gateway's turn.\n",
        g.senders, g.alerts, g.raw_rate_before, g.raw_rate_after
    );
    s += &header(&["measure", "gateway", "API floor", "ratio", "target"]);
    let share = ratio(g.rate, g.raw_rate());
    let target = match share {
        Some(r) => format!("≥ 90 %: {}", met(r >= GATEWAY_TARGET)),
        None => "≥ 90 %: no floor".into(),
    };
    s += &row(&[
        format!("alerts/s, {} senders, {} alerts", g.senders, g.alerts),
        format!("{:.0}/s", g.rate),
        format!("{:.0} Runs/s", g.raw_rate()),
        percent(share),
        target,
    ]);
    let c = g.raw_latency;
    for (what, v, fl) in [
        ("p50 POST → 202", g.latency.p50_ms, c.p50_ms),
        ("p99 POST → 202", g.latency.p99_ms, c.p99_ms),
    ] {
        s += &row(&[
            what.into(),
            ms(v),
            ms(fl),
            times(ratio(v, fl)),
            String::new(),
        ]);
    }
    if g.apiserver_raw_cpu_ms > 0.0 {
        s += &row(&[
            "CPU per alert: gateway + kube-apiserver".into(),
            format!("{:.2} + {:.2} ms", g.gateway_cpu_ms, g.apiserver_cpu_ms),
            format!("kube-apiserver {:.2} ms per create", g.apiserver_raw_cpu_ms),
            times(ratio(
                g.gateway_cpu_ms + g.apiserver_cpu_ms,
                g.apiserver_raw_cpu_ms,
            )),
            String::new(),
        ]);
    }
    let other: Vec<String> = g
        .other_answers
        .iter()
        .map(|(k, v)| format!("{v}×{k}"))
        .collect();
    let other = if other.is_empty() {
        "none".to_string()
    } else {
        other.join(", ")
    };
    s += &row(&[
        "answers other than 202".into(),
        other,
        "—".into(),
        "—".into(),
        String::new(),
    ]);
    s
}

pub fn transitions_table(t: &Transitions, f: Option<&Floor>) -> String {
    let fl = f.map(|f| f.create_step_objects).unwrap_or_default();
    let mut s = format!(
        "### 3. Step transitions (chain of {} no-op `bash:5` steps)\n\n\
         Floor: create ConfigMap, then Job, 1 client: p50 {}, p99 {}. Ratios are to that floor.\n\n",
        t.chain,
        ms(fl.p50_ms),
        ms(fl.p99_ms)
    );
    s += &header(&[
        "concurrent Runs",
        "Runs (failed)",
        "transitions",
        "Job done → next Job p50",
        "p99",
        "× floor p50",
        "× floor p99",
        "pod exit → next Job p50",
        "p99",
        "Job controller p50",
        "pods/s",
        "wall",
    ]);
    for l in &t.levels {
        s += &row(&[
            l.concurrent.to_string(),
            format!("{} ({})", l.runs, l.failed_runs),
            l.operator.n.to_string(),
            ms(l.operator.p50_ms),
            ms(l.operator.p99_ms),
            times(ratio(l.operator.p50_ms, fl.p50_ms)),
            times(ratio(l.operator.p99_ms, fl.p99_ms)),
            ms(l.end_to_end.p50_ms),
            ms(l.end_to_end.p99_ms),
            ms(l.job_controller.p50_ms),
            format!("{:.1}", l.pods_per_s),
            format!("{:.0} s", l.wall_s),
        ]);
    }
    let largest = t.levels.iter().max_by_key(|l| l.concurrent);
    s += "\n";
    s += &match largest {
        Some(l) if l.concurrent >= 100 => format!(
            "Target p99 ≤ {TRANSITION_TARGET_MS:.0} ms (Job done → next Job) at 100 Runs: {} ({}).\n",
            met(l.operator.p99_ms <= TRANSITION_TARGET_MS),
            ms(l.operator.p99_ms)
        ),
        Some(l) => format!(
            "Target p99 ≤ {TRANSITION_TARGET_MS:.0} ms at 100 Runs: not measured \
             (largest level {} Runs, p99 {}: {} there).\n",
            l.concurrent,
            ms(l.operator.p99_ms),
            met(l.operator.p99_ms <= TRANSITION_TARGET_MS)
        ),
        None => String::new(),
    };
    s
}

pub fn tax_table(t: &Tax, f: Option<&Floor>) -> String {
    let fl = f.map_or(0.0, |f| f.create_step_objects.p50_ms) * t.levels as f64;
    let mut s = format!(
        "### 4. Orchestration tax (incident-response DAG, no-op steps)\n\n\
         Floor: {} Job-backed levels on the critical path × (create ConfigMap, then Job) p50 = {}.\n\n",
        t.levels,
        ms(fl)
    );
    s += &header(&[
        "Run",
        "Jobs",
        "wall",
        "in step processes",
        "tax",
        "operator share",
        "rest (Job controller, pods)",
        "tax × floor",
        "operator × floor",
    ]);
    for (i, a) in t.runs.iter().enumerate() {
        s += &row(&[
            i.to_string(),
            a.jobs.to_string(),
            ms(a.wall_ms),
            ms(a.in_steps_ms),
            ms(a.tax_ms),
            ms(a.operator_ms),
            ms(a.tax_ms - a.operator_ms),
            times(ratio(a.tax_ms, fl)),
            times(ratio(a.operator_ms, fl)),
        ]);
    }
    if t.runs.len() > 1 {
        s += &row(&[
            "p50".into(),
            String::new(),
            ms(t.wall.p50_ms),
            String::new(),
            ms(t.tax.p50_ms),
            ms(t.operator.p50_ms),
            String::new(),
            times(ratio(t.tax.p50_ms, fl)),
            times(ratio(t.operator.p50_ms, fl)),
        ]);
    }
    if t.failed_runs > 0 {
        let _ = writeln!(
            s,
            "\n{} Runs failed and are not in the table.",
            t.failed_runs
        );
    }
    s
}

pub fn memory_table(m: &Memory, t: Option<&Transitions>) -> String {
    let mut s = String::from("### 5. Operator memory and CPU time\n\n");
    s += &header(&[
        "state",
        "active Runs",
        "finished Runs",
        "VmRSS",
        "× idle",
        "VmHWM",
        "operator CPU",
        "kube-apiserver CPU (floor)",
        "CPU ratio",
        "took",
    ]);
    let idle = m.states.first().map_or(0, |s| s.rss);
    for st in &m.states {
        let label = match st.label.as_str() {
            "idle" => "idle (ready, no Runs)".to_string(),
            "active" => format!("{} active Runs created and admitted", st.active),
            "restarted" => format!(
                "restarted over {} active + {} finished Runs",
                st.active, st.finished
            ),
            other => other.to_string(),
        };
        s += &row(&[
            label,
            st.active.to_string(),
            st.finished.to_string(),
            mib(st.rss),
            times(ratio(st.rss as f64, idle as f64)),
            mib(st.hwm),
            format!("{:.2} s", st.cpu_s),
            format!("{:.2} s", st.apiserver_cpu_s),
            times(ratio(st.cpu_s, st.apiserver_cpu_s)),
            format!("{:.0} s", st.took_s),
        ]);
    }
    if let Some(t) = t {
        let runs: usize = t.levels.iter().map(|l| l.runs).sum();
        s += &row(&[
            format!(
                "after the transitions ({runs} finished Runs with {} Jobs and pods each)",
                t.chain
            ),
            "0".into(),
            runs.to_string(),
            mib(t.operator_after_rss),
            times(ratio(t.operator_after_rss as f64, idle as f64)),
            String::new(),
            format!("{:.2} s", t.operator_cpu_s),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let by = |label: &str| m.states.iter().find(|s| s.label == label);
    if let (Some(idle), Some(active), Some(restarted)) = (by("idle"), by("active"), by("restarted"))
    {
        let per = |more: u64, less: u64, n: usize| {
            more.saturating_sub(less) as f64 / 1024.0 / n.max(1) as f64
        };
        let _ = write!(
            s,
            "\nPer Run in memory: {:.1} KiB active (beside {:.1} KiB of JSON as served), {:.1} KiB \
             finished (beside {:.1} KiB of JSON), from the differences between the rows.\n",
            per(active.rss, idle.rss, active.active),
            m.active_run_bytes as f64 / 1024.0,
            per(restarted.rss, active.rss, restarted.finished),
            m.finished_run_bytes as f64 / 1024.0,
        );
    }
    let active = m.states.iter().map(|s| s.active).max().unwrap_or(0);
    let peak = |st: &memory::State| st.hwm.max(st.rss);
    s += "\n";
    s += &match (by("active"), by("restarted")) {
        (Some(a), Some(r)) if active >= MEMORY_TARGET_ACTIVE => format!(
            "Target ≤ 256 MiB at {MEMORY_TARGET_ACTIVE} active Runs: {} with {} active Runs alone \
             (peak {}); {} with {} finished Runs kept besides (peak {}).\n",
            met(peak(a) <= MEMORY_TARGET),
            a.active,
            mib(peak(a)),
            met(peak(r) <= MEMORY_TARGET),
            r.finished,
            mib(peak(r)),
        ),
        _ => format!(
            "Target ≤ 256 MiB at {MEMORY_TARGET_ACTIVE} active Runs: not measured at \
             {MEMORY_TARGET_ACTIVE}; at {active} active the peak was {} \
             (`--active {MEMORY_TARGET_ACTIVE} --finished 10000` measures it).\n",
            mib(m.states.iter().map(peak).max().unwrap_or(0))
        ),
    };
    s
}

/// All tables, in order.
pub fn tables(r: &Report) -> String {
    let mut s = String::new();
    if let Some(f) = &r.floor {
        s += &floor_table(f);
        s += "\n";
    }
    if let Some(g) = &r.gateway {
        s += &gateway_table(g);
        s += "\n";
    }
    if let Some(t) = &r.transitions {
        s += &transitions_table(t, r.floor.as_ref());
        s += "\n";
    }
    if let Some(t) = &r.tax {
        s += &tax_table(t, r.floor.as_ref());
        s += "\n";
    }
    if let Some(m) = &r.memory {
        s += &memory_table(m, r.transitions.as_ref());
        s += "\n";
    }
    for e in &r.errors {
        let _ = writeln!(s, "- not measured: {e}");
    }
    s
}

/// `docs/benchmarks.md`.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let st = &r.settings;
    let mut s = String::from(
        "# Benchmarks\n\n\
         Written by `make bench` (`tests/bench/run.sh`, which builds release binaries, starts a local\n\
         cluster of its own, and runs `vigil-bench`); do not edit by hand. Each figure stands beside\n\
         the API server's own floor, measured in the same run on the same machine, as a ratio: the\n\
         absolute numbers say as much about the machine as about vigil, the ratios less so.\n\n",
    );
    s += "## Machine\n\n";
    s += &header(&["", ""]);
    for (k, v) in [
        ("date", m.date.clone()),
        ("CPUs (nproc)", m.cpus.to_string()),
        ("CPU model", m.cpu_model.clone()),
        ("memory", format!("{:.1} GiB", m.memory_gib)),
        ("kernel", m.kernel.clone()),
        ("OS", m.os.clone()),
        (
            "load average (1, 5, 15 min) at start / end",
            format!("{} / {}", m.load_start, m.load_end),
        ),
        (
            "Kubernetes (local control plane, process node)",
            m.kubernetes.clone(),
        ),
        ("rustc", m.rustc.clone()),
        ("vigil", m.vigil.clone()),
        ("bench duration", format!("{:.0} s", r.duration_s)),
    ] {
        s += &row(&[k.into(), v]);
    }
    let _ = write!(
        s,
        "\nSettings: `--samples {} --clients {} --alerts {} --chain {} --concurrency {} --serial-runs {} \
         --tax-runs {} --active {} --finished {}`.\n\n",
        st.samples,
        st.clients,
        st.alerts,
        st.chain,
        st.concurrency
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        st.serial_runs,
        st.tax_runs,
        st.active,
        st.finished
    );
    s += "## Results\n\n";
    s += &tables(r);
    s += METHOD;
    s += LIMITS;
    s
}

const METHOD: &str = r#"
## How each figure is measured

Every operator under test is a release-built `vigil-operator` started by the bench as a child
process, as `make run` does: leader election off, one watched namespace of its own, admin
credentials, `RUST_LOG=warn`. Every figure gets a fresh namespace (and its own operator) so the
caches of one figure do not weigh on the next. Percentiles are nearest-rank; with fewer than 100
samples p99 is the maximum.

1. **API floor.** In a namespace no operator watches, one client creates ConfigMaps the size of a
   step's input ConfigMap, creates Runs, server-side-applies a Run status the size of the
   operator's (the frozen six-step playbook and every step), and creates a ConfigMap followed by a
   suspended Job shaped like a step's: the two calls the operator makes between one step's end
   and the next step's Job. Then `--clients` clients sharing one connection pool (as the gateway
   does) create `--alerts` Runs at once: the raw create rate.
2. **Gateway.** A gateway-only operator (`VIGIL_RECONCILER=false`) serves a playbook with the
   incident-response trigger: HMAC-SHA256 signature, CEL filter, CEL input mapping, dedupe key
   (unique per alert, so every alert makes a Run). `--clients` senders post `--alerts` alerts over
   kept-alive HTTP/1.1 connections; a `202` means the Run exists. Right before and right after,
   the same number of clients create as many Runs straight to the API server; the mean of those
   two rates is the floor, so both sides share the machine's conditions of the moment. The
   reconciler is off so the figure is the gateway's alone; in a deployment it shares the process
   with the reconcilers.
3. **Step transitions.** Kubernetes timestamps have one-second resolution (`creationTimestamp`,
   `completionTime`, a container's `finishedAt`, `managedFields[].time`), too coarse for this. The
   bench watches the namespace's Jobs, pods and Runs itself and stamps each event with its own
   monotonic clock on arrival, so every mark shares one clock and the same watch delay the
   operator's own watches have. For each step after the first: *Job done → next Job* is from the
   first event showing Job N ended (`SuccessCriteriaMet`, which the Job controller sets before
   `Complete` and which the operator acts on) to the first event showing Job N+1: the operator's
   share. *Pod exit → next Job* starts at the first event showing the step container terminated,
   so it adds the Job controller's reaction; *Job controller* is that difference. At 1 concurrent
   Run, `--serial-runs` Runs go one after another; at higher levels that many Runs start at once.
4. **Orchestration tax.** `--tax-runs` Runs of a no-op copy of the incident-response DAG (5 in
   parallel, a join, 2 in sequence, three `when` branches of which one runs, a forEach of 3 beside
   it, a finally step; the approval branch is left out because it waits for a person), one at a
   time. *Wall* runs from the create call to the Run seen finished; *in step processes* is the
   union of the intervals in which some step container was seen running; *tax* is the
   difference. No-op steps end within milliseconds, and the process node often reports a step
   container terminated without a running status in between, so *in step processes* is close to
   zero and the tax is nearly the whole wall time. The *operator share* adds up, along the
   critical path, the time from the Run's creation or a level's last Job done to the next level's
   first Job, and from the last Job done to the Run seen finished; the rest of the tax is
   Kubernetes' (Job controller, pod binding, process start, status reports).
5. **Memory and CPU.** VmRSS and VmHWM from `/proc/<pid>/status`, CPU time as utime + stime from
   `/proc/<pid>/stat`, of the operator and, as the floor, of `kube-apiserver` over the same
   interval. Active Runs wait on an approval nobody decides (`Running`, one Approval each, no
   pods). Finished Runs are copies of a finished orchestration-tax Run (status included),
   created while the operator is stopped; the operator is then restarted, so that row is a cold
   start over every Run. Each state is sampled once the operator has used less than 20 ms of CPU
   over two seconds. The copies have no Jobs or pods; the row after the transitions shows an
   operator whose caches hold real ones.
"#;

const LIMITS: &str = r#"
## Known limits

- **Object size.** A Run carries its frozen playbook and small step outputs in its status, which
  etcd caps at 1.5 MiB per object (the API server's default request limit is 3 MiB). Outputs
  larger than 3 KiB never enter the Run: `vigil-step` uploads them to the operator, which stores
  them in a ConfigMap beside the Run (1 MiB each) and keeps only a reference; the termination
  message they would otherwise travel in is 4 KiB. A playbook near the 64-step limit with long
  scripts still makes a large status, and every status write sends all of it.
- **API client rate.** The operator's kube-rs client has no client-side QPS limit (unlike
  client-go's default 5 QPS, burst 10): reconciles run up to `VIGIL_CONCURRENCY` (16) at once per
  kind and each step start costs two creates and a status patch, so the API server's
  max-in-flight limits and API Priority and Fairness are what throttle it. Here the operator uses
  admin credentials (`system:masters`, the exempt priority level); in a cluster, under the chart's
  ServiceAccount, it shares the `workload-low` priority level with other controllers, and heavy
  load shows up as queueing there, not in these numbers.
- **The Job controller sits between two steps.** The operator starts a step's successors when
  the step's Job shows `SuccessCriteriaMet`. The Job controller syncs a Job at most once a second
  after its pods change (`SyncJobBatchPeriod`, 1 s, not configurable), so about a second passes
  between a step's process exiting and its Job saying so, whatever the operator does; with many
  Jobs at once it falls further behind (the *Job controller* column of table 3), while the
  operator's own share stays in the tens of milliseconds. Acting on the step pod's termination,
  which the operator already watches, instead of the Job's condition would remove that wait.
- **Step latency on this machine.** The process node starts every step pod as host processes (an
  init container that copies `vigil-step`, then the step under `vigil-step`), binds it, and
  reports its status to the API server, all on the same few cores as the control plane and the
  operator. That per-pod spawn cost dominates a step's latency and the orchestration tax here;
  a real kubelet with a container runtime pays image and sandbox costs instead, usually more.
- **One machine.** etcd (without fsync), the API server, the controller manager, the process
  node, the operators and the bench share the CPUs, and other work on the machine shows in the
  load averages above: compare ratios, not absolute times, across machines.
- **Finished Runs cost memory until they are deleted.** The operator caches every Run of its
  namespaces whole (frozen playbook, status, `managedFields`), finished ones included, and the
  resident size per cached Run is several times its JSON size (see *Per Run in memory* under
  table 5; RSS also holds what the allocator kept after the initial list). Finished Runs stay
  until their TTL (`VIGIL_RUN_TTL`, 168 h by default) or their playbook's `history.limit`, so
  memory follows how many finished Runs are kept, not how many are active. Dropping
  `managedFields` and the frozen playbook of finished Runs before they enter the cache, or a
  default history limit, would bound it.
- **Finished Runs in the memory figure** have no Jobs or pods, so Job and pod caches of
  finished Runs are not in those rows (see the row after the transitions for an operator with
  them).
"#;
