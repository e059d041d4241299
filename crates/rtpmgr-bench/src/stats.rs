// SPDX-License-Identifier: MIT
//! Summaries of repeated measurements and percentiles of samples.

use serde::Serialize;

/// Median, minimum and maximum of the repetitions of one measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many repetitions the three figures are taken over.
    pub n: usize,
    /// The repetitions, in the order they ran.
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` for no samples or any non-finite one (a measurement that went
    /// wrong must not turn into a plausible number).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Summary { median, min: sorted[0], max: sorted[n - 1], n, samples: samples.to_vec() })
    }
}

/// The `p`-th percentile (0 < p <= 100) of ascending `sorted` by the
/// nearest-rank method: the smallest sample such that at least p % of the
/// samples are less than or equal to it. Always one of the samples, never
/// an interpolation, so a p99.9 of few samples reads as their maximum.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "percentile needs sorted samples");
    // Ranks are 1-based; the small epsilon keeps 99.9 % of 1000 at rank 999
    // despite 99.9 / 100 * 1000 being 999.0000000000001 in binary.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_odd_and_even() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(s.samples, vec![5.0, 1.0, 3.0], "samples keep their run order");
        let s = Summary::of(&[4.0, 1.0, 3.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.5, 1.0, 10.0));
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn summary_rejects_empty_and_nan() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
        assert!(Summary::of(&[f64::INFINITY]).is_none());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.9), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.5), Some(1));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 50.0), Some(500));
        // Few samples: the tail percentiles are the maximum.
        assert_eq!(percentile(&[3, 8, 20], 99.0), Some(20));
        assert_eq!(percentile(&[3, 8, 20], 50.0), Some(8));
        assert_eq!(percentile(&[42], 99.9), Some(42));
    }

    #[test]
    fn percentile_rejects_bad_input() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1, 2], 0.0), None);
        assert_eq!(percentile(&[1, 2], 100.1), None);
        assert_eq!(percentile(&[1, 2], f64::NAN), None);
    }
}
