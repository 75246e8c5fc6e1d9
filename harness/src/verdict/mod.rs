//! Verdicts: how a case went, graded the way Autobahn|Testsuite grades, with
//! a separate axis for how the channel recovered afterwards.

mod result;

pub use crate::case::Level;
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
}

impl Recovery {
    pub fn not_run() -> Recovery {
        Recovery { grade: RecoveryGrade::NotRun, resync_time: Duration::ZERO, bytes_discarded: 0, attempts: 0, detail: None }
    }
}

/// Client mode: how the client under test came through a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientGrade {
    /// Every job command reported its own reply, at the first attempt.
    Recovered,
    /// Every job command reported its own reply, after the client's own
    /// retry (a second sync or a repeated command).
    RecoveredAfterRetry,
    /// Some command reported an error (or nothing), and no wrong data.
    CleanError,
    /// A result that was not the reply to its request.
    Wrong,
    /// The client did not exit by the deadline; its process group was killed.
    Hung,
    /// The harness or the agent failed, or the report broke the contract:
    /// says nothing about the client's recovery.
    Invalid,
}

impl ClientGrade {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientGrade::Recovered => "recovered",
            ClientGrade::RecoveredAfterRetry => "recovered-after-retry",
            ClientGrade::CleanError => "clean-error",
            ClientGrade::Wrong => "wrong",
            ClientGrade::Hung => "hung",
            ClientGrade::Invalid => "invalid",
        }
    }
}

impl fmt::Display for ClientGrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// What kind of defect a failure shows: a stable code that findings group
/// on (the human text carries random ids and bytes; this never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// A delimited reply came without any raw 0xFF before it.
    NoSentinel,
    /// The 0xFF came after the reply's JSON instead of before it.
    LateSentinel,
    /// The sentinel was written as UTF-8 U+00FF (C3 BF), not the raw byte.
    Utf8Sentinel,
    /// A delimited reply with the 0xFF elsewhere, or more than one.
    MisplacedSentinel,
    /// A raw 0xFF/0xFE where none may be (a reply that is not delimited).
    StraySentinel,
    /// The agent exited when it read the client's 0xFF.
    DiesOnFlushByte,
    /// A reply came that answers nothing we asked (an earlier reply again).
    DuplicateReply,
    /// A reply to a later request: the replies between were lost.
    RepliesLost,
    /// The reply does not carry the request's id.
    IdNotEchoed,
    /// An id member where the request had none.
    IdUnexpected,
    /// The id (or sync return) is the same value in floating-point form.
    IdFloatForm,
    /// The id came back rounded to double precision.
    IdRounded,
    /// The id came back truncated to 32 bits.
    IdTruncated,
    /// The id came back as a string.
    IdStringified,
    /// The id came back as another value.
    IdChanged,
    /// A request with a numeric id is rejected (string ids work).
    NumericIdRejected,
    /// A request sent without a trailing newline got no reply.
    NoReplyWithoutNewline,
    /// No reply at all.
    NoReply,
    /// Part of a reply, never completed.
    PartialReply,
    /// A reply that is not valid JSON, or not a reply object.
    MalformedReply,
    /// An error reply without a string `class`.
    ErrorWithoutClass,
    /// An error class QAPI does not define.
    ErrorClassNotQapi,
    /// A return value other than the expected one.
    WrongReturn,
    /// An error of another class than expected.
    WrongErrorClass,
    /// An error where a return was expected.
    UnexpectedError,
    /// A return where an error was expected.
    UnexpectedReturn,
    /// A reply spread over several lines.
    MultiLineReply,
    /// A reply not followed by a newline.
    NoNewline,
    /// Output where silence was expected.
    UnexpectedOutput,
    /// Bytes that cannot begin a reply.
    GarbageOutput,
    /// The agent closed the channel or exited.
    AgentGone,
    /// The agent stopped reading its input.
    NotReading,
    /// The reference client could not resync.
    ResyncFailed,
    /// After the case the channel did not come back.
    Wedged,
    /// The case ran past its budget.
    CaseTimeout,
    /// The agent did not start, or start-up could not find out why.
    StartupFailed,
    /// Not run: a capability it needs is missing.
    Blocked,
    /// The case needs something the agent or transport does not offer.
    NotApplicable,
    /// The harness refused to send a denied command.
    Refused,
    /// The harness itself failed.
    Harness,
    /// A reply that breaks the QGA schema: a required member missing, a
    /// wrong JSON type, an integer out of range, an unknown enum value or
    /// union variant.
    SchemaViolation,
    /// A member the schema does not have.
    SchemaExtraMember,
    /// A command or reply the schema version does not know (a newer agent).
    NotInSchema,
    /// A safe command answered with an error on this machine.
    CommandFailedHere,
    /// A reply with both `return` and `error`.
    ReturnAndError,
    /// Client mode: a result reported that was not the reply to its request.
    ClientWrongResult,
    /// Client mode: a command failed where recovery was due.
    ClientNotRecovered,
    /// Client mode: the client did not finish by the deadline.
    ClientHung,
    /// Client mode: the client's report does not follow the contract.
    ClientBadReport,
    /// Client mode: the client never sends 0xFF before its sync request.
    ClientNoFlushByte,
    /// Client mode: the client syncs with plain guest-sync.
    ClientPlainSync,
    /// Client mode: the client does not sync at all before its commands.
    ClientNoSync,
    /// Client mode: sync ids that repeat or are easy to guess (fixed,
    /// reused, 16-bit, the process id).
    ClientPredictableIds,
    /// Client mode: after its own timeout the client sends its next
    /// request without syncing again.
    ClientNoResyncAfterTimeout,
    /// Client mode: requests without a trailing newline.
    ClientNoNewline,
    /// Anything else the case found.
    #[default]
    Other,
}

