//! Faults on the agent or its channel: a client that abandons a reply, an
//! agent killed, restarted or reconnected to.

use super::{harness, violation, Ctx, StepError};
use crate::case::step::{Abandon, Kill, Signal};
use crate::client::stale::{self, OutputWait};
use crate::verdict::FailureKind;
use std::time::Duration;

/// How long a fault that acts "after K bytes" waits for the first byte. If
/// nothing comes (the request was swallowed by stale input, say), there is
/// nothing to act in the middle of; the fault goes ahead, a little later. A
/// brisk agent's first byte comes in tens of microseconds, and the wait
/// follows the agent's pace.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(20);
/// The same wait on an agent restarted in this case that has answered
/// nothing since: an isa-serial qemu-ga drops what reached the tty before it
/// opened it, so the request is most likely gone and the whole wait would be
/// sat out for nothing (the fuzzer restarts in every schedule).
const FIRST_BYTE_WAIT_AFTER_RESTART: Duration = Duration::from_millis(5);

/// How long a fault waits for the agent's output before it acts.
fn output_wait(ctx: &Ctx<'_>) -> OutputWait {
    let first = if ctx.unanswered_restart { FIRST_BYTE_WAIT_AFTER_RESTART } else { FIRST_BYTE_WAIT };
    OutputWait { limit: ctx.opts().reply_timeout, first_byte: ctx.grading.scale(first), quiet: ctx.grading.quiet_gap }
}

/// Read up to `after` bytes of the reply and stop reading it: the rest
/// stays in the channel for whoever reads next.
pub(super) async fn abandon(ctx: &mut Ctx<'_>, a: &Abandon) -> Result<(), StepError> {
    let wait = output_wait(ctx);
    let conn = ctx.session.conn().map_err(harness)?;
    stale::abandon_reply(conn, a.after, &wait).await.map_err(harness)?;
    // The abandoned request is no longer owed to this client.
    ctx.pending.pop_front();
    Ok(())
}

/// Kill the agent, maybe once `after_bytes` more of its output came.
pub(super) async fn kill(ctx: &mut Ctx<'_>, k: &Kill) -> Result<(), StepError> {
    if let Some(after) = k.after_bytes {
        let wait = output_wait(ctx);
        let conn = ctx.session.conn().map_err(harness)?;
        stale::await_more_output(conn, after, &wait).await.map_err(harness)?;
    }
    match k.signal {
        Signal::KILL => ctx.session.kill_agent().await,
        Signal::TERM => ctx.session.terminate_agent().await,
    }
    ctx.pending.clear();
    ctx.killed = true;
    Ok(())
}

/// Start a new agent instance: it must come up.
pub(super) async fn restart(ctx: &mut Ctx<'_>) -> Result<(), StepError> {
    ctx.session.start_agent().await.map_err(|e| StepError::Violation {
        kind: FailureKind::StartupFailed,
        expected: "the agent restarts".into(),
        actual: e.to_string(),
        must: true,
        at_most: None,
    })?;
    ctx.pending.clear();
    ctx.killed = false;
    ctx.restarted = true;
    ctx.unanswered_restart = true;
    Ok(())
}

/// Drop the connection and open a new one to the same agent.
pub(super) async fn reconnect(ctx: &mut Ctx<'_>) -> Result<(), StepError> {
    ctx.session.reconnect().await.map_err(|e| violation(FailureKind::AgentGone, "the agent accepts a new connection", e.to_string()))?;
    ctx.pending.clear();
    Ok(())
}
