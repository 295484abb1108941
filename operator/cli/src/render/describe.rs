//! `vigil describe run`: a Run's header and a tree of its steps in DAG order.

use super::{Style, duration, icon, pad, plural, progress, summarize_outputs, truncate};
use chrono::{DateTime, Utc};
use vigil_api::{Run, RunStatus, StepPhase, StepStatus, run::UnitStatus};

/// How wide the outputs column may grow before it is cut.
const SUMMARY_WIDTH: usize = 60;

/// Renders `run` as of `now`.
pub fn describe_run(run: &Run, now: DateTime<Utc>, style: &Style) -> String {
    let status = run.status.clone().unwrap_or_default();
    let mut out = String::new();
    header(&mut out, run, &status, now, style);

    let (dag, finally) = match &status.frozen {
        Some(frozen) => super::step_order(&frozen.spec),
        None => (super::order_by_start(&status.steps), Vec::new()),
    };
    if status.steps.is_empty() {
        out.push_str("\nSteps: none started yet\n");
        return out;
    }
    let rows_dag = rows(&dag, &status, now);
    let rows_finally = rows(&finally, &status, now);
    let width = rows_dag
        .iter()
        .chain(&rows_finally)
        .map(|r| r.left_width())
        .max()
        .unwrap_or(0);

    out.push_str("\nSteps:\n");
    write_rows(&mut out, &rows_dag, "", width, style);
    if !rows_finally.is_empty() {
        out.push_str("Finally:\n");
        write_rows(&mut out, &rows_finally, "", width, style);
    }
    out
}

fn header(out: &mut String, run: &Run, status: &RunStatus, now: DateTime<Utc>, style: &Style) {
    let mut field = |label: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{} {value}\n", pad(&format!("{label}:"), 11)));
        }
    };
    field(
        "Name",
        style.bold(&run.metadata.name.clone().unwrap_or_default()),
    );
    field(
        "Namespace",
        run.metadata.namespace.clone().unwrap_or_default(),
    );
    let generation = status.frozen.as_ref().filter(|f| f.generation > 0);
    let generation = generation.map(|f| format!(" (generation {})", f.generation));
    field(
        "Playbook",
        format!(
            "{}{}",
            run.spec.playbook_ref.name,
            generation.unwrap_or_default()
        ),
    );
    if let Some(trigger) = &run.spec.trigger {
        let source = trigger
            .source
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let user = trigger
            .user
            .as_deref()
            .map(|u| format!(" by {u}"))
            .unwrap_or_default();
        field("Trigger", format!("{}{source}{user}", trigger.kind));
    }
    let phase = status.phase.as_str();
    let why = match (&status.reason, &status.message) {
        (Some(r), Some(m)) => format!("  {r}: {m}"),
        (Some(r), None) => format!("  {r}"),
        (None, Some(m)) => format!("  {m}"),
        (None, None) => String::new(),
    };
    let cancel = if run.cancel_requested() && !status.phase.is_finished() {
        "  (cancel requested)"
    } else {
        ""
    };
    field(
        "Phase",
        format!("{}{why}{cancel}", style.phase(phase, phase)),
    );
    if let Some(p) = &status.progress {
        field("Progress", progress::bar(p, 20, style));
    }
    if let Some(started) = status.started_at {
        field(
            "Started",
            started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        field(
            "Duration",
            duration(status.finished_at.unwrap_or(now) - started),
        );
    }
    if let Some(inputs) = status.inputs.as_ref().or(run.spec.inputs.as_ref()) {
        field("Inputs", truncate(&inputs.to_string(), 100));
    }
}

/// One line of the tree, before layout.
struct Row {
    mark: &'static str,
    name: String,
    phase: StepPhase,
    duration: String,
    attempts: String,
    detail: String,
    /// Lines shown under the row (errors).
    notes: Vec<String>,
    children: Vec<Row>,
}

impl Row {
    /// Width of `mark name` plus the tree indentation children need.
    fn left_width(&self) -> usize {
        let own = self.name.chars().count() + 2;
        let kids = self
            .children
            .iter()
            .map(|c| c.left_width() + 3)
            .max()
            .unwrap_or(0);
        own.max(kids)
    }
}

fn rows(order: &[String], status: &RunStatus, now: DateTime<Utc>) -> Vec<Row> {
    order
        .iter()
        .filter_map(|name| status.steps.get(name).map(|s| step_row(name, s, now)))
        .collect()
}

