//! Percentiles of measured durations, and the one-line form every figure
//! of `bench` is printed in.

use std::time::Duration;

/// Median, 99th percentile and mean of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

/// The figures of `xs` (all zero when it is empty).
pub fn stats(mut xs: Vec<Duration>) -> Stats {
    xs.sort_unstable();
    let n = xs.len().max(1);
    let at = |q: f64| xs.get(((xs.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    Stats { p50: at(0.5), p99: at(0.99), mean: xs.iter().sum::<Duration>() / n as u32 }
}

/// Microseconds, as the figures are printed.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One figure as a line of the report: name, p50, p99, mean.
pub fn line(name: &str, s: &Stats) -> String {
    format!("{name:<34} p50 {:>9.1} µs   p99 {:>9.1} µs   mean {:>9.1} µs", us(s.p50), us(s.p99), us(s.mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let s = stats(ms(&[5, 1, 3, 2, 4]));
        assert_eq!(s.p50, Duration::from_millis(3));
        assert_eq!(s.p99, Duration::from_millis(5));
        assert_eq!(s.mean, Duration::from_millis(3));
    }

    #[test]
    fn no_samples_are_zero_figures() {
        assert_eq!(stats(Vec::new()), Stats::default());
    }

    #[test]
    fn a_line_names_the_figure_and_gives_microseconds() {
        let l = line("ping", &stats(ms(&[1, 2, 3])));
        assert!(l.starts_with("ping "), "{l}");
        assert!(l.contains("p50    2000.0 µs") && l.contains("p99    3000.0 µs") && l.contains("mean    2000.0 µs"), "{l}");
    }
}
