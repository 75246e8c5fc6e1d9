//! Whether one reply meets one expectation: a pure function of the reply
//! (with the bytes before it and the first byte after it), what was sent,
//! and how the start-up profile grades this agent. The `expect` step
//! ([`super::steps`]) reads; this decides.

pub(in crate::engine) mod cause;
#[cfg(test)]
mod tests;

use super::grading::Grading;
use super::request::Pending;
use crate::case::pattern;
use crate::case::step::{Expect, IdCheck};
use crate::case::Case;
use crate::client::observe::{NoReply, Observed};
use crate::client::{Capability, ClientOptions};
use crate::schema::{SchemaMiss, SchemaMissKind};
use crate::verdict::{FailureKind, Outcome};
use crate::wire::message::{compare_id, ids_equal, IdMatch, MalformedKind, QAPI_ERROR_CLASSES};
use crate::wire::Reply;
use crate::wire::sentinel::is_reset_byte;

/// A check that did not hold: the defect's kind, what was seen, and a cap
/// on the outcome (see [`super::steps::StepError::Violation`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Miss {
    pub(super) kind: FailureKind,
    pub(super) actual: String,
    pub(super) at_most: Option<Outcome>,
}

fn miss(kind: FailureKind, actual: impl Into<String>) -> Miss {
    Miss { kind, actual: actual.into(), at_most: None }
}

/// The reply as a reader sees it: the bytes before it, then its text.
pub(super) fn describe_reply(o: &Observed) -> String {
    format!("{}{}", crate::transcript::escape_bytes(&o.before), crate::transcript::escape_bytes(&o.text))
}

/// What an expectation learns from a reply that never came whole.
pub(super) fn no_reply_kind(why: &NoReply, e: &Expect, p: Option<&Pending>) -> FailureKind {
    match why {
        NoReply::Timeout { partial } if partial.iter().all(u8::is_ascii_whitespace) => {
            if p.is_some_and(|p| !p.newline) {
                FailureKind::NoReplyWithoutNewline
            } else {
                FailureKind::NoReply
            }
        }
        NoReply::Timeout { .. } => FailureKind::PartialReply,
        NoReply::Closed { .. } => FailureKind::AgentGone,
        NoReply::Garbage { bytes } if e.delimited && bytes.ends_with(&[0xC3, 0xBF]) => FailureKind::Utf8Sentinel,
        NoReply::Garbage { .. } => FailureKind::GarbageOutput,
        NoReply::Interrupted { .. } => FailureKind::StraySentinel,
        NoReply::TooLong => FailureKind::MalformedReply,
        NoReply::Io(_) => FailureKind::Harness,
    }
}

/// A schema finding ([`crate::schema::check_reply`]) as a miss: a member
/// the schema lacks is NON-STRICT, a command (or members) the schema
/// version does not know is INFO, and a valid error reply (the command
/// failed on this machine) is INFO.
fn schema_miss(m: SchemaMiss) -> Miss {
    let (kind, at_most) = match m.kind {
        SchemaMissKind::ErrorClassNotQapi => (FailureKind::ErrorClassNotQapi, None),
        SchemaMissKind::CommandFailedHere => (FailureKind::CommandFailedHere, Some(Outcome::Info)),
        SchemaMissKind::NotInSchema => (FailureKind::NotInSchema, Some(Outcome::Info)),
        SchemaMissKind::Violation => (FailureKind::SchemaViolation, None),
        SchemaMissKind::ExtraMember => (FailureKind::SchemaExtraMember, Some(Outcome::NonStrict)),
    };
    Miss { kind, actual: m.actual, at_most }
}

