//! The reference client: how a correct host-side client talks to an agent.
//!
//! - [`resync`]: recover a channel of unknown state through
//!   `guest-sync-delimited` (the protocol's answer to stale partial data).
//! - [`execute`]: send one command and return its reply, proven to be ours.
//!
//! The client works on a [`Connection`](crate::connection::Connection) and
//! never sees a file descriptor or a process.

pub mod execute;
pub mod resync;

pub use execute::{execute, read_reply, send_request, AgentError, ClientError};
pub use resync::{resync, ResyncError, ResyncPolicy, Resynced};

use std::time::Duration;

/// Limits for one client. Defaults are small: a healthy agent answers in tens
/// of microseconds (protocol.md §4), so every default here is a bound for a
/// broken agent, never a wait a healthy one causes.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for the reply to one command.
    pub reply_timeout: Duration,
    /// How long a write may block (an agent that does not read).
    pub send_timeout: Duration,
    /// Largest single reply accepted, in bytes; a longer one is an error (or,
    /// during resync, discarded).
    pub max_reply_len: usize,
    /// Whether a reply must echo the request's `id`. The reference client
    /// sends one with every command and insists on it: without it a reply
    /// cannot be proven to answer this request.
    pub require_id_echo: bool,
    pub resync: ResyncPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            reply_timeout: Duration::from_millis(250),
            send_timeout: Duration::from_millis(250),
            max_reply_len: 1 << 20,
            require_id_echo: true,
            resync: ResyncPolicy::default(),
        }
    }
}

/// A fresh id for a request's `id` member. Kept below 2^53 so that agents
/// which hold numbers as doubles echo it exactly.
pub fn fresh_request_id() -> i64 {
    rand::random::<i64>().rem_euclid(1 << 53)
}

/// A fresh id for guest-sync: any i64, as the schema asks for a random
/// 64-bit value so that stale replies cannot collide with it.
pub fn fresh_sync_id() -> i64 {
    rand::random::<i64>()
}
