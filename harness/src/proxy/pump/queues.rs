//! The two queues client-bound bytes may wait in, both bounded (what does
//! not fit is dropped and said, never kept without limit) and both first in,
//! first out, so bytes never overtake earlier bytes:
//!
//! - [`HeldQueue`]: writes waiting for a time (a delayed reply, and
//!   everything after it);
//! - [`Outbox`]: writes waiting for a client to take them (nobody is
//!   connected, or the client stopped reading for the send timeout).
//!
//! A byte goes through the held queue (if anything is held), then the
//! outbox (if anything waits there), then to the client.

use crate::connection::{Connection, SendError};
use crate::transcript::{Event, Origin, Transcript};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// One client-bound write waiting its turn.
#[derive(Debug)]
pub(super) struct Held {
    pub release: Instant,
    pub bytes: Vec<u8>,
    pub origin: Origin,
    /// The reply these bytes carry, if any.
    pub reply: Option<usize>,
}

/// Client-bound writes held back until their time, in order.
#[derive(Debug)]
pub(super) struct HeldQueue {
    items: VecDeque<Held>,
    bytes: usize,
    cap: usize,
}

impl HeldQueue {
    pub fn new(cap: usize) -> HeldQueue {
        HeldQueue { items: VecDeque::new(), bytes: 0, cap }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold `h`, or give it back when it does not fit behind what is held.
    /// The first is always taken: one reply, however long, can be delayed.
    pub fn push(&mut self, h: Held) -> Result<(), Held> {
        if !self.items.is_empty() && self.bytes + h.bytes.len() > self.cap {
            return Err(h);
        }
        self.bytes += h.bytes.len();
        self.items.push_back(h);
        Ok(())
    }

    /// When the first held write is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.items.front().map(|h| h.release)
    }

    /// When the last held write is due: nothing behind it may go earlier.
    pub fn last_release(&self) -> Option<Instant> {
        self.items.back().map(|h| h.release)
    }

    /// The first held write, if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Held> {
        if self.items.front().is_some_and(|h| h.release <= now) {
            self.pop()
        } else {
            None
        }
    }

    /// The first held write, due or not.
    pub fn pop(&mut self) -> Option<Held> {
        let h = self.items.pop_front()?;
        self.bytes -= h.bytes.len();
        Some(h)
    }
}

/// Client-bound bytes no client has taken yet, in order, up to a cap (the
/// rest is dropped and said): kept while no client is connected, for the
/// next one (a serial line's semantics), and the unwritten rest of a write
/// the connected client did not take within the send timeout. While any
/// wait, later writes queue behind them.
#[derive(Debug)]
pub(super) struct Outbox {
    chunks: VecDeque<(Vec<u8>, Origin)>,
    len: usize,
    cap: usize,
    send_timeout: Duration,
    transcript: Transcript,
}

/// How far one write to the client got.
enum Sent {
    All,
    /// The client took the bytes before this offset, then stopped reading.
    Stalled(usize),
    /// The client link failed: it is no client any more.
    Gone,
}

impl Outbox {
    pub fn new(cap: usize, send_timeout: Duration, transcript: Transcript) -> Outbox {
        Outbox { chunks: VecDeque::new(), len: 0, cap, send_timeout, transcript }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Write to the client now if nothing waits and one is connected;
    /// otherwise queue the bytes behind what waits.
    pub async fn write(&mut self, client: &mut Option<Connection>, bytes: &[u8], origin: Origin) {
        let waiting = !self.chunks.is_empty();
        if let (Some(conn), false) = (client.as_mut(), waiting) {
            match self.send(conn, bytes, origin).await {
                Sent::All => {}
                Sent::Stalled(from) => self.keep(&bytes[from..], origin),
                Sent::Gone => {
                    *client = None;
                    self.keep(bytes, origin);
                }
            }
            return;
        }
        self.keep(bytes, origin);
        if waiting {
            self.flush(client).await;
        }
    }

    /// Pass on what waits, in order, while the client takes it. Never waits
    /// on a client that cannot take a byte now; a write it stops taking
    /// halfway stays first in line.
    pub async fn flush(&mut self, client: &mut Option<Connection>) {
        while let Some(conn) = client.as_mut() {
            if self.chunks.is_empty() || !writable(conn) {
                return;
            }
            let (bytes, origin) = self.chunks.pop_front().expect("checked");
            self.len -= bytes.len();
            match self.send(conn, &bytes, origin).await {
                Sent::All => {}
                Sent::Stalled(from) => {
                    self.put_back(bytes[from..].to_vec(), origin);
                    return;
                }
                Sent::Gone => {
                    *client = None;
                    self.put_back(bytes, origin);
                    return;
                }
            }
        }
    }

    async fn send(&self, conn: &mut Connection, bytes: &[u8], origin: Origin) -> Sent {
        conn.set_origin(Some(origin));
        let r = conn.send(bytes, Instant::now() + self.send_timeout).await;
        conn.set_origin(None);
        match r {
            Ok(()) => Sent::All,
            Err(SendError::Timeout { written, .. }) => {
                self.transcript.event(Event::Note { text: "the client is not reading: the rest waits for it".into() });
                Sent::Stalled(written)
            }
            Err(_) => Sent::Gone,
        }
    }

    /// Queue `bytes` last, as far as the cap allows.
    fn keep(&mut self, bytes: &[u8], origin: Origin) {
        let room = self.cap.saturating_sub(self.len);
        if bytes.len() > room {
            self.transcript.event(Event::Note { text: format!("{} client-bound byte(s) dropped: the backlog is full", bytes.len() - room) });
        }
        let kept = &bytes[..bytes.len().min(room)];
        if !kept.is_empty() {
            self.len += kept.len();
            self.chunks.push_back((kept.to_vec(), origin));
        }
    }

    /// Put what was taken from the front back there (it was within the cap).
    fn put_back(&mut self, bytes: Vec<u8>, origin: Origin) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_front((bytes, origin));
        }
    }
}

/// Whether the client can take at least one byte right now.
fn writable(conn: &Connection) -> bool {
    let mut fd = libc::pollfd { fd: conn.raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one pollfd on the stack, valid for the call; timeout 0 never
    // blocks. An error or a hang-up counts as writable, so the write that
    // follows finds out and says so.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n != 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
