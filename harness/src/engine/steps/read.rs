//! Reading and grading: `expect` reads replies (with the bytes around them)
//! and has [`crate::engine::expect`] judge each, `expect-silence` waits for
//! nothing to come, and `resync` brings the channel back in step the
//! reference client's way.

use super::{harness, violation, Ctx, StepError};
use crate::case::step::{Expect, ResyncStep, Silence};
use crate::client::observe::{self, Observed};
use crate::client::{resync, stale, Capability};
use crate::connection::{Connection, Fill};
use crate::engine::expect::{self as judge, cause, describe_expectation, describe_reply, Checker, Miss};
use crate::verdict::FailureKind;
use crate::wire::message::ids_equal;
use crate::wire::Reply;
use std::time::Duration;
use tokio::time::Instant;

/// Read `e.count` replies, each checked against `e` and the request it
/// answers; the first that fails is the finding.
pub(super) async fn expect(ctx: &mut Ctx<'_>, e: &Expect) -> Result<(), StepError> {
    let within = e.within_ms.map_or(ctx.opts().reply_timeout, |ms| ctx.grading.scale(Duration::from_millis(ms)));
    let idle = ctx.opts().idle_timeout;
    let cap = ctx.opts().max_reply_wait();
    let max_len = ctx.opts().max_reply_len;
    for n in 0..e.count {
        let pending = ctx.pending.pop_front();
        let want = describe_expectation(e, pending.as_ref());
        let which = if e.count > 1 { format!(" (reply {} of {})", n + 1, e.count) } else { String::new() };
        let opts = ctx.opts().clone();
        let conn = ctx.session.conn().map_err(harness)?;
        let deadline = crate::client::Deadline::new(within, idle, cap.max(within));
        let mut skipped = 0;
        let o = loop {
            let o = match observe::next_reply(conn, deadline, max_len).await {
                Ok(o) => {
                    ctx.unanswered_restart = false;
                    o
                }
                Err(why) => {
                    let kind = judge::no_reply_kind(&why, e, pending.as_ref());
                    if let Some(c) = cause::behind_silence(kind, pending.as_ref(), (n, ctx.raw_requests)) {
                        return Err(violation(c.kind, format!("{want}{which}"), format!("{} ({why})", c.actual)));
                    }
                    return Err(violation(kind, format!("{want}{which}"), why.to_string()));
                }
            };
            // Only when a return is expected: an error reply without an id
            // is then the agent's (legal) answer to our 0xFF, not ours. (An
            // agent found to omit the error class: any error object.)
            let id_less_error = match &o.reply {
                Ok(Reply::Error { id: None, .. }) => true,
                Err(_) if ctx.grading.relaxed(ctx.case, Capability::ErrorClass) => matches!(Reply::lenient_error(&o.text), Some(Reply::Error { id: None, .. })),
                _ => false,
            };
            // An agent found to send each reply twice sends each error twice.
            let doubles = ctx.grading.relaxed(ctx.case, Capability::OneReply);
            let limit = if doubles { 16 } else { 8 };
            let tolerable = e.allow_errors_before && e.return_.is_some() && skipped < limit && id_less_error;
            // An agent found to send each reply twice: outside the cases
            // about it, the second copy is skipped. Only a reply that can
            // come once (an id, a sync's number): fifty identical errors to
            // fifty bad requests are fifty replies.
            let known_duplicate = doubles && skipped < limit && !ctx.last_reply.is_empty() && o.text == ctx.last_reply && (cause::singular(&o.text) || {
                // An identical reply that is not what is due now is the copy.
                let checker = Checker { grading: ctx.grading, case: ctx.case, opts: &opts };
                checker.check(e, pending.as_ref(), &o, None).is_err()
            });
            if tolerable || known_duplicate {
                skipped += 1;
                continue;
            }
            ctx.last_reply = o.text.clone();
            break o;
        };
        let next = ctx.session.conn().ok().and_then(|c| stale::next_byte(c));
        let checker = Checker { grading: ctx.grading, case: ctx.case, opts: ctx.session.client() };
        let mut result = checker.check(e, pending.as_ref(), &o, next);
        if result.is_ok() && e.line {
            let conn = ctx.session.conn().map_err(harness)?;
            result = line_terminated(conn, &o, deadline.at()).await;
        }
        if let Some(id) = o.reply.as_ref().ok().and_then(|r| r.id().cloned()) {
            ctx.answered.push_back(id);
            if ctx.answered.len() > 64 {
                ctx.answered.pop_front();
            }
        }
        if cause::singular(&o.text) && result.is_ok() {
            ctx.seen.push(o.text.clone());
        }
        if let Err(m) = result {
            let reply_id = o.reply.as_ref().ok().and_then(|r| r.id().cloned());
            // A reply that answers a later request means the ones between
            // were lost: say so, it is the finding.
            let later = reply_id.as_ref().and_then(|rid| ctx.pending.iter().position(|p| p.id.as_ref().is_some_and(|id| ids_equal(id, rid))));
            // A reply to a request already answered is a duplicate.
            let earlier = reply_id.as_ref().is_some_and(|rid| {
                let n = ctx.answered.len();
                ctx.answered.iter().take(n.saturating_sub(1)).any(|a| ids_equal(a, rid))
            });
            let found = cause::behind_reply(&m, &o, pending.as_ref(), &ctx.seen, e.return_.is_some());
            let (kind, actual) = match (later, earlier, found) {
                (Some(k), _, _) => (
                    FailureKind::RepliesLost,
                    format!("the reply to request {} of {}: {} repl{} lost ({})", n + k + 2, e.count.max(n + k + 2), k + 1, if k == 0 { "y" } else { "ies" }, m.actual),
                ),
                (None, true, _) => (FailureKind::DuplicateReply, format!("a second reply to a request already answered: {}", describe_reply(&o))),
                (None, false, Some(c)) => {
                    ctx.secondary.extend(c.secondary);
                    (c.kind, c.actual)
                }
                (None, false, None) => (m.kind, m.actual),
            };
            return Err(StepError::Violation { kind, expected: format!("{want}{which}"), actual, must: false, at_most: m.at_most });
        }
    }
    Ok(())
}

