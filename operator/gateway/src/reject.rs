//! Rejections: every refusal the gateway answers, as a status, a reason and a JSON body.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use std::time::Duration;

/// Why a request was refused. The `as_str` form is the `error` field of the answer and the
/// `reason` label of `vigil_webhook_rejections_total`, so the set is closed and small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No such namespace or playbook, or a path that cannot name one.
    NotFound,
    /// The playbook has no webhook trigger.
    NoWebhook,
    /// The webhook trigger has `enabled: false`.
    Disabled,
    /// A method other than POST.
    MethodNotAllowed,
    /// The global in-flight cap is reached.
    Overloaded,
    /// The trigger's `rateLimit` is exhausted.
    RateLimited,
    /// Not `application/json`.
    UnsupportedMediaType,
    /// More than `max_body_bytes`.
    BodyTooLarge,
    /// The body did not arrive in time.
    BodyTimeout,
    /// Missing, malformed, stale or wrong signature or token.
    Unauthorized,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The body nests deeper than `max_depth`.
    TooDeep,
    /// The body is not one JSON value.
    MalformedJson,
    /// The playbook's trigger expressions do not compile.
    InvalidTrigger,
    /// The filter could not be evaluated over this alert.
    FilterFailed,
    /// The dedupe key could not be evaluated over this alert.
    DedupeKeyFailed,
    /// The mapped inputs do not fit the playbook's declared inputs.
    InvalidInputs,
    /// The API server refused the Run as invalid.
    RunRejected,
    /// The gateway has not synced its caches yet.
    NotReady,
    /// The API server did not answer in time or failed.
    Unavailable,
    /// The whole request took longer than `request_timeout`.
    Timeout,
}

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::NotFound,
        Reason::NoWebhook,
        Reason::Disabled,
        Reason::MethodNotAllowed,
        Reason::Overloaded,
        Reason::RateLimited,
        Reason::UnsupportedMediaType,
        Reason::BodyTooLarge,
        Reason::BodyTimeout,
        Reason::Unauthorized,
        Reason::InvalidUtf8,
        Reason::TooDeep,
        Reason::MalformedJson,
        Reason::InvalidTrigger,
        Reason::FilterFailed,
        Reason::DedupeKeyFailed,
        Reason::InvalidInputs,
        Reason::RunRejected,
        Reason::NotReady,
        Reason::Unavailable,
        Reason::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::NoWebhook => "no_webhook_trigger",
            Reason::Disabled => "trigger_disabled",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::Overloaded => "overloaded",
            Reason::RateLimited => "rate_limited",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::Unauthorized => "unauthorized",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::TooDeep => "too_deep",
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidTrigger => "invalid_trigger",
            Reason::FilterFailed => "filter_failed",
            Reason::DedupeKeyFailed => "dedupe_key_failed",
            Reason::InvalidInputs => "invalid_inputs",
            Reason::RunRejected => "run_rejected",
            Reason::NotReady => "not_ready",
            Reason::Unavailable => "unavailable",
            Reason::Timeout => "timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Reason::NotFound | Reason::NoWebhook => StatusCode::NOT_FOUND,
            Reason::Disabled => StatusCode::FORBIDDEN,
            Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reason::Overloaded | Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::Unauthorized => StatusCode::UNAUTHORIZED,
            Reason::InvalidUtf8 | Reason::TooDeep | Reason::MalformedJson => {
                StatusCode::BAD_REQUEST
            }
            Reason::InvalidTrigger
            | Reason::FilterFailed
            | Reason::DedupeKeyFailed
            | Reason::InvalidInputs
            | Reason::RunRejected => StatusCode::UNPROCESSABLE_ENTITY,
            Reason::NotReady | Reason::Unavailable | Reason::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// A refusal: rendered as `{"error": reason, "detail": detail}` with the reason's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    /// Sent as `Retry-After` (whole seconds, at least 1) on 429 and 503.
    pub retry_after: Option<Duration>,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into(), retry_after: None }
    }

    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.reason.as_str(), "detail": self.detail });
        let mut response = (self.reason.status(), Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let value = HeaderValue::from(retry_after_secs(wait));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response.extensions_mut().insert(self.reason);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_trouble_maps_to_a_server_error() {
        for reason in Reason::ALL {
            let status = reason.status();
            let api = matches!(reason, Reason::NotReady | Reason::Unavailable | Reason::Timeout);
            assert_eq!(status.is_server_error(), api, "{reason:?}");
            assert!(api || status.is_client_error(), "{reason:?}");
            if status.is_server_error() {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
    }
}
