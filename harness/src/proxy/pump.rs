//! The pump: the harness as a recording, fault-injecting proxy between a
//! client under test and a real agent.
//!
//! Two links and two peers with a pump between them: the client's link
//! (a [`ClientPort`] connection) and the agent's link (the [`Session`]'s
//! connection, with the destructive-command deny-list in its send path, so
//! a client under test cannot make a real qemu-ga shut the machine down
//! either). The pump forwards bytes both ways as they come and parses both
//! streams with the same framer the reference client uses:
//!
//! - the client's requests (`execute`, `id`, whether a raw 0xFF came before
//!   it, whether a newline followed it), and
//! - the agent's replies, each attributed to the request it answers (by its
//!   `id`, by a sync's return value, else in order), so the grade can tell
//!   whether what the client reported was the reply to *its* request.
//!
//! Agent output goes on to the client a reply at a time (a complete JSON
//! value with the 0xFF and whitespace around it); a partial reply is passed
//! on as it stands after [`PARTIAL_FLUSH`]. That is where reply faults act
//! ([`PlacedFault`]: cut, split, delay, drop, duplicate, stale bytes before
//! it or in its place, restart the agent), on the reply to the request the
//! case awaited, so that where the fault lands does not depend on how the
//! client groups its writes.
//! Faults act only on replies to requests: the agent's error lines for a
//! client's 0xFF go through untouched.
//!
//! Client-bound bytes keep their order: a delayed reply holds back
//! everything after it, as on a serial line, and so does the unwritten rest
//! of a write the client did not take ([`queues`]: both queues are bounded).
//!
//! One concept per file: what the pump records (`log`), its event loop
//! (`turn`), the client's requests on their way to the agent
//! (`requests`), the agent's replies on their way back (`replies`), the
//! faults it applies (`faults`), and client-bound bytes in order
//! (`deliver`, through the `queues`).

mod deliver;
mod faults;
mod log;
mod queues;
mod replies;
mod requests;
mod turn;

pub use faults::{describe_fault, PlacedFault};
pub use log::{Delivery, Injection, SeenReply, SeenRequest, Writer};
pub use turn::Turn;

use super::port::ClientPort;
use crate::connection::Connection;
use crate::session::Session;
use crate::transcript::Transcript;
use queues::{HeldQueue, Outbox};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A partial reply is passed on as it stands after this long without
/// completing: an agent killed mid-reply leaves one for good.
pub const PARTIAL_FLUSH: Duration = Duration::from_millis(20);
/// Unconsumed input each link may hold.
const MAX_BUFFERED: usize = 1 << 20;
/// Client-bound bytes kept while no client takes them.
const MAX_BACKLOG: usize = 1 << 20;
/// Client-bound bytes held back by a reply fault (a delayed reply and all
/// behind it).
const MAX_HELD: usize = 1 << 20;
/// How often bytes waiting for a client that stopped reading are offered
/// again.
const OUTBOX_RETRY: Duration = Duration::from_millis(10);
/// Requests logged per case; a client flooding more is not graded on them.
const MAX_REQUESTS: usize = 10_000;

/// The proxy between one client under test and the agent.
#[derive(Debug)]
pub struct Pump {
    transcript: Transcript,
    port: ClientPort,
    client: Option<Connection>,
    /// Client-bound bytes no client has taken yet.
    outbox: Outbox,
    pub agent: Session,
    /// Client bytes not yet parsed (already forwarded).
    cin: Vec<u8>,
    flush_seen: bool,
    /// Agent bytes not yet passed on (a reply in progress).
    ain: Vec<u8>,
    partial_since: Option<Instant>,
    faults: VecDeque<PlacedFault>,
    held: HeldQueue,
    send_timeout: Duration,
    client_timeout: Duration,
    pub requests: Vec<SeenRequest>,
    pub replies: Vec<SeenReply>,
    pub injections: Vec<Injection>,
    /// Set when a client request has just been parsed: agent output waits
    /// until the next turn, so that the case's steps (an inject, a reply
    /// fault) act before the reply to that request goes on, however fast
    /// the agent is.
    gated: bool,
    /// Until the agent sends anything but whitespace in this case, its
    /// whitespace is the tail of the harness's own sync before the case
    /// (qemu-ga may write a reply's newline apart from it): not the
    /// client's to see.
    leading_ws: bool,
    /// Why the case cannot grade the client (a refused write, a dead agent).
    pub invalid: Option<String>,
    /// The agent link ended (the agent died with nobody restarting it).
    pub agent_closed: bool,
}

impl Pump {
    /// A pump on a fresh client port of `port`'s kind, in front of a
    /// started agent session.
    pub fn new(mut port: ClientPort, agent: Session, transcript: Transcript, client_timeout: Duration) -> std::io::Result<Pump> {
        let client = port.take_link(&transcript, MAX_BUFFERED)?;
        let send_timeout = agent.client().send_timeout;
        let outbox = Outbox::new(MAX_BACKLOG, send_timeout, transcript.clone());
        Ok(Pump {
            transcript,
            port,
            client,
            outbox,
            agent,
            cin: Vec::new(),
            flush_seen: false,
            ain: Vec::new(),
            partial_since: None,
            faults: VecDeque::new(),
            held: HeldQueue::new(MAX_HELD),
            send_timeout,
            client_timeout,
            requests: Vec::new(),
            replies: Vec::new(),
            injections: Vec::new(),
            gated: false,
            leading_ws: true,
            invalid: None,
            agent_closed: false,
        })
    }

    /// `{path}` for the client.
    pub fn client_path(&self) -> &std::path::Path {
        self.port.path()
    }

    /// Give the agent session back (the pump is done with it).
    pub fn into_session(self) -> Session {
        self.agent
    }

    /// A reply fault for the reply to `fault.target` (or the next reply to
    /// any request).
    pub fn push_fault(&mut self, fault: PlacedFault) {
        self.faults.push_back(fault);
    }

    /// Requests the client under test has sent so far.
    pub fn client_requests(&self) -> impl Iterator<Item = &SeenRequest> {
        self.requests.iter().filter(|r| r.writer == Writer::Client)
    }
}