/// The reply was one line: no newline inside, and a newline after it with
/// at most spaces, tabs or CR between (libvirt splits replies on `\n`).
/// `after` is what has come after the reply so far; None while it is only
/// blanks (read more, or [`no_newline`] when nothing more comes).
pub(super) fn line_end(o: &Observed, after: &[u8]) -> Option<Result<(), Miss>> {
    if o.text.contains(&b'\n') {
        return Some(Err(miss(FailureKind::MultiLineReply, format!("a reply spread over several lines: {}", describe_reply(o)))));
    }
    match after.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
        Some(i) if after[i] == b'\n' => Some(Ok(())),
        Some(i) => Some(Err(miss(
            FailureKind::NoNewline,
            format!("no newline after the reply {}; next came {}", describe_reply(o), crate::transcript::escape_bytes(&after[i..after.len().min(i + 40)])),
        ))),
        None => None,
    }
}

/// Nothing but blanks came after the reply.
pub(super) fn no_newline(o: &Observed) -> Miss {
    miss(FailureKind::NoNewline, format!("no newline after the reply {}", describe_reply(o)))
}

/// What the expectation wants, for a reader.
pub(super) fn describe_expectation(e: &Expect, p: Option<&Pending>) -> String {
    let body = match (&e.return_, &e.error) {
        (Some(r), _) => format!("{{\"return\": {}}}", show_pattern(r, p)),
        (_, Some(c)) => format!("{{\"error\": {{\"class\": \"{c}\", ...}}}}"),
        _ => String::new(),
    };
    let id = match (e.id, p.and_then(|p| p.id.as_ref())) {
        (IdCheck::Echo, Some(id)) => format!(" with \"id\": {id}"),
        (IdCheck::Echo, None) | (IdCheck::Absent, _) => " without an id".into(),
        (IdCheck::Any, _) => String::new(),
    };
    let delim = if e.delimited { "a raw 0xFF immediately followed by " } else { "" };
    format!("{delim}{body}{id}")
}

fn show_pattern(v: &serde_json::Value, p: Option<&Pending>) -> String {
    match (v.as_str(), p.and_then(|p| p.sync_id)) {
        (Some("$sync"), Some(id)) => id.to_string(),
        _ => v.to_string(),
    }
}

/// `pat` with every object pattern open to more members (`"$more"`); an
/// empty one (`{}`, guest-ping's) stays what it says: the empty object.
fn open_objects(pat: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match pat {
        Value::Object(o) if !o.is_empty() => {
            let mut o: serde_json::Map<String, Value> = o.iter().map(|(k, v)| (k.clone(), open_objects(v))).collect();
            o.insert("$more".into(), Value::Bool(true));
            Value::Object(o)
        }
        Value::Array(a) => Value::Array(a.iter().map(open_objects).collect()),
        v => v.clone(),
    }
}

/// The finding for an id `sent` that came back as `got` (`Other` when it
/// is the same id): [`compare_id`] as one finding.
pub(in crate::engine) fn id_finding(sent: i64, got: Option<&serde_json::Value>) -> FailureKind {
    crate::client::id_failure_kind(compare_id(sent, got))
}

/// Whether `a` and `b` are the same JSON value with every number compared
/// as a double (1 and 1.0 alike).
fn same_numbers(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_numbers(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_numbers(v, w)))
        }
        _ => a == b,
    }
}

/// Whether `v` holds a number an integer of 1e15 or more turns into when
/// printed with `%.15g`: a non-integer JSON number of that magnitude that
/// is exactly some 15-significant-digit decimal.
fn holds_fifteen_digit_number(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64().is_some_and(|x| {
            x.abs() >= 1e15 && format!("{x:.14e}").parse::<f64>().is_ok_and(|y| y == x)
        }),
        Value::Array(a) => a.iter().any(holds_fifteen_digit_number),
        Value::Object(o) => o.values().any(holds_fifteen_digit_number),
        _ => false,
    }
}

/// What a check needs besides the reply: how this agent is graded, the
/// case (checks about a defect the probe found relax outside the cases
/// about it), and the client's options (the id forms it accepts).
pub(super) struct Checker<'a> {
    pub(super) grading: &'a Grading,
    pub(super) case: &'a Case,
    pub(super) opts: &'a ClientOptions,
}

