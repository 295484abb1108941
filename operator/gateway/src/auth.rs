//! Request authentication: HMAC-SHA256 of the body, timestamped HMAC, bearer tokens. Pure.
//!
//! Every comparison of a presented signature or token with an expected one is constant time
//! ([`subtle::ConstantTimeEq`]). A Secret value with several lines holds several valid secrets,
//! so a sender's secret can be rotated without a window of refused alerts.
//!
//! Known limitation: a captured timestamped request can be replayed while its timestamp is
//! inside the tolerance, because the gateway keeps no record of signatures it has seen (it is
//! stateless across replicas). A trigger with `dedupe` maps such a replay to the same Run; a
//! nonce store shared by the replicas would close the gap.

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use std::{fmt, time::Duration};
use subtle::ConstantTimeEq;
use vigil_api::playbook::{BearerAuth, HmacAuth, SecretKeyRef, TimestampedHmacAuth, WebhookAuth};

/// GitHub's signature header, the default of `hmacSha256`.
pub const HUB_SIGNATURE: &str = "x-hub-signature-256";
/// The default signature header of `timestampedHmac`.
pub const SIGNATURE: &str = "x-signature";
/// The default timestamp header of `timestampedHmac`.
pub const SIGNATURE_TIMESTAMP: &str = "x-signature-timestamp";
/// Slack's signature header, accepted when the default one is absent.
pub const SLACK_SIGNATURE: &str = "x-slack-signature";
/// Slack's timestamp header, accepted when the default one is absent.
pub const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
/// How far a timestamp may be from now unless the trigger says otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// Signatures looked at per request; more are ignored, bounding the work one request causes.
pub const MAX_SIGNATURES: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// The auth mode of a trigger, resolved from [`WebhookAuth`].
#[derive(Clone, Copy, Debug)]
pub enum Method<'a> {
    Hmac(&'a HmacAuth),
    Timestamped(&'a TimestampedHmacAuth),
    Bearer(&'a BearerAuth),
    /// `none: {}`: unsigned requests are accepted on purpose.
    Unauthenticated,
    /// No mode set at all. The CRD forbids it; requests are refused.
    Unconfigured,
}

impl<'a> Method<'a> {
    /// The strictest mode set wins, so a signed mode next to `none` still requires signatures.
    pub fn of(auth: &'a WebhookAuth) -> Self {
        if let Some(h) = &auth.hmac_sha256 {
            Method::Hmac(h)
        } else if let Some(t) = &auth.timestamped_hmac {
            Method::Timestamped(t)
        } else if let Some(b) = &auth.bearer {
            Method::Bearer(b)
        } else if auth.none.is_some() {
            Method::Unauthenticated
        } else {
            Method::Unconfigured
        }
    }

    /// The Secret key the mode reads its secrets from.
    pub fn secret_ref(&self) -> Option<&'a SecretKeyRef> {
        match self {
            Method::Hmac(h) => Some(&h.secret_ref),
            Method::Timestamped(t) => Some(&t.secret_ref),
            Method::Bearer(b) => Some(&b.secret_ref),
            Method::Unauthenticated | Method::Unconfigured => None,
        }
    }
}

/// The valid secrets of a trigger: one per non-blank line of the Secret value, trimmed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    pub fn parse(raw: &[u8]) -> Self {
        let lines = raw
            .split(|b| *b == b'\n')
            .map(|line| line.trim_ascii())
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Self(lines)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets(<{} redacted>)", self.0.len())
    }
}

/// Why a request is not authenticated. The text is sent to the caller: it names headers and
/// limits, never a secret or an expected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0} header")]
    MissingHeader(String),
    #[error("malformed {0} header")]
    MalformedHeader(String),
    #[error("timestamp is more than {0}s away from now")]
    Stale(u64),
    #[error("signature does not match")]
    SignatureMismatch,
    #[error("token does not match")]
    TokenMismatch,
    #[error("the trigger's secret is not available")]
    NoSecret,
    #[error("the trigger sets no auth mode")]
    Unconfigured,
}

