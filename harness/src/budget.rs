//! Every time limit of a run, in one value.
//!
//! A budget bounds a wait for a broken peer; a healthy one never comes near
//! it (qemu-ga answers in tens of microseconds and starts in 2–3 ms). The
//! defaults depend on the channel (a guest's agent runs under emulation,
//! behind emulated devices) and on the mode (the fuzzer runs a failing
//! schedule again at every step of shrinking, so every failure it meets
//! costs a timeout: its waits are tighter). The user's flags override them.
//!
//! The start-up probe measures the agent's [`Pace`]; [`Budgets::scaled`] is
//! the one place where budgets follow it, so a slow but correct agent passes.
//! A run records the budgets it used (`run.json`), and the fuzzer's replay
//! line is built from them, so a replay waits exactly as the fuzzer did.

use crate::transport::TransportKind;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the budgets are for: each mode has its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `run`: the catalogue against an agent.
    Run,
    /// `fuzz`: random schedules, shrunk on failure.
    Fuzz,
    /// `client`: a client under test, an agent behind the harness.
    Client,
    /// `bench`: measurements, where a wait that runs out spoils a sample.
    Bench,
}

/// The time limits of one run. Serialised as whole microseconds, so a
/// document read back gives the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    /// One reply: from the request to its first byte.
    #[serde(with = "crate::transcript::micros")]
    pub reply: Duration,
    /// A pause inside one reply, once it has started.
    #[serde(with = "crate::transcript::micros")]
    pub idle: Duration,
    /// One write may block this long without the agent taking a byte.
    #[serde(with = "crate::transcript::micros")]
    pub send: Duration,
    /// One resync, all its attempts together.
    #[serde(with = "crate::transcript::micros")]
    pub resync: Duration,
    /// A resync's first attempt waits this long for its reply; each retry
    /// doubles the wait up to `resync_max_attempt`.
    #[serde(with = "crate::transcript::micros")]
    pub resync_first_attempt: Duration,
    #[serde(with = "crate::transcript::micros")]
    pub resync_max_attempt: Duration,
    /// From spawn to the first answered sync.
    #[serde(with = "crate::transcript::micros")]
    pub startup: Duration,
    /// SIGTERM's grace before SIGKILL.
    #[serde(with = "crate::transcript::micros")]
    pub term_grace: Duration,
    /// VM transports: from QEMU's start to the guest init's hello.
    #[serde(with = "crate::transcript::micros")]
    pub vm_boot: Duration,
    /// One agent case, unless the case names its own.
    #[serde(with = "crate::transcript::micros")]
    pub case: Duration,
    /// A recovery slower than this (or needing retries) is graded slow.
    #[serde(with = "crate::transcript::micros")]
    pub quick_resync: Duration,
    /// Client mode: `{timeout_ms}`, the client's own wait for one reply.
    #[serde(with = "crate::transcript::micros")]
    pub client_timeout: Duration,
    /// Client mode: the client program's start (interpreters are slow).
    #[serde(with = "crate::transcript::micros")]
    pub client_startup: Duration,
}

const MS: fn(u64) -> Duration = Duration::from_millis;

impl Budgets {
    /// The defaults for `transport` in `mode`.
    pub fn defaults(transport: TransportKind, mode: Mode) -> Budgets {
        let mut b = Budgets {
            reply: MS(250),
            idle: MS(250),
            send: MS(250),
            resync: MS(1000),
            resync_first_attempt: MS(25),
            resync_max_attempt: MS(200),
            startup: MS(2000),
            term_grace: MS(100),
            vm_boot: MS(30_000),
            case: MS(5000),
            quick_resync: MS(50),
            client_timeout: MS(1000),
            client_startup: MS(2000),
        };
        if mode == Mode::Fuzz {
            b.reply = MS(50);
            b.resync = MS(250);
        }
        if mode == Mode::Bench {
            b.client_startup = MS(5000);
        }
        if transport.vm().is_some() {
            // A guest's agent runs under emulation, behind emulated devices:
            // room for that, so a slow but correct path never fails on timing
            // alone. An emulated ISA serial port takes in about 113 KiB/s.
            b.reply = b.reply.max(MS(1000));
            b.resync = b.resync.max(MS(4000));
            b.send = MS(5000);
        }
        b
    }

    /// These budgets for an agent of `pace`: the waits that depend on the
    /// agent's speed are multiplied by its pace factor (never below 1).
    /// The agent's start, a signal's grace, the VM's boot and the client
    /// program's own limits do not follow the agent's pace.
    pub fn scaled(&self, pace: &Pace) -> Budgets {
        let f = pace.factor.max(1.0);
        Budgets {
            reply: self.reply.mul_f64(f),
            idle: self.idle.mul_f64(f),
            send: self.send.mul_f64(f),
            resync: self.resync.mul_f64(f),
            resync_max_attempt: self.resync_max_attempt.mul_f64(f),
            case: self.case.mul_f64(f),
            quick_resync: self.quick_resync.mul_f64(f),
            ..*self
        }
    }

