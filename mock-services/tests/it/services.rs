//! The stateful services: tickets, containment actions, blocks, purges, ingestion and the LLM.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vigil_mock_services::scenario::MALWARE_SHA256;

use crate::support::Mock;

#[tokio::test]
async fn incidents_are_created_updated_read_and_listed_like_the_table_api() {
    let mock = Mock::new();
    let snow = |method: Method, path: &str| {
        mock.request(method, path)
            .basic("vigil", "snow-dev-password")
    };

    let new = json!({"short_description": "Brute force on jdoe", "urgency": 1, "impact": 2});
    let created = snow(Method::POST, "/api/now/table/incident")
        .json(new)
        .send()
        .await;
    let created = created.expect(StatusCode::CREATED)["result"].clone();
    assert_eq!(created["number"], "INC0010001");
    assert_eq!(
        (created["urgency"].clone(), created["priority"].clone()),
        (json!("1"), json!("2"))
    );
    let sys_id = created["sys_id"].as_str().unwrap();
    assert_eq!(sys_id.len(), 32);

    let path = format!("/api/now/table/incident/{sys_id}");
    let patch = json!({"state": "6", "close_notes": "contained", "number": "INC9"});
    let patched = snow(Method::PATCH, &path).json(patch).send().await.ok()["result"].clone();
    assert_eq!(
        (patched["state"].clone(), patched["number"].clone()),
        (json!("6"), json!("INC0010001"))
    );
    assert!(patched["resolved_at"].is_string());

    let read = snow(Method::GET, &path).send().await.ok();
    assert_eq!(read["result"]["close_notes"], "contained");
    snow(Method::POST, "/api/now/table/incident")
        .json(json!({"short_description": "2"}))
        .send()
        .await;
    let listed = snow(
        Method::GET,
        "/api/now/table/incident?sysparm_query=state%3D6",
    )
    .send()
    .await
    .ok();
    assert_eq!(listed["result"].as_array().unwrap().len(), 1);

    let missing = snow(Method::GET, "/api/now/table/incident/nope")
        .send()
        .await;
    assert_eq!(
        missing.expect(StatusCode::NOT_FOUND)["error"]["message"],
        "No Record found"
    );
}

