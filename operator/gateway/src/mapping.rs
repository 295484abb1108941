//! From an alert to a Run's inputs: the trigger's filter, input mapping and dedupe key, in CEL
//! over `body`, `headers` and `query`. Pure.

use crate::reject::{Reason, Rejection};
use http::HeaderMap;
use serde_json::{Map, Value};
use std::{collections::BTreeMap, time::Duration};
use vigil_api::playbook::{InputSpec, WebhookTrigger};
use vigil_engine::Expr;

/// Headers never shown to CEL, so no mapping can copy a credential into a Run.
pub const HIDDEN_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
/// Query parameters kept; more are dropped.
pub const MAX_QUERY_PARAMS: usize = 64;

/// A webhook trigger with its expressions compiled.
#[derive(Clone, Debug)]
pub struct CompiledTrigger {
    filter: Option<Expr>,
    inputs: Vec<(String, Expr)>,
    dedupe: Option<(Expr, Duration)>,
}

/// The alert as CEL sees it.
#[derive(Clone, Debug, Default)]
pub struct Alert {
    pub body: Value,
    /// Lowercased header name to value; repeated headers joined with `", "`.
    pub headers: Value,
    /// Query parameter to value; the first of repeated parameters wins.
    pub query: Value,
}

/// What the trigger makes of an alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Mapped {
    /// The filter said false: accepted, no Run.
    Filtered,
    /// A Run should be created with these (validated, defaulted) inputs.
    Accepted { inputs: Value, dedupe: Option<DedupeKey> },
}

/// The evaluated dedupe key and its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupeKey {
    pub key: String,
    pub window: Duration,
}

impl CompiledTrigger {
    /// Compiles every expression of the trigger.
    ///
    /// # Errors
    ///
    /// Every expression that does not compile, as `"<where>: <why>"`.
    pub fn compile(trigger: &WebhookTrigger) -> Result<Self, Vec<String>> {
        let mut issues = Vec::new();
        let mut compile = |place: String, src: &str| match Expr::compile(src) {
            Ok(e) => Some(e),
            Err(e) => {
                issues.push(format!("{place}: {e}"));
                None
            }
        };
        let filter = trigger.filter.as_deref().and_then(|f| compile("filter".into(), f));
        let inputs = trigger
            .inputs
            .iter()
            .filter_map(|(name, src)| Some((name.clone(), compile(format!("inputs.{name}"), src)?)))
            .collect();
        let dedupe = trigger
            .dedupe
            .as_ref()
            .and_then(|d| Some((compile("dedupe.key".into(), &d.key)?, d.window.0)));
        if issues.is_empty() { Ok(Self { filter, inputs, dedupe }) } else { Err(issues) }
    }

    /// Applies the filter, the input mapping, the declared inputs' checks and the dedupe key.
    ///
    /// A mapping that fails to evaluate (typically a field absent from the alert) leaves its
    /// input unset; the declared inputs then decide whether that is an error.
    ///
    /// # Errors
    ///
    /// 422 with reason `filter_failed`, `invalid_inputs` or `dedupe_key_failed`.
    pub fn map(
        &self,
        declared: &BTreeMap<String, InputSpec>,
        alert: &Alert,
    ) -> Result<Mapped, Rejection> {
        let vars = [("body", &alert.body), ("headers", &alert.headers), ("query", &alert.query)];

        if let Some(filter) = &self.filter {
            let keep = filter.eval_bool(&vars).map_err(|e| {
                Rejection::new(
                    Reason::FilterFailed,
                    format!("filter {e} (guard optional fields with has())"),
                )
            })?;
            if !keep {
                return Ok(Mapped::Filtered);
            }
        }

        let mut given = Map::new();
        let mut failures = BTreeMap::new();
        for (name, expr) in &self.inputs {
            match expr.eval(&vars) {
                Ok(Value::Null) => {}
                Ok(value) => {
                    given.insert(name.clone(), value);
                }
                Err(e) => {
                    failures.insert(name.as_str(), e.to_string());
                }
            }
        }
        let inputs = vigil_engine::inputs::validate(declared, Some(&Value::Object(given)))
            .map_err(|errors| {
                let text: Vec<String> = errors
                    .iter()
                    .map(|e| match failures.get(e.field.as_str()) {
                        Some(why) => format!("{e} (mapping {why})"),
                        None => e.to_string(),
                    })
                    .collect();
                Rejection::new(Reason::InvalidInputs, text.join("; "))
            })?;

        let dedupe = match &self.dedupe {
            None => None,
            Some((expr, window)) => {
                Some(DedupeKey { key: dedupe_key(expr, &vars)?, window: *window })
            }
        };
        Ok(Mapped::Accepted { inputs, dedupe })
    }
}

