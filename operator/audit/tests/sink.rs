//! The sink against a local HTTP server that fails, recovers and records what it received.

use axum::{Json, Router, extract::State, http::{HeaderMap, StatusCode}, routing::post};
use std::{
    sync::{Arc, Mutex, atomic::{AtomicBool, Ordering}},
    time::Duration,
};
use vigil_audit::{AuditHook, Kind, Metrics, Record, Sink, SinkConfig};

/// A SIEM stand-in: answers 503 while `down`, else keeps every batch it is sent.
#[derive(Clone, Default)]
struct Siem {
    down: Arc<AtomicBool>,
    batches: Arc<Mutex<Vec<Vec<Record>>>>,
    refused: Arc<Mutex<usize>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl Siem {
    async fn serve(&self) -> String {
        async fn ingest(State(siem): State<Siem>, headers: HeaderMap, Json(batch): Json<Vec<Record>>) -> StatusCode {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
            siem.tokens.lock().unwrap().push(token.to_string());
            if siem.down.load(Ordering::SeqCst) {
                *siem.refused.lock().unwrap() += 1;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            siem.batches.lock().unwrap().push(batch);
            StatusCode::ACCEPTED
        }
        let app = Router::new().route("/siem/events", post(ingest)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/siem/events")
    }

    fn seqs(&self) -> Vec<u64> {
        self.batches.lock().unwrap().iter().flatten().map(|r| r.seq).collect()
    }
}

fn config(url: String) -> SinkConfig {
    let mut config = SinkConfig::new(url);
    config.max_batch = 7;
    config.flush_interval = Duration::from_millis(20);
    config.backoff_initial = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(50);
    config
}

fn record(i: usize) -> Record {
    Record::new(Kind::StepStarted, "soc", format!("record {i}"))
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn every_buffered_record_arrives_exactly_once_after_the_endpoint_recovers() {
    let siem = Siem::default();
    siem.down.store(true, Ordering::SeqCst);
    let sink = Sink::new(config(siem.serve().await), Metrics::default());
    sink.spawn_shipper();

    for i in 0..50 {
        sink.emit(record(i));
    }
    eventually("a few refused attempts", || *siem.refused.lock().unwrap() >= 3).await;
    assert_eq!(sink.buffered(), 50, "nothing leaves the buffer while the endpoint is down");
    assert!(siem.seqs().is_empty());

    siem.down.store(false, Ordering::SeqCst);
    assert!(sink.flush(Duration::from_secs(5)).await, "the buffer drains");
    assert_eq!(siem.seqs(), (1..=50).collect::<Vec<_>>());
    assert_eq!(sink.metrics().shipped.get(), 50);
    assert_eq!(sink.metrics().buffered.get(), 0);
    assert_eq!(sink.metrics().records(Kind::StepStarted), 50);
}

#[tokio::test]
async fn batches_never_exceed_the_maximum_size() {
    let siem = Siem::default();
    siem.down.store(true, Ordering::SeqCst);
    let sink = Sink::new(config(siem.serve().await), Metrics::default());
    sink.spawn_shipper();
    for i in 0..40 {
        sink.emit(record(i));
    }
    siem.down.store(false, Ordering::SeqCst);
    assert!(sink.flush(Duration::from_secs(5)).await);

    let sizes: Vec<usize> = siem.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|&n| (1..=7).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 40);
    assert!(sizes.len() >= 6, "{sizes:?}");
}

#[tokio::test]
async fn a_lone_record_is_sent_after_the_flush_interval() {
    let siem = Siem::default();
    let sink = Sink::new(config(siem.serve().await), Metrics::default());
    sink.spawn_shipper();
    sink.emit(record(0));
    eventually("the single record", || siem.seqs() == [1]).await;
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts_the_newest_records() {
    let siem = Siem::default();
    let mut config = config(siem.serve().await);
    config.capacity = 10;
    let sink = Sink::new(config, Metrics::default());

    for i in 0..25 {
        sink.emit(record(i));
    }
    assert_eq!(sink.buffered(), 10);
    assert_eq!(sink.metrics().dropped.get(), 15);
    assert_eq!(sink.metrics().records(Kind::StepStarted), 25);

    sink.spawn_shipper();
    assert!(sink.flush(Duration::from_secs(5)).await);
    assert_eq!(siem.seqs(), (1..=10).collect::<Vec<_>>(), "the buffered ones all arrive");

    sink.emit(record(99));
    assert!(sink.flush(Duration::from_secs(5)).await);
    assert_eq!(siem.seqs().last(), Some(&26), "the gap in seq shows the drops");
}

#[tokio::test]
async fn the_bearer_token_is_read_from_the_token_file() {
    let siem = Siem::default();
    let dir = std::env::temp_dir().join(format!("vigil-audit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "siem-dev-token\n").unwrap();
    let mut config = config(siem.serve().await);
    config.token_file = Some(file);
    let sink = Sink::new(config, Metrics::default());
    sink.spawn_shipper();
    sink.emit(record(0));
    assert!(sink.flush(Duration::from_secs(5)).await);
    assert_eq!(siem.tokens.lock().unwrap().as_slice(), ["Bearer siem-dev-token"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn metrics_are_registered_under_their_names() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let sink = Sink::new(SinkConfig::new("http://127.0.0.1:9"), metrics);
    sink.emit(record(0));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for name in [
        "vigil_audit_records_total{kind=\"step.started\"} 1",
        "vigil_audit_shipped_total 0",
        "vigil_audit_dropped_total 0",
        "vigil_audit_buffer_records 1",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
}
