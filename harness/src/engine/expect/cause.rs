//! Root cause before symptom: when a reply misses its expectation (or
//! never comes), what the way it was written or an earlier reply explains.
//! A copy of an earlier reply read where another was due is a duplicate;
//! an error without an id answering requests written together (or in
//! pieces) is the agent rejecting pipelined or split writes; silence for a
//! request written after another in one write is that request swallowed;
//! a request lost to stale input although the client's 0xFF came between
//! is the 0xFF ignored.

use super::Miss;
use crate::client::observe::Observed;
use crate::engine::request::{Pending, Shape};
use crate::verdict::{FailureKind, Secondary};
use crate::wire::message::MalformedKind;
use crate::wire::Reply;

/// A cause found behind a miss: its finding, and what the reply also
/// showed (a class-less error, say).
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) struct Cause {
    pub(in crate::engine) kind: FailureKind,
    pub(in crate::engine) actual: String,
    pub(in crate::engine) secondary: Vec<Secondary>,
}

/// Whether `text` can only be one reply: it carries an id, or it returns a
/// number (a sync's answer). `{"return": {}}` without an id may well come
/// twice by right.
pub(in crate::engine) fn singular(text: &[u8]) -> bool {
    match Reply::parse(text) {
        Ok(Reply::Return { value, id }) => id.is_some() || value.is_number(),
        Ok(Reply::Error { id, .. }) => id.is_some(),
        Err(_) => false,
    }
}

/// The cause behind a reply `o` that missed (`m`) its expectation for
/// request `p`; `seen` holds the replies read before it in the case.
pub(in crate::engine) fn behind_reply(m: &Miss, o: &Observed, p: Option<&Pending>, seen: &[Vec<u8>], return_due: bool) -> Option<Cause> {
    let shown = super::describe_reply(o);
    if singular(&o.text) && seen.iter().any(|t| *t == o.text) {
        return Some(Cause { kind: FailureKind::DuplicateReply, actual: format!("a copy of an earlier reply, read where another was due: {shown}"), secondary: Vec::new() });
    }
    let shape = p.map_or(Shape::Alone, |p| p.shape);
    // A return with another id than the request's, after stale input and
    // a reset byte: the agent answered the stale input the reset byte
    // should have dropped.
    if shape == Shape::AfterFlushedLine {
        if let (Ok(Reply::Return { id: Some(got), .. }), Some(sent)) =
            (&o.reply, p.and_then(|p| p.id.as_ref()))
        {
            if got != sent {
                let command = p.map_or("", |p| p.command.as_str());
                return Some(Cause { kind: FailureKind::FlushIgnored, actual: format!("a reply to the stale input before the reset byte, where {command}'s was due: {shown}"), secondary: Vec::new() });
            }
        }
    }
    // An error where a return was due, to a request that followed other
    // input on its line: it was read as part of that input.
    if return_due
        && shape.after_input()
        && matches!(o.reply, Ok(Reply::Error { .. }))
        && m.kind != FailureKind::IdNotEchoed
    {
        let command = p.map_or("", |p| p.command.as_str());
        if shape == Shape::AfterFlushedLine {
            return Some(Cause { kind: FailureKind::FlushIgnored, actual: format!("{command}, written after 0xFF, was read as part of the stale input before the 0xFF: {shown}"), secondary: Vec::new() });
        }
        return Some(Cause {
            kind: FailureKind::RequestSwallowed,
            actual: format!("{command} was read as part of the input before it: {shown}"),
            secondary: Vec::new(),
        });
    }
    // After the client's own 0xFF, an id-less error is the agent's answer
    // to that byte (qemu-ga's lexical error), not a rejected request.
    if return_due && !matches!(shape, Shape::Alone | Shape::AfterFlush) {
        let classless = matches!(&o.reply, Err(e) if e.kind == MalformedKind::ErrorWithoutClass);
        let id_less_error = match &o.reply {
            Ok(Reply::Error { id, .. }) => id.is_none(),
            Err(_) if classless => Reply::lenient_error(&o.text).is_some_and(|r| r.id().is_none()),
            _ => false,
        };
        if id_less_error {
            let how = if shape == Shape::Split { "a request written in pieces" } else { "requests written together" };
            let secondary = if classless || m.kind == FailureKind::ErrorWithoutClass {
                vec![Secondary { kind: FailureKind::ErrorWithoutClass, detail: format!("the error has no class: {shown}") }]
            } else {
                Vec::new()
            };
            return Some(Cause { kind: FailureKind::PipelinedRequestsRejected, actual: format!("{how} answered by one error: {shown}"), secondary });
        }
    }
    None
}

/// The cause behind no reply (`kind`) for request `p`: written after
/// another request in one write (or on a line left open), it was
/// swallowed. `nth_raw`: without a request of ours, this is reply `n` of
/// a raw write that held `m` whole requests, as (n, m).
pub(in crate::engine) fn behind_silence(
    kind: FailureKind,
    p: Option<&Pending>,
    nth_raw: (usize, usize),
) -> Option<Cause> {
    let after = p.is_some_and(|p| p.shape.after_input())
        || (p.is_none() && nth_raw.0 > 0 && nth_raw.0 < nth_raw.1);
    let flushed = p.is_some_and(|p| p.shape == Shape::AfterFlushedLine);
    (after
        && matches!(
            kind,
            FailureKind::NoReply | FailureKind::NoReplyWithoutNewline
        ))
    .then(|| Cause {
        kind: if flushed {
            FailureKind::FlushIgnored
        } else {
            FailureKind::RequestSwallowed
        },
        actual: match p {
            Some(p) if flushed => format!(
                "no reply to {}, written after 0xFF: the stale input before the 0xFF took it",
                p.command
            ),
            Some(p) => format!(
                "no reply to {}, written after other input on the same line or in the same write",
                p.command
            ),
            None => format!(
                "no reply to request {} of {} written in one write",
                nth_raw.0 + 1,
                nth_raw.1
            ),
        },
        secondary: Vec::new(),
    })
}

/// How many whole JSON objects `bytes` holds.
pub(in crate::engine) fn objects_in(bytes: &[u8]) -> usize {
    objects(bytes).0.len()
}

/// The JSON objects in `buf`, in order (0xFF bytes and garbage between
/// them skipped); the bool says whether any garbage was skipped.
pub(in crate::engine) fn objects(buf: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    let mut garbage = false;
    let mut at = 0;
    while at < buf.len() {
        match crate::wire::scan(&buf[at..]) {
            crate::wire::Scan::Value { start, end } => {
                out.push(&buf[at + start..at + end]);
                at += end;
            }
            crate::wire::Scan::Sentinel { at: s } => at += s + 1,
            crate::wire::Scan::Garbage { end } => {
                garbage = true;
                at += end.max(1);
            }
            crate::wire::Scan::Incomplete { .. } => break,
        }
    }
    (out, garbage)
}

/// The copy of `last` (the last reply read) in bytes that came where
/// silence was due, if that is what they are.
pub(in crate::engine) fn repeats_last(bytes: &[u8], last: &[u8]) -> bool {
    !last.is_empty() && bytes.windows(last.len()).any(|w| w == last)
}

#[cfg(test)]
mod tests;
