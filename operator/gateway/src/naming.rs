//! Run names (deterministic for deduplicated alerts, random otherwise) and W3C trace context.
//! Pure, apart from the random parts.

use rand::Rng;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The longest playbook prefix of a Run name; with `-` and 10 hex characters a Run name stays
/// within 51 characters, so Job names built from it and the `vigil.dev/run` label fit in 63.
pub const MAX_PREFIX: usize = 40;
/// Hex characters of the suffix: 40 bits.
pub const SUFFIX_LEN: usize = 10;
/// The shortest dedupe window; shorter windows are widened to it.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// The window bucket an instant falls in: `floor(now / window)`.
pub fn window_bucket(now_ms: i64, window: Duration) -> i64 {
    let window_ms = window.max(MIN_WINDOW).as_millis().min(i64::MAX as u128) as i64;
    now_ms.div_euclid(window_ms)
}

/// `sha256:<hex>` of the dedupe key alone, recorded in the `vigil.dev/dedupe-key` annotation.
pub fn key_digest(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// The name every alert with this key in this window maps to, on any replica, after any restart:
/// `{playbook}-{10 hex of sha256(namespace, playbook, key, bucket)}`.
pub fn dedupe_run_name(namespace: &str, playbook: &str, key: &str, bucket: i64) -> String {
    let mut hash = Sha256::new();
    for part in [namespace.as_bytes(), playbook.as_bytes(), key.as_bytes()] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(bucket.to_be_bytes());
    let digest = hex::encode(hash.finalize());
    format!("{}-{}", prefix(playbook), &digest[..SUFFIX_LEN])
}

/// A fresh name for a Run that is not deduplicated: `{playbook}-{10 random hex}`.
pub fn unique_run_name(playbook: &str) -> String {
    let bytes: [u8; SUFFIX_LEN / 2] = rand::rng().random();
    format!("{}-{}", prefix(playbook), hex::encode(bytes))
}

/// The playbook name cut to [`MAX_PREFIX`], dots made dashes (Job names must be DNS labels),
/// never ending in a dash.
fn prefix(playbook: &str) -> String {
    let cut: String = playbook.chars().take(MAX_PREFIX).collect();
    let cut = cut.replace('.', "-").to_ascii_lowercase();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() { "run".to_string() } else { cut.to_string() }
}

/// Whether `value` is a valid W3C `traceparent` of version 00 (or a later version we can read).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace_id, parent_id, flags, ..] = parts.as_slice() else {
        return false;
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
    lower_hex(version, 2)
        && *version != "ff"
        && (*version != "00" || parts.len() == 4)
        && lower_hex(trace_id, 32)
        && !all_zero(trace_id)
        && lower_hex(parent_id, 16)
        && !all_zero(parent_id)
        && lower_hex(flags, 2)
}

/// The incoming `traceparent` when valid, else a new sampled one.
pub fn traceparent(incoming: Option<&str>) -> String {
    match incoming.map(str::trim) {
        Some(value) if valid_traceparent(value) => value.to_string(),
        _ => {
            let mut rng = rand::rng();
            let trace: [u8; 16] = rng.random();
            let span: [u8; 8] = rng.random();
            // An all-zero id is invalid; the odds are negligible but the fix is free.
            let trace = if trace == [0; 16] { [1; 16] } else { trace };
            let span = if span == [0; 8] { [1; 8] } else { span };
            format!("00-{}-{}-01", hex::encode(trace), hex::encode(span))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_in_the_same_window_gives_the_same_name() {
        let window = Duration::from_secs(600);
        let t0 = 1_700_000_400_000; // a bucket boundary
        let a = dedupe_run_name("soc", "incident-response", "42", window_bucket(t0, window));
        let b =
            dedupe_run_name("soc", "incident-response", "42", window_bucket(t0 + 599_999, window));
        assert_eq!(a, b);
        assert!(a.starts_with("incident-response-") && a.len() == "incident-response-".len() + 10);
        let next =
            dedupe_run_name("soc", "incident-response", "42", window_bucket(t0 + 600_000, window));
        assert_ne!(a, next);
        assert_ne!(a, dedupe_run_name("soc", "incident-response", "43", window_bucket(t0, window)));
        assert_ne!(a, dedupe_run_name("dev", "incident-response", "42", window_bucket(t0, window)));
    }

    #[test]
    fn names_stay_short_and_dns_safe() {
        let long = "a.".repeat(120) + "b";
        for name in
            [dedupe_run_name("ns", &long, "k", 0), unique_run_name(&long), unique_run_name("-")]
        {
            assert!(name.len() <= MAX_PREFIX + 1 + SUFFIX_LEN, "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            assert!(!name.starts_with('-') && !name.contains("--"), "{name}");
        }
        assert_ne!(unique_run_name("pb"), unique_run_name("pb"));
    }

    #[test]
    fn a_zero_window_does_not_divide_by_zero() {
        assert_eq!(window_bucket(5_000, Duration::ZERO), 5);
        assert_eq!(window_bucket(-1, Duration::from_secs(1)), -1);
    }

    #[test]
    fn valid_incoming_traceparents_are_kept_and_bad_ones_replaced() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(good)), good);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let made = traceparent(Some(bad));
            assert_ne!(made, bad);
            assert!(valid_traceparent(&made), "{made}");
        }
        assert!(valid_traceparent(&traceparent(None)));
    }
}
