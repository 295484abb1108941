//! The sink: a bounded in-memory buffer of records and a background task that ships them in
//! batches to an HTTP endpoint, retrying with backoff while keeping them buffered.
//!
//! # Guarantees
//!
//! - A record taken into the buffer stays there until a POST carrying it was answered 2xx, so
//!   nothing in the buffer is lost while the endpoint is down; records are shipped in `seq`
//!   order, each batch a JSON array.
//! - A record that finds the buffer full is dropped (the newest goes, the buffered ones stay),
//!   counted in `vigil_audit_dropped_total` and logged as a warning. Its `seq` is still used,
//!   so the receiver sees the gap.
//!
//! # Caveats
//!
//! The buffer lives in memory: records not yet shipped when the process ends are lost
//! (shutdown flushes for a bounded time first). A batch whose answer was lost in transit is
//! sent again, so the receiver may see a record twice; `seq` identifies it.

use crate::{AuditHook, record::{Kind, Record}};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use rand::Rng;
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

/// Where and how records are shipped.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// The endpoint records are POSTed to.
    pub url: String,
    /// A file holding the bearer token, read before every POST (so a rotated Secret is picked
    /// up). No `Authorization` header without one.
    pub token_file: Option<PathBuf>,
    /// Records kept while the endpoint is slow or down. Default 10 000.
    pub capacity: usize,
    /// The most records in one POST. Default 500.
    pub max_batch: usize,
    /// How long the first record of a batch waits for more before it is sent. Default 1s.
    pub flush_interval: Duration,
    /// The first retry delay; doubled per failure up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The longest one POST may take.
    pub request_timeout: Duration,
}

impl SinkConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token_file: None,
            capacity: 10_000,
            max_batch: 500,
            flush_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The `vigil_audit_*` metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    records: Family<KindLabels, Counter>,
    pub shipped: Counter,
    pub dropped: Counter,
    pub buffered: Gauge,
}

impl Metrics {
    /// Registers `vigil_audit_records_total{kind}`, `vigil_audit_shipped_total`,
    /// `vigil_audit_dropped_total` and `vigil_audit_buffer_records`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("vigil_audit");
        r.register("records", "Audit records emitted, by kind", m.records.clone());
        r.register("shipped", "Audit records the endpoint accepted", m.shipped.clone());
        r.register("dropped", "Audit records dropped because the buffer was full", m.dropped.clone());
        r.register("buffer_records", "Audit records waiting to be shipped", m.buffered.clone());
        m
    }

    /// Records emitted of one kind.
    pub fn records(&self, kind: Kind) -> u64 {
        self.records.get_or_create(&KindLabels { kind: kind.as_str() }).get()
    }
}

/// The buffer and its shipper. Cheap to clone; all clones share one buffer.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
}

struct Inner {
    config: SinkConfig,
    metrics: Metrics,
    state: Mutex<State>,
    /// Woken when a record arrives.
    arrived: Notify,
    client: reqwest::Client,
}

#[derive(Default)]
struct State {
    /// Buffered records with the instant each arrived, in `seq` order.
    queue: VecDeque<(Instant, Record)>,
    next_seq: u64,
    /// Drops since the last warning was logged.
    unreported_drops: u64,
}

