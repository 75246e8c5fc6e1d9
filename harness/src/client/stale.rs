//! Stale input: the bytes in the channel that are not the reply the client
//! waits for, and what a client does with them, each named for why.
//!
//! The protocol's resync exists because such bytes happen: what is left
//! from an earlier conversation, the rest of a reply a client abandoned, an
//! agent's answer to garbage, a second copy of a reply from an agent known
//! to send two, or stale data the harness puts in the input on purpose.
//! The engine's steps say which of these they mean; the byte handling is
//! here, on the [`Connection`].

use crate::connection::{Connection, Fill, SendError};
use crate::transcript::Event;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// Drop what is left from before a new conversation (a duplicate reply, a
/// late sentinel): whatever has arrived by now. With `duplicate_gap` (an
/// agent known to answer twice), let the second copy of the last reply
/// arrive and go too ([`let_duplicate_pass`]). Returns the bytes dropped.
pub async fn drop_leftovers(conn: &mut Connection, duplicate_gap: Option<Duration>) -> usize {
    let _ = conn.poll_input();
    let mut n = conn.clear();
    if let Some(gap) = duplicate_gap {
        n += let_duplicate_pass(conn, gap).await;
    }
    n
}

/// An agent known to answer twice: drop its output until it has been quiet
/// for `gap` (at most ten gaps), so that the second copy of the reply just
/// read is not taken for the next one. Returns the bytes dropped.
pub async fn let_duplicate_pass(conn: &mut Connection, gap: Duration) -> usize {
    conn.drain(gap, Instant::now() + gap * 10).await.unwrap_or(0)
}

/// How long to wait for the agent's output while a fault waits to act in
/// the middle of it.
#[derive(Debug, Clone, Copy)]
pub struct OutputWait {
    /// The whole wait, at most.
    pub limit: Duration,
    /// For the first byte: if nothing comes (the request was swallowed by
    /// stale input, say), there is nothing to act in the middle of.
    pub first_byte: Duration,
    /// Once output has started, a pause this long means it is complete.
    pub quiet: Duration,
}

/// Fill until `n` bytes are buffered, the agent goes quiet after writing
/// something, or the wait for the first byte runs out. Faults that act
/// "after K bytes" use it: if the reply is shorter than K, they act once it
/// is complete.
async fn await_buffered(conn: &mut Connection, n: usize, wait: &OutputWait) -> io::Result<()> {
    let deadline = Instant::now() + wait.limit;
    let mut until = Instant::now() + wait.first_byte.min(wait.limit);
    while conn.buffered().len() < n {
        match conn.fill(until).await? {
            Fill::Data(_) => until = deadline.min(Instant::now() + wait.quiet),
            _ => break,
        }
    }
    Ok(())
}

/// Let `more` bytes of the agent's output arrive beyond what is buffered
/// (or its output end sooner): a fault that strikes in the middle of a reply.
pub async fn await_more_output(conn: &mut Connection, more: usize, wait: &OutputWait) -> io::Result<()> {
    let have = conn.buffered().len();
    await_buffered(conn, have + more, wait).await
}

/// The client reads up to `after` bytes of the reply and stops reading it:
/// the rest stays in the channel for whoever reads next. Returns how many
/// bytes it read.
pub async fn abandon_reply(conn: &mut Connection, after: usize, wait: &OutputWait) -> io::Result<usize> {
    await_buffered(conn, after, wait).await?;
    let n = after.min(conn.buffered().len());
    conn.consume(n);
    conn.transcript().event(Event::Fault { detail: format!("client abandoned the reply after {n} byte(s); the rest stays in the channel") });
    Ok(n)
}

/// Stale agent-side data in the client's input, as if the agent had sent
/// it before the next reply: the harness interposing on the channel.
pub fn inject(conn: &mut Connection, bytes: &[u8]) {
    conn.inject(bytes);
}

/// Write garbage, dropping the agent's answer to it as it comes (an agent
/// may answer each stray byte with an error line). Returns the bytes dropped.
pub async fn send_garbage(conn: &mut Connection, bytes: &[u8], deadline: Instant) -> Result<usize, SendError> {
    conn.send_discarding(bytes, deadline).await
}

/// Drop the rest of the agent's answer to garbage: until it has been quiet
/// for `quiet`, or until `deadline`. Returns the bytes dropped.
pub async fn drain_answer(conn: &mut Connection, quiet: Duration, deadline: Instant) -> io::Result<usize> {
    conn.drain(quiet, deadline).await
}

/// An agent known to send each reply twice: if the input starts (after
/// blanks) with a copy of `last`, the reply just read, skip it, waiting
/// (until `until`) for the rest of a copy still arriving. True when a copy
/// was skipped.
pub async fn skip_copy(conn: &mut Connection, last: &[u8], until: Instant) -> bool {
    while is_partial_copy(conn.buffered(), last) {
        match conn.fill(until).await {
            Ok(Fill::Data(_)) => {}
            _ => break,
        }
    }
    match copy_len(conn.buffered(), last) {
        Some(n) => {
            conn.consume(n);
            true
        }
        None => false,
    }
}

/// The first byte after the reply just read that is not a space or a tab,
/// if one has arrived: what follows the reply on its line.
pub fn next_byte(conn: &Connection) -> Option<u8> {
    conn.buffered().iter().find(|b| !matches!(b, b' ' | b'\t')).copied()
}

/// The input from its first non-blank byte (all of it when it is all blanks).
fn after_blanks(buf: &[u8]) -> &[u8] {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    &buf[start..]
}

/// The input so far is the start of a copy of `last`, not yet all of it.
fn is_partial_copy(buf: &[u8], last: &[u8]) -> bool {
    let rest = after_blanks(buf);
    rest.len() < last.len() && last.starts_with(rest)
}

/// The bytes to consume when the input holds a whole copy of `last`
/// (the blanks before it included).
fn copy_len(buf: &[u8], last: &[u8]) -> Option<usize> {
    let rest = after_blanks(buf);
    rest.starts_with(last).then(|| buf.len() - rest.len() + last.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAST: &[u8] = b"{\"return\": {}}";

    #[test]
    fn blanks_before_a_copy_are_skipped_with_it() {
        assert_eq!(after_blanks(b" \n{x"), b"{x");
        assert_eq!(after_blanks(b" \n "), b" \n ");
        assert_eq!(copy_len(b"\n{\"return\": {}}\n", LAST), Some(1 + LAST.len()));
        assert_eq!(copy_len(LAST, LAST), Some(LAST.len()));
    }

    #[test]
    fn only_a_whole_copy_is_one() {
        assert_eq!(copy_len(b"{\"return\": 1}", LAST), None);
        assert_eq!(copy_len(b"{\"return\"", LAST), None);
        assert!(is_partial_copy(b"\n{\"return\"", LAST));
        assert!(!is_partial_copy(LAST, LAST));
        assert!(!is_partial_copy(b"{\"error\"", LAST));
    }

    #[test]
    fn an_empty_input_may_still_become_a_copy() {
        assert!(is_partial_copy(b"", LAST));
        assert_eq!(copy_len(b"", LAST), None);
    }
}
