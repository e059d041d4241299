// SPDX-License-Identifier: MIT
//! Summaries of repeated measurements and percentiles of samples.

use serde::Serialize;

/// Median, minimum and maximum of the repetitions of one measurement, and
/// the mean with its 95 % confidence interval (Student's t, the
/// repetitions taken as independent samples).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// The 95 % confidence interval of the mean, `[low, high]`; `null`
    /// with fewer than two repetitions.
    pub ci95: Option<[f64; 2]>,
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
        let (mean, ci95) = mean_ci95(samples);
        Some(Summary { median, min: sorted[0], max: sorted[n - 1], mean, ci95, n, samples: samples.to_vec() })
    }
}

/// The two-sided 95 % quantile of Student's t with `df` degrees of
/// freedom (table to 30, then the normal's 1.96 bounded from above by the
/// t of 30, which overstates the interval a little for 31..120).
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        31..=120 => 2.042,
        _ => 1.96,
    }
}

/// Mean and the 95 % confidence interval of the mean of `samples`
/// (`None` for fewer than two).
pub fn mean_ci95(samples: &[f64]) -> (f64, Option<[f64; 2]>) {
    let n = samples.len();
    let mean = samples.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    let half = t95(n - 1) * (var / n as f64).sqrt();
    (mean, Some([mean - half, mean + half]))
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
    fn confidence_interval_of_the_mean() {
        // Mean 10, sample standard deviation 2, n = 4: half-width
        // t(3) * 2 / sqrt(4) = 3.182.
        let s = Summary::of(&[8.0, 10.0, 10.0, 12.0]).unwrap();
        let sd = (8.0f64 / 3.0).sqrt();
        assert_eq!(s.mean, 10.0);
        let [lo, hi] = s.ci95.unwrap();
        let half = 3.182 * sd / 2.0;
        assert!((lo - (10.0 - half)).abs() < 1e-9 && (hi - (10.0 + half)).abs() < 1e-9, "{lo} {hi}");
        // Identical samples: a zero-width interval; one sample: none.
        assert_eq!(Summary::of(&[3.0, 3.0]).unwrap().ci95, Some([3.0, 3.0]));
        assert_eq!(Summary::of(&[3.0]).unwrap().ci95, None);
        assert_eq!(t95(1), 12.706);
        assert_eq!(t95(9), 2.262);
        assert_eq!(t95(1000), 1.96);
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
