//! Verdicts: how a case went, graded the way Autobahn|Testsuite grades, with
//! a separate axis for how the channel recovered afterwards.

mod result;

pub use crate::case::Level;
pub use crate::finding::FailureKind;
pub use crate::proxy::grade::ClientGrade;
pub use crate::transcript::micros;
pub use result::{skeleton, CaseResult, ClientRunInfo, RunResult, StartupError};
#[cfg(test)]
pub(crate) use result::test_result;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The outcome of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Outcome {
    /// Every expectation held.
    Pass,
    /// A SHOULD was violated.
    NonStrict,
    /// Noteworthy behaviour that is conforming (an INFO case's observation).
    Info,
    /// The agent does not offer a command the case needs (from guest-info).
    Unsupported,
    /// Not run: it needs a capability that the agent was found to lack at
    /// start-up (e.g. a working sentinel). The failure names the case that
    /// shows the defect; that case carries the FAIL.
    Blocked,
    /// A MUST was violated.
    Fail,
    /// Client mode: the client reported a result that was not the reply to
    /// its request. The worst grade: its caller acts on wrong data.
    Wrong,
    /// The case did not finish within its time budget.
    Timeout,
    /// The harness itself failed; says nothing about the agent.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Pass,
        Outcome::NonStrict,
        Outcome::Info,
        Outcome::Unsupported,
        Outcome::Blocked,
        Outcome::Fail,
        Outcome::Wrong,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The outcome when an expectation of a case at `level` is not met.
    pub fn for_violation(level: Level) -> Outcome {
        match level {
            Level::MUST => Outcome::Fail,
            Level::SHOULD => Outcome::NonStrict,
            Level::INFO => Outcome::Info,
        }
    }

    /// Whether this outcome fails a run (NON-STRICT only under `--strict`).
    pub fn is_failing(self, strict: bool) -> bool {
        match self {
            // BLOCKED fails a run even when the blocking case was not
            // selected: the agent lacks something every client needs.
            Outcome::Fail | Outcome::Wrong | Outcome::Timeout | Outcome::Error | Outcome::Blocked => true,
            Outcome::NonStrict => strict,
            Outcome::Pass | Outcome::Info | Outcome::Unsupported => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::NonStrict => "NON-STRICT",
            Outcome::Info => "INFO",
            Outcome::Unsupported => "UNSUPPORTED",
            Outcome::Blocked => "BLOCKED",
            Outcome::Fail => "FAIL",
            Outcome::Wrong => "WRONG",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Error => "ERROR",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the channel came back after the case: the recovery axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryGrade {
    /// The first sync attempt was answered, quickly.
    Resynced,
    /// Recovered, but needed retries or more than the quick threshold.
    Slow,
    /// No recovery within the budget, or the next commands got wrong replies.
    Wedged,
    /// Not measured (the case was not run).
    NotRun,
}

/// Recovery metrics after a case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    pub grade: RecoveryGrade,
    #[serde(with = "micros")]
    pub resync_time: Duration,
    pub bytes_discarded: u64,
    pub attempts: u32,
    /// Why it is wedged, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What a failed recovery showed (a changed id, an error reply, the
    /// agent gone...); `wedged` only when nothing answered at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
}

impl Recovery {
    pub fn not_run() -> Recovery {
        Recovery { grade: RecoveryGrade::NotRun, resync_time: Duration::ZERO, bytes_discarded: 0, attempts: 0, detail: None, kind: None }
    }
}

/// Where in a case a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The agent could not be started or checked for the case.
    Start,
    /// The case's own steps.
    #[default]
    Steps,
    /// The recovery after the steps (resync and verification).
    Recovery,
}

impl FailureKind {
    /// The finding a violation of a client-mode check is.
    pub fn of_check(check: crate::case::Check) -> FailureKind {
        use crate::case::Check;
        match check {
            Check::FlushByte => FailureKind::ClientNoFlushByte,
            Check::DelimitedSync => FailureKind::ClientPlainSync,
            Check::FreshIds => FailureKind::ClientPredictableIds,
            Check::ResyncAfterTimeout => FailureKind::ClientNoResyncAfterTimeout,
            Check::Newline => FailureKind::ClientNoNewline,
            Check::Sync => FailureKind::ClientNoSync,
        }
    }
}

/// What went wrong, in the three parts a reader needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The defect's stable code; findings group on it.
    #[serde(default)]
    pub kind: FailureKind,
    /// Where it happened.
    #[serde(default)]
    pub stage: Stage,
    pub requirement: String,
    pub expected: String,
    pub actual: String,
    /// Transcript entries `from..to` that show it.
    pub transcript: (u64, u64),
    /// Other defects the case's replies showed besides its primary one
    /// (`kind`): an error reply that also lacks its class, a reply that is
    /// also spelt wrong. Findings list them apart; the case counts under
    /// `kind` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary: Vec<Secondary>,
}

/// A defect a case saw besides its primary finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secondary {
    pub kind: FailureKind,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip_and_grade() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
        assert!(Outcome::NonStrict.is_failing(true) && !Outcome::NonStrict.is_failing(false));
        assert!(!Outcome::Info.is_failing(true) && !Outcome::Unsupported.is_failing(true));
        assert_eq!(Outcome::for_violation(Level::SHOULD), Outcome::NonStrict);
    }
}
