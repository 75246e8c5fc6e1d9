//! The faults the pump applies: a reply fault on the reply to the request
//! the case awaited (cut, split, delay, drop, duplicate, stale bytes before
//! it or in its place, restart the agent), the agent killed or restarted,
//! and stale bytes put in front of the client.
//!
//! A reply fault is placed by what the client is sent, never by what it
//! wrote: it waits for the reply to its target request, whether the client
//! wrote that request with its sync or apart from it, so both shapes of
//! client meet it at the same place in their input.

use super::queues::Held;
use super::{Delivery, Injection, Pump, SeenReply};
use crate::case::step::{ReplyFault, PLACED_GAP_MS};
use crate::transcript::{escape_bytes, Event, Origin};
use crate::wire::framer::{scan, Scan};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// A reply fault waiting for its reply, with its stale bytes expanded.
#[derive(Debug, Clone)]
pub struct PlacedFault {
    pub fault: ReplyFault,
    /// Index in [`Pump::requests`] of the request whose reply it acts on;
    /// None: the agent's next reply to any request.
    pub target: Option<usize>,
    /// `before`, placeholders filled in.
    pub before: Option<Vec<u8>>,
    /// `instead`, placeholders filled in.
    pub instead: Option<Vec<u8>>,
}

impl Pump {
    /// A reply: attribute it, apply the next fault if it answers a request.
    pub(super) async fn reply_unit(&mut self, unit: Vec<u8>, value: Value, value_end: usize) {
        let request = self.attribute(&value);
        let seq = self.transcript.mark();
        let fault = request.and_then(|r| {
            let at = self.faults.iter().position(|f| f.target.is_none_or(|t| t == r))?;
            self.faults.remove(at)
        });
        let index = self.replies.len();
        if let Some(r) = request {
            self.requests[r].reply = Some(index);
        }
        let Some(placed) = fault else {
            self.replies.push(SeenReply { seq, value, request, delivery: Delivery::Whole, delivered_seq: None });
            self.to_client_reply(unit, Some(index)).await;
            return;
        };
        let f = placed.fault;
        self.transcript.event(Event::Fault { detail: format!("on this reply: {}", describe_fault(&f)) });
        if let Some(stale) = placed.before.or(placed.instead.clone()) {
            // After everything the client was sent before this reply: the
            // sync reply has gone (or is held in order ahead of these).
            self.inject(stale).await;
        }
        let mut delivery = Delivery::Whole;
        let mut bytes = unit;
        if let Some(n) = f.truncate {
            bytes.truncate(n);
            // Cutting only the whitespace after the JSON leaves the reply whole.
            if n < value_end {
                delivery = Delivery::Truncated(n);
            }
        }
        if f.drop || placed.instead.is_some() {
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
        let mut hold = if f.past_timeout { Some(self.client_timeout + self.client_timeout / 2 + Duration::from_millis(50)) } else { f.delay_ms.map(Duration::from_millis) };
        if f.before.is_some() {
            // The stale bytes reach the client alone first.
            hold = Some(hold.unwrap_or_default().max(Duration::from_millis(PLACED_GAP_MS)));
        }
        if hold.is_some() && delivery == Delivery::Whole && f.before.is_none() {
            delivery = Delivery::Delayed;
        }
        self.replies.push(SeenReply { seq, value, request, delivery, delivered_seq: None });
        if let Some(d) = hold {
            let release = (Instant::now() + d).max(self.held.last_release().unwrap_or_else(Instant::now));
            if let Err(h) = self.held.push(Held { release, bytes, origin: Origin::Forwarded, reply: Some(index) }) {
                self.transcript.event(Event::Note { text: format!("a held reply of {} byte(s) dropped: the held queue is full ({} held)", h.bytes.len(), self.held.bytes()) });
            }
        } else if let Some(chunk) = f.chunk {
            // The pieces go through the held queue, each with its own
            // release time: the pump keeps turning between them, so the
            // client's bytes and report lines are logged when they come,
            // not after the last piece.
            // The reply has reached the client with the piece that holds
            // its JSON's last byte (whitespace after it may come later).
            let n = bytes.chunks(chunk).count();
            let whole_at = (value_end.saturating_sub(1) / chunk).min(n - 1);
            let start = self.held.last_release().unwrap_or_else(Instant::now).max(Instant::now());
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                let last = (i == whole_at).then_some(index);
                if i == 0 && self.held.is_empty() {
                    self.to_client_reply(piece.to_vec(), last).await;
                    continue;
                }
                let release = start + Duration::from_micros(f.delay_us.saturating_mul(i as u64));
                if let Err(h) = self.held.push(Held { release, bytes: piece.to_vec(), origin: Origin::Forwarded, reply: last }) {
                    self.transcript.event(Event::Note { text: format!("a reply piece of {} byte(s) dropped: the held queue is full ({} held)", h.bytes.len(), self.held.bytes()) });
                }
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
        if !keep_written {
            // The agent "died" at the cut: what it had written after it and
            // the pump had not read yet is no more the client's than what
            // it had read (whether it got that far is timing, not the case).
            if let Ok(conn) = self.agent.conn() {
                let _ = conn.poll_input();
                let late = conn.buffered().len();
                conn.consume(late);
                let late = late + self.ain.len();
                if late > 0 {
                    self.transcript.event(Event::Note { text: format!("{late} byte(s) the killed agent wrote after the cut dropped") });
                }
            }
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
}

/// One line for a reply fault.
pub fn describe_fault(f: &ReplyFault) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &f.before {
        parts.push(format!("stale bytes {} first, then the reply {PLACED_GAP_MS} ms later", escape_bytes(&b.0)));
    }
    if let Some(b) = &f.instead {
        parts.push(format!("stale bytes {} in its place, the reply lost", escape_bytes(&b.0)));
    }
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
