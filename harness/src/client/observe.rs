//! Reading replies the way a conformance check needs them: with every byte
//! that came before each reply, so that sentinel placement and stray bytes
//! can be judged, not just skipped.

use crate::client::Deadline;
use crate::connection::{Connection, Fill};
use crate::wire::message::MalformedReply;
use crate::wire::{scan, Reply, Scan, SENTINEL};
use tokio::time::Instant;
use crate::wire::sentinel::is_reset_byte;

/// One reply and what preceded it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Bytes between the previous reply and this one (whitespace, sentinels).
    pub before: Vec<u8>,
    /// The reply's own text.
    pub text: Vec<u8>,
    /// The parsed reply, or why it is malformed.
    pub reply: Result<Reply, MalformedReply>,
}

impl Observed {
    /// Exactly one raw 0xFF before the reply, immediately before its `{`.
    pub fn is_delimited(&self) -> bool {
        self.before.last() == Some(&SENTINEL) && self.before.iter().filter(|&&b| b == SENTINEL).count() == 1
    }

    /// Raw 0xFF or 0xFE anywhere in or before the reply.
    pub fn stray_flush_bytes(&self) -> usize {
        self.before.iter().chain(&self.text).filter(|&&b| is_reset_byte(b)).count()
    }
}

/// Why no reply could be read.
#[derive(Debug, Clone)]
pub enum NoReply {
    /// Nothing complete before the deadline; what had arrived.
    Timeout { partial: Vec<u8> },
    Closed { partial: Vec<u8> },
    /// Bytes that cannot begin a reply.
    Garbage { bytes: Vec<u8> },
    /// A reply cut short by a raw 0xFF.
    Interrupted { bytes: Vec<u8> },
    TooLong,
    Io(String),
}

impl std::fmt::Display for NoReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::transcript::escape_bytes as e;
        match self {
            // Whitespace left from an earlier reply is not an answer.
            NoReply::Timeout { partial } if partial.iter().all(u8::is_ascii_whitespace) => write!(f, "nothing came before the deadline"),
            NoReply::Timeout { partial } => write!(f, "no complete reply before the deadline; got {}", e(partial)),
            NoReply::Closed { partial } => write!(f, "channel closed; got {}", e(partial)),
            NoReply::Garbage { bytes } => write!(f, "bytes that cannot begin a reply: {}", e(bytes)),
            NoReply::Interrupted { bytes } => write!(f, "a raw 0xFF inside a reply: {}", e(bytes)),
            NoReply::TooLong => write!(f, "reply longer than the limit"),
            NoReply::Io(m) => write!(f, "i/o error: {m}"),
        }
    }
}

/// Read the next reply, keeping what came before it.
/// The deadline moves with each byte that arrives (a slow but steady agent
/// is not a mute one).
pub async fn next_reply(conn: &mut Connection, deadline: Deadline, max_len: usize) -> Result<Observed, NoReply> {
    let mut deadline = deadline;
    let mut before = Vec::new();
    loop {
        let buf = conn.buffered();
        match scan(buf) {
            Scan::Value { start, end } => {
                before.extend_from_slice(&buf[..start]);
                let text = buf[start..end].to_vec();
                conn.consume(end);
                let reply = Reply::parse(&text);
                return Ok(Observed { before, text, reply });
            }
            Scan::Sentinel { at } => {
                if buf[..at].iter().any(|b| !b.is_ascii_whitespace()) {
                    let bytes = buf[..=at].to_vec();
                    conn.consume(at + 1);
                    return Err(NoReply::Interrupted { bytes });
                }
                before.extend_from_slice(&buf[..=at]);
                conn.consume(at + 1);
                continue;
            }
            Scan::Garbage { end } => {
                let bytes = buf[..end.min(256)].to_vec();
                conn.consume(end);
                return Err(NoReply::Garbage { bytes });
            }
            Scan::Incomplete { skip } => {
                before.extend_from_slice(&buf[..skip]);
                conn.consume(skip);
                if conn.buffered().len() > max_len {
                    return Err(NoReply::TooLong);
                }
            }
        }
        match conn.fill(deadline.at()).await {
            Ok(Fill::Data(_)) => deadline.progress(),
            Ok(Fill::Timeout) => return Err(NoReply::Timeout { partial: [&before[..], conn.buffered()].concat() }),
            Ok(Fill::Closed) => return Err(NoReply::Closed { partial: [&before[..], conn.buffered()].concat() }),
            Ok(Fill::Full) => return Err(NoReply::TooLong),
            Err(e) => return Err(NoReply::Io(e.to_string())),
        }
    }
}

/// Wait `until`, failing on the first non-whitespace byte: returns the
/// bytes that broke the silence.
pub async fn silence(conn: &mut Connection, until: Instant) -> Result<(), Vec<u8>> {
    loop {
        if let Some(i) = conn.buffered().iter().position(|b| !b.is_ascii_whitespace()) {
            return Err(conn.buffered()[i..].iter().take(256).copied().collect());
        }
        let n = conn.buffered().len();
        conn.consume(n);
        match conn.fill(until).await {
            Ok(Fill::Data(_)) => {}
            _ => return Ok(()),
        }
    }
}