#[tokio::test]
async fn isolation_shows_on_the_host_until_undone() {
    let mock = Mock::new();
    let edr = |method: Method, path: &str| mock.request(method, path).bearer("edr-dev-token");

    let isolated = edr(Method::POST, "/edr/hosts/workstation-015/isolate")
        .send()
        .await
        .ok();
    assert_eq!(
        (isolated["isolated"].clone(), isolated["action_id"].clone()),
        (json!(true), json!("edr-act-000001"))
    );
    assert_eq!(
        edr(Method::GET, "/edr/hosts/workstation-015")
            .send()
            .await
            .ok()["isolated"],
        true
    );

    edr(Method::POST, "/edr/hosts/workstation-015/unisolate")
        .send()
        .await
        .ok();
    assert_eq!(
        edr(Method::GET, "/edr/hosts/workstation-015")
            .send()
            .await
            .ok()["isolated"],
        false
    );
    edr(Method::POST, "/edr/hosts/nowhere/isolate")
        .send()
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_scan_reports_threats_only_on_infected_hosts() {
    let mock = Mock::new();
    let hosts = json!({"hosts": ["srv-build-03", "laptop-mallory-01", "unmanaged-9"]});

    let scan = mock
        .post("/edr/scan")
        .bearer("edr-dev-token")
        .json(hosts)
        .send()
        .await
        .ok();
    let results = scan["results"].as_array().unwrap();
    assert_eq!(results[0]["infected"], true);
    assert_eq!(results[0]["threats"][0]["sha256"], MALWARE_SHA256);
    assert_eq!(
        (
            results[1]["infected"].clone(),
            results[1]["threats"].clone()
        ),
        (json!(false), json!([]))
    );
    assert_eq!(results[2]["managed"], false);
}

#[tokio::test]
async fn a_disabled_account_reads_as_disabled_in_the_directory() {
    let mock = Mock::new();
    let idp = |method: Method, path: &str| mock.request(method, path).bearer("idp-dev-token");

    let done = idp(Method::POST, "/idp/users/jdoe/disable")
        .send()
        .await
        .ok();
    assert_eq!(
        (done["ok"].clone(), done["action_id"].is_string()),
        (json!(true), true)
    );
    assert_eq!(
        idp(Method::GET, "/identity/users/jdoe").send().await.ok()["status"],
        "disabled"
    );
    assert_eq!(
        idp(Method::GET, "/identity/users/alice").send().await.ok()["status"],
        "active"
    );

    for action in ["revoke-sessions", "reset-credentials"] {
        idp(Method::POST, &format!("/idp/users/jdoe/{action}"))
            .send()
            .await
            .ok();
    }
    let transfer =
        idp(Method::POST, "/idp/users/jdoe/transfer-ownership").json(json!({"to": "carol"}));
    assert_eq!(transfer.send().await.ok()["to"], "carol");
    let unknown = idp(Method::POST, "/idp/users/ghost/disable").send().await;
    unknown.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blocking_twice_keeps_one_block() {
    let mock = Mock::new();
    let block = json!({"indicator": "192.168.1.100", "type": "ip", "reason": "brute force"});

    let fw = || mock.post("/firewall/blocks").bearer("fw-dev-token");
    fw().json(block.clone())
        .send()
        .await
        .expect(StatusCode::CREATED);
    let again = fw().json(block).send().await.ok();
    assert_eq!(again["created"], false);
    let bad = fw()
        .json(json!({"indicator": "x", "type": "mac"}))
        .send()
        .await;
    bad.expect(StatusCode::BAD_REQUEST);

    let blocks = mock
        .get("/firewall/blocks")
        .bearer("fw-dev-token")
        .send()
        .await
        .ok();
    assert_eq!(blocks["total"], 1);
}

#[tokio::test]
async fn purging_removes_each_delivered_copy_once() {
    let mock = Mock::new();
    let purge = |body: Value| {
        mock.post("/mail/purge")
            .bearer("mail-dev-token")
            .json(body)
            .send()
    };

    assert_eq!(
        purge(json!({"message_id": "msg-phish-001"})).await.ok()["purged"],
        3
    );
    let by_sender = json!({"sender": "it-support@login-micros0ft.example"});
    assert_eq!(purge(by_sender.clone()).await.ok()["purged"], 1);
    assert_eq!(purge(by_sender).await.ok()["purged"], 0);
    purge(json!({})).await.expect(StatusCode::BAD_REQUEST);

    let email = mock
        .get("/mail/messages/msg-phish-001")
        .bearer("mail-dev-token")
        .send()
        .await
        .ok();
    assert_eq!(email["purged"], true);
}

#[tokio::test]
async fn ingested_events_are_accepted_and_read_back() {
    let mock = Mock::new();
    let siem = |method: Method| {
        mock.request(method, "/siem/events")
            .bearer("siem-dev-token")
    };

    let one = siem(Method::POST)
        .json(json!({"run": "ir-1", "step": "score"}))
        .send()
        .await;
    assert_eq!(one.expect(StatusCode::ACCEPTED)["accepted"], 1);
    let two = siem(Method::POST)
        .json(json!([{"a": 1}, {"b": 2}]))
        .send()
        .await;
    assert_eq!(two.expect(StatusCode::ACCEPTED)["accepted"], 2);

    let stored = siem(Method::GET).send().await.ok();
    assert_eq!(stored["total"], 3);
    assert_eq!(stored["events"][0]["run"], "ir-1");
}

async fn complete(mock: &Mock, content: &str) -> Value {
    let request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a SOC analyst."},
            {"role": "user", "content": content},
        ],
        "response_format": {"type": "json_object"},
    });
    let response = mock
        .post("/v1/chat/completions")
        .bearer("sk-dev-key")
        .json(request)
        .send()
        .await;
    let body = response.ok();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_summary_takes_severity_and_iocs_from_the_incident() {
    let mock = Mock::new();
    let incident = json!({
        "username": "jdoe", "ip": "192.168.1.100", "hostname": "workstation-015",
        "severity": "high", "score": 70, "failed_logins": 7,
    });

    let summary = complete(&mock, &incident.to_string()).await;
    assert_eq!(summary["severity"], "high");
    assert_eq!(summary["confidence"], "high");
    assert_eq!(summary["iocs"], json!(["192.168.1.100"]));
    assert!(summary["summary"].as_str().unwrap().contains("jdoe"));
    assert!(
        !summary["recommended_actions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn failed_enrichments_lower_the_confidence() {
    let mock = Mock::new();
    let one_failed = json!({"severity": "critical", "failed_steps": ["threat-intel"]});
    let two_failed = json!({"severity": "critical", "failed_steps": ["threat-intel", "edr"]});

    assert_eq!(
        complete(&mock, &one_failed.to_string()).await["confidence"],
        "medium"
    );
    assert_eq!(
        complete(&mock, &two_failed.to_string()).await["confidence"],
        "low"
    );
    let prose = "Severity: medium. The EDR lookup failed and compliance data is missing.";
    let from_prose = complete(&mock, prose).await;
    assert_eq!(
        (
            from_prose["severity"].clone(),
            from_prose["confidence"].clone()
        ),
        (json!("medium"), json!("low"))
    );
}

#[tokio::test]
async fn a_completion_without_a_model_is_refused_like_openai() {
    let mock = Mock::new();

    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let refused = mock
        .post("/v1/chat/completions")
        .bearer("sk-dev-key")
        .json(body)
        .send()
        .await;
    assert_eq!(
        refused.expect(StatusCode::BAD_REQUEST)["error"]["param"],
        "model"
    );
}

#[tokio::test]
async fn reset_forgets_every_change() {
    let mock = Mock::new();
    mock.post("/edr/hosts/ws-bob-07/isolate")
        .bearer("edr-dev-token")
        .send()
        .await
        .ok();

    mock.post("/_reset")
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);

    let host = mock
        .get("/edr/hosts/ws-bob-07")
        .bearer("edr-dev-token")
        .send()
        .await
        .ok();
    assert_eq!(host["isolated"], false);
    let calls = mock.get("/_calls").send().await.ok();
    assert_eq!(
        calls.as_array().unwrap().len(),
        1,
        "only the read after the reset"
    );
}

#[tokio::test]
async fn unknown_routes_answer_a_json_404() {
    let mock = Mock::new();

    let body = mock.get("/nope").send().await.expect(StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}
