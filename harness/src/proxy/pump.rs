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
//! ([`ReplyFault`]: cut, split, delay, drop, duplicate, restart the agent).
//! Faults act only on replies to requests: the agent's error lines for a
//! client's 0xFF go through untouched.
//!
//! Client-bound bytes keep their order: a delayed reply holds back
//! everything after it, as on a serial line, and so does the unwritten rest
//! of a write the client did not take ([`queues`]: both queues are bounded).

mod queues;

use super::port::ClientPort;
use crate::case::step::ReplyFault;
use crate::connection::{Connection, Fill, SendError};
use crate::session::Session;
use crate::transcript::{escape_bytes, Event, Origin, Transcript};
use crate::wire::framer::{scan, Scan};
use crate::wire::message::ids_equal;
use crate::wire::sentinel::SENTINEL;
use serde_json::Value;
use queues::{Held, HeldQueue, Outbox};
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
    /// Index in [`Pump::replies`] of the agent's answer.
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
    /// Index in [`Pump::requests`] of the request it answers.
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
    faults: VecDeque<ReplyFault>,
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

/// What one turn of the pump did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Bytes moved (see the logs).
    Moved,
    ClientConnected,
    ClientLeft,
    /// The deadline passed (or a timer fired) with nothing else to do.
    Idle,
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

    /// The next reply to a request gets `fault`.
    pub fn push_fault(&mut self, fault: ReplyFault) {
        self.faults.push_back(fault);
    }

    /// Requests the client under test has sent so far.
    pub fn client_requests(&self) -> impl Iterator<Item = &SeenRequest> {
        self.requests.iter().filter(|r| r.writer == Writer::Client)
    }

    /// One turn: wait (until `until` at most) for bytes from either side, a
    /// client connection or a timer, and handle it. `lines` is the client's
    /// report, read in the same wait so that its arrival is ordered against
    /// the bytes.
    pub async fn turn(&mut self, until: Instant, run: &mut super::contract::ClientRun, lines: &mut Vec<super::contract::ReportLine>) -> Turn {
        if self.gated {
            self.gated = false;
            self.from_agent().await;
        }
        // Timers first when due: a side that always has data must not
        // starve a held reply's release or a partial reply's flush.
        self.release_held().await;
        if self.partial_since.is_some_and(|s| Instant::now() >= s + PARTIAL_FLUSH) {
            self.flush_partial().await;
        }
        self.outbox.flush(&mut self.client).await;
        // A client link that ended (seen while writing or polling) is no
        // client: the next one can be accepted.
        if self.client.as_ref().is_some_and(Connection::is_closed) {
            self.client = None;
            self.transcript.event(Event::Note { text: "the client under test disconnected".into() });
            return Turn::ClientLeft;
        }
        let mut wake = until;
        if let Some(release) = self.held.next_release() {
            wake = wake.min(release);
        }
        if self.client.is_some() && !self.outbox.is_empty() {
            wake = wake.min(Instant::now() + OUTBOX_RETRY);
        }
        if let Some(since) = self.partial_since {
            wake = wake.min(since + PARTIAL_FLUSH);
        }
        enum Got {
            Client(std::io::Result<Fill>),
            Agent(std::io::Result<Fill>),
            Accept(std::io::Result<Connection>),
            Line(Option<(Instant, String)>),
            Wake,
        }
        let far = Instant::now() + Duration::from_secs(3600);
        let got = {
            let client_open = self.client.as_ref().is_some_and(|c| !c.is_closed());
            let no_client = self.client.is_none();
            let client = self.client.as_mut();
            let agent_gone = self.agent_closed;
            let agent = self.agent.conn().ok().filter(|c| !c.is_closed() && !agent_gone);
            let agent_open = agent.is_some();
            let port = &self.port;
            let transcript = &self.transcript;
            tokio::select! {
                biased;
                l = run.next_line() => Got::Line(l),
                r = async move { client.expect("guarded").fill(far).await }, if client_open => Got::Client(r),
                r = async move { agent.expect("guarded").fill(far).await }, if agent_open => Got::Agent(r),
                r = port.accept(transcript, MAX_BUFFERED), if no_client => Got::Accept(r),
                _ = tokio::time::sleep_until(wake) => Got::Wake,
            }
        };
        match got {
            Got::Line(Some((at, text))) => {
                // What the client wrote before it printed this line is
                // already in the socket: log it first, so the line is
                // ordered after the request it reports on.
                if let Some(conn) = self.client.as_mut() {
                    if conn.poll_input().is_ok() && !conn.buffered().is_empty() {
                        self.from_client().await;
                    }
                }
                let seq = self.transcript.event(super::contract::note_for(&text));
                lines.push(super::contract::ReportLine { at, seq, text });
                Turn::Moved
            }
            Got::Line(None) => Turn::Moved,
            Got::Client(Ok(Fill::Closed)) | Got::Client(Err(_)) => {
                self.client = None;
                self.transcript.event(Event::Note { text: "the client under test disconnected".into() });
                Turn::ClientLeft
            }
            Got::Client(Ok(_)) => {
                self.from_client().await;
                Turn::Moved
            }
            Got::Agent(Ok(Fill::Closed)) | Got::Agent(Err(_)) => {
                self.agent_closed = true;
                self.flush_partial().await;
                Turn::Moved
            }
            Got::Agent(Ok(_)) => {
                self.from_agent().await;
                Turn::Moved
            }
            Got::Accept(Ok(conn)) => {
                self.client = Some(conn);
                if !self.outbox.is_empty() {
                    self.transcript.event(Event::Note { text: format!("{} byte(s) left for the next client go to this one", self.outbox.len()) });
                    self.outbox.flush(&mut self.client).await;
                }
                Turn::ClientConnected
            }
            Got::Accept(Err(e)) => {
                self.transcript.event(Event::Note { text: format!("accept failed: {e}") });
                Turn::Idle
            }
            Got::Wake => {
                self.release_held().await;
                if self.partial_since.is_some_and(|s| Instant::now() >= s + PARTIAL_FLUSH) {
                    self.flush_partial().await;
                }
                Turn::Idle
            }
        }
    }

    /// Forward what the client sent, then parse it.
    async fn from_client(&mut self) {
        let Some(conn) = self.client.as_mut() else { return };
        let bytes = conn.buffered().to_vec();
        conn.consume(bytes.len());
        if bytes.is_empty() {
            return;
        }
        // Requests are logged before they go on, so that a reply the agent
        // writes while we are still writing finds its request.
        let before = self.requests.len();
        self.cin.extend_from_slice(&bytes);
        self.parse_requests(Writer::Client);
        if self.cin.len() > MAX_BUFFERED {
            // A request that never ends: it is no request to log (the bytes
            // still go on; the agent's own limits are under test).
            self.transcript.event(Event::Note { text: format!("{} byte(s) of an unfinished client request no longer parsed", self.cin.len()) });
            self.cin.clear();
        }
        if !self.write_agent(&bytes, Origin::Forwarded).await {
            // Requests whose bytes did not all reach the agent are owed no
            // reply: they must not take another request's in order.
            for r in &mut self.requests[before..] {
                r.lost = true;
            }
        }
    }

    /// Write to the agent's link (deny-list enforced there); whether all of
    /// `bytes` went.
    pub async fn write_agent(&mut self, bytes: &[u8], origin: Origin) -> bool {
        let deadline = Instant::now() + self.send_timeout;
        let Ok(conn) = self.agent.conn() else {
            self.transcript.event(Event::Note { text: format!("no agent link: {} byte(s) for the agent dropped", bytes.len()) });
            return false;
        };
        conn.set_origin(Some(origin));
        let r = conn.send(bytes, deadline).await;
        conn.set_origin(None);
        let all = r.is_ok();
        match r {
            Ok(()) => {}
            Err(SendError::Refused { what }) => {
                self.invalid.get_or_insert(format!("the harness refused to pass on {what} (a destructive command): the case cannot grade the client"));
            }
            Err(e) => {
                self.transcript.event(Event::Note { text: format!("could not pass bytes on to the agent: {e}") });
            }
        }
        // Replies that arrived while writing.
        self.from_agent().await;
        all
    }

    /// A request the harness itself writes to the agent (a case's `send`).
    pub async fn harness_request(&mut self, bytes: &[u8]) {
        // Parsed apart from the client's stream, which it does not belong to.
        let saved = (std::mem::take(&mut self.cin), self.flush_seen);
        self.cin.extend_from_slice(bytes);
        self.parse_requests(Writer::Harness);
        (self.cin, self.flush_seen) = saved;
        let _ = self.write_agent(bytes, Origin::Injected).await;
    }

    /// Find complete requests in `cin`.
    fn parse_requests(&mut self, writer: Writer) {
        loop {
            self.resolve_newline();
            match scan(&self.cin) {
                Scan::Incomplete { skip } => {
                    self.cin.drain(..skip);
                    return;
                }
                Scan::Sentinel { at } => {
                    self.flush_seen = true;
                    self.cin.drain(..=at);
                }
                Scan::Garbage { end } => {
                    self.cin.drain(..end);
                }
                Scan::Value { start, end } => {
                    let value: Option<Value> = serde_json::from_slice(&self.cin[start..end]).ok();
                    self.cin.drain(..end);
                    let Some(Value::Object(m)) = value else { continue };
                    let Some(execute) = m.get("execute").and_then(Value::as_str) else { continue };
                    let sync_id = if execute.starts_with("guest-sync") { m.get("arguments").and_then(|a| a.get("id")).cloned() } else { None };
                    self.gated |= writer == Writer::Client;
                    if self.requests.len() >= MAX_REQUESTS {
                        // A flood of requests: the bytes still go on, the
                        // log stops (attribution walks it per reply).
                        if self.requests.len() == MAX_REQUESTS {
                            self.transcript.event(Event::Note { text: format!("more than {MAX_REQUESTS} requests in one case: later ones are not logged") });
                            self.requests.push(SeenRequest {
                                seq: self.transcript.mark(),
                                at: Instant::now(),
                                writer,
                                execute: "(not logged)".into(),
                                id: None,
                                sync_id: None,
                                flush_before: false,
                                newline: Some(true),
                                reply: None,
                                lost: true,
                            });
                        }
                        continue;
                    }
                    self.requests.push(SeenRequest {
                        seq: self.transcript.mark(),
                        at: Instant::now(),
                        writer,
                        execute: execute.to_owned(),
                        id: m.get("id").cloned(),
                        sync_id,
                        flush_before: std::mem::take(&mut self.flush_seen),
                        newline: None,
                        reply: None,
                        lost: false,
                    });
                }
            }
        }
    }

    /// Whether a newline followed the last request, once the bytes after it
    /// say so.
    fn resolve_newline(&mut self) {
        let Some(last) = self.requests.iter_mut().rev().find(|r| r.newline.is_none()) else { return };
        for &b in &self.cin {
            match b {
                b'\n' => {
                    last.newline = Some(true);
                    return;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => {
                    last.newline = Some(false);
                    return;
                }
            }
        }
    }

    /// Requests still unsettled at the end say "no newline".
    pub fn settle(&mut self) {
        for r in &mut self.requests {
            r.newline.get_or_insert(false);
        }
    }

    /// Take in what the agent sent and pass it on, a reply at a time.
    async fn from_agent(&mut self) {
        if let Ok(conn) = self.agent.conn() {
            let _ = conn.poll_input();
            let bytes = conn.buffered().to_vec();
            conn.consume(bytes.len());
            self.ain.extend_from_slice(&bytes);
        }
        if self.leading_ws {
            let ws = self.ain.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
            if ws > 0 {
                self.ain.drain(..ws);
                self.transcript.event(Event::Note { text: format!("{ws} byte(s) of whitespace left from before the case dropped") });
            }
            self.leading_ws = self.ain.is_empty();
        }
        if self.gated || self.ain.is_empty() {
            return;
        }
        if self.ain.len() > MAX_BUFFERED {
            // A reply that never ends: pass it on as it stands rather than
            // hold an agent's flood.
            self.flush_partial().await;
            return;
        }
        while let Some((unit, value)) = self.next_unit() {
            match value {
                Some((v, end)) => self.reply_unit(unit, v, end).await,
                None => self.to_client(unit, Origin::Forwarded).await,
            }
        }
        self.partial_since = if self.ain.is_empty() { None } else { self.partial_since.or(Some(Instant::now())) };
    }

    /// Split off the next whole unit of agent output: a reply (with the
    /// 0xFF and whitespace before it and the whitespace through its
    /// newline after it), or bytes that are no reply. None: only a partial
    /// reply is left.
    /// A reply comes with where its JSON ends in the unit.
    fn next_unit(&mut self) -> Option<(Vec<u8>, Option<(Value, usize)>)> {
        if self.ain.is_empty() {
            return None;
        }
        let pre = self.ain.iter().position(|&b| !(b == SENTINEL || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))).unwrap_or(self.ain.len());
        match scan(&self.ain[pre..]) {
            Scan::Incomplete { .. } => {
                if pre == self.ain.len() && !self.ain.contains(&SENTINEL) {
                    // Only whitespace: pass it on.
                    return Some((std::mem::take(&mut self.ain), None));
                }
                None
            }
            Scan::Value { start, end } => {
                let mut stop = pre + end;
                while stop < self.ain.len() && matches!(self.ain[stop], b' ' | b'\t' | b'\r' | b'\n') {
                    stop += 1;
                    if self.ain[stop - 1] == b'\n' {
                        break;
                    }
                }
                let value = serde_json::from_slice::<Value>(&self.ain[pre + start..pre + end]).ok().map(|v| (v, pre + end));
                let unit: Vec<u8> = self.ain.drain(..stop).collect();
                Some((unit, value))
            }
            Scan::Sentinel { at } => Some((self.ain.drain(..pre + at).collect(), None)),
            Scan::Garbage { end } => Some((self.ain.drain(..pre + end).collect(), None)),
        }
    }

    /// Pass on a partial reply as it stands.
    async fn flush_partial(&mut self) {
        self.partial_since = None;
        if !self.ain.is_empty() {
            let bytes = std::mem::take(&mut self.ain);
            self.to_client(bytes, Origin::Forwarded).await;
        }
    }

    /// Which request `v` answers.
    fn attribute(&mut self, v: &Value) -> Option<usize> {
        let open = |r: &SeenRequest| r.reply.is_none() && !r.lost;
        // An id is proof enough even for a request thought lost: a request
        // written just before a restart may be read and answered by the
        // new agent.
        let unanswered = |r: &SeenRequest| r.reply.is_none();
        let found = if let Some(id) = v.get("id") {
            self.requests.iter().rposition(|r| unanswered(r) && r.id.as_ref().is_some_and(|x| ids_equal(x, id)))
        } else if let Some(n) = v.get("return").filter(|n| n.is_number()) {
            self.requests
                .iter()
                .rposition(|r| unanswered(r) && r.sync_id.as_ref().is_some_and(|x| ids_equal(x, n)))
                .or_else(|| self.requests.iter().position(|r| open(r) && !r.is_sync()))
        } else if is_parse_error(v) {
            // The agent's answer to a 0xFF or to stale bytes: answers nothing.
            None
        } else {
            // In order, skipping syncs: a sync's answer carries its id.
            self.requests.iter().position(|r| open(r) && !r.is_sync())
        };
        if let Some(i) = found {
            self.requests[i].lost = false;
            // The agent answers in order: anything before it is lost.
            for r in &mut self.requests[..i] {
                if r.reply.is_none() {
                    r.lost = true;
                }
            }
        }
        found
    }

    /// A reply: attribute it, apply the next fault if it answers a request.
    async fn reply_unit(&mut self, unit: Vec<u8>, value: Value, value_end: usize) {
        let request = self.attribute(&value);
        let seq = self.transcript.mark();
        let fault = match request {
            Some(_) => self.faults.pop_front(),
            None => None,
        };
        let index = self.replies.len();
        if let Some(r) = request {
            self.requests[r].reply = Some(index);
        }
        let Some(f) = fault else {
            self.replies.push(SeenReply { seq, value, request, delivery: Delivery::Whole, delivered_seq: None });
            self.to_client_reply(unit, Some(index)).await;
            return;
        };
        self.transcript.event(Event::Fault { detail: format!("on this reply: {}", describe_fault(&f)) });
        let mut delivery = Delivery::Whole;
        let mut bytes = unit;
        if let Some(n) = f.truncate {
            bytes.truncate(n);
            // Cutting only the whitespace after the JSON leaves the reply whole.
            if n < value_end {
                delivery = Delivery::Truncated(n);
            }
        }
        if f.drop {
            delivery = Delivery::Dropped;
            bytes.clear();
        }
        if f.duplicate {
            if delivery == Delivery::Whole {
                delivery = Delivery::Duplicated;
            }
            let copy = bytes.clone();
            bytes.extend_from_slice(&copy);
        }
        let hold = if f.past_timeout { Some(self.client_timeout + self.client_timeout / 2 + Duration::from_millis(50)) } else { f.delay_ms.map(Duration::from_millis) };
        if hold.is_some() && delivery == Delivery::Whole {
            delivery = Delivery::Delayed;
        }
        self.replies.push(SeenReply { seq, value, request, delivery, delivered_seq: None });
        if let Some(d) = hold {
            let release = Instant::now() + d;
            if let Err(h) = self.held.push(Held { release, bytes, origin: Origin::Forwarded, reply: Some(index) }) {
                self.transcript.event(Event::Note { text: format!("a held reply of {} byte(s) dropped: the held queue is full ({} held)", h.bytes.len(), self.held.bytes()) });
            }
        } else if let Some(chunk) = f.chunk {
            let n = bytes.chunks(chunk).count();
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                if i > 0 && f.delay_us > 0 {
                    tokio::time::sleep(Duration::from_micros(f.delay_us)).await;
                }
                let last = (i + 1 == n).then_some(index);
                self.to_client_reply(piece.to_vec(), last).await;
            }
        } else if !bytes.is_empty() {
            self.to_client_reply(bytes, Some(index)).await;
        }
        if f.restart {
            self.restart_agent(false).await;
        }
    }

    /// Kill the agent and start a new one on the same channel; whatever it
    /// had not written yet is gone.
    ///
    /// `keep_written`: replies the old agent had written before it went are
    /// its answers to the requests before the restart: take them in (and
    /// pass them on) first, then the rest is lost. Not for a reply fault
    /// that restarts the agent mid-reply: there the agent "died" at the cut,
    /// and nothing it wrote after may reach the client.
    pub async fn restart_agent(&mut self, keep_written: bool) {
        self.agent.kill_agent().await;
        if keep_written {
            let gated = std::mem::take(&mut self.gated);
            // Boxed: from_agent can itself restart (through a reply fault).
            Box::pin(self.from_agent()).await;
            self.gated = gated;
            self.flush_partial().await;
        }
        self.ain.clear();
        self.partial_since = None;
        for r in &mut self.requests {
            if r.reply.is_none() {
                r.lost = true;
            }
        }
        match self.agent.start_agent().await {
            Ok(()) => self.agent_closed = false,
            Err(e) => {
                self.invalid.get_or_insert(format!("the agent could not be restarted: {e}"));
            }
        }
    }

    /// SIGKILL the agent (no restart).
    pub async fn kill_agent(&mut self) {
        self.agent.kill_agent().await;
        self.ain.clear();
        self.partial_since = None;
    }

    /// Stale bytes for the client, as if left by the agent.
    pub async fn inject(&mut self, bytes: Vec<u8>) {
        let mut values = Vec::new();
        let mut rest: &[u8] = &bytes;
        loop {
            match scan(rest) {
                Scan::Value { start, end } => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&rest[start..end]) {
                        values.push(v);
                    }
                    rest = &rest[end..];
                }
                Scan::Sentinel { at } => rest = &rest[at + 1..],
                Scan::Garbage { end } => rest = &rest[end..],
                Scan::Incomplete { .. } => break,
            }
        }
        let seq = self.transcript.event(Event::Fault { detail: format!("stale bytes for the client: {}", escape_bytes(&bytes)) });
        self.injections.push(Injection { seq, values });
        self.to_client(bytes, Origin::Injected).await;
    }

    /// Client-bound bytes, in order behind anything held.
    async fn to_client(&mut self, bytes: Vec<u8>, origin: Origin) {
        self.queue_client(bytes, origin, None).await;
    }

    /// A reply's bytes (or its last piece), noting when it went on.
    async fn to_client_reply(&mut self, bytes: Vec<u8>, reply: Option<usize>) {
        self.queue_client(bytes, Origin::Forwarded, reply).await;
    }

    async fn queue_client(&mut self, bytes: Vec<u8>, origin: Origin, reply: Option<usize>) {
        if bytes.is_empty() {
            return;
        }
        if self.held.is_empty() {
            self.write_client(&bytes, origin).await;
            self.delivered(reply);
            return;
        }
        let release = self.held.last_release().unwrap_or_else(Instant::now);
        if let Err(h) = self.held.push(Held { release, bytes, origin, reply }) {
            // Behind a held reply, a flood is dropped (and said), not kept.
            self.transcript.event(Event::Note { text: format!("{} client-bound byte(s) dropped behind a held reply ({} held)", h.bytes.len(), self.held.bytes()) });
        }
    }

    fn delivered(&mut self, reply: Option<usize>) {
        if let Some(i) = reply {
            self.replies[i].delivered_seq = Some(self.transcript.mark());
        }
    }

    /// Release held writes whose time has come.
    async fn release_held(&mut self) {
        while let Some(h) = self.held.pop_due(Instant::now()) {
            self.write_client(&h.bytes, h.origin).await;
            self.delivered(h.reply);
        }
    }

    /// Write to the client now, or queue the bytes for it (behind any
    /// that wait already).
    async fn write_client(&mut self, bytes: &[u8], origin: Origin) {
        self.outbox.write(&mut self.client, bytes, origin).await;
    }

    /// Everything held, released now (the case is over).
    pub async fn release_all(&mut self) {
        while let Some(h) = self.held.pop() {
            self.write_client(&h.bytes, h.origin).await;
            self.delivered(h.reply);
        }
    }

    /// Whether anything client-bound is still held back.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// An error line that answers no request: the agent's lexer rejecting a
