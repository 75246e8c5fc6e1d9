//! Client-bound bytes, in order: through the held queue while a reply is
//! held back, then the outbox while a client does not take them, then to
//! the client; each reply noted when it goes on.

use super::queues::Held;
use super::Pump;
use crate::transcript::{Event, Origin};
use tokio::time::Instant;

impl Pump {
    /// Client-bound bytes, in order behind anything held.
    pub(super) async fn to_client(&mut self, bytes: Vec<u8>, origin: Origin) {
        self.queue_client(bytes, origin, None).await;
    }

    /// A reply's bytes (or its last piece), noting when it went on.
    pub(super) async fn to_client_reply(&mut self, bytes: Vec<u8>, reply: Option<usize>) {
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
    pub(super) async fn release_held(&mut self) {
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
