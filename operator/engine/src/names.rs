//! Deterministic names for the objects a Run creates, so a restarted operator finds them again.

use sha2_lite::digest_hex;

/// The longest name a Job may have (its pods carry it in a label).
pub const MAX_NAME: usize = 63;

/// The Job of one attempt of one step (or forEach item) of a Run.
pub fn job_name(run: &str, step: &str, item: Option<usize>, attempt: u32) -> String {
    let full = match item {
        Some(i) => format!("{run}-{step}-{i}-{attempt}"),
        None => format!("{run}-{step}-{attempt}"),
    };
    shorten(full)
}

/// The Approval of an approval step of a Run.
pub fn approval_name(run: &str, step: &str) -> String {
    shorten(format!("{run}-{step}"))
}

/// The ConfigMap holding a Job's inputs and script.
pub fn job_config_name(job: &str) -> String {
    format!("{job}-in")
}

/// The ConfigMap holding a Job's large outputs.
pub fn job_outputs_name(job: &str) -> String {
    format!("{job}-out")
}

/// Keeps `name` within [`MAX_NAME`] minus room for suffixes, replacing the tail by a digest.
fn shorten(name: String) -> String {
    const ROOM: usize = MAX_NAME - 4;
    if name.len() <= ROOM {
        return name;
    }
    let digest = digest_hex(name.as_bytes());
    let keep = ROOM - 11;
    format!("{}-{}", name[..keep].trim_end_matches('-'), &digest[..10])
}

/// A small non-cryptographic digest, stable across releases, for name shortening only.
mod sha2_lite {
    pub fn digest_hex(bytes: &[u8]) -> String {
        // FNV-1a 64, twice with different offsets for 80 useful bits.
        let fnv = |offset: u64| {
            bytes.iter().fold(offset, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
        };
        format!("{:016x}{:016x}", fnv(0xcbf29ce484222325), fnv(0x84222325cbf29ce4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_deterministic_and_short() {
        assert_eq!(job_name("r1", "siem", None, 1), "r1-siem-1");
        assert_eq!(job_name("r1", "quarantine", Some(2), 3), "r1-quarantine-2-3");
        let long = job_name(&"x".repeat(50), "a-very-long-step-name-indeed", Some(7), 12);
        assert!(long.len() <= MAX_NAME - 4, "{long}");
        assert_eq!(long, job_name(&"x".repeat(50), "a-very-long-step-name-indeed", Some(7), 12));
        assert_ne!(long, job_name(&"x".repeat(50), "a-very-long-step-name-indeed", Some(7), 13));
    }
}