impl Checker<'_> {
    /// A wrong value or schema violation in an agent the probe found
    /// printing numbers through a double with 15 significant digits, where
    /// the reply holds such a number: that defect, named once, rather than
    /// a second finding for its symptom (guest-get-time's nanoseconds, a
    /// 64-bit counter). Decided by the probe's fixed-magnitude finding, not
    /// by the value alone: an exact 17-digit print can happen to fit 15.
    fn fifteen_digits_cause(&self, m: Miss, reply: &Reply) -> Miss {
        let found = self
            .grading
            .profile
            .findings
            .iter()
            .any(|f| f.kind == FailureKind::IdFifteenDigits);
        let value = match reply {
            Reply::Return { value, .. } => Some(value),
            Reply::Error { .. } => None,
        };
        if found
            && matches!(
                m.kind,
                FailureKind::WrongReturn | FailureKind::SchemaViolation
            )
            && value.is_some_and(holds_fifteen_digit_number)
        {
            return Miss { kind: FailureKind::IdFifteenDigits, actual: format!("an integer printed with 15 significant digits, as the start-up probe found: {}", m.actual), at_most: m.at_most };
        }
        m
    }

    fn relaxed(&self, cap: Capability) -> bool {
        self.grading.relaxed(self.case, cap)
    }

    /// The id policy for one echoed value (a sync return or an `id` member):
    /// equal is fine; the same value in float form is NON-STRICT (unless the
    /// start-up probe already reported it and the case is not about ids);
    /// anything else says how it changed.
    fn check_id(&self, what: &str, sent: i64, got: Option<&serde_json::Value>, seen: &str, about: Capability) -> Result<(), Miss> {
        let how = compare_id(sent, got);
        match how {
            IdMatch::Exact => Ok(()),
            IdMatch::FloatForm if self.opts.mode.accept_float_ids && !Grading::tests(self.case, about) => Ok(()),
            IdMatch::FloatForm => Err(Miss {
                kind: FailureKind::IdFloatForm,
                actual: format!("{what} {sent} came back as {}: {} ({seen})", got.map_or("nothing".into(), |v| v.to_string()), how.describe()),
                at_most: Some(Outcome::NonStrict),
            }),
            _ => Err(miss(crate::client::id_failure_kind(how), format!("{what} {sent} came back as {}: {} ({seen})", got.map_or("nothing".into(), |v| v.to_string()), how.describe()))),
        }
    }

    /// Whether reply `o` meets `e`, for request `p`. `next` is the first byte
    /// after the reply other than a space or tab, if one has come: a sentinel
    /// there is a late one.
    pub(super) fn check(
        &self,
        e: &Expect,
        p: Option<&Pending>,
        o: &Observed,
        next: Option<u8>,
    ) -> Result<(), Miss> {
        self.check_reply(e, p, o, next)
            .map_err(|m| self.probe_cause(m, p, o))
    }

    /// A miss that is what the start-up probe already found, named as the
    /// probe named it: one defect, one finding. A CommandNotFound for
    /// guest-sync from an agent found without guest-sync; an error without
    /// an id for a numeric id from an agent found to reject numeric ids.
    ///
    /// A guest-sync sent as raw bytes has no command here: in the sync
    /// section, guest-sync is what every case sends. guest-info's list
    /// without guest-sync is the same defect.
    fn probe_cause(&self, m: Miss, p: Option<&Pending>, o: &Observed) -> Miss {
        let found =
            |kind: FailureKind| self.grading.profile.findings.iter().any(|f| f.kind == kind);
        let command = p.map_or("", |p| p.command.as_str());
        let sends_guest_sync =
            command == "guest-sync" || (p.is_none() && self.case.section() == "sync");
        let known = match &o.reply {
            Ok(Reply::Error { class, .. })
                if sends_guest_sync
                    && class == "CommandNotFound"
                    && found(FailureKind::GuestSyncMissing) =>
            {
                Some((
                    FailureKind::GuestSyncMissing,
                    "guest-sync is not implemented",
                ))
            }
            Ok(Reply::Error { id: None, .. })
                if p.and_then(|p| p.id.as_ref())
                    .is_some_and(serde_json::Value::is_number)
                    && found(FailureKind::NumericIdRejected) =>
            {
                Some((
                    FailureKind::NumericIdRejected,
                    "a request with a numeric id is rejected",
                ))
            }
            Ok(Reply::Return { value, .. })
                if command == "guest-info"
                    && m.kind == FailureKind::WrongReturn
                    && found(FailureKind::GuestSyncMissing)
                    && !crate::client::Profile::enabled_commands(value).is_some_and(|cs| cs.iter().any(|c| c == "guest-sync")) =>
            {
                Some((
                    FailureKind::GuestSyncMissing,
                    "guest-sync is not implemented",
                ))
            }
            // An agent found holding numbers as doubles: ids in float form,
            // and structured ids whose numbers came back as floats, are
            // that one defect.
            Ok(_) if found(FailureKind::IdRounded) && m.kind == FailureKind::IdFloatForm => {
                Some((FailureKind::IdRounded, "the agent holds numbers as doubles"))
            }
            Ok(reply)
                if found(FailureKind::IdRounded)
                    && m.kind == FailureKind::IdChanged
                    && p.and_then(|p| p.id.as_ref())
                        .zip(reply.id())
                        .is_some_and(|(a, b)| same_numbers(a, b)) =>
            {
                Some((FailureKind::IdRounded, "the agent holds numbers as doubles"))
            }
            _ => None,
        };
        match known {
            Some((kind, what)) if kind != m.kind => Miss {
                kind,
                actual: format!("{what}, as the start-up probe found: {}", m.actual),
                at_most: m.at_most,
            },
            _ => m,
        }
    }

    fn check_reply(
        &self,
        e: &Expect,
        p: Option<&Pending>,
        o: &Observed,
        next: Option<u8>,
    ) -> Result<(), Miss> {
        let got = || describe_reply(o);
        // An agent found to send error replies without a class: cases not
        // about errors take any error object as an error.
        let lenient = match &o.reply {
            Err(_) if self.relaxed(Capability::ErrorClass) => Reply::lenient_error(&o.text),
            _ => None,
        };
        let reply = match (&o.reply, &lenient) {
            (Ok(r), _) => r,
            (Err(_), Some(r)) => r,
            (Err(why), None) => {
                let kind = match why.kind {
                    MalformedKind::ErrorWithoutClass => FailureKind::ErrorWithoutClass,
                    MalformedKind::ReturnAndError => FailureKind::ReturnAndError,
                    MalformedKind::Other => FailureKind::MalformedReply,
                };
                return Err(miss(kind, format!("malformed reply {}: {}", got(), why.reason)));
            }
        };
        if e.delimited && !o.is_delimited() {
            let kind = if o.before.ends_with(&[0xC3, 0xBF]) {
                FailureKind::Utf8Sentinel
            } else if o.before.contains(&0xFF) {
                FailureKind::MisplacedSentinel
            } else if next == Some(0xFF) {
                FailureKind::LateSentinel
            } else {
                FailureKind::NoSentinel
            };
            return Err(miss(kind, format!("not delimited: {}", got())));
        }
        let allowed_ff = usize::from(e.delimited);
        // An agent found to put 0xFF on every reply: only the cases about
        // sentinels grade that.
        let leaked_ff_only = self.relaxed(Capability::CleanReplies) && !o.text.iter().any(|&b| is_reset_byte(b));
        if o.stray_flush_bytes() > allowed_ff && !leaked_ff_only {
            return Err(miss(FailureKind::StraySentinel, format!("raw 0xFF/0xFE bytes where none may be: {}", got())));
        }
        if e.schema {
            let newer = self
                .grading
                .profile
                .version
                .as_deref()
                .is_some_and(crate::schema::newer_than_schema);
            return crate::schema::check_reply(
                p.map_or("", |p| p.command.as_str()),
                reply,
                &got(),
                newer,
            )
            .map_err(schema_miss)
            .map_err(|m| self.fifteen_digits_cause(m, reply));
        }
        let bindings = pattern::Bindings { sync_id: p.and_then(|p| p.sync_id) };
        match (reply, &e.return_, &e.error) {
            (Reply::Return { value, .. }, Some(pat), _) => {
                if let (Some("$sync"), Some(sent)) = (pat.as_str(), p.and_then(|p| p.sync_id)) {
                    self.check_id("sync id", sent, Some(value), &got(), Capability::ExactIds)?;
                } else if p.is_some_and(|p| p.command == "guest-ping") && self.relaxed(Capability::EmptyPing) {
                    // An agent found to return something else than {} for
                    // guest-ping: the info cases grade that value, not every
                    // case that uses a ping as its plain request.
                } else if let (Some(sent), true) = (pat.as_i64(), value.is_number()) {
                    // An explicit id the case sent (sync/3's i64::MAX, say).
                    self.check_id("sync id", sent, Some(value), &got(), Capability::ExactIds)?;
                } else {
                    if let Err(m) = pattern::matches(pat, value, &bindings) {
                        // Only members beyond the pattern: NON-STRICT, as
                        // the schema cases grade a member the schema lacks.
                        if pattern::matches(&open_objects(pat), value, &bindings).is_ok() {
                            return Err(Miss { kind: FailureKind::SchemaExtraMember, actual: format!("{} ({m})", got()), at_most: Some(Outcome::NonStrict) });
                        }
                        return Err(self.fifteen_digits_cause(
                            miss(FailureKind::WrongReturn, format!("{} ({m})", got())),
                            reply,
                        ));
                    }
                }
            }
            (Reply::Error { class, .. }, _, Some(want)) => {
                if self.relaxed(Capability::ErrorClass) {
                    // Reported once by the probe; the errors cases grade it.
                } else if !QAPI_ERROR_CLASSES.contains(&class.as_str()) {
                    return Err(miss(FailureKind::ErrorClassNotQapi, format!("error class {class}, which QAPI does not define: {}", got())));
                }
                if want != "$any" && class != want {
                    return Err(miss(FailureKind::WrongErrorClass, format!("error class {class}: {}", got())));
                }
            }
            (Reply::Error { .. }, Some(_), None) => return Err(miss(FailureKind::UnexpectedError, got())),
            (Reply::Return { .. }, None, Some(_)) => return Err(miss(FailureKind::UnexpectedReturn, got())),
            _ => return Err(miss(FailureKind::Other, got())),
        }
        match e.id {
            IdCheck::Any => {}
            IdCheck::Absent => {
                if reply.id().is_some() {
                    return Err(miss(FailureKind::IdUnexpected, format!("an id where none was sent: {}", got())));
                }
            }
            IdCheck::Echo => match (p.and_then(|p| p.id.as_ref()), reply.id()) {
                (None, None) => {}
                (None, Some(_)) => return Err(miss(FailureKind::IdUnexpected, format!("an id where none was sent: {}", got()))),
                // An agent found not to echo ids (or to change them): replies
                // are matched by order, and only the cases about ids grade it.
                (Some(_), _) if self.relaxed(Capability::IdEcho) => {}
                (Some(sent), echoed) => match sent.as_i64() {
                    Some(n) if !self.opts.string_ids || !sent.is_string() => {
                        if !(self.relaxed(Capability::IdEcho) && echoed.is_some_and(|v| v.is_string()) && self.opts.string_ids) {
                            self.check_id("request id", n, echoed, &got(), Capability::IdEcho)?;
                        }
                    }
                    _ => {
                        if !echoed.is_some_and(|v| ids_equal(sent, v)) {
                            let kind = if echoed.is_none() { FailureKind::IdNotEchoed } else { FailureKind::IdChanged };
                            return Err(miss(kind, format!("expected id {sent}, got {}: {}", echoed.map_or("no id".into(), |v| v.to_string()), got())));
                        }
                    }
                },
            },
        }
        Ok(())
    }
}
