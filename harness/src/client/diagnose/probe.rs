//! One probing round: send sync requests in one mode until something
//! answers, errors come, the channel closes or the budget runs out, and
//! say what was seen.

use super::analyse::{analyse, Analysis, Answer, Placement};
use crate::client::{ClientOptions, Deadline, SyncMode};
use crate::connection::{Connection, Fill};
use std::time::Duration;
use tokio::time::Instant;

/// What one probing round saw.
#[derive(Debug)]
pub(super) enum Seen {
    Answer(Answer),
    /// Only error replies (and no answer) came.
    Errors(Vec<Vec<u8>>),
    Nothing(Vec<u8>),
    Closed,
    /// More output than the resync byte budget, none of it an answer.
    Flood(u64),
}

/// Bytes of the probe's own requests kept to recognise an echo.
const ECHO_WINDOW: usize = 4096;

/// Send sync requests in `mode` (each with a new id) until something
/// answers one of them, errors come, or `budget` runs out. Attempt waits
/// start at a millisecond (qemu-ga's isa-serial drops input that arrives
/// before it opens the tty) and double up to the reply timeout.
pub(super) async fn probe(conn: &mut Connection, mode: &SyncMode, opts: &ClientOptions, budget: Duration, probe_ids: bool, gone: &mut dyn FnMut() -> bool) -> std::io::Result<Seen> {
    let start = Instant::now();
    let end = start + budget;
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    let mut wait = Duration::from_millis(1);
    let mut errors_since = None;
    let mut sent = Vec::new();
    // Set once a return came that carries none of our ids in any form we
    // know: the agent mangles wide ids, so retry with narrow ones.
    let mut narrow = false;
    conn.clear();
    while Instant::now() < end {
        // A dead agent answers nothing; no need to wait out the budget.
        if gone() {
            return Ok(Seen::Closed);
        }
        let id = if narrow {
            opts.ids.narrow_id()
        } else if probe_ids {
            opts.ids.probe_id()
        } else {
            opts.ids.sync_id()
        };
        ids.push(id);
        let request = crate::client::resync::sync_request_bytes_for(mode, id);
        // An echo is of recent requests: keep the last few KiB only, so the
        // search stays small however many attempts a slow start takes.
        if sent.len() > ECHO_WINDOW {
            sent.drain(..sent.len() - ECHO_WINDOW);
        }
        sent.extend_from_slice(&request);
        match conn.send_discarding(&request, end.min(Instant::now() + opts.send_timeout)).await {
            Ok(_) => {}
            Err(crate::connection::SendError::Closed) => return Ok(Seen::Closed),
            Err(crate::connection::SendError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => return Ok(Seen::Closed),
            Err(_) => return Ok(Seen::Nothing(seen)),
        }
        let mut deadline = Deadline::new(wait.min(end.saturating_duration_since(Instant::now())), opts.idle_timeout.min(wait.max(Duration::from_millis(5))), end.saturating_duration_since(Instant::now()));
        wait = (wait * 2).min(opts.reply_timeout);
        loop {
            match conn.fill(deadline.at()).await? {
                Fill::Data(n) => {
                    deadline.progress();
                    seen.extend_from_slice(conn.buffered());
                    conn.clear();
                    if seen.len() as u64 > opts.resync.byte_budget {
                        return Ok(Seen::Flood(seen.len() as u64));
                    }
                    // Only the tail can hold something new: a flood must not
                    // be scanned again from the start on every read.
                    let from = seen.len().saturating_sub(n + opts.max_reply_len.min(64 << 10));
                    let Analysis { answer, errors, unmatched } = analyse(&seen[from..], &ids, &sent);
                    if let Some(mut a) = answer {
                        // A sentinel that comes after the JSON: give it a moment.
                        if a.sentinel == Placement::None {
                            let quiet = Instant::now() + opts.idle_timeout.min(Duration::from_millis(20));
                            if let Ok(Fill::Data(_)) = conn.fill(quiet).await {
                                seen.extend_from_slice(conn.buffered());
                                conn.clear();
                                a = analyse(&seen, &ids, &sent).answer.unwrap_or(a);
                            }
                        }
                        return Ok(Seen::Answer(a));
                    }
                    narrow |= unmatched > 0;
                    if !errors.is_empty() {
                        errors_since.get_or_insert((Instant::now(), ids.len()));
                    }
                }
                Fill::Full => {
                    seen.extend_from_slice(conn.buffered());
                    conn.clear();
                }
                Fill::Closed => return Ok(Seen::Closed),
                Fill::Timeout => break,
            }
        }
        // A responsive agent that only ever answers errors is not going to
        // answer this way: three attempts after the first error settle it.
        // After it, not in all: a channel that is still settling (a guest's
        // serial port, flushed as the agent opens it) answers the first
        // attempts with errors about their remains.
        if let Some((t, n)) = errors_since {
            if ids.len() >= n + 3 && t.elapsed() > Duration::from_millis(2) {
                let errors = analyse(&seen, &ids, &sent).errors;
                return Ok(Seen::Errors(errors));
            }
        }
    }
    let errors = analyse(&seen, &ids, &sent).errors;
    Ok(if errors.is_empty() { Seen::Nothing(seen) } else { Seen::Errors(errors) })
}
