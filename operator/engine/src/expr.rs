//! CEL expressions: compiled once with static cost limits, evaluated over JSON contexts.
//!
//! Every expression in a playbook (`when`, step input bindings, `forEach`, `{{ }}` templates,
//! trigger filters, mappings and dedupe keys) goes through [`Expr`]. CEL itself always
//! terminates; the limits here bound how much work one expression may ask for.

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr};
use std::{fmt, sync::Arc};

/// The longest expression source accepted.
pub const MAX_SOURCE_LEN: usize = 4096;
/// The most AST nodes one expression may have.
pub const MAX_NODES: usize = 400;
/// How deeply comprehensions (`all`, `exists`, `map`, `filter`) may nest.
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// The longest string or list an evaluation may return, in serialized bytes.
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// A compiled CEL expression and its source.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<cel::Program>,
}

/// Why an expression did not compile or evaluate. The `Display` form is what users see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("too costly: {0}")]
    Cost(String),
    #[error("evaluation failed: {0}")]
    Eval(String),
    #[error("wrong result type: expected {expected}, got {got}")]
    Type { expected: &'static str, got: String },
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`, checking the static cost limits.
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExprError::Cost(format!(
                "{} bytes, the limit is {MAX_SOURCE_LEN}",
                source.len()
            )));
        }
        if source.trim().is_empty() {
            return Err(ExprError::Compile("empty expression".into()));
        }
        // The parser recurses on nesting; refuse pathological depth before it sees the text.
        let depth = max_bracket_depth(source);
        if depth > 32 {
            return Err(ExprError::Cost(format!("nesting depth {depth}, the limit is 32")));
        }
        let program = cel::Program::compile(source)
            .map_err(|e| ExprError::Compile(e.to_string().lines().next().unwrap_or("").into()))?;
        let mut cost = Cost::default();
        cost.walk(program.expression(), 0);
        if cost.nodes > MAX_NODES {
            return Err(ExprError::Cost(format!(
                "{} nodes, the limit is {MAX_NODES}",
                cost.nodes
            )));
        }
        if cost.max_comprehension_depth > MAX_COMPREHENSION_DEPTH {
            return Err(ExprError::Cost(format!(
                "comprehensions nested {} deep, the limit is {MAX_COMPREHENSION_DEPTH}",
                cost.max_comprehension_depth
            )));
        }
        Ok(Self { source: source.into(), program: Arc::new(program) })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level variables the expression reads (`inputs`, `steps`, `body`, ...).
    pub fn variables(&self) -> Vec<String> {
        self.program.references().variables().into_iter().map(str::to_string).collect()
    }

    /// Evaluates with the given variables, each a JSON value.
    pub fn eval(&self, vars: &[(&str, &serde_json::Value)]) -> Result<serde_json::Value, ExprError> {
        let mut ctx = cel::Context::default();
        for (name, value) in vars {
            ctx.add_variable(*name, *value).map_err(|e| ExprError::Eval(e.to_string()))?;
        }
        let value = self.program.execute(&ctx).map_err(|e| ExprError::Eval(e.to_string()))?;
        let json = value.json().map_err(|e| ExprError::Eval(e.to_string()))?;
        let size = serde_json::to_vec(&json).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_RESULT_BYTES {
            return Err(ExprError::Cost(format!("result of {size} bytes")));
        }
        Ok(json)
    }

    pub fn eval_bool(&self, vars: &[(&str, &serde_json::Value)]) -> Result<bool, ExprError> {
        match self.eval(vars)? {
            serde_json::Value::Bool(b) => Ok(b),
            other => Err(ExprError::Type { expected: "bool", got: type_name(&other).into() }),
        }
    }

    pub fn eval_list(
        &self,
        vars: &[(&str, &serde_json::Value)],
    ) -> Result<Vec<serde_json::Value>, ExprError> {
        match self.eval(vars)? {
            serde_json::Value::Array(items) => Ok(items),
            other => Err(ExprError::Type { expected: "list", got: type_name(&other).into() }),
        }
    }

    /// Evaluates to a string; numbers and booleans are rendered, other types refused.
    pub fn eval_string(&self, vars: &[(&str, &serde_json::Value)]) -> Result<String, ExprError> {
        match self.eval(vars)? {
            serde_json::Value::String(s) => Ok(s),
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Ok(v.to_string()),
            other => Err(ExprError::Type { expected: "string", got: type_name(&other).into() }),
        }
    }
}

/// The JSON type name of a value, as error messages say it.
pub fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        serde_json::Value::Number(_) => "double",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "map",
    }
}

fn max_bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[derive(Default)]
struct Cost {
    nodes: usize,
    max_comprehension_depth: usize,
}

impl Cost {
    fn walk(&mut self, e: &IdedExpr, comprehension_depth: usize) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return;
        }
        match &e.expr {
            Node::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, comprehension_depth);
                }
                call.args.iter().for_each(|a| self.walk(a, comprehension_depth));
            }
            Node::Comprehension(c) => {
                let depth = comprehension_depth + 1;
                self.max_comprehension_depth = self.max_comprehension_depth.max(depth);
                self.walk(&c.iter_range, comprehension_depth);
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part, depth);
                }
            }
            Node::List(list) => list.elements.iter().for_each(|x| self.walk(x, comprehension_depth)),
            Node::Map(map) => {
                for entry in &map.entries {
                    self.walk_entry(&entry.expr, comprehension_depth);
                }
            }
            Node::Struct(s) => {
                for entry in &s.entries {
                    self.walk_entry(&entry.expr, comprehension_depth);
                }
            }
            Node::Select(select) => self.walk(&select.operand, comprehension_depth),
            Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
        }
    }

    fn walk_entry(&mut self, entry: &EntryExpr, depth: usize) {
        match entry {
            EntryExpr::MapEntry(m) => {
                self.walk(&m.key, depth);
                self.walk(&m.value, depth);
            }
            EntryExpr::StructField(f) => self.walk(&f.value, depth),
        }
    }
}

/// A string with `{{ expr }}` parts, each a CEL expression rendered as text.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Clone, Debug)]
enum TemplatePart {
    Text(String),
    Expr(Expr),
}

impl Template {
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(TemplatePart::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| ExprError::Compile("unclosed '{{' in template".into()))?;
            parts.push(TemplatePart::Expr(Expr::compile(after[..end].trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    pub fn render(&self, vars: &[(&str, &serde_json::Value)]) -> Result<String, ExprError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Expr(expr) => match expr.eval(vars)? {
                    serde_json::Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_json_variables() {
        let inputs = json!({"username": "jdoe", "ip": "192.168.1.100"});
        let steps = json!({"score": {"outputs": {"severity": "high", "score": 70}}});
        let when = Expr::compile("steps.score.outputs.severity == 'high'").unwrap();
        assert!(when.eval_bool(&[("inputs", &inputs), ("steps", &steps)]).unwrap());
        let bind = Expr::compile("inputs.username").unwrap();
        assert_eq!(bind.eval(&[("inputs", &inputs)]).unwrap(), json!("jdoe"));
        let score = Expr::compile("steps.score.outputs.score >= 70").unwrap();
        assert!(score.eval_bool(&[("steps", &steps)]).unwrap());
    }

    #[test]
    fn reports_compile_errors() {
        assert!(matches!(Expr::compile("inputs.(("), Err(ExprError::Compile(_))));
        assert!(matches!(Expr::compile("  "), Err(ExprError::Compile(_))));
    }

    #[test]
    fn refuses_costly_expressions() {
        let nested = "[1].all(a, [1].all(b, [1].all(c, true)))";
        assert!(matches!(Expr::compile(nested), Err(ExprError::Cost(_))));
        let long = vec!["1"; 600].join(" + ");
        assert!(matches!(Expr::compile(&long), Err(ExprError::Cost(_))));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(matches!(Expr::compile(&deep), Err(ExprError::Cost(_))));
    }

    #[test]
    fn type_errors_name_the_expected_type() {
        let e = Expr::compile("'x'").unwrap();
        assert_eq!(
            e.eval_bool(&[]).unwrap_err().to_string(),
            "wrong result type: expected bool, got string"
        );
    }

    #[test]
    fn templates_render_expressions() {
        let t = Template::compile("Quarantine {{ inputs.host }} of {{inputs.user}}?").unwrap();
        let inputs = json!({"host": "ws-1", "user": "jdoe"});
        assert_eq!(t.render(&[("inputs", &inputs)]).unwrap(), "Quarantine ws-1 of jdoe?");
        assert!(Template::compile("{{ unclosed").is_err());
    }
}
