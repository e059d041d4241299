// SPDX-License-Identifier: MIT
//! Rates and durations on the command line.

use std::time::Duration;

/// A rate such as `10M`, `2.5k`, `950` (suffixes k/K, M, G: powers of 1000).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * mul),
        _ => Err(format!("bad rate {s:?} (a positive number, optionally with k, M or G)")),
    }
}

/// A duration in seconds such as `30`, `2.5`, `30s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v * scale < 86_400.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("bad duration {s:?} (seconds, or a number with s or ms)")),
    }
}

/// Packets per second of a stream of `bits_per_s` carried in payloads of
/// `payload_bytes` (the RTP payload, as a stream's bit rate counts it).
pub fn packets_per_s(bits_per_s: f64, payload_bytes: usize) -> f64 {
    bits_per_s / (payload_bytes as f64 * 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10M"), Ok(10e6));
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert_eq!(parse_rate("2K"), Ok(2000.0));
        assert_eq!(parse_rate("1G"), Ok(1e9));
        assert_eq!(parse_rate(" 950 "), Ok(950.0));
        for bad in ["", "M", "0", "-5k", "ten", "10m", "inf", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "s", "0", "-1", "1h", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ten_megabit_is_about_950_packets() {
        let pps = packets_per_s(10e6, 1316);
        assert!((pps - 949.848).abs() < 0.01, "{pps}");
    }
}
