//! How the engine grades one agent, from its start-up profile: which
//! checks relax for a defect the probe already reported, which cases a
//! missing capability blocks, and budgets paced to the agent.

use crate::budget::Budgets;
use crate::case::step::{GarbageKind, Send, Step};
use crate::case::Case;
use crate::client::{Capability, Profile};
use std::time::Duration;
use crate::wire::sentinel::is_reset_byte;

/// Once output has started, a gap this long means a brisk agent has
/// finished writing for now (it answers in tens of microseconds); the
/// engine uses three times the longest pause measured at start-up if that
/// is more.
const QUIET_GAP: Duration = Duration::from_millis(2);

/// How the engine grades, from the start-up profile: what the agent lacks,
/// which case shows it, and its pace.
#[derive(Debug, Clone)]
pub struct Grading {
    pub(super) profile: Profile,
    /// For each missing capability, the case that tests it (in this run's
    /// selection), if any.
    blockers: Vec<(Capability, Option<String>)>,
    /// Budgets are multiplied by this.
    pub(super) factor: f64,
    /// The run's budgets at the agent's pace.
    budgets: Budgets,
    /// Once output has started, a gap this long means the agent has
    /// finished writing for now.
    pub(super) quiet_gap: Duration,
}

impl Grading {
    pub fn new(profile: Profile, cases: &[Case]) -> Grading {
        let mut blockers = Vec::new();
        for f in &profile.findings {
            if blockers.iter().any(|(c, _)| *c == f.capability) {
                continue;
            }
            let shown_by = cases.iter().find(|c| c.tags.iter().any(|t| t == f.capability.tag())).map(|c| c.id.clone());
            blockers.push((f.capability, shown_by));
        }
        let factor = profile.pace.factor.max(1.0);
        let quiet_gap = QUIET_GAP.max(Duration::from_micros(profile.pace.max_gap_us * 3));
        let budgets = Budgets::defaults(crate::transport::TransportKind::Pty, crate::budget::Mode::Run).scaled(&profile.pace);
        Grading { profile, blockers, factor, quiet_gap, budgets }
    }

    /// Grade with `budgets` (the run's, before pacing): they are paced to
    /// the agent here, once.
    pub fn with_budgets(mut self, budgets: Budgets) -> Grading {
        self.budgets = budgets.scaled(&self.profile.pace);
        self
    }

    /// The run's budgets at the agent's pace.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// What the start-up probe found.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The agent's output rate measured at start-up (guest-info's reply),
    /// bytes per second; unknown counts as fast.
    pub(super) fn output_rate(&self) -> f64 {
        let p = &self.profile.pace;
        if p.info_us == 0 || p.info_bytes == 0 {
            return f64::INFINITY;
        }
        p.info_bytes as f64 / (p.info_us as f64 / 1e6)
    }

    /// Garbage that the agent can answer (about 40 bytes of error output
    /// per garbage byte, worst case) within about four seconds.
    /// Only for an agent measured slow (pace factor above 1), and rounded
    /// down to a power of two, so that runs against the same agent cut the
    /// same garbage (a seed repeats the run).
    /// Where the start-up measured garbage being answered (VM transports),
    /// that measurement sets the cap, whatever the pace factor.
    pub(super) fn garbage_cap(&self) -> usize {
        let p = &self.profile.pace;
        let cap = if p.garbage_us > 0 && p.garbage_in > 0 {
            // Two seconds of answering: within the garbage cases' resync budgets.
            p.garbage_in as f64 * 2e6 / p.garbage_us as f64
        } else if self.factor <= 1.0 {
            return usize::MAX;
        } else {
            self.output_rate() * 4.0 / 40.0
        };
        if !cap.is_finite() {
            return usize::MAX;
        }
        let cap = (cap as usize).max(128);
        1 << (usize::BITS - 1 - cap.leading_zeros())
    }

    pub(super) fn scale(&self, d: Duration) -> Duration {
        Budgets::pace(&self.profile.pace, d)
    }

    /// Whether `case` tests `cap` itself (then it runs, and grades it).
    pub(super) fn tests(case: &Case, cap: Capability) -> bool {
        case.tags.iter().any(|t| t == cap.tag())
    }

    /// Whether the case may relax checks of a capability the agent lacks.
    pub(super) fn relaxed(&self, case: &Case, cap: Capability) -> bool {
        !self.profile.has(cap) && !Grading::tests(case, cap)
    }

    /// The capability this case needs that is missing, and who shows it.
    pub(super) fn blocked(&self, case: &Case) -> Option<(Capability, String)> {
        let needs = needed_capabilities(case);
        self.blockers
            .iter()
            .filter(|(cap, _)| cap.blocks())
            .find(|(cap, _)| needs.contains(cap) && !Grading::tests(case, *cap))
            .map(|(cap, by)| (*cap, by.clone().unwrap_or_else(|| "the start-up probe".into())))
    }
}

/// What a case's steps rely on beyond plain requests: a delimited sync
/// answered with the sentinel (a resync step, a delimited expectation), an
/// agent that survives a raw 0xFF (a flush byte, raw 0xFF/0xFE bytes,
/// random garbage, a resync), and guest-sync answered with its id.
pub fn needed_capabilities(case: &Case) -> Vec<Capability> {
    let mut caps = Vec::new();
    let mut need = |c: Capability| {
        if !caps.contains(&c) {
            caps.push(c);
        }
    };
    Step::visit(&case.steps, &mut |s| match s {
        Step::Resync(_) => {
            need(Capability::Sentinel);
            need(Capability::Flush);
        }
        Step::Expect(e) if e.delimited => need(Capability::Sentinel),
        Step::Send(x) => {
            if sends_flush_bytes(x) {
                need(Capability::Flush);
            }
            if x.command.as_deref() == Some("guest-sync") {
                need(Capability::GuestSync);
            }
        }
        Step::Batch(xs) => {
            if xs.iter().any(sends_flush_bytes) {
                need(Capability::Flush);
            }
            if xs.iter().any(|x| x.command.as_deref() == Some("guest-sync")) {
                need(Capability::GuestSync);
            }
        }
        Step::Garbage(g) if g.kind == GarbageKind::Any => need(Capability::Flush),
        _ => {}
    });
    caps
}

fn sends_flush_bytes(s: &Send) -> bool {
    s.flush || s.raw.as_ref().is_some_and(|r| r.0.iter().any(|&b| is_reset_byte(b)))
}
