//! `send` and `batch`: requests turned into bytes ([`crate::engine::request`])
//! and written, each owing a reply that a later `expect` reads.

use super::{harness, pause, violation, Ctx, StepError};
use crate::case::step::Send;
use crate::connection::SendError;
use crate::engine::request;
use crate::transcript::Event;
use crate::verdict::FailureKind;
use std::time::Duration;
use tokio::time::Instant;
use crate::wire::sentinel::is_reset_byte;

/// One request (or raw bytes), written whole or in chunks.
pub(super) async fn send(ctx: &mut Ctx<'_>, s: &Send) -> Result<(), StepError> {
    let (bytes, pending) = request::build(s, ctx.opts());
    if s.truncate.is_some() {
        ctx.session.transcript().event(Event::Fault { detail: format!("partial request: {} byte(s)", bytes.len()) });
    }
    write(ctx, &bytes, s.chunk, s.delay_us).await?;
    let pending = after_open_line(ctx, &bytes, pending);
    ctx.pending.extend(pending);
    Ok(())
}

/// Several requests in one write: the agent sees them back to back.
pub(super) async fn batch(ctx: &mut Ctx<'_>, sends: &[Send]) -> Result<(), StepError> {
    let mut bytes = Vec::new();
    let mut pending = Vec::new();
    for s in sends {
        let (b, p) = request::build(s, ctx.opts());
        bytes.extend_from_slice(&b);
        pending.extend(p);
    }
    request::together(&mut pending);
    write(ctx, &bytes, None, 0).await?;
    let pending = after_open_line(ctx, &bytes, pending);
    ctx.pending.extend(pending);
    Ok(())
}

/// Requests written while the line before them is still open (input
/// without a newline, a partial request) follow that input: an agent that
/// frames by line sees them after it. Notes, for the next write, whether
/// this one leaves the line open, and how many whole requests a raw write
/// held (a reader that takes one per read drops the rest).
fn after_open_line(ctx: &mut Ctx<'_>, bytes: &[u8], mut pending: Vec<request::Pending>) -> Vec<request::Pending> {
    if ctx.line_open {
        // A byte that resets the parser (the client's 0xFF, a control
        // byte) between the stale line and the request: what the stale
        // line does to the request is that byte's to prevent.
        let flushed = ctx.line_flushed
            || bytes
                .iter()
                .take_while(|&&b| b != b'{')
                .any(|&b| resets_parser(b));
        if let Some(p) = pending
            .first_mut()
            .filter(|p| p.shape != request::Shape::Split)
        {
            p.shape = if flushed {
                request::Shape::AfterFlushedLine
            } else {
                request::Shape::After
            };
        }
    }
    let tail = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(bytes, |i| &bytes[i + 1..]);
    let was_open = ctx.line_open && !bytes.contains(&b'\n');
    ctx.line_open = was_open || tail.iter().any(|b| !b.is_ascii_whitespace() && *b != 0xFF);
    // Flushed since it opened: before this write, or by a reset byte after
    // the line's first content in this write.
    let content_from = if was_open {
        Some(0)
    } else {
        tail.iter()
            .position(|b| !b.is_ascii_whitespace() && *b != 0xFF)
    };
    let tail_start = bytes.len() - tail.len();
    ctx.line_flushed = ctx.line_open
        && ((was_open && ctx.line_flushed)
            || content_from.is_some_and(|i| {
                bytes[if was_open { 0 } else { tail_start + i }..]
                    .iter()
                    .any(|&b| resets_parser(b))
            }));
    ctx.raw_requests = if pending.is_empty() {
        crate::engine::expect::cause::objects_in(bytes)
    } else {
        0
    };
    pending
}

/// A byte no JSON text holds, which makes a conforming agent's lexer
/// drop its partial input: 0xFF, 0xFE, a control byte other than tab,
/// CR and LF.
fn resets_parser(b: u8) -> bool {
    is_reset_byte(b) || (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n'))
}

/// A write that failed: refused by the deny-list (ERROR, nothing sent), or
/// the agent stopped taking bytes (our input is left half-written: the
/// channel must be renewed after the case).
pub(super) fn send_failed(ctx: &mut Ctx<'_>, e: SendError) -> StepError {
    match e {
        SendError::Refused { .. } => StepError::Harness(FailureKind::Refused, e.to_string()),
        SendError::Timeout { .. } => {
            ctx.dirty = true;
            violation(FailureKind::NotReading, "the agent reads what we write", e.to_string())
        }
        SendError::Closed => {
            ctx.dirty = true;
            violation(FailureKind::AgentGone, "the agent reads what we write", e.to_string())
        }
        SendError::Io(_) => {
            ctx.dirty = true;
            harness(e)
        }
    }
}

/// Write `bytes`, in `chunk`-sized pieces `delay_us` apart if the step asks.
async fn write(ctx: &mut Ctx<'_>, bytes: &[u8], chunk: Option<usize>, delay_us: u64) -> Result<(), StepError> {
    let send_timeout = ctx.opts().send_timeout;
    let pieces: Vec<&[u8]> = match chunk {
        Some(n) => bytes.chunks(n).collect(),
        None => vec![bytes],
    };
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.into_iter().enumerate() {
        // Each chunk gets its own deadline, and the connection extends it
        // while the agent keeps taking bytes: a slow reader is not a dead one.
        let conn = ctx.session.conn().map_err(harness)?;
        conn.set_send_stall(Some(send_timeout));
        if let Err(e) = conn.send(piece, Instant::now() + send_timeout).await {
            return Err(send_failed(ctx, e));
        }
        if delay_us > 0 && i < last {
            pause(Duration::from_micros(delay_us)).await;
        }
    }
    Ok(())
}
