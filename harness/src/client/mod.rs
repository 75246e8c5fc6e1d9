//! The reference client: how a correct host-side client talks to an agent.
//!
//! - [`resync`]: recover a channel of unknown state through
//!   `guest-sync-delimited` (the protocol's answer to stale partial data).
//! - [`execute`]: send one command and return its reply, proven to be ours.
//! - [`observe`]: reading replies with the bytes around them, for grading.
//! - [`stale`]: bytes that are not the awaited reply, and what is done
//!   with them (dropped, abandoned, drained, skipped, injected).
//!
//! The client works on a [`Connection`](crate::connection::Connection) and
//! never sees a file descriptor or a process.

pub mod diagnose;
pub mod execute;
pub mod ids;
pub mod observe;
pub mod program;
pub mod resync;
pub mod stale;

pub use diagnose::{diagnose, Capability, Profile, ProbeFinding};
pub use execute::{execute, execute_named, execute_skipping, execute_value, read_reply, send_request, AgentError, ClientError};
pub use ids::{id_failure_kind, IdWidth, Ids};
pub use resync::{resync, ResyncError, ResyncPolicy, Resynced};
use serde::{Deserialize, Serialize};

/// How the client brings a channel into step. The reference mode is the
/// schema's: 0xFF, then guest-sync-delimited, and only a reply right after a
/// sentinel counts. The others are what a client falls back to when the
/// start-up probe finds the agent cannot do that, so that its other defects
/// are still graded (libvirt's plain guest-sync with an id loop is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMode {
    pub command: SyncCommand,
    /// Write a raw 0xFF before the sync request (the agent's lexer resets).
    pub leading_ff: bool,
    /// Accept only a reply immediately after a raw 0xFF. Without it, any
    /// `{"return": id}` in the stream counts (the id loop).
    pub need_sentinel: bool,
    /// Accept a sync return that is the id in floating-point form.
    pub accept_float_ids: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncCommand {
    GuestSyncDelimited,
    GuestSync,
}

impl SyncMode {
    /// The schema's resync.
    pub const REFERENCE: SyncMode =
        SyncMode { command: SyncCommand::GuestSyncDelimited, leading_ff: true, need_sentinel: true, accept_float_ids: false };

    pub fn is_reference(&self) -> bool {
        *self == SyncMode::REFERENCE
    }

    pub fn describe(&self) -> String {
        let cmd = match self.command {
            SyncCommand::GuestSyncDelimited => "guest-sync-delimited",
            SyncCommand::GuestSync => "guest-sync",
        };
        let mut s = format!("{}{cmd}", if self.leading_ff { "0xFF + " } else { "" });
        if !self.need_sentinel {
            s.push_str(", id loop without sentinel");
        }
        if self.accept_float_ids {
            s.push_str(", float-form ids accepted");
        }
        s
    }
}

/// How a reply is proven to answer our request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyMatch {
    /// The reply echoes the request's `id` (the reference client's rule).
    IdEcho,
    /// The agent echoes no id: after a sync, replies come in request order.
    Order,
}

use crate::budget::Budgets;
use std::time::Duration;

