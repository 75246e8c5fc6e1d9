//! Send a command and get its reply.
//!
//! Every request carries a fresh `id`. With [`ReplyMatch::IdEcho`] a reply
//! is accepted only when it echoes it; with [`ReplyMatch::Order`] (an agent
//! found not to echo ids, per command: [`ClientOptions::matching_for`])
//! the next reply after a sync is ours. A reply that
//! cannot be ours (another id, a raw sentinel, garbage) is an error, never
//! silently skipped: after it the channel is out of step and the caller
//! must resync.

use super::{ClientOptions, Deadline, ReplyMatch};
use crate::connection::{Connection, Fill, SendError};
use crate::transcript::Event;
use crate::wire::message::{compare_id, ids_equal, IdMatch};
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
    #[error("reply is not ours: expected id {sent}, got {got} ({how}): {reply}")]
    WrongId { sent: String, got: String, how: &'static str, reply: String },
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
pub async fn read_reply(conn: &mut Connection, deadline: Deadline, opts: &ClientOptions, waiting_for: &str) -> Result<Reply, ClientError> {
    let mut deadline = deadline;
    loop {
        match scan(conn.buffered()) {
            Scan::Value { start, end } => {
                let parsed = Reply::parse(&conn.buffered()[start..end]);
                let text = crate::transcript::escape_bytes(&conn.buffered()[start..end]);
                conn.consume(end);
                return parsed.map_err(|e| ClientError::Malformed { text, reason: e.reason });
            }
            Scan::Sentinel { at } if opts.skip_stray_ff && conn.buffered()[..at].iter().all(u8::is_ascii_whitespace) => {
                conn.consume(at + 1);
                continue;
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
        match conn.fill(deadline.at()).await? {
            Fill::Data(_) => deadline.progress(),
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
/// return, `Ok(Err(agent_error))` for an error reply proven ours.
pub async fn execute<C: Command>(
    conn: &mut Connection,
    cmd: C,
    opts: &ClientOptions,
) -> Result<Result<C::Ok, AgentError>, ClientError> {
    Ok(match execute_value(conn, cmd, opts).await? {
        Reply::Return { value, .. } => Ok(serde_json::from_value(value.clone()).map_err(|e| ClientError::BadReturn {
            command: C::NAME,
            value: value.to_string(),
            reason: e.to_string(),
        })?),
        Reply::Error { class, desc, .. } => Err(AgentError { class, desc }),
    })
}

/// Send `cmd` with a fresh id and return the reply proven ours, without
/// decoding its value: recovery checks that replies are ours, and a schema
/// slip in a return value is not its business.
pub async fn execute_value<C: Command>(conn: &mut Connection, cmd: C, opts: &ClientOptions) -> Result<Reply, ClientError> {
    execute_skipping(conn, cmd, opts, 0).await
}

/// Like [`execute_value`], but a reply proven *not* ours (another id, or
/// none where ids are echoed) is skipped, up to `skips` of them: what a
/// careful client does with stale replies. Recovery uses it, so that a
/// duplicate reply is graded by the case that shows it, not by every case.
pub async fn execute_skipping<C: Command>(conn: &mut Connection, cmd: C, opts: &ClientOptions, skips: usize) -> Result<Reply, ClientError> {
    let n = opts.ids.request_id();
    let id = opts.request_id_value(n);
    let req = Request::with_id_value(cmd, Some(id.clone()));
    exchange(conn, &req, n, id, opts, opts.matching_for(C::NAME), skips).await
}

/// [`execute_skipping`] for a command known only by name at run time (a
/// client job), sent with no arguments.
pub async fn execute_named(conn: &mut Connection, name: &str, opts: &ClientOptions, skips: usize) -> Result<Reply, ClientError> {
    let n = opts.ids.request_id();
    let id = opts.request_id_value(n);
    let json = serde_json::to_vec(&serde_json::json!({"execute": name, "id": id})).expect("a JSON value serialises");
    let req = Request { command: "the job's command", id: id.as_i64(), json };
    exchange(conn, &req, n, id, opts, opts.matching_for(name), skips).await
}

/// Send `req` (whose id is `id`, from integer `n`) and read until its
/// reply, proven ours by `matching` (the rule the probe found for this
/// command).
async fn exchange(conn: &mut Connection, req: &Request, n: i64, id: Value, opts: &ClientOptions, matching: ReplyMatch, skips: usize) -> Result<Reply, ClientError> {
    send_request(conn, req, opts).await?;
    let mut skipped = 0;
    loop {
        let reply = read_reply(conn, opts.reply_deadline(), opts, req.command).await?;
        let how = if opts.string_ids {
            if reply.id().is_some_and(|got| ids_equal(got, &id)) {
                IdMatch::Exact
            } else if reply.id().is_none() {
                IdMatch::Missing
            } else {
                IdMatch::Changed
            }
        } else {
            compare_id(n, reply.id())
        };
        let ours = match (matching, how) {
            (_, IdMatch::Exact) => true,
            (_, IdMatch::FloatForm) => opts.mode.accept_float_ids,
            // Ids are not to be trusted with this agent: order decides.
            (ReplyMatch::Order, _) => true,
            _ => false,
        };
        if !ours && skipped < skips && matching == ReplyMatch::IdEcho {
            skipped += 1;
            continue;
        }
        if !ours {
            return Err(ClientError::WrongId {
                sent: id.to_string(),
                got: reply.id().map_or("no id".into(), Value::to_string),
                how: how.describe(),
                reply: format!("{reply:?}"),
            });
        }
        return Ok(reply);
    }
}
