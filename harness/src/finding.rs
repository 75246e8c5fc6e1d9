//! Findings: the stable codes that name a defect.
//!
//! A failure's human text carries random ids and the bytes an agent sent;
//! its code never does, so findings group on it (one defect, one finding),
//! baselines and reports name it, and every layer that can observe a defect
//! (the start-up probe, the client grader, the engine) speaks the same
//! words. It knows nothing else, so every layer can use it.

use serde::{Deserialize, Serialize};

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
    /// The id came back printed with 15 significant digits (a number
    /// printed through a double with `%.15g`): exact below 1e15 only.
    IdFifteenDigits,
    /// The id came back as another value.
    IdChanged,
    /// A request with a numeric id is rejected (string ids work).
    NumericIdRejected,
    /// guest-sync is not implemented (CommandNotFound), while
    /// guest-sync-delimited is: libvirt's sync cannot work.
    GuestSyncMissing,
    /// A request sent without a trailing newline got no reply.
    NoReplyWithoutNewline,
    /// Requests written together (in one write, so one read) are rejected:
    /// the agent takes each read as one request.
    PipelinedRequestsRejected,
    /// A request written after another was swallowed into it (newline
    /// framing that reads past the end of the first request).
    RequestSwallowed,
    /// The client's 0xFF did not discard the partial input before it: the
    /// request after the 0xFF was read as part of that input.
    FlushIgnored,
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
            IdRounded => "ids are held as doubles: rounded beyond 2^53, and written in float form",
            IdTruncated => "ids are truncated to 32 bits",
            IdStringified => "numeric ids come back as strings",
            IdFifteenDigits => "ids and other integers of 1e15 or more come back with 15 significant digits (printed through a double)",
            IdChanged => "ids come back changed",
            NumericIdRejected => "requests with numeric ids are rejected",
            FlushIgnored => "the client's 0xFF does not discard the partial input before it (the request after it is lost)",
            GuestSyncMissing => "guest-sync is not implemented (libvirt's sync)",
            NoReplyWithoutNewline => "a request without a trailing newline gets no reply",
            PipelinedRequestsRejected => "requests written together are rejected (each read is taken as one request)",
            RequestSwallowed => "a request written after another is swallowed into it (newline framing)",
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
