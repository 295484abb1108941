//! Turns an alert (the JSON a SIEM would post) into a playbook's inputs, as the gateway does.
//!
//! With `triggers.webhook.inputs`, each input is CEL over `body` (the alert; `headers` and
//! `query` are empty maps here), so one alert file serves `vigil run --local`, `vigil trigger`
//! and the webhook alike. Without mappings the alert is the inputs object itself. Either way the
//! result is checked by [`vigil_engine::inputs::validate`].

use serde_json::{Map, Value, json};
use vigil_api::PlaybookSpec;
use vigil_engine::Expr;

/// Maps and validates. Errors are sentences, one per problem.
pub fn inputs_from_alert(spec: &PlaybookSpec, alert: &Value) -> Result<Value, Vec<String>> {
    let webhook = spec.triggers.as_ref().and_then(|t| t.webhook.as_ref());
    let mappings = webhook.map(|w| &w.inputs).filter(|m| !m.is_empty());
    let mut notes = Vec::new();

    let given = match mappings {
        None => alert.clone(),
        Some(mappings) => {
            let (empty_headers, empty_query) = (json!({}), json!({}));
            let vars = [
                ("body", alert),
                ("headers", &empty_headers),
                ("query", &empty_query),
            ];
            let mut out = Map::new();
            for (input, source) in mappings {
                let value = Expr::compile(source).and_then(|e| e.eval(&vars));
                match value {
                    Ok(Value::Null) => {}
                    Ok(v) => {
                        out.insert(input.clone(), v);
                    }
                    // An absent field leaves the input out: its default applies, or it is
                    // reported as required below.
                    Err(err) => notes.push(format!("mapping of input {input} ({source}): {err}")),
                }
            }
            Value::Object(out)
        }
    };

    match vigil_engine::inputs::validate(&spec.inputs, Some(&given)) {
        Ok(inputs) => Ok(inputs),
        Err(errors) => {
            let mut all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            all.extend(notes);
            Err(all)
        }
    }
}

/// Whether the webhook filter lets the alert through: `None` when there is no filter.
pub fn filter_passes(spec: &PlaybookSpec, alert: &Value) -> Option<Result<bool, String>> {
    let source = spec.triggers.as_ref()?.webhook.as_ref()?.filter.as_ref()?;
    let (headers, query) = (json!({}), json!({}));
    let vars = [("body", alert), ("headers", &headers), ("query", &query)];
    Some(
        Expr::compile(source)
            .and_then(|e| e.eval_bool(&vars))
            .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PlaybookSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn mappings_read_the_alert_body() {
        let spec = spec(
            "inputs: {user: {type: string, required: true}, host: {type: string, default: none}}\n\
             triggers: {webhook: {auth: {none: {}}, inputs: {user: body.user, host: body.host}}}\n\
             steps: []\n",
        );
        let inputs = inputs_from_alert(&spec, &json!({"user": "jdoe"})).unwrap();
        assert_eq!(inputs, json!({"user": "jdoe", "host": "none"}));
    }

    #[test]
    fn a_missing_required_field_names_the_mapping() {
        let spec = spec(
            "inputs: {user: {type: string, required: true}}\n\
             triggers: {webhook: {auth: {none: {}}, inputs: {user: body.user}}}\nsteps: []\n",
        );
        let errors = inputs_from_alert(&spec, &json!({"other": 1})).unwrap_err();
        assert_eq!(errors[0], "input user: is required");
        assert!(
            errors[1].starts_with("mapping of input user (body.user)"),
            "{errors:?}"
        );
    }

    #[test]
    fn without_mappings_the_alert_is_the_inputs() {
        let spec = spec("inputs: {ip: {type: string}}\nsteps: []\n");
        assert_eq!(
            inputs_from_alert(&spec, &json!({"ip": "10.0.0.1"})).unwrap(),
            json!({"ip": "10.0.0.1"})
        );
    }
}