fn step_row(name: &str, step: &StepStatus, now: DateTime<Utc>) -> Row {
    let took = step
        .started_at
        .map(|start| duration(step.finished_at.unwrap_or(now) - start));
    let took = match step.phase {
        StepPhase::Pending | StepPhase::Skipped => None,
        _ => took,
    };
    let attempts = if step.attempts > 0 {
        plural(step.attempts as usize, "attempt")
    } else {
        String::new()
    };

    let mut notes = Vec::new();
    let detail = match step.phase {
        StepPhase::Succeeded if step.approval.is_some() => step.message.clone().unwrap_or_default(),
        StepPhase::Succeeded => step
            .outputs
            .as_ref()
            .map(|o| summarize_outputs(o, SUMMARY_WIDTH))
            .unwrap_or_default(),
        StepPhase::AwaitingApproval => {
            let approval = step.approval.as_deref().unwrap_or("?");
            format!(
                "approval {approval}: {}",
                step.message.as_deref().unwrap_or("")
            )
        }
        StepPhase::Failed | StepPhase::Retrying => {
            let error = step
                .message
                .clone()
                .or_else(|| step.unit.as_ref().and_then(|u| u.error.clone()));
            notes.extend(error.map(|e| format!("error: {}", truncate(&e, 100))));
            String::new()
        }
        _ => step
            .message
            .clone()
            .or_else(|| step.reason.clone())
            .unwrap_or_default(),
    };

    let children = step
        .items
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, unit)| item_row(i, unit))
        .collect();
    Row {
        mark: icon(step.phase),
        name: name.to_string(),
        phase: step.phase,
        duration: took.unwrap_or_default(),
        attempts,
        detail,
        notes,
        children,
    }
}

fn item_row(index: usize, unit: &UnitStatus) -> Row {
    let detail = match unit.phase {
        StepPhase::Succeeded => unit
            .result
            .as_ref()
            .map(|r| summarize_outputs(r, SUMMARY_WIDTH))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let notes = match unit.phase {
        StepPhase::Failed | StepPhase::Retrying => unit
            .error
            .iter()
            .map(|e| format!("error: {}", truncate(e, 100)))
            .collect(),
        _ => Vec::new(),
    };
    Row {
        mark: icon(unit.phase),
        name: format!("[{index}]"),
        phase: unit.phase,
        duration: String::new(),
        attempts: if unit.attempt > 0 {
            plural(unit.attempt as usize, "attempt")
        } else {
            String::new()
        },
        detail,
        notes,
        children: Vec::new(),
    }
}

fn write_rows(out: &mut String, rows: &[Row], indent: &str, width: usize, style: &Style) {
    for (i, row) in rows.iter().enumerate() {
        let last = i + 1 == rows.len();
        let branch = if last { "└─ " } else { "├─ " };
        let continued = format!("{indent}{}", if last { "   " } else { "│  " });

        let left = format!("{} {}", row.mark, row.name);
        let left = pad(&left, width.saturating_sub(indent.chars().count()));
        let phase = pad(row.phase.as_str(), 17);
        let line = format!(
            "{indent}{branch}{}{} {} {:>6}  {}",
            style.phase(row.phase.as_str(), &left[..row.mark.len()]),
            &left[row.mark.len()..],
            style.phase(row.phase.as_str(), &phase),
            row.duration,
            pad(&row.attempts, 12),
        );
        let line = format!("{line}{}", row.detail);
        out.push_str(line.trim_end());
        out.push('\n');
        for note in &row.notes {
            let bar = if row.children.is_empty() {
                "  "
            } else {
                "│ "
            };
            out.push_str(&format!("{continued}{bar}{}\n", style.red(note)));
        }
        write_rows(out, &row.children, &continued, width, style);
    }
}

/// The `Events:` section, kubectl style.
pub fn events(events: &[k8s_openapi::api::core::v1::Event], now: DateTime<Utc>) -> String {
    if events.is_empty() {
        return "\nEvents: <none>\n".into();
    }
    let rows = events
        .iter()
        .map(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .map(|t| super::k8s_time(&t));
            let count = e
                .count
                .filter(|c| *c > 1)
                .map(|c| format!(" (x{c})"))
                .unwrap_or_default();
            vec![
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                format!("{}{count}", super::age(at, now)),
                e.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let table = super::table::Table {
        headers: vec!["TYPE", "REASON", "AGE", "MESSAGE"],
        rows,
    };
    let body: String = table.render().lines().map(|l| format!("  {l}\n")).collect();
    format!("\nEvents:\n{body}")
}
