//! The vigil audit trail: one structured record for everything a Run, a step, an approval or a
//! webhook did, buffered in memory and shipped in batches to a SIEM over HTTP.
//!
//! [`record`] holds the schema, [`diff`] turns two Run statuses into the records between them
//! (pure, no I/O), and [`sink`] buffers and ships. See `docs/observability.md`.

pub mod diff;
pub mod record;
pub mod sink;

pub use diff::records_for;
pub use record::{Kind, Record, TriggerRecord, trace_id};
pub use sink::{Metrics, Sink, SinkConfig};

/// Anything that takes audit records: the [`Sink`], or a test double. The gateway holds one of
/// these, so it needs nothing of the sink's transport.
pub trait AuditHook: Send + Sync {
    /// Takes one record. Never blocks and never fails: a full buffer counts the record as
    /// dropped.
    fn emit(&self, record: Record);
}
