//! Verdicts: how a case went, graded the way Autobahn|Testsuite grades, with
//! a separate axis for how the channel recovered afterwards.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How strongly a case's requirement binds (RFC 2119 words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Level {
    /// Violating it breaks clients: FAIL.
    MUST,
    /// Violating it is allowed but worse: NON-STRICT.
    SHOULD,
    /// Not a requirement; what the agent does is worth knowing: INFO.
    INFO,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

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
    /// A MUST was violated.
    Fail,
    /// The case did not finish within its time budget.
    Timeout,
    /// The harness itself failed; says nothing about the agent.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 7] =
        [Outcome::Pass, Outcome::NonStrict, Outcome::Info, Outcome::Unsupported, Outcome::Fail, Outcome::Timeout, Outcome::Error];

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
            Outcome::Fail | Outcome::Timeout | Outcome::Error => true,
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
            Outcome::Fail => "FAIL",
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
}

impl Recovery {
    pub fn not_run() -> Recovery {
        Recovery { grade: RecoveryGrade::NotRun, resync_time: Duration::ZERO, bytes_discarded: 0, attempts: 0, detail: None }
    }
}

/// Durations as whole microseconds in JSON.
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
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

/// What went wrong, in the three parts a reader needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// Where it happened.
    #[serde(default)]
    pub stage: Stage,
    pub requirement: String,
    pub expected: String,
    pub actual: String,
    /// Transcript entries `from..to` that show it.
    pub transcript: (u64, u64),
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
