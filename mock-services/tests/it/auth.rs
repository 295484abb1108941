//! Every service refuses requests without its credential, in the service's own style.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::Mock;

/// One guarded route per service, with a good request for it.
const GUARDED: &[(&str, &str)] = &[
    ("POST", "/siem/search"),
    ("GET", "/siem/events"),
    ("GET", "/ti/ip/192.168.1.100"),
    ("GET", "/identity/users/jdoe"),
    ("POST", "/idp/users/jdoe/disable"),
    ("POST", "/edr/scan"),
    ("GET", "/edr/hashes/abc/hosts"),
    ("GET", "/compliance/users/jdoe"),
    ("GET", "/firewall/blocks"),
    ("GET", "/mail/messages/msg-phish-001"),
    ("POST", "/mail/purge"),
];

#[tokio::test]
async fn services_refuse_requests_without_credentials() {
    let mock = Mock::new();

    for (method, path) in GUARDED {
        let method: Method = method.parse().unwrap();
        let response = mock.request(method, path).json(json!({})).send().await;
        let body = response.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "unauthorized", "{path}");
    }
}

#[tokio::test]
async fn services_refuse_a_wrong_credential() {
    let mock = Mock::new();

    for (method, path) in GUARDED {
        let method: Method = method.parse().unwrap();
        let response = mock
            .request(method, path)
            .bearer("wrong")
            .header("x-api-key", "wrong");
        let body = response
            .json(json!({}))
            .send()
            .await
            .expect(StatusCode::UNAUTHORIZED);
        assert_eq!(
            body["detail"],
            if path.starts_with("/ti/") {
                "invalid API key"
            } else {
                "invalid credentials"
            }
        );
    }
}

#[tokio::test]
async fn one_service_token_does_not_open_another() {
    let mock = Mock::new();

    let edr_with_siem_token = mock.post("/edr/scan").bearer("siem-dev-token");
    edr_with_siem_token
        .json(json!({"hosts": []}))
        .send()
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let ti_with_bearer = mock
        .get("/ti/ip/192.168.1.100")
        .bearer("ti-dev-key")
        .send()
        .await;
    assert_eq!(ti_with_bearer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn credentials_from_the_environment_replace_the_dev_defaults() {
    let (config, defaulted) = vigil_mock_services::Config::from_lookup(|name| {
        (name == "MOCK_SIEM_TOKEN").then(|| "from-secret".to_owned())
    });
    let mock = Mock::with(config);
    assert!(!defaulted.contains(&"MOCK_SIEM_TOKEN"));

    mock.post("/siem/search")
        .bearer("siem-dev-token")
        .send()
        .await
        .expect(StatusCode::UNAUTHORIZED);
    mock.post("/siem/search")
        .bearer("from-secret")
        .send()
        .await
        .ok();
}

#[tokio::test]
async fn servicenow_wants_basic_auth_and_answers_in_its_own_error_shape() {
    let mock = Mock::new();

    let refused = mock.get("/api/now/table/incident").send().await;
    assert!(
        refused.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let body = refused.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], "failure");
    assert_eq!(body["error"]["message"], "User Not Authenticated");

    let wrong = mock
        .get("/api/now/table/incident")
        .basic("vigil", "nope")
        .send()
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    mock.get("/api/now/table/incident")
        .basic("vigil", "snow-dev-password")
        .send()
        .await
        .ok();
}

#[tokio::test]
async fn slack_refuses_with_http_200_and_ok_false_like_slack() {
    let mock = Mock::new();
    let message = json!({"channel": "#security", "text": "hi"});

    let missing = mock
        .post("/slack/api/chat.postMessage")
        .json(message.clone())
        .send()
        .await;
    assert_eq!(missing.ok(), json!({"ok": false, "error": "not_authed"}));

    let wrong = mock
        .post("/slack/api/chat.postMessage")
        .bearer("xoxb-wrong")
        .json(message);
    assert_eq!(
        wrong.send().await.ok(),
        json!({"ok": false, "error": "invalid_auth"})
    );
}

#[tokio::test]
async fn openai_refuses_a_wrong_key_in_openai_error_shape() {
    let mock = Mock::new();

    let body = mock
        .post("/v1/chat/completions")
        .bearer("sk-wrong")
        .json(json!({}))
        .send()
        .await;
    let body = body.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn test_support_routes_need_no_credentials() {
    let mock = Mock::new();

    mock.get("/_healthz").send().await.ok();
    mock.get("/_calls").send().await.ok();
    mock.get("/_faults").send().await.ok();
}