/// Checks a request against the trigger's auth mode.
///
/// `secrets` are the values of the mode's Secret key (`None` when the Secret or key is absent);
/// `now` is the current Unix time in seconds.
///
/// # Errors
///
/// Any [`AuthError`]; the request must then be refused with 401.
pub fn verify(
    method: Method<'_>,
    secrets: Option<&Secrets>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), AuthError> {
    let secrets = match method {
        Method::Unauthenticated => return Ok(()),
        Method::Unconfigured => return Err(AuthError::Unconfigured),
        _ => secrets.filter(|s| !s.is_empty()).ok_or(AuthError::NoSecret)?,
    };
    match method {
        Method::Hmac(h) => verify_hmac(h, secrets, headers, body),
        Method::Timestamped(t) => verify_timestamped(t, secrets, headers, body, now),
        Method::Bearer(_) => verify_bearer(secrets, headers),
        Method::Unauthenticated | Method::Unconfigured => unreachable!("handled above"),
    }
}

fn verify_hmac(
    auth: &HmacAuth,
    secrets: &Secrets,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    let name = auth.header.as_deref().unwrap_or(HUB_SIGNATURE);
    let candidates = signatures(headers, &[name], "sha256=")?;
    let matched = secrets.iter().any(|secret| {
        let tag = hmac_tag(secret, &[body]);
        candidates.iter().any(|c| bool::from(c.ct_eq(&tag)))
    });
    if matched { Ok(()) } else { Err(AuthError::SignatureMismatch) }
}

fn verify_timestamped(
    auth: &TimestampedHmacAuth,
    secrets: &Secrets,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), AuthError> {
    let ts_names: Vec<&str> = match auth.timestamp_header.as_deref() {
        Some(name) => vec![name],
        None => vec![SIGNATURE_TIMESTAMP, SLACK_TIMESTAMP],
    };
    let sig_names: Vec<&str> = match auth.signature_header.as_deref() {
        Some(name) => vec![name],
        None => vec![SIGNATURE, SLACK_SIGNATURE],
    };

    let (ts_name, ts_text) = first_header(headers, &ts_names)?;
    let ts: i64 =
        ts_text.trim().parse().map_err(|_| AuthError::MalformedHeader(ts_name.to_string()))?;
    let tolerance = auth.tolerance.map_or(DEFAULT_TOLERANCE, |d| d.0).as_secs();
    if now.abs_diff(ts) > tolerance {
        return Err(AuthError::Stale(tolerance));
    }

    let candidates = signatures(headers, &sig_names, "v0=")?;
    let prefix = format!("v0:{}:", ts_text.trim());
    let matched = secrets.iter().any(|secret| {
        let tag = hmac_tag(secret, &[prefix.as_bytes(), body]);
        candidates.iter().any(|c| bool::from(c.ct_eq(&tag)))
    });
    if matched { Ok(()) } else { Err(AuthError::SignatureMismatch) }
}

fn verify_bearer(secrets: &Secrets, headers: &HeaderMap) -> Result<(), AuthError> {
    let (_, value) = first_header(headers, &["authorization"])?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| AuthError::MalformedHeader("authorization".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader("authorization".into()));
    }
    // Comparing digests keeps the comparison constant time whatever the token lengths.
    let presented = Sha256::digest(token.trim().as_bytes());
    let matched = secrets.iter().any(|s| bool::from(Sha256::digest(s).ct_eq(&presented)));
    if matched { Ok(()) } else { Err(AuthError::TokenMismatch) }
}

/// The HMAC-SHA256 of the concatenated parts.
pub fn hmac_tag(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The first present header of `names`, as text.
fn first_header<'h>(
    headers: &'h HeaderMap,
    names: &[&'h str],
) -> Result<(&'h str, &'h str), AuthError> {
    for name in names {
        let Ok(header) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            continue;
        };
        if let Some(value) = headers.get(&header) {
            let text =
                value.to_str().map_err(|_| AuthError::MalformedHeader((*name).to_string()))?;
            return Ok((name, text));
        }
    }
    Err(AuthError::MissingHeader(names.first().copied().unwrap_or_default().to_string()))
}

