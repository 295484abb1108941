//! Latency samples and their percentiles, and the ratio of a figure to its floor.

use serde::Serialize;
use std::time::Duration;

/// A summary of latency samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// Summarises `samples`; all zero when there are none.
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            n: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms[ms.len() - 1],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p` % of the
/// values at or below it. With fewer than 100 samples, p99 is the maximum.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `value / floor`, or `None` when the floor is zero (not measured).
pub fn ratio(value: f64, floor: f64) -> Option<f64> {
    (floor > 0.0).then(|| value / floor)
}

/// A ratio as text: `1.8×`, or `—` when there is none.
pub fn times(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}×"),
        Some(r) => format!("{r:.1}×"),
        None => "—".into(),
    }
}

/// A ratio as a percentage: `93 %`, or `—`.
pub fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{:.0} %", r * 100.0))
}

/// Milliseconds as text with sensible precision.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..10], 99.0), 10.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
    }

    #[test]
    fn a_summary_of_nothing_is_zero() {
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn a_summary_reports_milliseconds() {
        let s = Summary::of(&[
            Duration::from_millis(3),
            Duration::from_millis(1),
            Duration::from_millis(2),
        ]);
        assert_eq!(
            (s.n, s.p50_ms, s.p99_ms, s.max_ms, s.mean_ms),
            (3, 2.0, 3.0, 3.0, 2.0)
        );
    }

    #[test]
    fn a_ratio_to_an_unmeasured_floor_is_none() {
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(times(ratio(3.0, 2.0)), "1.5×");
        assert_eq!(percent(ratio(9.0, 10.0)), "90 %");
    }
}
