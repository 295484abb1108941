//! Leader election on a coordination.k8s.io Lease: one replica runs the reconcilers, every
//! replica serves the gateway.

use crate::controller::{from_chrono, to_chrono};
use chrono::Utc;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, api::{PostParams, Patch, PatchParams}};
use std::time::Duration;
use tokio::sync::watch;

/// How a replica takes part in the election.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

impl Election {
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Campaigns forever; `leader` turns true while this replica holds the lease. Losing the
    /// lease after holding it ends the process's leadership by sending false, and the caller is
    /// expected to stop reconciling.
    pub async fn run(self, client: kube::Client, leader: watch::Sender<bool>) {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        loop {
            let held = match self.try_acquire(&api).await {
                Ok(held) => held,
                Err(error) => {
                    tracing::warn!(%error, "Lease update failed");
                    false
                }
            };
            if *leader.borrow() != held {
                tracing::info!(identity = %self.identity, held, "Leadership changed");
                let _ = leader.send(held);
            }
            tokio::time::sleep(if held { self.renew_every() } else { self.renew_every().min(Duration::from_secs(2)) }).await;
        }
    }

    async fn try_acquire(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(15);
        let Some(lease) = api.get_opt(&self.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.lease.clone()), ..Default::default() },
                spec: Some(self.spec(now, 0, now)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map(|t| to_chrono(t.0)).unwrap_or_default();
        let expired = now > renewed + chrono::Duration::seconds(i64::from(spec.lease_duration_seconds.unwrap_or(secs)));
        if holder != self.identity && !expired && !holder.is_empty() {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        let acquired = if holder == self.identity { spec.acquire_time.map(|t| to_chrono(t.0)).unwrap_or(now) } else { now };
        let mut next = lease.clone();
        next.spec = Some(self.spec(acquired, transitions, now));
        // A replace with the read resourceVersion: two replicas racing cannot both win.
        match api.replace(&self.lease, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: chrono::DateTime<Utc>, transitions: i32, now: chrono::DateTime<Utc>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(MicroTime(from_chrono(acquired))),
            renew_time: Some(MicroTime(from_chrono(now))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the lease up on shutdown so another replica takes over at once.
    pub async fn release(&self, client: kube::Client) {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        if let Ok(Some(lease)) = api.get_opt(&self.lease).await {
            let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
            if holder.as_deref() == Some(self.identity.as_str()) {
                let patch = serde_json::json!({"spec": {"holderIdentity": null, "renewTime": null}});
                let _ = api.patch(&self.lease, &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
        }
    }
}