impl Sink {
    /// A sink that buffers but does not ship until [`Sink::spawn_shipper`] is called.
    pub fn new(config: SinkConfig, metrics: Metrics) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .unwrap_or_default();
        let inner = Inner {
            config,
            metrics,
            state: Mutex::default(),
            arrived: Notify::new(),
            client,
        };
        Self { inner: Arc::new(inner) }
    }

    /// A sink with its metrics in `registry` and its shipper running. Needs a Tokio runtime.
    pub fn start(config: SinkConfig, registry: &mut Registry) -> Self {
        let sink = Self::new(config, Metrics::register(registry));
        sink.spawn_shipper();
        sink
    }

    /// Starts the background task that ships the buffer.
    pub fn spawn_shipper(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(ship_forever(self.inner.clone()))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records waiting to be shipped.
    pub fn buffered(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Waits until the buffer is empty or `within` has passed; true when it emptied.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.buffered() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            self.inner.arrived.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl AuditHook for Sink {
    fn emit(&self, mut record: Record) {
        let inner = &self.inner;
        inner.metrics.records.get_or_create(&KindLabels { kind: record.kind.as_str() }).inc();
        let mut state = inner.lock();
        state.next_seq += 1;
        record.seq = state.next_seq;

        if state.queue.len() >= inner.config.capacity.max(1) {
            inner.metrics.dropped.inc();
            state.unreported_drops += 1;
            let dropped = state.unreported_drops;
            if dropped == 1 || dropped % 1000 == 0 {
                tracing::warn!(
                    kind = record.kind.as_str(),
                    seq = record.seq,
                    capacity = inner.config.capacity,
                    dropped,
                    "Audit buffer full: dropping records"
                );
            }
            return;
        }

        state.queue.push_back((Instant::now(), record));
        inner.metrics.buffered.set(state.queue.len() as i64);
        drop(state);
        inner.arrived.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch once it is due: full, or its first record waited `flush_interval`.
    async fn next_batch(&self) -> Vec<Record> {
        loop {
            let arrived = self.arrived.notified();
            let due = {
                let state = self.lock();
                match state.queue.front() {
                    None => None,
                    Some(_) if state.queue.len() >= self.config.max_batch.max(1) => Some(Instant::now()),
                    Some((first, _)) => Some(*first + self.config.flush_interval),
                }
            };
            match due {
                Some(due) if Instant::now() >= due => return self.peek_batch(),
                Some(due) => {
                    let _ = tokio::time::timeout_at(due, arrived).await;
                }
                None => arrived.await,
            }
        }
    }

    /// A copy of the first `max_batch` records; they stay buffered until shipped.
    fn peek_batch(&self) -> Vec<Record> {
        let state = self.lock();
        state.queue.iter().take(self.config.max_batch.max(1)).map(|(_, r)| r.clone()).collect()
    }

    /// Takes the shipped records (up to `last_seq`) out of the buffer.
    fn shipped(&self, last_seq: u64, count: usize) {
        let mut state = self.lock();
        while state.queue.front().is_some_and(|(_, r)| r.seq <= last_seq) {
            state.queue.pop_front();
        }
        self.metrics.buffered.set(state.queue.len() as i64);
        self.metrics.shipped.inc_by(count as u64);
        if state.unreported_drops > 0 {
            let dropped = std::mem::take(&mut state.unreported_drops);
            tracing::warn!(dropped, "Audit buffer draining again after dropping records");
        }
    }

    async fn post(&self, batch: &[Record]) -> Result<(), String> {
        let mut request = self.client.post(&self.config.url).json(batch);
        if let Some(path) = &self.config.token_file {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(format!("the endpoint answered {status}")) }
    }
}

async fn ship_forever(inner: Arc<Inner>) {
    let mut failures = 0u32;
    loop {
        let batch = inner.next_batch().await;
        let Some(last) = batch.last().map(|r| r.seq) else { continue };
        match inner.post(&batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "Audit endpoint reachable again");
                }
                failures = 0;
                inner.shipped(last, batch.len());
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(&inner.config, failures);
                let buffered = inner.lock().queue.len();
                tracing::warn!(%error, failures, buffered, retry_in_ms = wait.as_millis() as u64, "Audit shipping failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `initial * 2^(failures-1)`, capped at `max`, then scaled by a random factor in [0.5, 1].
fn backoff(config: &SinkConfig, failures: u32) -> Duration {
    let exp = config.backoff_initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = exp.min(config.backoff_max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut config = SinkConfig::new("http://x");
        config.backoff_initial = Duration::from_millis(100);
        config.backoff_max = Duration::from_secs(1);
        for (failures, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            let wait = backoff(&config, failures).as_millis() as u64;
            assert!((full / 2..=full).contains(&wait), "{failures}: {wait}");
        }
    }
}
