//! The scenario users score as documented when the playbook's risk rules are applied to what
//! the services answer.

use serde_json::{Value, json};

use crate::support::Mock;

/// What the incident-response playbook gathers about one alert.
struct Enrichment {
    siem: Value,
    ip: Value,
    identity: Value,
    scan: Value,
    compliance: Value,
}

impl Enrichment {
    async fn gather(mock: &Mock, username: &str, ip: &str) -> Self {
        let siem = mock.post("/siem/search").bearer("siem-dev-token");
        let siem = siem
            .json(json!({"user": username, "ip": ip}))
            .send()
            .await
            .ok();
        let ip = mock
            .get(&format!("/ti/ip/{ip}"))
            .header("x-api-key", "ti-dev-key")
            .send()
            .await
            .ok();
        let identity = mock
            .get(&format!("/identity/users/{username}"))
            .bearer("idp-dev-token");
        let identity = identity.send().await.ok();
        let scan = mock.post("/edr/scan").bearer("edr-dev-token");
        let scan = scan
            .json(json!({"hosts": identity["devices"]}))
            .send()
            .await
            .ok();
        let compliance = mock
            .get(&format!("/compliance/users/{username}"))
            .bearer("grc-dev-token");
        let compliance = compliance.send().await.ok();
        Self {
            siem,
            ip,
            identity,
            scan,
            compliance,
        }
    }

    /// The playbook's additive rules, as a list of (reason, points).
    fn breakdown(&self) -> Vec<(&'static str, u32)> {
        let results = self.scan["results"].as_array().unwrap();
        let ip_score = self.ip["score"].as_u64().unwrap();
        let suspicious = ["request_access", "add_user", "enable_ssh"];
        let department = self.identity["department"].as_str().unwrap();

        let rules = [
            (
                "failed logins >= 5",
                self.siem["failed_logins"].as_u64().unwrap() >= 5,
                20,
            ),
            (
                "infected",
                results.iter().any(|r| r["infected"] == true),
                40,
            ),
            (
                "threats",
                results
                    .iter()
                    .any(|r| !r["threats"].as_array().unwrap().is_empty()),
                10,
            ),
            ("ip risk >= 80", ip_score >= 80, 30),
            ("ip risk >= 50", (50..80).contains(&ip_score), 15),
            ("malicious ip", self.ip["malicious"] == true, 10),
            (
                "privileged department",
                ["finance", "admin", "security"].contains(&department),
                10,
            ),
            (
                "permissions not ok",
                self.compliance["permissions_ok"] == false,
                20,
            ),
            (
                "compliance risks",
                !self.compliance["risks"].as_array().unwrap().is_empty(),
                10,
            ),
            (
                "suspicious audit action",
                self.compliance["recent_changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| suspicious.contains(&c["action"].as_str().unwrap())),
                10,
            ),
        ];
        rules
            .into_iter()
            .filter(|(_, hit, _)| *hit)
            .map(|(why, _, points)| (why, points))
            .collect()
    }

    fn score(&self) -> u32 {
        self.breakdown().iter().map(|(_, points)| points).sum()
    }
}

fn severity(score: u32) -> &'static str {
    match score {
        100.. => "critical",
        70.. => "high",
        40.. => "medium",
        _ => "low",
    }
}

#[tokio::test]
async fn each_scenario_user_scores_their_documented_severity() {
    let mock = Mock::new();
    let expected = [
        ("alice", "10.20.0.15", 0, "low"),
        ("bob", "203.0.113.50", 45, "medium"),
        ("jdoe", "192.168.1.100", 70, "high"),
        ("mallory", "198.51.100.23", 160, "critical"),
        ("carol", "10.20.0.40", 10, "low"),
        ("dave", "10.20.0.41", 0, "low"),
    ];

    for (user, ip, score, level) in expected {
        let enrichment = Enrichment::gather(&mock, user, ip).await;
        let breakdown = enrichment.breakdown();
        assert_eq!(enrichment.score(), score, "{user}: {breakdown:?}");
        assert_eq!(severity(score), level);
    }
}

