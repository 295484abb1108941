//! The gateway's Prometheus metrics. Label values are bounded: namespace and playbook come from
//! Playbooks that exist (anything else is `unknown`), status and reason from closed sets.

use crate::reject::Reason;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The label value for requests that name no existing Playbook.
pub const UNKNOWN: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: String,
    pub playbook: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaybookLabels {
    pub namespace: String,
    pub playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Handles to every gateway metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Histogram,
    pub runs_created: Family<PlaybookLabels, Counter>,
    pub duplicates: Family<PlaybookLabels, Counter>,
    pub rejections: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        Self {
            requests: Family::default(),
            duration: Histogram::new(buckets),
            runs_created: Family::default(),
            duplicates: Family::default(),
            rejections: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them as `vigil_webhook_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "vigil_webhook_requests",
            "Webhook requests by playbook and answered status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "vigil_webhook_request_duration",
            "Time from request to answer",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "vigil_webhook_runs_created",
            "Runs created from webhook alerts",
            m.runs_created.clone(),
        );
        registry.register(
            "vigil_webhook_duplicates",
            "Alerts answered with an existing Run inside the dedupe window",
            m.duplicates.clone(),
        );
        registry.register(
            "vigil_webhook_rejections",
            "Refused webhook requests by reason",
            m.rejections.clone(),
        );
        for reason in Reason::ALL {
            // Every reason shows from the start, so rate() works on the first rejection.
            let _ = m.rejections.get_or_create(&ReasonLabels { reason: reason.as_str() });
        }
        m
    }

    pub fn rejected(&self, reason: Reason) {
        self.rejections.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
    }

    pub fn created(&self, namespace: &str, playbook: &str) {
        self.runs_created.get_or_create(&playbook_labels(namespace, playbook)).inc();
    }

    pub fn duplicate(&self, namespace: &str, playbook: &str) {
        self.duplicates.get_or_create(&playbook_labels(namespace, playbook)).inc();
    }

    /// `known` is the playbook's namespace and name when it exists.
    pub fn answered(&self, known: Option<(&str, &str)>, status: u16, seconds: f64) {
        let (namespace, playbook) = known.unwrap_or((UNKNOWN, UNKNOWN));
        let labels = RequestLabels {
            namespace: namespace.to_string(),
            playbook: playbook.to_string(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.observe(seconds);
    }
}

fn playbook_labels(namespace: &str, playbook: &str) -> PlaybookLabels {
    PlaybookLabels { namespace: namespace.to_string(), playbook: playbook.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metrics_are_exposed_under_their_documented_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.answered(Some(("soc", "ir")), 202, 0.01);
        m.answered(None, 404, 0.001);
        m.created("soc", "ir");
        m.duplicate("soc", "ir");
        m.rejected(Reason::Unauthorized);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for expected in [
            r#"vigil_webhook_requests_total{namespace="soc",playbook="ir",status="202"} 1"#,
            r#"vigil_webhook_requests_total{namespace="unknown",playbook="unknown",status="404"} 1"#,
            "vigil_webhook_request_duration_seconds_count 2",
            r#"vigil_webhook_runs_created_total{namespace="soc",playbook="ir"} 1"#,
            r#"vigil_webhook_duplicates_total{namespace="soc",playbook="ir"} 1"#,
            r#"vigil_webhook_rejections_total{reason="unauthorized"} 1"#,
            r#"vigil_webhook_rejections_total{reason="rate_limited"} 0"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