impl FailureKind {
    /// The stable code (as in JSON).
    pub fn code(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// One line naming the defect, for a findings list.
    pub fn summary(self) -> &'static str {
        use FailureKind::*;
        match self {
            NoSentinel => "guest-sync-delimited is answered without the raw 0xFF sentinel",
            LateSentinel => "the sentinel comes after the reply instead of before it",
            Utf8Sentinel => "the sentinel is UTF-8-encoded (C3 BF) instead of the raw byte 0xFF",
            MisplacedSentinel => "the sentinel is not exactly one 0xFF immediately before the reply",
            StraySentinel => "raw 0xFF/0xFE bytes on replies that are not delimited",
            DiesOnFlushByte => "the agent exits when the client sends 0xFF",
            DuplicateReply => "a reply is sent more than once",
            RepliesLost => "replies are lost",
            IdNotEchoed => "the request id is not echoed in the reply",
            IdUnexpected => "an id appears on a reply to a request without one",
            IdFloatForm => "ids come back in floating-point form (same value, other JSON form)",
            IdRounded => "ids are rounded to double precision",
            IdTruncated => "ids are truncated to 32 bits",
            IdStringified => "numeric ids come back as strings",
            IdChanged => "ids come back changed",
            NumericIdRejected => "requests with numeric ids are rejected",
            NoReplyWithoutNewline => "a request without a trailing newline gets no reply",
            NoReply => "no reply where one is due",
            PartialReply => "a reply is started and never completed",
            MalformedReply => "malformed replies",
            ErrorWithoutClass => "error replies without a class",
            ErrorClassNotQapi => "error classes outside QAPI's list",
            WrongReturn => "wrong return values",
            WrongErrorClass => "wrong error classes",
            UnexpectedError => "an error where a return is due",
            UnexpectedReturn => "a return where an error is due",
            MultiLineReply => "replies spread over several lines",
            NoNewline => "replies not terminated by a newline",
            UnexpectedOutput => "output where none is due",
            GarbageOutput => "bytes that cannot begin a reply",
            AgentGone => "the agent exits or closes the channel",
            NotReading => "the agent stops reading its input",
            ResyncFailed => "a client cannot resync through guest-sync-delimited",
            Wedged => "the channel does not recover after the case",
            CaseTimeout => "a case does not finish within its budget",
            StartupFailed => "the agent does not start or answer",
            Blocked => "not run: a capability is missing",
            NotApplicable => "not applicable",
            Refused => "refused: a destructive command",
            Harness => "harness error",
            SchemaViolation => "replies that break the QGA schema",
            SchemaExtraMember => "members the QGA schema does not have",
            NotInSchema => "commands the schema version does not know",
            CommandFailedHere => "a read-only command failed on this machine",
            ReturnAndError => "a reply with both return and error",
            ClientWrongResult => "the client reports a result that is not the reply to its request",
            ClientNotRecovered => "the client does not recover: a command fails where recovery is due",
            ClientHung => "the client hangs",
            ClientBadReport => "the client's report does not follow the contract",
            ClientNoFlushByte => "the client does not send 0xFF before its sync",
            ClientPlainSync => "the client syncs with guest-sync, not guest-sync-delimited",
            ClientNoSync => "the client does not sync before its commands",
            ClientPredictableIds => "the client's sync ids repeat or are easy to guess",
            ClientNoResyncAfterTimeout => "the client does not resync after its own timeout",
            ClientNoNewline => "the client's requests have no trailing newline",
            Other => "other",
        }
    }
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
