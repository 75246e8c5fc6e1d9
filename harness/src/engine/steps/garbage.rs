//! `garbage`: seeded random bytes ([`crate::case::step::Garbage::bytes`]),
//! with the agent's answer to them dropped as it comes.

use super::{harness, send::send_failed, Ctx, StepError};
use crate::case::step::Garbage;
use crate::client::stale;
use crate::transcript::Event;
use std::time::Duration;
use tokio::time::Instant;

pub(super) async fn garbage(ctx: &mut Ctx<'_>, g: &Garbage) -> Result<(), StepError> {
    let quiet = ctx.grading.quiet_gap;
    ctx.session.transcript().event(Event::Fault { detail: format!("{} bytes of {:?} garbage, seed {}", g.len, g.kind, g.seed) });
    // An agent may answer garbage with many times its size in error
    // lines (qemu-ga: one line per stray byte). That output is
    // dropped as it comes, or the harness's bounded buffer would fill,
    // it would stop reading, and the agent, blocked writing, would
    // stop reading our garbage. Afterwards, wait until the agent has
    // worked through it (output quiet for the quiet gap).
    // The agent may answer each garbage byte with an error line: on an
    // agent that writes slowly, the full length would take minutes to
    // answer. Keep the answer to a few seconds of its output.
    let len = g.len.min(ctx.grading.garbage_cap());
    if len < g.len {
        ctx.session.transcript().event(Event::Note { text: format!("garbage cut to {len} of {} bytes: the agent writes about {} bytes/s", g.len, ctx.grading.output_rate() as u64) });
    }
    let bytes = g.bytes(len);
    // The agent may be busy for a while with each chunk (qemu-ga
    // writes an error line per stray byte, and takes no input while
    // it writes them): as long as the drain after it may take,
    // still bounded.
    let drain_cap = ctx.grading.scale(Duration::from_secs(3));
    let send_timeout = (ctx.opts().send_timeout * 4).max(drain_cap);
    let mut dropped = 0;
    for piece in bytes.chunks(16 * 1024) {
        let conn = ctx.session.conn().map_err(harness)?;
        match stale::send_garbage(conn, piece, Instant::now() + send_timeout).await {
            Ok(n) => dropped += n,
            Err(e) => return Err(send_failed(ctx, e)),
        }
    }
    let conn = ctx.session.conn().map_err(harness)?;
    dropped += stale::drain_answer(conn, quiet, Instant::now() + drain_cap).await.map_err(harness)?;
    conn.transcript().event(Event::Note { text: format!("dropped {dropped} byte(s) of agent output during and after the garbage") });
    Ok(())
}