/// Every well-formed 32-byte signature in the first present header of `names`: comma-separated,
/// each `<prefix><hex>` or bare hex. Entries with another scheme prefix are skipped.
fn signatures(
    headers: &HeaderMap,
    names: &[&str],
    prefix: &str,
) -> Result<Vec<[u8; 32]>, AuthError> {
    let (name, text) = first_header(headers, names)?;
    let found: Vec<[u8; 32]> = text
        .split(',')
        .map(str::trim)
        .filter_map(|entry| match entry.split_once('=') {
            Some((scheme, hex)) if format!("{scheme}=").eq_ignore_ascii_case(prefix) => Some(hex),
            Some(_) => None,
            None => Some(entry),
        })
        .take(MAX_SIGNATURES)
        .filter_map(|hex| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex, &mut out).ok().map(|()| out)
        })
        .collect();
    if found.is_empty() {
        return Err(AuthError::MalformedHeader(name.to_string()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use vigil_api::Duration as ApiDuration;

    fn secret_ref() -> SecretKeyRef {
        SecretKeyRef { name: "hook".into(), key: "secret".into() }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn hmac_auth() -> HmacAuth {
        HmacAuth { secret_ref: secret_ref(), header: None }
    }

    fn timestamped() -> TimestampedHmacAuth {
        TimestampedHmacAuth { secret_ref: secret_ref(), ..Default::default() }
    }

    const NOW: i64 = 1_700_000_000;

    // GitHub's documented example for validating webhook deliveries.
    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn hmac_accepts_githubs_published_test_vector() {
        let auth = hmac_auth();
        let secrets = Secrets::parse(GITHUB_SECRET);
        let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
        assert_eq!(verify(Method::Hmac(&auth), Some(&secrets), &h, b"Hello, World!", NOW), Ok(()));
    }

    #[test]
    fn hmac_refuses_a_wrong_key_a_changed_body_and_a_missing_header() {
        let auth = hmac_auth();
        let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
        let wrong = Secrets::parse(b"not the secret");
        let right = Secrets::parse(GITHUB_SECRET);
        let m = Method::Hmac(&auth);
        assert_eq!(
            verify(m, Some(&wrong), &h, b"Hello, World!", NOW),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            verify(m, Some(&right), &h, b"Hello, World?", NOW),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            verify(m, Some(&right), &HeaderMap::new(), b"Hello, World!", NOW),
            Err(AuthError::MissingHeader(HUB_SIGNATURE.into()))
        );
        let garbage = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert!(matches!(
            verify(m, Some(&right), &garbage, b"Hello, World!", NOW),
            Err(AuthError::MalformedHeader(_))
        ));
    }

    #[test]
    fn hmac_reads_an_overridden_header_with_or_without_prefix() {
        let auth = HmacAuth { secret_ref: secret_ref(), header: Some("X-Signature".into()) };
        let secrets = Secrets::parse(GITHUB_SECRET);
        let bare = &GITHUB_SIGNATURE["sha256=".len()..];
        for value in [GITHUB_SIGNATURE, bare] {
            let h = headers(&[("x-signature", value)]);
            assert_eq!(
                verify(Method::Hmac(&auth), Some(&secrets), &h, b"Hello, World!", NOW),
                Ok(())
            );
        }
    }

    #[test]
    fn a_second_secret_line_is_accepted_for_rotation() {
        let auth = hmac_auth();
        let secrets = Secrets::parse(b"new-secret-first\r\nIt's a Secret to Everybody\n\n");
        assert_eq!(secrets.len(), 2);
        let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
        assert_eq!(verify(Method::Hmac(&auth), Some(&secrets), &h, b"Hello, World!", NOW), Ok(()));
    }

    // Slack's documented example for verifying requests (signing secret, timestamp, body and
    // the resulting v0 signature from api.slack.com/authentication/verifying-requests-from-slack).
    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=\
        testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=\
        roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com\
        %2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=\
        398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE_V0: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn timestamped_hmac_accepts_slacks_published_test_vector() {
        let auth = timestamped();
        let secrets = Secrets::parse(SLACK_SECRET);
        let h = headers(&[
            ("x-slack-request-timestamp", SLACK_TS),
            ("x-slack-signature", SLACK_SIGNATURE_V0),
        ]);
        let now = SLACK_TS.parse::<i64>().unwrap() + 10;
        let m = Method::Timestamped(&auth);
        assert_eq!(verify(m, Some(&secrets), &h, SLACK_BODY.as_bytes(), now), Ok(()));
    }

    #[test]
    fn timestamped_hmac_refuses_a_replay_outside_the_window() {
        let auth = timestamped();
        let secrets = Secrets::parse(SLACK_SECRET);
        let h = headers(&[
            ("x-slack-request-timestamp", SLACK_TS),
            ("x-slack-signature", SLACK_SIGNATURE_V0),
        ]);
        let ts = SLACK_TS.parse::<i64>().unwrap();
        let m = Method::Timestamped(&auth);
        for now in [ts + 301, ts - 301, ts + 86_400] {
            assert_eq!(
                verify(m, Some(&secrets), &h, SLACK_BODY.as_bytes(), now),
                Err(AuthError::Stale(300))
            );
        }
        let wide =
            TimestampedHmacAuth { tolerance: Some(ApiDuration::from_secs(3600)), ..timestamped() };
        let m = Method::Timestamped(&wide);
        assert_eq!(verify(m, Some(&secrets), &h, SLACK_BODY.as_bytes(), ts + 3000), Ok(()));
    }

    #[test]
    fn timestamped_hmac_takes_any_of_several_signatures_and_rotated_secrets() {
        let auth = timestamped();
        let body = br#"{"alert_id":"a-1"}"#;
        let ts = NOW.to_string();
        let new_tag = hex::encode(hmac_tag(b"new", &[format!("v0:{ts}:").as_bytes(), body]));
        let value = format!("v1=deadbeef, v0={}, v0={new_tag}", "00".repeat(32));
        let h = headers(&[("x-signature-timestamp", &ts), ("x-signature", &value)]);
        let m = Method::Timestamped(&auth);
        assert_eq!(verify(m, Some(&Secrets::parse(b"old\nnew\n")), &h, body, NOW), Ok(()));
        assert_eq!(
            verify(m, Some(&Secrets::parse(b"old")), &h, body, NOW),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn timestamped_hmac_binds_the_timestamp_into_the_signature() {
        let auth = timestamped();
        let body = b"{}";
        let tag = hex::encode(hmac_tag(b"s", &[b"v0:1700000000:", body]));
        let h = headers(&[("x-signature-timestamp", "1700000001"), ("x-signature", &tag)]);
        assert_eq!(
            verify(Method::Timestamped(&auth), Some(&Secrets::parse(b"s")), &h, body, NOW),
            Err(AuthError::SignatureMismatch)
        );
        let bad_ts = headers(&[("x-signature-timestamp", "soon"), ("x-signature", &tag)]);
        assert!(matches!(
            verify(Method::Timestamped(&auth), Some(&Secrets::parse(b"s")), &bad_ts, body, NOW),
            Err(AuthError::MalformedHeader(_))
        ));
    }

    #[test]
    fn bearer_accepts_any_listed_token_and_refuses_others() {
        let auth = BearerAuth { secret_ref: secret_ref() };
        let secrets = Secrets::parse(b"tok-old\ntok-new\n");
        let m = Method::Bearer(&auth);
        for good in ["Bearer tok-new", "bearer tok-old"] {
            let h = headers(&[("authorization", good)]);
            assert_eq!(verify(m, Some(&secrets), &h, b"", NOW), Ok(()));
        }
        let h = headers(&[("authorization", "Bearer tok-newer")]);
        assert_eq!(verify(m, Some(&secrets), &h, b"", NOW), Err(AuthError::TokenMismatch));
        let h = headers(&[("authorization", "Basic dG9rLW5ldw==")]);
        assert!(matches!(
            verify(m, Some(&secrets), &h, b"", NOW),
            Err(AuthError::MalformedHeader(_))
        ));
    }

    #[test]
    fn signed_modes_refuse_when_the_secret_is_missing_or_blank() {
        let auth = hmac_auth();
        let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
        let m = Method::Hmac(&auth);
        assert_eq!(verify(m, None, &h, b"Hello, World!", NOW), Err(AuthError::NoSecret));
        let blank = Secrets::parse(b"\n  \n");
        assert_eq!(verify(m, Some(&blank), &h, b"Hello, World!", NOW), Err(AuthError::NoSecret));
    }

    #[test]
    fn only_an_explicit_none_accepts_unsigned_requests() {
        let none = WebhookAuth { none: Some(Default::default()), ..Default::default() };
        assert_eq!(verify(Method::of(&none), None, &HeaderMap::new(), b"{}", NOW), Ok(()));
        let empty = WebhookAuth::default();
        assert_eq!(
            verify(Method::of(&empty), None, &HeaderMap::new(), b"{}", NOW),
            Err(AuthError::Unconfigured)
        );
        let both = WebhookAuth { hmac_sha256: Some(hmac_auth()), ..none };
        assert!(verify(Method::of(&both), None, &HeaderMap::new(), b"{}", NOW).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secrets = Secrets::parse(b"hunter2");
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }
}
