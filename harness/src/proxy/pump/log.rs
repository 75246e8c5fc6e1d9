//! What the pump records for the grade: the requests it saw on their way to
//! the agent, the replies and what became of each, and the stale bytes it
//! put in front of the client.

use serde_json::Value;
use tokio::time::Instant;

/// Who wrote a request onto the agent's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The client under test.
    Client,
    /// The harness (a case's `send`: an earlier client's leftovers).
    Harness,
}

/// A request seen on its way to the agent.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Transcript position when it was complete: before any reply to it.
    pub seq: u64,
    pub at: Instant,
    pub writer: Writer,
    pub execute: String,
    pub id: Option<Value>,
    /// `arguments.id` of guest-sync / guest-sync-delimited.
    pub sync_id: Option<Value>,
    /// A raw 0xFF came after the previous request and before this one.
    pub flush_before: bool,
    /// Whether a newline followed it (None: not known yet).
    pub newline: Option<bool>,
    /// Index in [`Pump::replies`](super::Pump::replies) of the agent's answer.
    pub reply: Option<usize>,
    /// A later request was answered first: the agent lost this one.
    pub lost: bool,
}

impl SeenRequest {
    pub fn is_sync(&self) -> bool {
        self.execute == "guest-sync" || self.execute == "guest-sync-delimited"
    }
}

/// What became of a reply on its way to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Whole,
    /// Only the first N bytes went on.
    Truncated(usize),
    Dropped,
    Duplicated,
    /// Held back, then passed on whole.
    Delayed,
}

/// A reply from the agent.
#[derive(Debug, Clone)]
pub struct SeenReply {
    pub seq: u64,
    pub value: Value,
    /// Index in [`Pump::requests`](super::Pump::requests) of the request it answers.
    pub request: Option<usize>,
    pub delivery: Delivery,
    /// Transcript position once it went on to the client (None: never,
    /// or not yet).
    pub delivered_seq: Option<u64>,
}

/// Stale bytes the harness put in front of the client.
#[derive(Debug, Clone)]
pub struct Injection {
    pub seq: u64,
    /// The JSON values in them, for naming a stale value the client took.
    pub values: Vec<Value>,
}