/// The client: how it syncs, where its ids come from, how it proves a reply
/// is its own, and its limits. One value, used by start-up, recovery and
/// the resync step alike. Defaults are the reference client with small
/// limits: a healthy agent answers in tens of microseconds (protocol.md
/// §4), so every default here is a bound for a broken agent, never a wait a
/// healthy one causes.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub mode: SyncMode,
    pub ids: Ids,
    /// How replies to commands not in `matching_by_command` are matched.
    pub matching: ReplyMatch,
    /// Per command name, where the probe found it differs from `matching`
    /// (an agent that echoes the id on guest-sync only).
    pub matching_by_command: std::collections::BTreeMap<String, ReplyMatch>,
    /// Request ids are sent as JSON strings (for an agent that rejects
    /// numeric ids).
    pub string_ids: bool,
    /// Skip raw 0xFF bytes in front of replies (for an agent found to put
    /// them on every reply; the cases about sentinels still grade it).
    pub skip_stray_ff: bool,
    /// How long to wait for the reply to one command.
    pub reply_timeout: Duration,
    /// How long a write may block (an agent that does not read).
    pub send_timeout: Duration,
    /// Largest single reply accepted, in bytes; a longer one is an error (or,
    /// during resync, discarded).
    pub max_reply_len: usize,
    /// Once a reply has started, how long the agent may pause between
    /// bytes before the wait counts as a timeout. Waits are measured from the
    /// last byte, so a slow but steady agent is never cut off; the deadline
    /// of the first byte stays `reply_timeout`.
    pub idle_timeout: std::time::Duration,
    pub resync: ResyncPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let mut opts = ClientOptions {
            reply_timeout: Duration::ZERO,
            send_timeout: Duration::ZERO,
            mode: SyncMode::REFERENCE,
            ids: Ids::default(),
            matching: ReplyMatch::IdEcho,
            matching_by_command: Default::default(),
            string_ids: false,
            skip_stray_ff: false,
            idle_timeout: Duration::ZERO,
            max_reply_len: 1 << 20,
            resync: ResyncPolicy::default(),
        };
        opts.set_budgets(&Budgets::defaults(crate::transport::TransportKind::Pty, crate::budget::Mode::Run));
        opts
    }
}

impl ClientOptions {
    /// The client's waits from the run's budgets (the one place they are
    /// set: defaults, the user's flags and the agent's pace all arrive as a
    /// [`Budgets`] value).
    pub fn set_budgets(&mut self, b: &Budgets) {
        self.reply_timeout = b.reply;
        self.idle_timeout = b.idle;
        self.send_timeout = b.send;
        self.resync.first_attempt = b.resync_first_attempt;
        self.resync.max_attempt = b.resync_max_attempt;
        self.resync.budget = b.resync;
    }

    /// How a reply to `command` is proven ours.
    pub fn matching_for(&self, command: &str) -> ReplyMatch {
        self.matching_by_command.get(command).copied().unwrap_or(self.matching)
    }

    /// The `id` member for a request with integer id `n`.
    pub fn request_id_value(&self, n: i64) -> serde_json::Value {
        if self.string_ids {
            serde_json::Value::String(format!("qga-harness-{n}"))
        } else {
            serde_json::Value::from(n)
        }
    }

    /// The deadline for one reply: `reply_timeout` for its first byte, then
    /// `idle_timeout` past each byte, never beyond `max_reply_wait`.
    pub fn reply_deadline(&self) -> Deadline {
        Deadline::new(self.reply_timeout, self.idle_timeout, self.max_reply_wait())
    }

    /// However slowly an agent trickles a reply, it is cut off after this.
    pub fn max_reply_wait(&self) -> Duration {
        (self.reply_timeout * 40).max(Duration::from_secs(10))
    }
}

/// A deadline that follows the agent's pace: it starts at `first` and each
/// byte that arrives moves it to `idle` past that byte, up to a hard cap.
/// A mute agent times out after `first`; a slow but steady one never does
/// (until the cap).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
    idle: Duration,
    hard: tokio::time::Instant,
}

impl Deadline {
    pub fn new(first: Duration, idle: Duration, hard_cap: Duration) -> Deadline {
        let now = tokio::time::Instant::now();
        Deadline { at: now + first, idle, hard: now + hard_cap.max(first) }
    }

    /// A plain deadline that bytes do not move.
    pub fn fixed(at: tokio::time::Instant) -> Deadline {
        Deadline { at, idle: Duration::ZERO, hard: at }
    }

    pub fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// Bytes arrived: move the deadline (never earlier, never past the cap).
    pub fn progress(&mut self) {
        let next = (tokio::time::Instant::now() + self.idle).min(self.hard);
        self.at = self.at.max(next);
    }
}