    /// A duration of this run's pace: `d` multiplied as [`Budgets::scaled`]
    /// multiplies the budgets (for a wait that is not a budget of its own,
    /// such as a case's declared timeout).
    pub fn pace(pace: &Pace, d: Duration) -> Duration {
        d.mul_f64(pace.factor.max(1.0))
    }

    /// The command-line flags that give these budgets back (for a replay
    /// line). Flags take milliseconds: the defaults and the user's flags
    /// are whole milliseconds, so nothing is lost; a scaled value is not
    /// written (a replay measures the agent's pace again).
    pub fn flags(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        format!(
            "--reply-timeout-ms {} --resync-budget-ms {} --send-timeout-ms {} --startup-timeout-ms {} --vm-boot-timeout-ms {}",
            ms(self.reply),
            ms(self.resync),
            ms(self.send),
            ms(self.startup),
            ms(self.vm_boot)
        )
    }
}

/// The agent's measured pace. Every budget follows it ([`Budgets::scaled`]).
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

impl Pace {
    /// How many times slower than a brisk agent (qemu-ga: ping in tens of
    /// µs, an 8 KiB request in well under a millisecond): the larger of the
    /// round trip against 1 ms, the 8 KiB request against 10 ms and the
    /// longest pause inside a reply against 2 ms; at least 1, at most 50.
    pub fn measured_factor(&self) -> f64 {
        let rtt = self.rtt_us as f64 / 1000.0;
        let padded = self.padded_us as f64 / 10_000.0;
        let gaps = self.max_gap_us as f64 / 2000.0;
        rtt.max(padded).max(gaps).clamp(1.0, 50.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brisk_agent_keeps_the_defaults() {
        let b = Budgets::defaults(TransportKind::Pty, Mode::Run);
        assert_eq!(b.scaled(&Pace { factor: 1.0, ..Default::default() }), b);
        // A factor below 1 (unmeasured) never tightens a budget.
        assert_eq!(b.scaled(&Pace::default()), b);
    }

    #[test]
    fn a_slow_agent_gets_its_waits_multiplied_and_nothing_else() {
        let b = Budgets::defaults(TransportKind::Pty, Mode::Run);
        let s = b.scaled(&Pace { factor: 4.0, ..Default::default() });
        assert_eq!(s.reply, b.reply * 4);
        assert_eq!(s.resync, b.resync * 4);
        assert_eq!(s.case, b.case * 4);
        assert_eq!(s.quick_resync, b.quick_resync * 4);
        assert_eq!(s.resync_first_attempt, b.resync_first_attempt);
        assert_eq!((s.startup, s.term_grace, s.vm_boot, s.client_timeout), (b.startup, b.term_grace, b.vm_boot, b.client_timeout));
    }

    #[test]
    fn defaults_follow_the_channel_and_the_mode() {
        let run = Budgets::defaults(TransportKind::Pty, Mode::Run);
        let fuzz = Budgets::defaults(TransportKind::Pty, Mode::Fuzz);
        let vm = Budgets::defaults(TransportKind::VmIsa, Mode::Fuzz);
        assert!(fuzz.reply < run.reply && fuzz.resync < run.resync);
        assert_eq!((vm.reply, vm.resync, vm.send), (MS(1000), MS(4000), MS(5000)));
    }

    #[test]
    fn serialised_budgets_read_back_exactly() {
        let b = Budgets::defaults(TransportKind::Socketpair, Mode::Run).scaled(&Pace { factor: 1.37, ..Default::default() });
        let text = serde_json::to_string(&b).unwrap();
        let back: Budgets = serde_json::from_str(&text).unwrap();
        // Whole microseconds: a scaled value rounds once, then round-trips.
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let unscaled = Budgets::defaults(TransportKind::Socketpair, Mode::Run);
        assert_eq!(serde_json::from_str::<Budgets>(&serde_json::to_string(&unscaled).unwrap()).unwrap(), unscaled);
    }

    #[test]
    fn pace_factor_is_one_for_a_brisk_agent() {
        assert_eq!(Pace { rtt_us: 40, padded_us: 300, max_gap_us: 20, ..Default::default() }.measured_factor(), 1.0);
        assert!(Pace { rtt_us: 8000, ..Default::default() }.measured_factor() >= 8.0);
        assert_eq!(Pace { padded_us: 10_000_000, ..Default::default() }.measured_factor(), 50.0);
    }
}
