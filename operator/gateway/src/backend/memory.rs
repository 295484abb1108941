//! An in-memory [`Backend`] for tests: Playbooks and Secrets put in by hand, Runs kept in a list.

use super::{Backend, BackendError, Created};
use async_trait::async_trait;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use vigil_api::{Playbook, Run};

/// Playbooks, Secrets and created Runs in memory. `create_delay` and `fail_creates` simulate a
/// slow or failing API server.
#[derive(Default)]
pub struct MemoryBackend {
    playbooks: Mutex<HashMap<(String, String), Arc<Playbook>>>,
    secrets: Mutex<HashMap<(String, String, String), Vec<u8>>>,
    runs: Mutex<Vec<Run>>,
    create_delay: Mutex<Option<Duration>>,
    fail_creates: Mutex<Option<BackendError>>,
    not_ready: std::sync::atomic::AtomicBool,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Playbook; its namespace must be set.
    pub fn put_playbook(&self, playbook: Playbook) {
        let ns = playbook.metadata.namespace.clone().unwrap_or_default();
        let name = playbook.metadata.name.clone().unwrap_or_default();
        lock(&self.playbooks).insert((ns, name), Arc::new(playbook));
    }

    pub fn put_secret(&self, namespace: &str, name: &str, key: &str, value: &[u8]) {
        let id = (namespace.to_string(), name.to_string(), key.to_string());
        lock(&self.secrets).insert(id, value.to_vec());
    }

    /// Every Run created so far.
    pub fn runs(&self) -> Vec<Run> {
        lock(&self.runs).clone()
    }

    /// Makes every `create_run` wait this long first.
    pub fn set_create_delay(&self, delay: Option<Duration>) {
        *lock(&self.create_delay) = delay;
    }

    /// Makes every `create_run` fail with this error.
    pub fn set_create_failure(&self, error: Option<BackendError>) {
        *lock(&self.fail_creates) = error;
    }

    pub fn set_ready(&self, ready: bool) {
        self.not_ready.store(!ready, std::sync::atomic::Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Backend for MemoryBackend {
    fn ready(&self) -> bool {
        !self.not_ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn playbook(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Playbook>>, BackendError> {
        Ok(lock(&self.playbooks).get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let id = (namespace.to_string(), name.to_string(), key.to_string());
        Ok(lock(&self.secrets).get(&id).cloned())
    }

    async fn create_run(&self, run: &Run) -> Result<Created, BackendError> {
        let delay = *lock(&self.create_delay);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(error) = lock(&self.fail_creates).clone() {
            return Err(error);
        }
        let mut runs = lock(&self.runs);
        let same = |r: &Run| {
            r.metadata.name == run.metadata.name && r.metadata.namespace == run.metadata.namespace
        };
        if runs.iter().any(same) {
            return Ok(Created::AlreadyExists);
        }
        runs.push(run.clone());
        Ok(Created::New)
    }
}
