//! The gateway: signed alerts posted by concurrent senders, each answered `202` once its Run
//! exists.

use crate::{
    cluster::{self, Bench, Parts},
    floor, playbooks,
    stats::Summary,
};
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

const PLAYBOOK: &str = "alerts";
const SECRET: &str = "ids-webhook";

/// The gateway figures, with raw creates measured right before and after as their floor.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Gateway {
    pub senders: usize,
    pub alerts: usize,
    /// Runs created per second by `senders` clients straight to the API server, before and
    /// after the gateway's turn.
    pub raw_rate_before: f64,
    pub raw_rate_after: f64,
    /// The latency of those raw creates, both turns together.
    pub raw_latency: Summary,
    /// CPU time per alert of the gateway process, ms.
    pub gateway_cpu_ms: f64,
    /// CPU time of kube-apiserver per alert during the gateway's turn, ms (0: pid unknown).
    pub apiserver_cpu_ms: f64,
    /// CPU time of kube-apiserver per Run created in the raw turns, ms (0: pid unknown).
    pub apiserver_raw_cpu_ms: f64,
    /// Alerts answered `202` per second.
    pub rate: f64,
    /// From the POST to its `202`.
    pub latency: Summary,
    /// Answers other than `202`, by status.
    pub other_answers: BTreeMap<u16, usize>,
}

/// Runs a gateway-only operator for `ns` and posts `alerts` signed alerts from `senders`
/// concurrent senders; before and after, the same senders create as many Runs directly.
pub async fn measure(
    b: &Bench,
    ns: &str,
    senders: usize,
    alerts: usize,
) -> anyhow::Result<Gateway> {
    let client = &b.client;
    let api_cpu = || b.apiserver_cpu();
    cluster::create_namespace(client, ns).await?;
    let key = format!("bench-{}", hex::encode(rand::random::<[u8; 16]>()));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "stringData": {"secret": key},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    cluster::apply_playbook(client, ns, &playbooks::webhook(PLAYBOOK, SECRET)).await?;

    let operator = b.operator(ns, Parts::GatewayOnly).await?;
    let url = format!("http://127.0.0.1:{}/hooks/{ns}/{PLAYBOOK}", operator.port);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(senders.max(1))
        .build()?;
    warm_up(&http, &url, &key).await?;

    let api0 = api_cpu();
    let (mut raw, before) =
        floor::concurrent_creates(client, ns, "raw-before", senders, alerts).await?;
    let (api1, gw1) = (api_cpu(), operator.sample()?.cpu);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders.max(1) {
        let (http, url, key, next) = (http.clone(), url.clone(), key.clone(), next.clone());
        tasks.spawn(async move {
            let mut took = Vec::new();
            let mut other = BTreeMap::<u16, usize>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= alerts {
                    return anyhow::Ok((took, other));
                }
                let t = Instant::now();
                let status = post(&http, &url, &key, &alert(&format!("bench-{i}"))).await?;
                if status == 202 {
                    took.push(t.elapsed());
                } else {
                    *other.entry(status).or_default() += 1;
                }
            }
        });
    }
    let mut took = Vec::with_capacity(alerts);
    let mut other_answers = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (t, o) = done??;
        took.extend(t);
        for (status, n) in o {
            *other_answers.entry(status).or_default() += n;
        }
    }
    let wall = started.elapsed();
    let (api2, gw2) = (api_cpu(), operator.sample()?.cpu);
    let (raw_after, after) =
        floor::concurrent_creates(client, ns, "raw-after", senders, alerts).await?;
    let api3 = api_cpu();
    raw.extend(raw_after);
    let per = |cpu: f64, n: usize| cpu * 1000.0 / n.max(1) as f64;
    operator.stop();
    Ok(Gateway {
        senders,
        alerts,
        raw_rate_before: alerts as f64 / before.as_secs_f64(),
        raw_rate_after: alerts as f64 / after.as_secs_f64(),
        raw_latency: Summary::of(&raw),
        gateway_cpu_ms: per(gw2 - gw1, took.len()),
        apiserver_cpu_ms: per(api2 - api1, took.len()),
        apiserver_raw_cpu_ms: per((api1 - api0) + (api3 - api2), 2 * alerts),
        rate: took.len() as f64 / wall.as_secs_f64(),
        latency: Summary::of(&took),
        other_answers,
    })
}

/// Posts alerts until one is answered `202`: the gateway has the playbook and the Secret in
/// its caches.
async fn warm_up(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        let status = post(http, url, key, &alert(&format!("warm-{i}"))).await?;
        if status == 202 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway still answers {status} after 30s"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An IDS alert like `playbooks/alerts/ids-alert-jdoe.json`, with its own id.
fn alert(id: &str) -> Vec<u8> {
    let body = json!({
        "event_type": "alert", "alert_id": id, "user": "jdoe", "src_ip": "192.168.1.100", "host": "ws-17",
        "signature": "ET SCAN Suspicious inbound to mySQL port 3306", "severity": 2,
        "timestamp": "2026-01-15T10:32:00Z",
    });
    serde_json::to_vec(&body).expect("JSON")
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: &[u8]) -> anyhow::Result<u16> {
    let res = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(key, body))
        .body(body.to_vec())
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    Ok(status)
}

/// The `X-Hub-Signature-256` value of `body`.
fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Gateway {
    /// The raw create rate: the mean of the turns before and after the gateway's.
    pub fn raw_rate(&self) -> f64 {
        (self.raw_rate_before + self.raw_rate_after) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_github_style_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
