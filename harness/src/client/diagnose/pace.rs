//! The agent's measured pace, from which every budget follows.

use serde::{Deserialize, Serialize};

/// The agent's measured pace. Every budget follows it (engine).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pace {
    /// Median guest-ping round trip, µs.
    pub rtt_us: u64,
    /// guest-info round trip, µs, and its reply's size.
    pub info_us: u64,
    pub info_bytes: u64,
    /// Longest pause inside one reply (between reads), µs.
    pub max_gap_us: u64,
    /// Round trip of a guest-ping padded to 8 KiB, µs: how fast it reads.
    pub padded_us: u64,
    /// How much slower than a brisk agent: 1.0 for qemu-ga; budgets are
    /// multiplied by it.
    pub factor: f64,
    /// Garbage answered at start-up (VM transports only): this many bytes
    /// of random garbage took this long to be answered, to the last error
    /// line. 0 = not measured. An emulated guest CPU writes error floods far
    /// slower than its guest-info reply suggests.
    #[serde(default)]
    pub garbage_in: u64,
    #[serde(default)]
    pub garbage_us: u64,
}

/// How many times slower than a brisk agent (qemu-ga: ping in tens of µs,
/// an 8 KiB request in well under a millisecond): the larger of the round
/// trip against 1 ms and the 8 KiB request against 10 ms, at least 1, at
/// most 50.
pub fn pace_factor(p: &Pace) -> f64 {
    let rtt = p.rtt_us as f64 / 1000.0;
    let padded = p.padded_us as f64 / 10_000.0;
    let gaps = p.max_gap_us as f64 / 2000.0;
    rtt.max(padded).max(gaps).clamp(1.0, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_factor_is_one_for_a_brisk_agent() {
        assert_eq!(pace_factor(&Pace { rtt_us: 40, padded_us: 300, max_gap_us: 20, ..Default::default() }), 1.0);
        assert!(pace_factor(&Pace { rtt_us: 8000, ..Default::default() }) >= 8.0);
        assert_eq!(pace_factor(&Pace { padded_us: 10_000_000, ..Default::default() }), 50.0);
    }
}
