//! Faults on the agent or its channel: a client that abandons a reply, an
//! agent killed, restarted or reconnected to.

use super::{harness, violation, Ctx, StepError};
use crate::case::step::{Abandon, Kill, Signal};
use crate::verdict::FailureKind;
use crate::transcript::Event;
use std::time::Duration;
use tokio::time::Instant;

/// How long a fault that acts "after K bytes" waits for the first byte. If
/// nothing comes (the request was swallowed by stale input, say, or by an
/// isa-serial qemu-ga that was just restarted and flushes what came before
/// it opened the tty), there is nothing to act in the middle of; the fault
/// goes ahead, a little later. A brisk agent's first byte comes in tens of
/// microseconds, and the wait follows the agent's pace.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(5);

/// Fill until `n` bytes are buffered, the agent goes quiet after writing
/// something, or the wait for the first byte runs out. Faults that act
/// "after K bytes" use it: if the reply is shorter than K, they act once it
/// is complete.
async fn wait_for_bytes(conn: &mut crate::connection::Connection, n: usize, limit: Duration, first: Duration, quiet: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut until = Instant::now() + first.min(limit);
    while conn.buffered().len() < n {
        match conn.fill(until).await? {
            crate::connection::Fill::Data(_) => until = deadline.min(Instant::now() + quiet),
            _ => break,
        }
    }
    Ok(())
}

/// Read up to `after` bytes of the reply and stop reading it: the rest
/// stays in the channel for whoever reads next.
pub(super) async fn abandon(ctx: &mut Ctx<'_>, a: &Abandon) -> Result<(), StepError> {
    let (reply_timeout, first_byte, quiet) = (ctx.opts().reply_timeout, ctx.grading.scale(FIRST_BYTE_WAIT), ctx.grading.quiet_gap);
    let conn = ctx.session.conn().map_err(harness)?;
    wait_for_bytes(conn, a.after, reply_timeout, first_byte, quiet).await.map_err(harness)?;
    let n = a.after.min(conn.buffered().len());
    conn.consume(n);
    conn.transcript().event(Event::Fault { detail: format!("client abandoned the reply after {n} byte(s); the rest stays in the channel") });
    // The abandoned request is no longer owed to this client.
    ctx.pending.pop_front();
    Ok(())
}

/// Kill the agent, maybe once `after_bytes` more of its output came.
pub(super) async fn kill(ctx: &mut Ctx<'_>, k: &Kill) -> Result<(), StepError> {
    if let Some(after) = k.after_bytes {
        let (reply_timeout, first_byte, quiet) = (ctx.opts().reply_timeout, ctx.grading.scale(FIRST_BYTE_WAIT), ctx.grading.quiet_gap);
        let conn = ctx.session.conn().map_err(harness)?;
        let have = conn.buffered().len();
        wait_for_bytes(conn, have + after, reply_timeout, first_byte, quiet).await.map_err(harness)?;
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
    Ok(())
}

/// Drop the connection and open a new one to the same agent.
pub(super) async fn reconnect(ctx: &mut Ctx<'_>) -> Result<(), StepError> {
    ctx.session.reconnect().await.map_err(|e| violation(FailureKind::AgentGone, "the agent accepts a new connection", e.to_string()))?;
    ctx.pending.clear();
    Ok(())
}
