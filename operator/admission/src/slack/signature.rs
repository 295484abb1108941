//! Slack's v0 request signature, with a memory of recently accepted requests against replays.
//!
//! The signature check is the gateway's timestamped HMAC ([`vigil_gateway::auth`]): HMAC-SHA256
//! of `v0:{X-Slack-Request-Timestamp}:{raw body}`, compared in constant time, with the
//! timestamp at most five minutes from now. A request accepted once is refused when it comes
//! again inside that window.
//!
//! Known limitation: the memory of accepted requests is per replica and lost on restart, so a
//! captured request could be replayed once against another replica (or after a restart) while
//! its timestamp is fresh. The decision rules still refuse a second vote by the same user and
//! any vote on a decided Approval, so such a replay can at most record the click it repeats. A
//! store shared by the replicas would close the gap.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::{collections::HashMap, sync::Mutex, time::Duration};
use vigil_api::playbook::{SecretKeyRef, TimestampedHmacAuth};
use vigil_gateway::auth::{self, AuthError, Method, Secrets};

/// How far Slack's timestamp may be from now.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// Accepted requests remembered at once; past it (after forgetting stale ones) requests are
/// refused rather than the memory grown.
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a callback is not accepted. Sent back to the caller; never names a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("this request was already received (replay)")]
    Replay,
    #[error("too many recent requests to remember")]
    Busy,
}

/// Past this many remembered requests, those outside the window are forgotten first.
const PRUNE_ABOVE: usize = 1024;

/// Verifies Slack's signatures with the signing secret (one per line, for rotation).
pub struct Verifier {
    secrets: Secrets,
    auth: TimestampedHmacAuth,
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl Verifier {
    pub fn new(signing_secret: &[u8]) -> Self {
        let auth = TimestampedHmacAuth {
            secret_ref: SecretKeyRef { name: "slack-signing-secret".into(), key: "secret".into() },
            signature_header: Some(auth::SLACK_SIGNATURE.into()),
            timestamp_header: Some(auth::SLACK_TIMESTAMP.into()),
            tolerance: Some(vigil_api::Duration(TOLERANCE)),
        };
        Self { secrets: Secrets::parse(signing_secret), auth, seen: Mutex::new(HashMap::new()) }
    }

    /// Accepts a correctly signed, fresh request seen for the first time; `now` is Unix seconds.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Auth`] for a missing, malformed, stale or wrong signature,
    /// [`SignatureError::Replay`] for a request already accepted.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        auth::verify(Method::Timestamped(&self.auth), Some(&self.secrets), headers, body, now)?;

        // The signed content identifies the request, however its signature header is spelled.
        let ts = headers
            .get(auth::SLACK_TIMESTAMP)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        let key: [u8; 32] = Sha256::new()
            .chain_update(format!("v0:{ts}:").as_bytes())
            .chain_update(body)
            .finalize()
            .into();
        let ts: i64 = ts.parse().unwrap_or(now);

        let mut seen = self.seen.lock().map_err(|_| SignatureError::Busy)?;
        if seen.contains_key(&key) {
            return Err(SignatureError::Replay);
        }
        let window = TOLERANCE.as_secs() as i64;
        if seen.len() >= PRUNE_ABOVE {
            seen.retain(|_, t| now.abs_diff(*t) <= window as u64);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(SignatureError::Busy);
        }
        seen.insert(key, ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &[u8] = b"slack-dev-signing-secret";
    const NOW: i64 = 1_705_329_000;
    const BODY: &[u8] = b"payload=%7B%22type%22%3A%22block_actions%22%7D";

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let tag = auth::hmac_tag(secret, &[format!("v0:{ts}:").as_bytes(), body]);
        let mut h = HeaderMap::new();
        h.insert(auth::SLACK_TIMESTAMP, HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert(auth::SLACK_SIGNATURE, HeaderValue::from_str(&format!("v0={}", hex(&tag))).unwrap());
        h
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn accepts_a_valid_signature() {
        let v = Verifier::new(SECRET);
        assert_eq!(v.verify(&signed(SECRET, NOW, BODY), BODY, NOW + 3), Ok(()));
    }

    #[test]
    fn refuses_a_bad_signature_or_a_changed_body() {
        let v = Verifier::new(SECRET);
        assert_eq!(
            v.verify(&signed(b"other", NOW, BODY), BODY, NOW),
            Err(SignatureError::Auth(AuthError::SignatureMismatch))
        );
        assert_eq!(
            v.verify(&signed(SECRET, NOW, BODY), b"payload=%7B%7D", NOW),
            Err(SignatureError::Auth(AuthError::SignatureMismatch))
        );
        assert!(matches!(
            v.verify(&HeaderMap::new(), BODY, NOW),
            Err(SignatureError::Auth(AuthError::MissingHeader(_)))
        ));
    }

    #[test]
    fn refuses_a_stale_timestamp() {
        let v = Verifier::new(SECRET);
        let old = NOW - 301;
        assert_eq!(
            v.verify(&signed(SECRET, old, BODY), BODY, NOW),
            Err(SignatureError::Auth(AuthError::Stale(300)))
        );
    }

    #[test]
    fn refuses_a_replay_of_an_accepted_request() {
        let v = Verifier::new(SECRET);
        let headers = signed(SECRET, NOW, BODY);
        assert_eq!(v.verify(&headers, BODY, NOW), Ok(()));
        assert_eq!(v.verify(&headers, BODY, NOW + 10), Err(SignatureError::Replay));
        // The same content with the signature header spelled differently is the same request.
        let mut respelled = headers.clone();
        let sig = headers.get(auth::SLACK_SIGNATURE).unwrap().to_str().unwrap();
        respelled.insert(auth::SLACK_SIGNATURE, HeaderValue::from_str(&format!("v1=00, {sig}")).unwrap());
        assert_eq!(v.verify(&respelled, BODY, NOW + 10), Err(SignatureError::Replay));
        // A new click (new timestamp) is fine.
        assert_eq!(v.verify(&signed(SECRET, NOW + 1, BODY), BODY, NOW + 10), Ok(()));
    }

    #[test]
    fn a_rotated_secret_on_a_second_line_is_accepted() {
        let v = Verifier::new(b"new-secret\nslack-dev-signing-secret\n");
        assert_eq!(v.verify(&signed(SECRET, NOW, BODY), BODY, NOW), Ok(()));
    }
}
