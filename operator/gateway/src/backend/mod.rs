//! What the gateway needs from Kubernetes, behind a trait: Playbooks, Secret values, Run
//! creation. [`KubeBackend`] serves it from reflectors and the API server; [`MemoryBackend`]
//! from memory, for tests.

mod kube;
mod memory;

pub use self::kube::KubeBackend;
pub use memory::MemoryBackend;

use async_trait::async_trait;
use std::sync::Arc;
use vigil_api::{Playbook, Run};

/// How creating a Run ended, when the API server answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// A Run of that name exists: the alert is a duplicate inside its dedupe window.
    AlreadyExists,
}

/// Why the backend could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The API server refused the object as invalid (400, 422): answered 422.
    #[error("the API server refused the Run: {0}")]
    Invalid(String),
    /// Anything else (unreachable, 5xx, forbidden): answered 503.
    #[error("the API server failed: {0}")]
    Unavailable(String),
}

/// Access to the cluster state the gateway reads and the Runs it writes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// True once the caches have their first full view.
    fn ready(&self) -> bool;

    /// The Playbook, or `None` when it does not exist (or its namespace is not served).
    async fn playbook(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Playbook>>, BackendError>;

    /// The value of a Secret key in `namespace`, or `None` when the Secret or key is absent.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, BackendError>;

    /// Creates the Run (its namespace is in its metadata).
    async fn create_run(&self, run: &Run) -> Result<Created, BackendError>;
}