/// Nothing but whitespace for `s.ms` (an agent's known duplicate of the
/// last reply aside).
pub(super) async fn silence(ctx: &mut Ctx<'_>, s: &Silence) -> Result<(), StepError> {
    let until = Instant::now() + Duration::from_millis(s.ms);
    let skip_duplicate = ctx.grading.relaxed(ctx.case, Capability::OneReply) && !ctx.last_reply.is_empty();
    let last = ctx.last_reply.clone();
    let conn = ctx.session.conn().map_err(harness)?;
    let mut skipped = false;
    loop {
        match observe::silence(conn, until).await {
            Ok(()) => return Ok(()),
            Err(bytes) => {
                // An agent found to answer twice: its second copy of
                // the last reply is graded by the one-reply cases.
                if skip_duplicate && !skipped && stale::skip_copy(conn, &last, until).await {
                    skipped = true;
                    continue;
                }
                let kind = if cause::repeats_last(&bytes, &last) { FailureKind::DuplicateReply } else { FailureKind::UnexpectedOutput };
                return Err(violation(kind, format!("nothing for {} ms", s.ms), format!("received {}", crate::transcript::escape_bytes(&bytes))));
            }
        }
    }
}

/// The reference client resyncs within the step's budget: a client must
/// always be able to, whatever the case's level.
pub(super) async fn resync_step(ctx: &mut Ctx<'_>, rs: &ResyncStep) -> Result<(), StepError> {
    let opts = ctx.opts().clone();
    let mut policy = opts.resync.clone();
    if let Some(ms) = rs.budget_ms {
        policy.budget = ctx.grading.scale(Duration::from_millis(ms));
    }
    // Start small: the step may follow a restart.
    policy.first_attempt = Duration::from_millis(1);
    policy.max_attempt = policy.max_attempt.max(Duration::from_millis(100));
    let quiet = ctx.grading.quiet_gap;
    let conn = ctx.session.conn().map_err(harness)?;
    resync(conn, &policy, &opts).await.map_err(|e| StepError::Violation {
        kind: FailureKind::ResyncFailed,
        expected: "the reference client resyncs through guest-sync-delimited within its budget".into(),
        actual: e.to_string(),
        must: true,
        at_most: None,
    })?;
    if ctx.grading.relaxed(ctx.case, Capability::OneReply) {
        // The second copy of the sync reply is not the next reply.
        stale::let_duplicate_pass(conn, quiet).await;
    }
    ctx.pending.clear();
    Ok(())
}

/// Read on after the reply until its line ends ([`judge::line_end`]).
async fn line_terminated(conn: &mut Connection, o: &Observed, deadline: Instant) -> Result<(), Miss> {
    loop {
        if let Some(done) = judge::line_end(o, conn.buffered()) {
            return done;
        }
        match conn.fill(deadline).await {
            Ok(Fill::Data(_)) => {}
            _ => return Err(judge::no_newline(o)),
        }
    }
}
