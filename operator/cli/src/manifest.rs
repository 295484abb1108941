//! Reads multi-document YAML files and remembers where each document and step starts.

use serde::Deserialize;
use vigil_api::PlaybookSpec;

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct Document {
    /// The document's text, with lines before it blanked so that line numbers match the file.
    pub text: String,
    /// The 1-based file line of the document's first content line.
    pub start_line: usize,
}

/// A syntax or schema problem, located in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseProblem {
    pub line: usize,
    pub message: String,
}

/// What a document is, read loosely so that any Kubernetes object parses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
}

/// A Playbook document checked against the schema.
#[derive(Debug, Deserialize)]
struct TypedPlaybook {
    spec: PlaybookSpec,
}

/// A vigil Playbook read from a file.
#[derive(Clone, Debug)]
pub struct PlaybookDoc {
    pub name: Option<String>,
    pub spec: PlaybookSpec,
    pub document: Document,
}

/// Splits `text` at `---` lines. Blank and comment-only documents are dropped.
pub fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut first_line = 1;
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if is_separator(line) {
            push_document(&mut docs, &current, first_line);
            current.clear();
            first_line = i + 2;
            continue;
        }
        current.push(line);
    }
    push_document(&mut docs, &current, first_line);
    docs
}

fn is_separator(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "..."
}

fn push_document(docs: &mut Vec<Document>, lines: &[&str], first_line: usize) {
    let content = lines.iter().position(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    });
    let Some(offset) = content else { return };
    let mut text = "\n".repeat(first_line - 1);
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    docs.push(Document {
        text,
        start_line: first_line + offset,
    });
}

/// The outcome of reading one document.
pub enum Parsed {
    /// A `vigil.dev` Playbook whose spec fits the schema.
    Playbook(Box<PlaybookDoc>),
    /// A Playbook that does not parse; the problem is located.
    Invalid(ParseProblem),
    /// Some other kind of object, ignored.
    Other,
}

/// Reads one document: its kind first, then, for Playbooks, the spec against the schema.
pub fn parse_document(doc: &Document) -> Parsed {
    let header: Header = match serde_yaml::from_str(&doc.text) {
        Ok(h) => h,
        Err(err) => return Parsed::Invalid(problem(doc, &err)),
    };
    if header.kind.as_deref() != Some("Playbook") {
        return Parsed::Other;
    }
    let api_version = header.api_version.unwrap_or_default();
    let Some(version) = api_version.strip_prefix("vigil.dev/") else {
        if api_version.is_empty() {
            let message = "apiVersion is missing (expected vigil.dev/v1alpha1)".to_string();
            return Parsed::Invalid(ParseProblem {
                line: doc.start_line,
                message,
            });
        }
        return Parsed::Other;
    };
    if version != vigil_api::VERSION {
        let message =
            format!("apiVersion {api_version} is not served (expected vigil.dev/v1alpha1)");
        return Parsed::Invalid(ParseProblem {
            line: doc.start_line,
            message,
        });
    }
    match serde_yaml::from_str::<TypedPlaybook>(&doc.text) {
        Ok(typed) => Parsed::Playbook(Box::new(PlaybookDoc {
            name: header.metadata.and_then(|m| m.name),
            spec: typed.spec,
            document: doc.clone(),
        })),
        Err(err) => Parsed::Invalid(problem(doc, &err)),
    }
}

/// Turns a serde_yaml error into a located problem; its text keeps the field path
/// (`spec.steps[2].timeout: invalid duration ...`) and drops the trailing position.
fn problem(doc: &Document, err: &serde_yaml::Error) -> ParseProblem {
    let text = err.to_string();
    let line = err.location().map_or(doc.start_line, |l| l.line().max(1));
    let message = match text.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(" column ") => head.to_string(),
        _ => text,
    };
    // serde_yaml places errors of a value at the start of the enclosing mapping; when the
    // message quotes the offending value, the line holding it is the better place.
    let line = quoted(&message)
        .and_then(|value| {
            doc.text
                .lines()
                .enumerate()
                .skip(line - 1)
                .take(200)
                .find(|(_, l)| l.contains(value))
        })
        .map_or(line, |(i, _)| i + 1);
    ParseProblem { line, message }
}

/// The first `"..."` part of a message.
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(&message[start..start + len]).filter(|v| !v.is_empty())
}

/// The file line of `- name: STEP` (the least indented match), if the text has one.
pub fn step_line(doc: &Document, step: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in doc.text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let Some(rest) = line.trim_start().strip_prefix('-') else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix("name:") else {
            continue;
        };
        let value = value.split(" #").next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        if value == step && best.is_none_or(|(_, b)| indent < b) {
            best = Some((i + 1, indent));
        }
    }
    best.map(|(line, _)| line)
}

/// The file line of the first `KEY:` inside the document's `spec`, for problems that belong to
/// a spec field rather than a step (`triggers.webhook.inputs.ip` is found at `triggers:`).
pub fn field_line(doc: &Document, field: &str) -> Option<usize> {
    let key = field.split('.').next().filter(|k| !k.is_empty())?;
    let wanted = format!("{key}:");
    doc.text
        .lines()
        .position(|l| {
            let t = l.trim_start();
            l.len() > t.len() && (t.starts_with(&wanted) || t.starts_with(&format!("{{{wanted}")))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_file_lines() {
        let text = "# header\n---\napiVersion: v1\nkind: ConfigMap\n---\n\n# only a comment\n---\nkind: Playbook\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].start_line, 3);
        assert_eq!(docs[1].start_line, 9);
        assert_eq!(docs[1].text.lines().nth(8), Some("kind: Playbook"));
    }

    #[test]
    fn step_line_prefers_the_least_indented_name() {
        let text =
            "spec:\n  steps:\n    - name: a\n      env:\n        - name: b\n    - name: \"b\"\n";
        let doc = &split_documents(text)[0];
        assert_eq!(step_line(doc, "b"), Some(6));
        assert_eq!(step_line(doc, "a"), Some(3));
        assert_eq!(step_line(doc, "zz"), None);
    }
}
