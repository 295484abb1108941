//! `vigil lint`: checks playbook files offline with the same compiler the operator uses.

use crate::manifest::{self, Parsed};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub file: String,
    /// 1-based; 0 when the file itself could not be read.
    pub line: usize,
    pub step: Option<String>,
    pub field: String,
    pub message: String,
}

impl Finding {
    /// `file:line: step X: field: message`, the shape editors and CI annotations understand.
    pub fn to_line(&self) -> String {
        let mut out = if self.line == 0 {
            format!("{}: ", self.file)
        } else {
            format!("{}:{}: ", self.file, self.line)
        };
        if let Some(step) = &self.step {
            out.push_str(&format!("step {step}: "));
        }
        if !self.field.is_empty() {
            out.push_str(&format!("{}: ", self.field));
        }
        out.push_str(&self.message);
        out
    }
}

/// What linting a set of files found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Playbook documents checked.
    pub playbooks: usize,
}

/// Lints every file (directories: their `*.yaml` and `*.yml`, recursively).
pub fn lint_paths(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in expand(paths) {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (findings, playbooks) = lint_source(&file, &text);
                report.findings.extend(findings);
                report.playbooks += playbooks;
            }
            Err(err) => report.findings.push(Finding {
                file,
                line: 0,
                step: None,
                field: String::new(),
                message: format!("cannot read: {err}"),
            }),
        }
    }
    report
}

fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() || is_yaml(p))
                .collect();
            entries.sort();
            out.extend(expand(&entries));
        } else {
            out.push(path.clone());
        }
    }
    out
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Lints the text of one file. Returns the findings and how many Playbooks it held.
pub fn lint_source(file: &str, text: &str) -> (Vec<Finding>, usize) {
    let mut findings = Vec::new();
    let mut playbooks = 0;
    for doc in manifest::split_documents(text) {
        let finding = |line, step: Option<String>, field: String, message| Finding {
            file: file.to_string(),
            line,
            step,
            field,
            message,
        };
        match manifest::parse_document(&doc) {
            Parsed::Other => {}
            Parsed::Invalid(problem) => {
                playbooks += 1;
                findings.push(finding(problem.line, None, String::new(), problem.message));
            }
            Parsed::Playbook(pb) => {
                playbooks += 1;
                if pb.name.as_deref().is_none_or(str::is_empty) {
                    let message = "metadata.name is missing".to_string();
                    findings.push(finding(doc.start_line, None, String::new(), message));
                }
                let Err(issues) = vigil_engine::compile(&pb.spec) else {
                    continue;
                };
                for issue in issues {
                    let line = match &issue.step {
                        Some(step) => manifest::step_line(&doc, step),
                        None => manifest::field_line(&doc, &issue.field),
                    };
                    let line = line.unwrap_or(doc.start_line);
                    findings.push(finding(line, issue.step, issue.field, issue.message));
                }
            }
        }
    }
    findings.sort_by_key(|f| f.line);
    (findings, playbooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_kinds_are_ignored() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n";
        assert_eq!(lint_source("x.yaml", text), (vec![], 0));
    }

    #[test]
    fn schema_errors_point_at_the_offending_line() {
        let text = concat!(
            "apiVersion: vigil.dev/v1alpha1\nkind: Playbook\nmetadata: {name: p}\nspec:\n",
            "  steps:\n    - name: a\n      image: busybox\n      command: [true]\n",
            "      timeout: 5 minutes\n",
        );
        let (findings, _) = lint_source("p.yaml", text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].line, 9);
        assert!(
            findings[0].message.contains("invalid duration"),
            "{}",
            findings[0].message
        );
    }
}