/// 0xFF or stale bytes.
fn is_parse_error(v: &Value) -> bool {
    v.get("id").is_none()
        && v.get("error").and_then(|e| e.get("desc")).and_then(Value::as_str).is_some_and(|d| {
            let d = d.to_ascii_lowercase();
            d.contains("parse") || d.contains("lexical") || d.contains("stray") || d.contains("invalid json")
        })
}

/// One line for a reply fault.
pub fn describe_fault(f: &ReplyFault) -> String {
    let mut parts = Vec::new();
    if let Some(n) = f.truncate {
        parts.push(format!("cut after {n} byte(s)"));
    }
    if let Some(c) = f.chunk {
        parts.push(format!("{c}-byte writes {} us apart", f.delay_us));
    }
    if let Some(d) = f.delay_ms {
        parts.push(format!("held {d} ms"));
    }
    if f.past_timeout {
        parts.push("held past the client's timeout".into());
    }
    if f.drop {
        parts.push("dropped".into());
    }
    if f.duplicate {
        parts.push("sent twice".into());
    }
    if f.restart {
        parts.push("then the agent is killed and restarted".into());
    }
    if parts.is_empty() {
        "passed on as is".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A client link over a socketpair, and the client's end of it.
    fn client_pair(transcript: &Transcript) -> (Option<Connection>, std::os::unix::net::UnixStream, crate::transport::Transport) {
        let mut t = crate::transport::Transport::open(crate::transport::TransportKind::Socketpair).unwrap();
        let duplex = t.take_duplex().unwrap().unwrap();
        let peer = std::os::unix::net::UnixStream::from(t.agent_stdio().unwrap().try_clone_to_owned().unwrap());
        (Some(Connection::client_link(duplex, transcript.clone(), 1 << 16)), peer, t)
    }

    fn notes(t: &Transcript) -> String {
        t.render(0, None)
    }

    #[tokio::test]
    async fn bytes_a_client_did_not_take_go_before_later_bytes() {
        use std::io::Read;
        let t = Transcript::default();
        let (mut client, mut peer, _keep) = client_pair(&t);
        let mut outbox = Outbox::new(16 << 20, Duration::from_millis(20), t.clone());
        // More than the socket holds unread: the client stops taking it.
        let first: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        outbox.write(&mut client, &first, Origin::Forwarded).await;
        assert!(!outbox.is_empty(), "the rest waits for the client");
        assert!(notes(&t).contains("the client is not reading: the rest waits for it"));
        // The client reads what it was given, so the socket has room again:
        // a later write must still not overtake the rest of the first.
        let mut head = vec![0u8; first.len() - outbox.len()];
        peer.read_exact(&mut head).unwrap();
        outbox.write(&mut client, b"later", Origin::Injected).await;
        let total = first.len() + b"later".len();
        let reader = std::thread::spawn(move || {
            let mut rest = vec![0u8; total - head.len()];
            peer.read_exact(&mut rest).unwrap();
            head.extend_from_slice(&rest);
            head
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !outbox.is_empty() {
            assert!(Instant::now() < deadline, "{} byte(s) never went", outbox.len());
            outbox.flush(&mut client).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = reader.join().unwrap();
        assert!(got[..first.len()] == first[..], "the first write arrived whole and first");
        assert_eq!(&got[first.len()..], b"later");
    }

    #[tokio::test]
    async fn the_outbox_is_capped_and_keeps_the_earliest_bytes() {
        use std::io::Read;
        let t = Transcript::default();
        let mut outbox = Outbox::new(10, Duration::from_millis(20), t.clone());
        let mut nobody = None;
        outbox.write(&mut nobody, b"abcdef", Origin::Forwarded).await;
        outbox.write(&mut nobody, b"ghijkl", Origin::Injected).await;
        outbox.write(&mut nobody, b"mn", Origin::Forwarded).await;
        assert_eq!(outbox.len(), 10);
        let n = notes(&t);
        assert_eq!(n.matches("2 client-bound byte(s) dropped: the backlog is full").count(), 2, "{n}");
        // The next client gets them, in order.
        let (mut client, mut peer, _keep) = client_pair(&t);
        outbox.flush(&mut client).await;
        assert!(outbox.is_empty());
        let mut got = [0u8; 10];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcdefghij");
    }

    #[test]
    fn the_held_queue_is_capped_and_keeps_order() {
        let now = Instant::now();
        let held = |n: usize, ms: u64| Held { release: now + Duration::from_millis(ms), bytes: vec![b'x'; n], origin: Origin::Forwarded, reply: Some(n) };
        let mut q = HeldQueue::new(10);
        // The first is taken however long: one reply can always be delayed.
        assert!(q.push(held(20, 5)).is_ok());
        assert_eq!(q.push(held(1, 0)).unwrap_err().bytes.len(), 1, "nothing fits behind it");
        assert_eq!(q.pop().unwrap().bytes.len(), 20);
        assert_eq!(q.bytes(), 0);
        assert!(q.push(held(4, 30)).is_ok() && q.push(held(6, 10)).is_ok());
        assert!(q.push(held(1, 10)).is_err(), "over the cap");
        assert_eq!((q.bytes(), q.last_release()), (10, Some(now + Duration::from_millis(10))));
        // Released first in, first out: one due later holds back the rest.
        assert!(q.pop_due(now + Duration::from_millis(20)).is_none());
        assert_eq!(q.pop_due(now + Duration::from_millis(30)).unwrap().reply, Some(4));
        assert_eq!(q.pop_due(now + Duration::from_millis(30)).unwrap().reply, Some(6));
        assert!(q.is_empty() && q.next_release().is_none());
    }

    #[test]
    fn parse_errors_answer_nothing() {
        assert!(is_parse_error(&json!({"error": {"class": "GenericError", "desc": "JSON parse error, stray '\u{FFFD}'"}})));
        assert!(!is_parse_error(&json!({"error": {"class": "CommandNotFound", "desc": "The command guest-x has not been found"}})));
        assert!(!is_parse_error(&json!({"return": {}})));
    }
}
