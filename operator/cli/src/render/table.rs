//! The tables of `vigil get`: kubectl's layout, columns three spaces apart.

use super::{Style, age};
use chrono::{DateTime, Utc};
use vigil_api::{Approval, Playbook, Run};

/// Rows under upper-case headers.
#[derive(Debug, Default)]
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Aligned text, no trailing spaces; `No resources found.` style is the caller's.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                let cells = self
                    .rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()));
                cells.chain([self.headers[i].len()]).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// Which extra columns to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct Columns {
    pub wide: bool,
    pub namespace: bool,
}

/// `vigil get runs`.
pub fn runs(runs: &[Run], cols: Columns, now: DateTime<Utc>) -> Table {
    let mut headers = vec!["NAME", "PLAYBOOK", "PHASE", "PROGRESS", "AGE"];
    if cols.wide {
        headers.extend(["DURATION", "REASON", "TRIGGER"]);
    }
    let rows = runs
        .iter()
        .map(|run| {
            let status = run.status.clone().unwrap_or_default();
            let mut row = vec![
                run.metadata.name.clone().unwrap_or_default(),
                run.spec.playbook_ref.name.clone(),
                status.phase.as_str().to_string(),
                or_dash(status.progress.as_deref()),
                age(
                    run.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| super::k8s_time(&t.0)),
                    now,
                ),
            ];
            if cols.wide {
                let took = status
                    .started_at
                    .map(|s| super::duration(status.finished_at.unwrap_or(now) - s));
                let trigger = run
                    .spec
                    .trigger
                    .as_ref()
                    .map(|t| t.source.clone().unwrap_or(t.kind.clone()));
                row.extend([
                    or_dash(took.as_deref()),
                    or_dash(status.reason.as_deref()),
                    or_dash(trigger.as_deref()),
                ]);
            }
            row
        })
        .collect();
    with_namespace(
        Table { headers, rows },
        runs.iter().map(|r| r.metadata.namespace.clone()),
        cols,
    )
}

/// `vigil get playbooks`.
pub fn playbooks(playbooks: &[Playbook], cols: Columns, now: DateTime<Utc>) -> Table {
    let mut headers = vec!["NAME", "STEPS", "WEBHOOK", "READY", "AGE"];
    if cols.wide {
        headers.extend(["DESCRIPTION"]);
    }
    let rows = playbooks
        .iter()
        .map(|pb| {
            let status = pb.status.clone().unwrap_or_default();
            let steps = pb.spec.steps.len() + pb.spec.finally.len();
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status.clone());
            let mut row = vec![
                pb.metadata.name.clone().unwrap_or_default(),
                steps.to_string(),
                or_dash(status.webhook_path.as_deref()),
                or_dash(ready.as_deref()),
                age(
                    pb.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| super::k8s_time(&t.0)),
                    now,
                ),
            ];
            if cols.wide {
                row.push(super::truncate(
                    pb.spec.description.as_deref().unwrap_or("-"),
                    60,
                ));
            }
            row
        })
        .collect();
    with_namespace(
        Table { headers, rows },
        playbooks.iter().map(|r| r.metadata.namespace.clone()),
        cols,
    )
}

/// `vigil get approvals`.
pub fn approvals(approvals: &[Approval], cols: Columns, now: DateTime<Utc>) -> Table {
    let mut headers = vec!["NAME", "RUN", "STEP", "DECISION", "DECIDED BY", "AGE"];
    if cols.wide {
        headers.extend(["EXPIRES", "MESSAGE"]);
    }
    let rows = approvals
        .iter()
        .map(|a| {
            let status = a.status.clone().unwrap_or_default();
            let decision = status.decision.map(|d| d.as_str().to_string());
            let mut row = vec![
                a.metadata.name.clone().unwrap_or_default(),
                a.spec.run_ref.name.clone(),
                a.spec.step.clone(),
                decision.unwrap_or_else(|| "pending".into()),
                or_dash(status.decided_by.as_deref()),
                age(
                    a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| super::k8s_time(&t.0)),
                    now,
                ),
            ];
            if cols.wide {
                let expires = status.expires_at.map(|e| {
                    if e > now {
                        format!("in {}", age(Some(now), e))
                    } else {
                        "expired".into()
                    }
                });
                row.extend([
                    or_dash(expires.as_deref()),
                    super::truncate(&a.spec.message, 60),
                ]);
            }
            row
        })
        .collect();
    with_namespace(
        Table { headers, rows },
        approvals.iter().map(|r| r.metadata.namespace.clone()),
        cols,
    )
}

fn with_namespace(
    mut table: Table,
    namespaces: impl Iterator<Item = Option<String>>,
    cols: Columns,
) -> Table {
    if cols.namespace {
        table.headers.insert(0, "NAMESPACE");
        for (row, ns) in table.rows.iter_mut().zip(namespaces) {
            row.insert(0, ns.unwrap_or_default());
        }
    }
    table
}

/// Colours the phase or decision word of each row of a rendered table; headers stay plain.
pub fn colorize(table: &Table, style: &Style) -> String {
    let text = table.render();
    if !style.color {
        return text;
    }
    let words = [
        ("Succeeded", "Succeeded"),
        ("Failed", "Failed"),
        ("Running", "Running"),
        ("Cancelled", "Cancelled"),
        ("Pending", "Pending"),
        ("Queued", "Queued"),
        ("approved", "Succeeded"),
        ("denied", "Failed"),
        ("pending", "Pending"),
    ];
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut line = line.to_string();
        let found = words.iter().find_map(|(word, phase)| {
            let at = line.find(&format!("   {word} "))?;
            Some((at + 3, *word, *phase))
        });
        if let (true, Some((at, word, phase))) = (i > 0, found) {
            line.replace_range(at..at + word.len(), &style.phase(phase, word));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_three_spaces_apart() {
        let table = Table {
            headers: vec!["NAME", "PHASE"],
            rows: vec![
                vec!["a-long-name".into(), "Running".into()],
                vec!["b".into(), "".into()],
            ],
        };
        assert_eq!(
            table.render(),
            "NAME          PHASE\na-long-name   Running\nb\n"
        );
    }
}
