//! What a campaign cost: schedules per minute, and the mean time of one
//! schedule against the agent's start-up floor measured in the same run
//! (spawn to first answered sync with a minimal client, [`crate::bench::raw`]).
//! Performance claims about the fuzzer come from this, printed at the end of
//! every campaign, not from timed tests.

use super::FuzzReport;
use crate::session::SessionConfig;
use std::time::Duration;

/// A campaign's throughput and its cost per schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cost {
    pub schedules_per_min: f64,
    /// Schedule executions (repeats and shrinking included) per minute.
    pub runs_per_min: f64,
    /// Mean wall-clock time of one schedule run on one job, in microseconds:
    /// the campaign's time times its jobs, over its runs.
    pub mean_run_us: f64,
    /// The start-up floor's median, in microseconds, when it was measured.
    pub floor_us: Option<f64>,
    /// `mean_run_us / floor_us`.
    pub ratio: Option<f64>,
}

impl Cost {
    /// The cost of `report`, run on `jobs` jobs, against `floor`.
    pub fn of(report: &FuzzReport, jobs: usize, floor: Option<Duration>) -> Cost {
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        let mean_run_us = report.elapsed.as_secs_f64() * 1e6 * jobs.max(1) as f64 / report.runs.max(1) as f64;
        let floor_us = floor.filter(|f| !f.is_zero()).map(|f| f.as_secs_f64() * 1e6);
        Cost {
            schedules_per_min: report.schedules as f64 * 60.0 / secs,
            runs_per_min: report.runs as f64 * 60.0 / secs,
            mean_run_us,
            floor_us,
            ratio: floor_us.map(|f| mean_run_us / f),
        }
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cost: {:.0} schedules/min; {:.2} ms per schedule run per job (mean)", self.schedules_per_min, self.mean_run_us / 1e3)?;
        match (self.floor_us, self.ratio) {
            (Some(floor), Some(ratio)) => write!(f, "; floor (spawn to first answered sync, minimal client, p50) {:.2} ms; ratio {ratio:.2}x the floor", floor / 1e3),
            _ => write!(f, "; floor not measured"),
        }
    }
}

/// The start-up floor for `config`'s agent: the median of `spawns`
/// measurements (blocking; None when `spawns` is 0 or none succeeded).
pub fn floor(config: &SessionConfig, spawns: usize) -> Option<Duration> {
    crate::bench::raw::median_startup(config, spawns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(schedules: u64, runs: u64, elapsed: Duration) -> FuzzReport {
        FuzzReport { schedules, runs, elapsed, ..Default::default() }
    }

    #[test]
    fn the_mean_counts_every_job_and_the_ratio_is_against_the_floor() {
        // 600 runs on 2 jobs in 3 s: 10 ms per run per job.
        let c = Cost::of(&report(600, 600, Duration::from_secs(3)), 2, Some(Duration::from_millis(4)));
        assert_eq!(c.schedules_per_min, 12_000.0);
        assert!((c.mean_run_us - 10_000.0).abs() < 1e-6, "{c:?}");
        assert!((c.ratio.unwrap() - 2.5).abs() < 1e-9, "{c:?}");
        let text = c.to_string();
        assert!(text.contains("12000 schedules/min") && text.contains("10.00 ms per schedule run") && text.contains("floor (spawn to first answered sync, minimal client, p50) 4.00 ms; ratio 2.50x the floor"), "{text}");
    }

    #[test]
    fn without_a_floor_there_is_no_ratio() {
        let c = Cost::of(&report(10, 12, Duration::from_secs(1)), 1, None);
        assert_eq!(c.ratio, None);
        assert!(c.to_string().ends_with("floor not measured"));
        assert_eq!(Cost::of(&report(0, 0, Duration::ZERO), 1, Some(Duration::ZERO)).ratio, None);
    }
}