fn dedupe_key(expr: &Expr, vars: &[(&str, &Value)]) -> Result<String, Rejection> {
    let fail = |why: String| Rejection::new(Reason::DedupeKeyFailed, format!("dedupe key {why}"));
    match expr.eval(vars).map_err(|e| fail(e.to_string()))? {
        Value::Null => Err(fail("is null".into())),
        Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// The headers as CEL sees them: lowercased names, text values, credentials left out.
pub fn headers_value(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        if HIDDEN_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let values: Vec<&str> =
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if !values.is_empty() {
            out.insert(name.as_str().to_string(), Value::String(values.join(", ")));
        }
    }
    Value::Object(out)
}

/// The query string as CEL sees it: parameter to value, the first of repeats wins.
pub fn query_value(query: Option<&str>) -> Value {
    let mut out = Map::new();
    for (key, value) in
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).take(MAX_QUERY_PARAMS)
    {
        out.entry(key.into_owned()).or_insert_with(|| Value::String(value.into_owned()));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use serde_json::json;

    fn trigger(value: Value) -> WebhookTrigger {
        serde_json::from_value(value).unwrap()
    }

    fn declared() -> BTreeMap<String, InputSpec> {
        serde_json::from_value(json!({
            "username": {"type": "string", "required": true},
            "ip": {"type": "string", "required": true},
            "hostname": {"type": "string"},
            "count": {"type": "integer"},
        }))
        .unwrap()
    }

    fn ids_trigger() -> CompiledTrigger {
        CompiledTrigger::compile(&trigger(json!({
            "auth": {"none": {}},
            "filter": "body.event_type == 'alert'",
            "inputs": {"username": "body.user", "ip": "body.src_ip", "hostname": "body.host"},
            "dedupe": {"key": "body.alert_id", "window": "10m"},
        })))
        .unwrap()
    }

    fn alert(body: Value) -> Alert {
        Alert { body, headers: json!({}), query: json!({}) }
    }

    #[test]
    fn maps_an_ids_alert_to_inputs_and_a_dedupe_key() {
        let body = json!({"event_type": "alert", "user": "jdoe", "src_ip": "10.0.0.5",
                          "alert_id": 42});
        let mapped = ids_trigger().map(&declared(), &alert(body)).unwrap();
        assert_eq!(
            mapped,
            Mapped::Accepted {
                inputs: json!({"username": "jdoe", "ip": "10.0.0.5"}),
                dedupe: Some(DedupeKey { key: "42".into(), window: Duration::from_secs(600) }),
            }
        );
    }

    #[test]
    fn a_false_filter_creates_nothing() {
        let body = json!({"event_type": "heartbeat"});
        assert_eq!(ids_trigger().map(&declared(), &alert(body)).unwrap(), Mapped::Filtered);
    }

    #[test]
    fn a_filter_over_a_missing_field_is_a_422() {
        let err = ids_trigger().map(&declared(), &alert(json!({"x": 1}))).unwrap_err();
        assert_eq!(err.reason, Reason::FilterFailed);
    }

    #[test]
    fn missing_and_mistyped_inputs_name_the_field() {
        let body = json!({"event_type": "alert", "src_ip": 7, "alert_id": "a"});
        let err = ids_trigger().map(&declared(), &alert(body)).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidInputs);
        assert!(err.detail.contains("input username: is required"), "{}", err.detail);
        assert!(err.detail.contains("input ip: expected string, got int"), "{}", err.detail);
    }

    #[test]
    fn a_null_dedupe_key_is_a_422() {
        let body = json!({"event_type": "alert", "user": "u", "src_ip": "i", "alert_id": null});
        let err = ids_trigger().map(&declared(), &alert(body)).unwrap_err();
        assert_eq!(err.reason, Reason::DedupeKeyFailed);
    }

    #[test]
    fn mappings_see_headers_and_query_but_not_credentials() {
        let t = CompiledTrigger::compile(&trigger(json!({
            "auth": {"none": {}},
            "inputs": {"username": "headers['x-user']", "ip": "query.ip"},
        })))
        .unwrap();
        let mut h = HeaderMap::new();
        h.append(HeaderName::from_static("x-user"), HeaderValue::from_static("jdoe"));
        h.append(HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer t"));
        let alert = Alert {
            body: json!({}),
            headers: headers_value(&h),
            query: query_value(Some("ip=10.0.0.1&ip=10.9.9.9&x=%20y")),
        };
        assert_eq!(alert.headers, json!({"x-user": "jdoe"}));
        assert_eq!(alert.query, json!({"ip": "10.0.0.1", "x": " y"}));
        let Mapped::Accepted { inputs, .. } = t.map(&declared(), &alert).unwrap() else {
            panic!("filtered")
        };
        assert_eq!(inputs, json!({"username": "jdoe", "ip": "10.0.0.1"}));
    }

    #[test]
    fn broken_expressions_are_reported_by_place() {
        let issues = CompiledTrigger::compile(&trigger(json!({
            "auth": {"none": {}}, "filter": "body.((", "inputs": {"ip": ")"},
        })))
        .unwrap_err();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].starts_with("filter: "), "{issues:?}");
        assert!(issues[1].starts_with("inputs.ip: "), "{issues:?}");
    }
}
