//! Client to agent: forward what the client (or the harness) writes, and
//! log each request in it, with the 0xFF before it and the newline after.

use super::{Pump, SeenRequest, Writer, MAX_BUFFERED, MAX_REQUESTS};
use crate::connection::SendError;
use crate::transcript::{Event, Origin};
use crate::wire::framer::{scan, Scan};
use serde_json::Value;
use tokio::time::Instant;

impl Pump {
    /// Forward what the client sent, then parse it.
    pub(super) async fn from_client(&mut self) {
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
}
