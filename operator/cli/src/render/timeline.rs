//! The live lines of `vigil run --local` and `vigil watch`: one per step or item transition.

use super::{Style, duration, icon, pad, plural, summarize_outputs, truncate};
use vigil_api::{RunStatus, StepPhase, StepStatus, run::UnitStatus};

/// The lines describing what changed between two statuses, in `order`.
pub fn transitions(
    before: &RunStatus,
    after: &RunStatus,
    order: &[String],
    style: &Style,
) -> Vec<String> {
    let width = order.iter().map(|n| n.len() + 4).max().unwrap_or(0);
    let mut lines = Vec::new();
    let empty = StepStatus::default();
    for name in order {
        let Some(now) = after.steps.get(name) else {
            continue;
        };
        let was = before.steps.get(name).unwrap_or(&empty);

        if let Some(items) = &now.items {
            let old_items = was.items.as_deref().unwrap_or_default();
            for (i, unit) in items.iter().enumerate() {
                let old = old_items.get(i).cloned().unwrap_or_default();
                if let Some(text) = unit_change(&old, unit) {
                    lines.push(line(
                        unit.phase,
                        &format!("{name}[{i}]"),
                        &text,
                        width,
                        style,
                    ));
                }
            }
        }
        let text = match (was.phase, now.phase) {
            (a, b) if a == b => retry_started(was, now),
            (_, StepPhase::Running) if now.items.is_some() => Some(format!(
                "started, {}",
                plural(now.items.as_ref().map_or(0, Vec::len), "item")
            )),
            (_, StepPhase::Running) => Some(started_text(now.unit.as_ref())),
            (_, StepPhase::Retrying) => {
                let error = now
                    .unit
                    .as_ref()
                    .and_then(|u| u.error.clone())
                    .unwrap_or_default();
                Some(format!(
                    "attempt failed, retrying: {}",
                    truncate(&error, 100)
                ))
            }
            (_, StepPhase::AwaitingApproval) => Some("awaiting approval".into()),
            (_, StepPhase::Succeeded) => Some(succeeded_text(now)),
            (_, StepPhase::Failed) => Some(format!(
                "failed: {}",
                truncate(now.message.as_deref().unwrap_or("unknown error"), 160)
            )),
            (_, phase) => {
                let why = now
                    .message
                    .clone()
                    .or_else(|| now.reason.clone())
                    .unwrap_or_default();
                Some(format!("{}: {why}", phase.as_str().to_lowercase()))
            }
        };
        if let Some(text) = text {
            lines.push(line(now.phase, name, &text, width, style));
        }
    }
    lines
}

fn line(phase: StepPhase, name: &str, text: &str, width: usize, style: &Style) -> String {
    let mark = style.phase(phase.as_str(), icon(phase));
    format!("  {mark} {} {text}", pad(name, width))
}

fn started_text(unit: Option<&UnitStatus>) -> String {
    match unit.map(|u| u.attempt) {
        Some(n) if n > 1 => format!("started attempt {n}"),
        _ => "started".into(),
    }
}

/// A unit that went from Retrying back to Running within the same step phase.
fn retry_started(was: &StepStatus, now: &StepStatus) -> Option<String> {
    let (old, new) = (was.unit.as_ref()?, now.unit.as_ref()?);
    (new.attempt > old.attempt).then(|| started_text(Some(new)))
}

fn succeeded_text(step: &StepStatus) -> String {
    let took = step
        .started_at
        .zip(step.finished_at)
        .map(|(s, f)| format!(" in {}", duration(f - s)));
    let detail = if step.approval.is_some() {
        step.message.clone().unwrap_or_default()
    } else {
        step.outputs
            .as_ref()
            .map(|o| summarize_outputs(o, 80))
            .unwrap_or_default()
    };
    let sep = if detail.is_empty() { "" } else { "  " };
    format!("succeeded{}{sep}{detail}", took.unwrap_or_default())
}

fn unit_change(old: &UnitStatus, new: &UnitStatus) -> Option<String> {
    if new.attempt > old.attempt && new.phase == StepPhase::Running {
        return Some(started_text(Some(new)));
    }
    if old.phase == new.phase {
        return None;
    }
    Some(match new.phase {
        StepPhase::Succeeded => {
            let detail = new
                .result
                .as_ref()
                .map(|r| summarize_outputs(r, 80))
                .unwrap_or_default();
            format!("succeeded  {detail}").trim_end().to_string()
        }
        StepPhase::Failed => format!(
            "failed: {}",
            truncate(new.error.as_deref().unwrap_or(""), 160)
        ),
        StepPhase::Retrying => {
            format!(
                "attempt failed, retrying: {}",
                truncate(new.error.as_deref().unwrap_or(""), 100)
            )
        }
        phase => phase.as_str().to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finished_step_reports_its_outputs() {
        let before: RunStatus =
            serde_json::from_value(json!({"steps": {"a": {"phase": "Running"}}})).unwrap();
        let after: RunStatus = serde_json::from_value(json!({"steps": {"a": {
            "phase": "Succeeded", "outputs": {"score": 7},
            "startedAt": "2025-01-01T00:00:00Z", "finishedAt": "2025-01-01T00:00:02Z"
        }}}))
        .unwrap();
        let lines = transitions(&before, &after, &["a".into()], &Style::PLAIN);
        assert_eq!(lines, vec!["  ✓ a     succeeded in 2.0s  score=7"]);
    }
}
