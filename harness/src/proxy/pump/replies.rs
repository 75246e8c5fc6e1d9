//! Agent to client: take in what the agent writes, cut it into units (a
//! reply with the 0xFF and whitespace around it, or bytes that are no
//! reply), and attribute each reply to the request it answers.

use super::{Pump, SeenRequest, MAX_BUFFERED};
use crate::transcript::{Event, Origin};
use crate::wire::framer::{scan, Scan};
use crate::wire::message::ids_equal;
use crate::wire::sentinel::SENTINEL;
use serde_json::Value;
use tokio::time::Instant;

impl Pump {
    /// Take in what the agent sent and pass it on, a reply at a time.
    pub(super) async fn from_agent(&mut self) {
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
    pub(super) async fn flush_partial(&mut self) {
        self.partial_since = None;
        if !self.ain.is_empty() {
            let bytes = std::mem::take(&mut self.ain);
            self.to_client(bytes, Origin::Forwarded).await;
        }
    }

    /// Which request `v` answers.
    pub(super) fn attribute(&mut self, v: &Value) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_errors_answer_nothing() {
        assert!(is_parse_error(&json!({"error": {"class": "GenericError", "desc": "JSON parse error, stray '\u{FFFD}'"}})));
        assert!(!is_parse_error(&json!({"error": {"class": "CommandNotFound", "desc": "The command guest-x has not been found"}})));
        assert!(!is_parse_error(&json!({"return": {}})));
    }
}
