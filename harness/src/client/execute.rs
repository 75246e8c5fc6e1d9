//! Send a command and get its reply.
//!
//! Every request carries a fresh `id`, and a reply is accepted only when it
//! echoes it. A reply that cannot be ours (another id, no id, a raw
//! sentinel, garbage) is an error, never silently skipped: after it the
//! channel is out of step and the caller must resync.

use super::ClientOptions;
use crate::connection::{Connection, Fill, SendError};
use crate::transcript::Event;
use crate::wire::message::id_matches;
use crate::wire::{scan, Reply, Request, Scan};
use qapi::Command;
use serde_json::Value;
use tokio::time::Instant;

/// An error reply from the agent (a conforming answer, not a client failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct AgentError {
    pub class: String,
    pub desc: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("no reply to {waiting_for} within the deadline")]
    Timeout { waiting_for: String },
    #[error("the channel closed")]
    Closed,
    #[error("a raw sentinel byte (0xFF) where a reply was due")]
    UnexpectedSentinel,
    #[error("bytes that cannot begin a reply: {0}")]
    Garbage(String),
    #[error("malformed reply {text}: {reason}")]
    Malformed { text: String, reason: String },
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
    #[error("reply is not ours: sent id {sent}, reply has id {got} ({reply})")]
    WrongId { sent: i64, got: String, reply: String },
    #[error("{command} returned a value of the wrong type ({value}): {reason}")]
    BadReturn { command: &'static str, value: String, reason: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Write one request.
pub async fn send_request(conn: &mut Connection, req: &Request, opts: &ClientOptions) -> Result<(), ClientError> {
    conn.send(&req.to_wire(), Instant::now() + opts.send_timeout).await?;
    Ok(())
}

/// Read the next reply, whatever it answers. Inter-reply whitespace is
/// skipped; anything else that is not a complete JSON reply is an error.
pub async fn read_reply(conn: &mut Connection, deadline: Instant, opts: &ClientOptions, waiting_for: &str) -> Result<Reply, ClientError> {
    loop {
        match scan(conn.buffered()) {
            Scan::Value { start, end } => {
                let parsed = Reply::parse(&conn.buffered()[start..end]);
                let text = crate::transcript::escape_bytes(&conn.buffered()[start..end]);
                conn.consume(end);
                return parsed.map_err(|e| ClientError::Malformed { text, reason: e.reason });
            }
            Scan::Sentinel { .. } => return Err(ClientError::UnexpectedSentinel),
            Scan::Garbage { end } => {
                let text = crate::transcript::escape_bytes(&conn.buffered()[..end.min(200)]);
                return Err(ClientError::Garbage(text));
            }
            Scan::Incomplete { skip } => {
                conn.consume(skip);
                if conn.buffered().len() > opts.max_reply_len {
                    return Err(ClientError::TooLong(opts.max_reply_len));
                }
            }
        }
        match conn.fill(deadline).await? {
            Fill::Data(_) => {}
            Fill::Timeout => {
                conn.transcript().event(Event::Timeout { waiting_for: waiting_for.into() });
                return Err(ClientError::Timeout { waiting_for: waiting_for.into() });
            }
            Fill::Closed => return Err(ClientError::Closed),
            Fill::Full => return Err(ClientError::TooLong(opts.max_reply_len)),
        }
    }
}

/// Send `cmd` with a fresh id and return its reply: `Ok(Ok(value))` for a
/// return, `Ok(Err(agent_error))` for an error reply that echoes our id.
pub async fn execute<C: Command>(
    conn: &mut Connection,
    cmd: C,
    opts: &ClientOptions,
) -> Result<Result<C::Ok, AgentError>, ClientError> {
    let id = super::fresh_request_id();
    let req = Request::new(cmd, Some(id));
    send_request(conn, &req, opts).await?;
    let reply = read_reply(conn, Instant::now() + opts.reply_timeout, opts, C::NAME).await?;
    if opts.require_id_echo && !id_matches(reply.id(), id) {
        return Err(ClientError::WrongId {
            sent: id,
            got: reply.id().map_or("none".into(), Value::to_string),
            reply: format!("{reply:?}"),
        });
    }
    Ok(match reply {
        Reply::Return { value, .. } => Ok(serde_json::from_value(value.clone()).map_err(|e| ClientError::BadReturn {
            command: C::NAME,
            value: value.to_string(),
            reason: e.to_string(),
        })?),
        Reply::Error { class, desc, .. } => Err(AgentError { class, desc }),
    })
}
