//! `/_calls` records every call in order without credentials; `/_faults` injects failures.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::Mock;

#[tokio::test]
async fn calls_are_recorded_in_order_with_body_status_and_service() {
    let mock = Mock::new();

    mock.post("/siem/search")
        .bearer("siem-dev-token")
        .json(json!({"user": "jdoe"}))
        .send()
        .await
        .ok();
    mock.get("/ti/ip/192.168.1.100?verbose=1")
        .header("x-api-key", "ti-dev-key")
        .send()
        .await
        .ok();
    mock.get("/identity/users/nobody")
        .bearer("idp-dev-token")
        .send()
        .await;

    let calls = mock.get("/_calls").send().await.ok();
    let summary: Vec<_> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["seq"].clone(), c["service"].clone(), c["status"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!(1), json!("siem"), json!(200)),
            (json!(2), json!("ti"), json!(200)),
            (json!(3), json!("identity"), json!(404)),
        ]
    );
    assert_eq!(calls[0]["body"], json!({"user": "jdoe"}));
    assert_eq!(calls[1]["query"], json!({"verbose": "1"}));
    assert_eq!(calls[1]["method"], "GET");
}

#[tokio::test]
async fn recorded_calls_never_contain_credentials() {
    let mock = Mock::new();

    mock.post("/edr/scan")
        .bearer("edr-dev-token")
        .json(json!({"hosts": []}))
        .send()
        .await
        .ok();
    mock.get("/ti/ip/10.0.0.1")
        .header("x-api-key", "ti-dev-key")
        .send()
        .await
        .ok();
    mock.get("/api/now/table/incident")
        .basic("vigil", "snow-dev-password")
        .send()
        .await
        .ok();

    let calls = mock.get("/_calls").send().await.ok();
    let text = calls.to_string();
    for secret in [
        "edr-dev-token",
        "ti-dev-key",
        "snow-dev-password",
        "dmlnaWw6c25vdy1kZXYtcGFzc3dvcmQ=",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into /_calls");
    }
    assert_eq!(calls[0]["headers"]["authorization"], "[redacted]");
    assert_eq!(calls[1]["headers"]["x-api-key"], "[redacted]");
}

#[tokio::test]
async fn calls_can_be_filtered_and_cleared() {
    let mock = Mock::new();
    mock.post("/edr/hosts/ws-bob-07/isolate")
        .bearer("edr-dev-token")
        .send()
        .await
        .ok();
    mock.get("/edr/hosts/ws-bob-07")
        .bearer("edr-dev-token")
        .send()
        .await
        .ok();
    mock.get("/compliance/users/bob")
        .bearer("grc-dev-token")
        .send()
        .await
        .ok();

    let edr = mock.get("/_calls?service=edr").send().await.ok();
    assert_eq!(edr.as_array().unwrap().len(), 2);
    let isolations = mock
        .get("/_calls?service=edr&path_prefix=/edr/hosts/ws-bob-07/iso")
        .send()
        .await;
    assert_eq!(isolations.ok().as_array().unwrap().len(), 1);

    mock.request(Method::DELETE, "/_calls")
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(mock.get("/_calls").send().await.ok(), json!([]));
}

#[tokio::test]
async fn fail_first_fails_exactly_that_many_calls_and_records_them() {
    let mock = Mock::new();
    let fault = json!({"path_prefix": "/ti/", "fail_first": 2, "status": 503});
    let rule = mock
        .post("/_faults")
        .json(fault)
        .send()
        .await
        .expect(StatusCode::CREATED);

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = mock
            .get("/ti/ip/192.168.1.100")
            .header("x-api-key", "ti-dev-key")
            .send()
            .await;
        statuses.push(response.status.as_u16());
    }
    let other = mock
        .get("/compliance/users/jdoe")
        .bearer("grc-dev-token")
        .send()
        .await;

    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(other.status, StatusCode::OK);
    let calls = mock.get("/_calls?service=ti").send().await.ok();
    let recorded: Vec<_> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].clone())
        .collect();
    assert_eq!(recorded, [json!(503), json!(503), json!(200)]);
    assert_eq!(calls[0]["fault"], rule["id"]);
    let faults = mock.get("/_faults").send().await.ok();
    assert_eq!(
        (
            faults[0]["remaining"].clone(),
            faults[0]["injected"].clone()
        ),
        (json!(0), json!(2))
    );
}

#[tokio::test]
async fn faults_can_be_limited_to_one_method() {
    let mock = Mock::new();
    mock.post("/_faults")
        .json(json!({"path_prefix": "/edr/", "method": "post"}))
        .send()
        .await;

    let get = mock
        .get("/edr/hosts/ws-bob-07")
        .bearer("edr-dev-token")
        .send()
        .await;
    let post = mock
        .post("/edr/hosts/ws-bob-07/isolate")
        .bearer("edr-dev-token")
        .send()
        .await;
    assert_eq!(
        (get.status, post.status),
        (StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn error_rate_gives_the_same_sequence_for_the_same_seed() {
    async fn sequence() -> Vec<u16> {
        let mock = Mock::new();
        let fault = json!({"path_prefix": "/siem/", "error_rate": 0.5, "status": 500});
        mock.post("/_faults")
            .json(fault)
            .send()
            .await
            .expect(StatusCode::CREATED);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let response = mock
                .get("/siem/events")
                .bearer("siem-dev-token")
                .send()
                .await;
            statuses.push(response.status.as_u16());
        }
        statuses
    }

    let first = sequence().await;
    assert_eq!(first, sequence().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let mock = Mock::new();
    mock.post("/_faults")
        .json(json!({"path_prefix": "/ti/", "latency_ms": 120}))
        .send()
        .await;

    let started = Instant::now();
    let response = mock
        .get("/ti/ip/10.0.0.1")
        .header("x-api-key", "ti-dev-key")
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(started.elapsed().as_millis() >= 120);
}

#[tokio::test]
async fn invalid_faults_are_refused_and_faults_can_be_cleared() {
    let mock = Mock::new();

    let bad = mock
        .post("/_faults")
        .json(json!({"path_prefix": "ti", "error_rate": 2.0}))
        .send()
        .await;
    assert_eq!(
        bad.expect(StatusCode::BAD_REQUEST)["error"],
        "invalid_fault"
    );
    mock.post("/_faults")
        .json(json!({"path_prefix": "/ti/"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    mock.request(Method::DELETE, "/_faults")
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);

    assert_eq!(mock.get("/_faults").send().await.ok(), Value::Array(vec![]));
    mock.get("/ti/ip/10.0.0.1")
        .header("x-api-key", "ti-dev-key")
        .send()
        .await
        .ok();
}
