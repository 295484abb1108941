//! Checks a Run's inputs against the playbook's typed inputs and applies defaults.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vigil_api::playbook::{InputSpec, InputType};

/// An input that does not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input {field}: {message}")]
pub struct InputError {
    pub field: String,
    pub message: String,
}

/// Returns the inputs with defaults applied, or every problem found.
pub fn validate(
    declared: &BTreeMap<String, InputSpec>,
    given: Option<&Value>,
) -> Result<Value, Vec<InputError>> {
    let empty = Map::new();
    let given = match given {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(vec![InputError { field: "(root)".into(), message: "inputs must be an object".into() }]);
        }
    };
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, spec) in declared {
        match given.get(name).filter(|v| !v.is_null()).or(spec.default.as_ref()) {
            Some(value) => match check(spec, value) {
                Ok(()) => {
                    out.insert(name.clone(), value.clone());
                }
                Err(message) => errors.push(InputError { field: name.clone(), message }),
            },
            None if spec.required => {
                errors.push(InputError { field: name.clone(), message: "is required".into() })
            }
            None => {}
        }
    }
    for name in given.keys().filter(|k| !declared.contains_key(*k)) {
        errors.push(InputError { field: name.clone(), message: "is not an input of the playbook".into() });
    }
    if errors.is_empty() { Ok(Value::Object(out)) } else { Err(errors) }
}

fn check(spec: &InputSpec, value: &Value) -> Result<(), String> {
    let ok = match spec.type_ {
        InputType::String => value.is_string(),
        InputType::Integer => value.is_i64() || value.is_u64(),
        InputType::Number => value.is_number(),
        InputType::Boolean => value.is_boolean(),
        InputType::Object => value.is_object(),
        InputType::Array => value.is_array(),
    };
    if !ok {
        let want = serde_json::to_value(spec.type_).ok().and_then(|v| v.as_str().map(str::to_string));
        return Err(format!(
            "expected {}, got {}",
            want.unwrap_or_default(),
            crate::expr::type_name(value)
        ));
    }
    if let (false, Some(s)) = (spec.enum_.is_empty(), value.as_str()) {
        if !spec.enum_.iter().any(|e| e == s) {
            return Err(format!("must be one of {}", spec.enum_.join(", ")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> BTreeMap<String, InputSpec> {
        serde_json::from_value(json!({
            "username": {"type": "string", "required": true},
            "ip": {"type": "string", "required": true},
            "hostname": {"type": "string", "default": "unknown"},
            "count": {"type": "integer"},
        }))
        .unwrap()
    }

    #[test]
    fn applies_defaults_to_valid_inputs() {
        let out = validate(&declared(), Some(&json!({"username": "jdoe", "ip": "10.0.0.1"}))).unwrap();
        assert_eq!(out, json!({"username": "jdoe", "ip": "10.0.0.1", "hostname": "unknown"}));
    }

    #[test]
    fn names_each_bad_field() {
        let errs = validate(&declared(), Some(&json!({"ip": 7, "count": 1.5, "extra": true}))).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"input ip: expected string, got int".to_string()), "{text:?}");
        assert!(text.contains(&"input username: is required".to_string()), "{text:?}");
        assert!(text.contains(&"input count: expected integer, got double".to_string()), "{text:?}");
        assert!(text.contains(&"input extra: is not an input of the playbook".to_string()), "{text:?}");
    }
}
