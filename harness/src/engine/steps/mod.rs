//! The step interpreter: a case's steps run in order on the live session,
//! one file per step family (mini-redis's one file per command).
//!
//! - `send`: `send` and `batch`: requests written, replies owed.
//! - `garbage`: random bytes, and the agent's answer to them dropped.
//! - `faults`: `abandon`, `kill`, `restart`, `reconnect`, `inject`.
//! - `read`: `expect`, `expect-silence` and `resync`: reading and grading.
//!
//! `pause` and `repeat` are here: they only order the others.

mod faults;
mod garbage;
mod read;
mod send;

use super::grading::Grading;
use super::request::Pending;
use crate::case::{Case, Step};
use crate::client::{stale, ClientOptions};
use crate::session::Session;
use crate::transcript::Event;
use crate::verdict::{FailureKind, Outcome};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// State while a case runs.
pub(in crate::engine) struct Ctx<'a> {
    session: &'a mut Session,
    grading: &'a Grading,
    case: &'a Case,
    pending: VecDeque<Pending>,
    /// Ids of replies already received in this case (to name duplicates).
    answered: VecDeque<serde_json::Value>,
    /// The text of the last reply read (to skip an agent's known duplicates).
    last_reply: Vec<u8>,
    /// Replies read in this case that can come only once (to name a copy
    /// read where another reply was due).
    seen: Vec<Vec<u8>>,
    /// Defects the case's replies showed besides the one it fails on.
    pub(in crate::engine) secondary: Vec<crate::verdict::Secondary>,
    /// The last write left its line open (no newline after its last
    /// non-blank byte).
    line_open: bool,
    /// The open line has had a byte that must reset the agent's parser
    /// (0xFF, 0xFE, a control byte) since it opened.
    line_flushed: bool,
    /// Whole JSON objects in the last write, when it was raw bytes.
    raw_requests: usize,
    /// The last step killed the agent and no restart followed yet.
    pub(in crate::engine) killed: bool,
    /// The case started a new agent instance (it may still be starting).
    pub(in crate::engine) restarted: bool,
    /// That new instance has not answered anything yet: a request may have
    /// reached it before it opened its channel, and been dropped.
    pub(in crate::engine) unanswered_restart: bool,
    /// Our own input is left half-written in the channel, or a write was
    /// refused: the next case needs a fresh channel.
    pub(in crate::engine) dirty: bool,
}

impl<'a> Ctx<'a> {
    pub(in crate::engine) fn new(
        session: &'a mut Session,
        grading: &'a Grading,
        case: &'a Case,
    ) -> Ctx<'a> {
        Ctx {
            session,
            grading,
            case,
            pending: VecDeque::new(),
            answered: VecDeque::new(),
            last_reply: Vec::new(),
            seen: Vec::new(),
            secondary: Vec::new(),
            line_open: false,
            line_flushed: false,
            raw_requests: 0,
            killed: false,
            restarted: false,
            unanswered_restart: false,
            dirty: false,
        }
    }

    fn opts(&self) -> &ClientOptions {
        self.session.client()
    }
}

/// An unmet expectation, or a harness failure.
#[derive(Debug)]
pub(in crate::engine) enum StepError {
    /// The agent did not do what the case expects. `must` raises it to FAIL
    /// whatever the case's level (a client must always be able to resync);
    /// `at_most` caps the outcome (an id in float form is NON-STRICT even in
    /// a MUST case: the value is right, its form is not).
    Violation { kind: FailureKind, expected: String, actual: String, must: bool, at_most: Option<Outcome> },
    /// Our own write did not complete: the channel holds part of it.
    Harness(FailureKind, String),
}

pub(in crate::engine) fn violation(kind: FailureKind, expected: impl Into<String>, actual: impl Into<String>) -> StepError {
    StepError::Violation { kind, expected: expected.into(), actual: actual.into(), must: false, at_most: None }
}


fn harness<E: std::fmt::Display>(e: E) -> StepError {
    StepError::Harness(FailureKind::Harness, e.to_string())
}

pub(in crate::engine) fn run_steps<'s>(ctx: &'s mut Ctx<'_>, steps: &'s [Step]) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StepError>> + 's>> {
    // Boxed: `repeat` recurses.
    Box::pin(async move {
        for step in steps {
            run_step(ctx, step).await?;
        }
        Ok(())
    })
}

async fn run_step(ctx: &mut Ctx<'_>, step: &Step) -> Result<(), StepError> {
    match step {
        // The loader keeps client-mode steps out of agent cases.
        Step::Await(_) | Step::Reply(_) => Err(StepError::Harness(FailureKind::Harness, "a client-mode step in an agent case".into())),
        Step::Send(s) => send::send(ctx, s).await,
        Step::Batch(sends) => send::batch(ctx, sends).await,
        Step::Garbage(g) => garbage::garbage(ctx, g).await,
        Step::Abandon(a) => faults::abandon(ctx, a).await,
        Step::Kill(k) => faults::kill(ctx, k).await,
        Step::Restart(_) => faults::restart(ctx).await,
        Step::Reconnect(_) => faults::reconnect(ctx).await,
        Step::Inject(bytes) => {
            stale::inject(ctx.session.conn().map_err(harness)?, &bytes.0);
            Ok(())
        }
        Step::Expect(e) => read::expect(ctx, e).await,
        Step::ExpectSilence(s) => read::silence(ctx, s).await,
        Step::Resync(rs) => read::resync_step(ctx, rs).await,
        Step::Pause(p) => {
            pause(Duration::from_millis(p.ms)).await;
            Ok(())
        }
        Step::Repeat(r) => {
            let began = Instant::now();
            let budget = r.budget_ms.map(|ms| ctx.grading.scale(Duration::from_millis(ms)));
            for i in 0..r.times {
                if i > 0 && budget.is_some_and(|b| began.elapsed() >= b) {
                    ctx.session.transcript().event(Event::Note { text: format!("repeat: {i} of {} rounds within its budget; the rest skipped", r.times) });
                    break;
                }
                run_steps(ctx, &r.steps).await?;
            }
            Ok(())
        }
    }
}

/// tokio's timer has millisecond resolution; shorter pauses sleep on a
/// blocking-pool thread, so the runtime (timers, Ctrl-C, reading the
/// agent) never stalls behind them.
async fn pause(d: Duration) {
    if d >= Duration::from_millis(2) {
        tokio::time::sleep(d).await;
    } else if !d.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}