#[tokio::test]
async fn jdoe_breakdown_matches_the_readme() {
    let mock = Mock::new();

    let jdoe = Enrichment::gather(&mock, "jdoe", "192.168.1.100").await;
    let reasons: Vec<_> = jdoe.breakdown().into_iter().map(|(why, _)| why).collect();
    assert_eq!(
        reasons,
        [
            "failed logins >= 5",
            "ip risk >= 80",
            "malicious ip",
            "privileged department"
        ]
    );
}

#[tokio::test]
async fn the_demo_alert_window_finds_jdoes_failed_logins_on_workstation_015() {
    let mock = Mock::new();
    let search = json!({
        "ip": "192.168.1.100",
        "host": "workstation-015",
        "from": "2024-01-15T13:30:00Z",
        "to": "2024-01-15T14:30:00Z",
    });

    let body = mock
        .post("/siem/search")
        .bearer("siem-dev-token")
        .json(search)
        .send()
        .await
        .ok();
    assert_eq!(body["failed_logins"], 7);
    assert_eq!(body["total"], 8);
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user"] == "jdoe")
    );
}

#[tokio::test]
async fn a_window_outside_the_scenario_finds_nothing() {
    let mock = Mock::new();
    let search = json!({"user": "jdoe", "from": "2024-02-01T00:00:00Z"});

    let body = mock
        .post("/siem/search")
        .bearer("siem-dev-token")
        .json(search)
        .send()
        .await
        .ok();
    assert_eq!(body["total"], 0);
}

#[tokio::test]
async fn unknown_indicators_are_clean_and_known_phishing_ones_are_not() {
    let mock = Mock::new();
    let ti = |path: &str| mock.get(path).header("x-api-key", "ti-dev-key").send();

    let unknown = ti("/ti/ip/8.8.8.8").await.ok();
    assert_eq!(
        (unknown["score"].clone(), unknown["malicious"].clone()),
        (json!(0), json!(false))
    );
    let domain = ti("/ti/domain/login-micros0ft.example").await.ok();
    assert_eq!(domain["malicious"], true);
    let subdomain = ti("/ti/domain/sso.login-micros0ft.example").await.ok();
    assert_eq!(subdomain["malicious"], true);
    let url = ti("/ti/url?u=https%3A%2F%2Flogin-micros0ft.example%2Fowa%3Fuser%3Djdoe")
        .await
        .ok();
    assert_eq!(
        (url["type"].clone(), url["malicious"].clone()),
        (json!("url"), json!(true))
    );
    let benign_url = ti("/ti/url?u=https://intranet.corp.example/marketing/q1-review")
        .await
        .ok();
    assert_eq!(benign_url["malicious"], false);
}

#[tokio::test]
async fn the_phishing_email_links_to_malicious_indicators() {
    let mock = Mock::new();
    let ti = |path: String| mock.get(&path).header("x-api-key", "ti-dev-key").send();

    let email = mock
        .get("/mail/messages/msg-phish-001")
        .bearer("mail-dev-token")
        .send()
        .await
        .ok();
    let sha256 = email["attachments"][0]["sha256"].as_str().unwrap();
    let hash = ti(format!("/ti/hash/{sha256}")).await.ok();
    assert_eq!(hash["malicious"], true);
    assert_eq!(email["sender"], "it-support@login-micros0ft.example");

    let benign = mock
        .get("/mail/messages/msg-benign-002")
        .bearer("mail-dev-token")
        .send()
        .await
        .ok();
    let sha256 = benign["attachments"][0]["sha256"].as_str().unwrap();
    assert_eq!(
        ti(format!("/ti/hash/{sha256}")).await.ok()["malicious"],
        false
    );
}

#[tokio::test]
async fn the_malware_hash_is_seen_on_two_of_mallorys_hosts() {
    let mock = Mock::new();
    let sha256 = vigil_mock_services::scenario::MALWARE_SHA256;

    let path = format!("/edr/hashes/{sha256}/hosts");
    let body = mock.get(&path).bearer("edr-dev-token").send().await.ok();
    assert_eq!(body["hosts"], json!(["srv-build-03", "ws-mallory-02"]));
}
