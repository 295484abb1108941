//! Property tests: no body, JSON value, header set or query string makes the gateway panic or
//! answer a 5xx.

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use prometheus_client::registry::Registry;
use proptest::{collection::vec, prelude::*};
use serde_json::{Value, json};
use std::{collections::BTreeMap, sync::Arc};
use tower::ServiceExt;
use vigil_api::{
    Playbook,
    playbook::{InputSpec, WebhookAuth, WebhookTrigger},
};
use vigil_gateway::{
    Gateway, GatewayConfig, MemoryBackend, Reason,
    auth::{self, Method, Secrets},
    body, delivery_id,
    mapping::{self, Alert, CompiledTrigger},
};

const KEYS: [&str; 6] = ["event_type", "user", "src_ip", "host", "alert_id", "x"];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![Just("alert".to_string()), ".{0,12}"].prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        let key = prop_oneof![
            proptest::sample::select(KEYS.to_vec()).prop_map(String::from),
            "[a-z]{1,6}"
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_headers() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        proptest::sample::select(vec![
            "content-type",
            "content-length",
            "authorization",
            "x-hub-signature-256",
            "x-signature",
            "x-signature-timestamp",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "x-github-delivery",
            "x-request-id",
            "traceparent",
        ])
        .prop_map(String::from),
        "[a-z][a-z0-9-]{0,12}",
    ];
    let value = vec(any::<u8>(), 0..80);
    vec((name, value), 0..10).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value))
            {
                map.append(n, v);
            }
        }
        map
    })
}

fn declared() -> BTreeMap<String, InputSpec> {
    serde_json::from_value(json!({
        "username": {"type": "string", "required": true},
        "ip": {"type": "string", "required": true},
        "hostname": {"type": "string"},
    }))
    .unwrap()
}

fn trigger() -> CompiledTrigger {
    let t: WebhookTrigger = serde_json::from_value(json!({
        "auth": {"none": {}},
        "filter": "has(body.event_type) && body.event_type == 'alert'",
        "inputs": {"username": "body.user", "ip": "body.src_ip", "hostname": "headers['x-host']"},
        "dedupe": {"key": "body.alert_id", "window": "10m"},
    }))
    .unwrap();
    CompiledTrigger::compile(&t).unwrap()
}

fn auth_modes() -> Vec<WebhookAuth> {
    let secret = json!({"secretRef": {"name": "s", "key": "k"}});
    [
        json!({"hmacSha256": secret}),
        json!({"timestampedHmac": secret}),
        json!({"bearer": secret}),
        json!({"none": {}}),
        json!({}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect()
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_body_checks(bytes in vec(any::<u8>(), 0..2048)) {
        match body::parse(&bytes, 64) {
            Ok(_) => {}
            Err(r) => prop_assert!(matches!(
                r.reason,
                Reason::InvalidUtf8 | Reason::TooDeep | Reason::MalformedJson
            )),
        }
        let _ = body::nesting_depth(&bytes, 64);
    }

    #[test]
    fn random_json_never_panics_the_mapper(body in arb_json(), headers in arb_headers(),
                                           query in ".{0,64}") {
        let alert = Alert {
            body,
            headers: mapping::headers_value(&headers),
            query: mapping::query_value(Some(&query)),
        };
        if let Err(r) = trigger().map(&declared(), &alert) {
            prop_assert_eq!(r.status().as_u16(), 422);
        }
    }

    #[test]
    fn random_headers_never_panic_auth_or_provenance(headers in arb_headers(),
                                                     body in vec(any::<u8>(), 0..256),
                                                     now in any::<i64>()) {
        let secrets = Secrets::parse(b"one\ntwo");
        for mode in auth_modes() {
            let _ = auth::verify(Method::of(&mode), Some(&secrets), &headers, &body, now);
        }
        let _ = body::check_content_type(&headers);
        let _ = body::check_declared_length(&headers, 1 << 20);
        let _ = delivery_id(&headers);
        let _ = vigil_gateway::naming::traceparent(
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
        );
    }
}

fn open_playbook() -> Playbook {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Playbook",
        "metadata": {"name": "open", "namespace": "soc"},
        "spec": {
            "inputs": {"username": {"type": "string", "required": true}},
            "triggers": {"webhook": {
                "auth": {"none": {}},
                "filter": "has(body.event_type) && body.event_type == 'alert'",
                "inputs": {"username": "body.user"},
            }},
            "steps": [{"name": "s", "image": "busybox"}],
        },
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_request_makes_the_router_answer_5xx(
        json_body in arb_json(),
        raw in vec(any::<u8>(), 0..512),
        use_raw in any::<bool>(),
        headers in arb_headers(),
        path in prop_oneof![
            Just("/hooks/soc/open".to_string()),
            "/hooks/[a-zA-Z%0-9.-]{0,10}/[a-z%0-9]{0,10}",
        ],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let backend = Arc::new(MemoryBackend::new());
            backend.put_playbook(open_playbook());
            let config = GatewayConfig::default();
            let gateway = Gateway::with_backend(backend.clone(), config, &mut Registry::default());

            let bytes = if use_raw { raw } else { serde_json::to_vec(&json_body).unwrap() };
            let Ok(mut request) = Request::post(&path).body(Body::from(bytes)) else {
                return Ok(());
            };
            // Valid-looking JSON requests half the time, whatever the random headers say.
            *request.headers_mut() = headers;
            if !use_raw {
                let json = HeaderValue::from_static("application/json");
                request.headers_mut().insert("content-type", json);
                request.headers_mut().remove("content-length");
            }
            let Ok(response) = gateway.router().oneshot(request).await;
            let status = response.status();
            prop_assert!(!status.is_server_error(), "answered {}", status);
            let created = backend.runs().len();
            prop_assert_eq!(created, usize::from(status.as_u16() == 202));
            Ok(())
        })?;
    }
}
