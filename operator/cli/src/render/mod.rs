//! Turns Runs, Playbooks and Approvals into text. Nothing here performs I/O or reads the clock:
//! callers pass `now`, so every function is tested against fixed expectations.

pub mod describe;
pub mod progress;
pub mod table;
pub mod timeline;

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use vigil_api::{PlaybookSpec, StepPhase, playbook::Step};

/// Whether to colour, decided once per command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const PLAIN: Self = Self { color: false };

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    pub fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }

    /// Colours `text` (already padded) by the phase it names.
    pub fn phase(&self, phase: &str, text: &str) -> String {
        match phase {
            "Succeeded" => self.green(text),
            "Failed" | "Denied" => self.red(text),
            "Running" | "Retrying" | "AwaitingApproval" | "Queued" => self.yellow(text),
            "Skipped" | "Cancelled" | "Pending" => self.dim(text),
            _ => text.to_string(),
        }
    }
}

/// The one-character mark of a step phase.
pub fn icon(phase: StepPhase) -> &'static str {
    match phase {
        StepPhase::Pending => "○",
        StepPhase::Running => "●",
        StepPhase::Retrying => "↻",
        StepPhase::AwaitingApproval => "?",
        StepPhase::Succeeded => "✓",
        StepPhase::Failed | StepPhase::Denied => "✗",
        StepPhase::Skipped => "-",
        StepPhase::Cancelled => "■",
    }
}

/// A step's duration: `850ms`, `1.2s`, `42s`, `3m4s`, `1h2m`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{}s", ms / 1000),
        60_000..3_600_000 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..86_400_000 => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{}d{}h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// An object's age the way kubectl prints it: `45s`, `5m3s`, `40m`, `3h5m`, `30h`, `2d4h`, `9d`.
pub fn age(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(since) = since else {
        return "<unknown>".into();
    };
    let s = (now - since).num_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{m}m{}s", s % 60),
        600..10_800 => format!("{m}m"),
        10_800..28_800 => format!("{h}h{}m", m % 60),
        28_800..172_800 => format!("{h}h"),
        172_800..691_200 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// A Kubernetes API timestamp (k8s-openapi speaks jiff) as the chrono time vigil's types use.
pub fn k8s_time(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// A step's outputs in one line: `score=80 severity="high"`, cut at `max` characters.
pub fn summarize_outputs(outputs: &Value, max: usize) -> String {
    let text = match outputs {
        Value::Object(map) if map.is_empty() => String::new(),
        Value::Object(map) => match map.get("items").and_then(Value::as_array) {
            Some(items) if map.len() == 1 => plural(items.len(), "item"),
            _ => map
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        },
        Value::Null => String::new(),
        other => other.to_string(),
    };
    truncate(&text, max)
}

/// Cuts `text` to `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let cut = line.len() < text.len();
    if line.chars().count() <= max && !cut {
        return line.to_string();
    }
    let keep: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

/// `1 attempt`, `3 attempts`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Pads `text` with spaces to `width` characters (not bytes: marks and box lines are one wide).
pub fn pad(text: &str, width: usize) -> String {
    let len = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(len)))
}

/// The DAG steps in a topological order that keeps the playbook's own order where it can, then
/// the finally steps the same way.
pub fn step_order(spec: &PlaybookSpec) -> (Vec<String>, Vec<String>) {
    (topo(&spec.steps), topo(&spec.finally))
}

fn topo(steps: &[Step]) -> Vec<String> {
    let names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < steps.len() {
        let next = steps.iter().find(|s| {
            !done.contains(s.name.as_str())
                && s.depends_on()
                    .iter()
                    .all(|d| done.contains(d.as_str()) || !names.contains(d.as_str()))
        });
        // A cycle (which compile refuses) would stall; list what is left as written.
        let Some(next) = next.or_else(|| steps.iter().find(|s| !done.contains(s.name.as_str())))
        else {
            break;
        };
        done.insert(&next.name);
        order.push(next.name.clone());
    }
    order
}

/// Step order when no frozen spec is at hand: by start time, then name.
pub fn order_by_start(steps: &BTreeMap<String, vigil_api::StepStatus>) -> Vec<String> {
    let mut names: Vec<&String> = steps.keys().collect();
    names.sort_by_key(|n| {
        (
            steps[*n].started_at.is_none(),
            steps[*n].started_at,
            (*n).clone(),
        )
    });
    names.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(duration(chrono::Duration::milliseconds(850)), "850ms");
        assert_eq!(duration(chrono::Duration::milliseconds(1250)), "1.2s");
        assert_eq!(duration(chrono::Duration::seconds(184)), "3m4s");
        assert_eq!(duration(chrono::Duration::hours(50)), "2d2h");
        let now = Utc::now();
        assert_eq!(age(Some(now - chrono::Duration::seconds(45)), now), "45s");
        assert_eq!(age(Some(now - chrono::Duration::hours(50)), now), "2d2h");
    }

    #[test]
    fn outputs_summaries_stay_on_one_line() {
        assert_eq!(
            summarize_outputs(&json!({"score": 80, "severity": "high"}), 80),
            "score=80 severity=\"high\""
        );
        assert_eq!(summarize_outputs(&json!({"items": [1, 2]}), 80), "2 items");
        assert_eq!(
            summarize_outputs(&json!({"a": "x".repeat(50)}), 10),
            "a=\"xxxxxx…"
        );
    }

    #[test]
    fn order_puts_dependencies_first() {
        let spec: PlaybookSpec = serde_yaml::from_str(
            "steps: [{name: b, dependsOn: [a]}, {name: a}, {name: c}]\nfinally: [{name: z}]",
        )
        .unwrap();
        assert_eq!(
            step_order(&spec),
            (vec!["a".into(), "b".into(), "c".into()], vec!["z".into()])
        );
    }
}
