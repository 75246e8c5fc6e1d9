//! The connection layer: buffered, recorded I/O over a transport's
//! [`Duplex`]. It knows about bytes, deadlines and the transcript, and
//! nothing about JSON or commands (that is the client's business).
//!
//! Two rules shape it:
//! - Every wait has a deadline. A mute agent makes `fill` return
//!   `Fill::Timeout`; an agent that never reads makes `send` time out.
//! - It reads while it writes. qemu-ga over a pty drops replies under
//!   back-pressure (protocol.md §4); a harness that wrote a large burst
//!   without draining the channel would cause that itself.
//! - Every write passes its [`SendGuard`] first, if one is installed (the
//!   session installs the deny-list). A refused write sends nothing, and
//!   neither does any later write until [`Connection::clear_refusal`]: the
//!   stream stops where the guard stopped it.
//!
//! Bytes are recorded when the harness reads them, so a timestamp is when the
//! harness saw them, a few microseconds after the agent wrote them.

use crate::transcript::{Direction, Event, Origin, Transcript};
use crate::transport::Duplex;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// Read size. Larger than a pty's buffer, so one read drains it.
const READ_CHUNK: usize = 64 * 1024;

/// Result of waiting for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many new bytes are in the buffer.
    Data(usize),
    /// The deadline passed with nothing new.
    Timeout,
    /// The peer closed the stream (unix socket agent gone).
    Closed,
    /// The buffer holds `max_buffered` unconsumed bytes; nothing more is read
    /// until the caller consumes some. An agent that floods hits this.
    Full,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the agent did not take our bytes before the deadline ({written} of {total} written)")]
    Timeout { written: usize, total: usize },
    /// The guard refused the write, or an earlier one: nothing of it was sent.
    #[error("refused to send {what}: it is on the harness's deny-list")]
    Refused { what: String },
    #[error("channel closed while writing")]
    Closed,
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
}

enum Step {
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
    Deadline,
}

/// Decides what may be written to a connection, seeing the stream as a
/// whole: `admit` is asked before each write, `sent` is told about every
/// piece the channel took, in order. The connection knows nothing of what
/// the guard looks for.
pub trait SendGuard: Send + std::fmt::Debug {
    /// Whether `bytes` may be written next. `Err(what)` names what they
    /// would send that must not be sent. Records nothing.
    fn admit(&self, bytes: &[u8]) -> Result<(), String>;
    /// `bytes` went out (all or part of an admitted write).
    fn sent(&mut self, bytes: &[u8]);
}

/// Buffered, recorded byte I/O with deadlines.
#[derive(Debug)]
pub struct Connection {
    stream: Duplex,
    buf: Vec<u8>,
    /// Read target, on the heap: a 64 KiB array inside an async fn would make
    /// every future that awaits it that much larger.
    scratch: Box<[u8]>,
    max_buffered: usize,
    transcript: Transcript,
    closed: bool,
    guard: Option<Box<dyn SendGuard>>,
    /// What the guard refused; while set, nothing more is written.
    refused: Option<String>,
    /// With `Some`, a write that makes progress gets at least this long
    /// after its last progress, whatever its deadline.
    send_stall: Option<Duration>,
    /// How writes and reads are recorded: which link this is.
    out_dir: Direction,
    in_dir: Direction,
    /// Where the bytes of the next writes come from (client mode).
    origin: Option<Origin>,
}

impl Connection {
    pub fn new(stream: Duplex, transcript: Transcript, max_buffered: usize) -> Connection {
        Connection {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            max_buffered,
            transcript,
            closed: false,
            guard: None,
            refused: None,
            send_stall: None,
            out_dir: Direction::ToAgent,
            in_dir: Direction::FromAgent,
            origin: None,
        }
    }

    /// A connection to the client under test (client mode): its bytes are
    /// recorded as to and from the client.
    pub fn client_link(stream: Duplex, transcript: Transcript, max_buffered: usize) -> Connection {
        let mut c = Connection::new(stream, transcript, max_buffered);
        c.out_dir = Direction::ToClient;
        c.in_dir = Direction::FromClient;
        c
    }

    /// Record later writes as coming from `origin` (None: the harness's own
    /// client).
    pub fn set_origin(&mut self, origin: Option<Origin>) {
        self.origin = origin;
    }

    /// Install the guard every later write must pass (replacing any other).
    pub fn set_guard(&mut self, guard: Box<dyn SendGuard>) {
        self.guard = Some(guard);
    }

    /// What the guard refused, if writes are stopped.
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Allow writes again after a refusal; returns what was refused. The
    /// guard still sees the stream whole, so it refuses anything that would
    /// complete the refused bytes.
    pub fn clear_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }

    /// Progress-based send deadlines: with `Some(stall)`, each write that
    /// the channel takes bytes of moves the deadline to at least `stall`
    /// after that progress, so a slow reader is not failed as a dead one. A
    /// write that makes no progress for `stall` (and is past its deadline)
    /// still times out. `None` (the default): the deadline is fixed.
    pub fn set_send_stall(&mut self, stall: Option<Duration>) {
        self.send_stall = stall;
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// Whether the peer has closed (a socket's end of stream).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The channel's fd, for the benchmark's raw floor only. Bytes written
    /// to it bypass the send guard (the benchmark writes a fixed guest-ping).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }

    /// Unconsumed input.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drop the first `n` buffered bytes (they have been used or discarded).
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }

    /// Put stale agent-side data in the input, after what is already
    /// buffered and before anything read later: the harness interposing on
    /// the channel. Recorded as a fault, not as agent output.
    pub fn inject(&mut self, bytes: &[u8]) {
        self.transcript.event(Event::Fault {
            detail: format!("inject {} stale byte(s) into the client's input: {}", bytes.len(), crate::transcript::escape_bytes(bytes)),
        });
        self.buf.extend_from_slice(bytes);
    }

    /// Drop all buffered input.
    pub fn clear(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }

    /// Move `n` freshly read bytes from the scratch buffer into the input.
    fn take_input(&mut self, n: usize) {
        self.transcript.bytes(self.in_dir, &self.scratch[..n]);
        self.buf.extend_from_slice(&self.scratch[..n]);
    }

    fn room(&self) -> usize {
        self.max_buffered.saturating_sub(self.buf.len()).min(READ_CHUNK)
    }

    /// Wait until new input arrives, the peer closes, or `deadline` passes.
    pub async fn fill(&mut self, deadline: Instant) -> io::Result<Fill> {
        if self.closed {
            return Ok(Fill::Closed);
        }
        let room = self.room();
        if room == 0 {
            return Ok(Fill::Full);
        }
        match tokio::time::timeout_at(deadline, self.stream.read(&mut self.scratch[..room])).await {
            Err(_elapsed) => Ok(Fill::Timeout),
            Ok(Ok(0)) => {
                self.closed = true;
                let who = if self.in_dir == Direction::FromClient { "client" } else { "agent" };
                self.transcript.event(Event::Note { text: format!("channel closed by the {who}") });
                Ok(Fill::Closed)
            }
            Ok(Ok(n)) => {
                self.take_input(n);
                Ok(Fill::Data(n))
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.closed = true;
                Ok(Fill::Closed)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Take in whatever input is available right now, without waiting.
    pub fn poll_input(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while !self.closed {
            let room = self.room();
            if room == 0 {
                break;
            }
            match self.stream.try_read(&mut self.scratch[..room]) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.take_input(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Write all of `bytes` by `deadline`, reading any input that arrives
    /// meanwhile into the buffer. The bytes are recorded as they are taken
    /// by the channel.
    pub async fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), SendError> {
        self.send_with(bytes, deadline, false).await.map(|_| ())
    }

    /// Like [`Connection::send`], but input that arrives while writing is
    /// recorded and thrown away, not buffered; returns how many bytes that
    /// was. For writes after which everything received earlier is stale by
    /// definition (a resync's request, garbage): an agent answering with a
    /// flood can then never fill the buffer and stall the write.
    pub async fn send_discarding(&mut self, bytes: &[u8], deadline: Instant) -> Result<usize, SendError> {
        self.send_with(bytes, deadline, true).await
    }

    /// Refuse the write, recording why, if writes are stopped or the guard
    /// does not admit `bytes`.
    fn admit(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let what = match (&self.refused, &self.guard) {
            (Some(earlier), _) => format!("more bytes after refusing {earlier}"),
            (None, Some(guard)) => match guard.admit(bytes) {
                Ok(()) => return Ok(()),
                Err(what) => {
                    self.refused = Some(what.clone());
                    what
                }
            },
            (None, None) => return Ok(()),
        };
        const SHOWN: usize = 256;
        let more = if bytes.len() > SHOWN { "..." } else { "" };
        self.transcript.event(Event::Note {
            text: format!(
                "refused to send {} byte(s) ({what}); nothing more is written on this connection until the refusal is cleared: {}{more}",
                bytes.len(),
                crate::transcript::escape_bytes(&bytes[..bytes.len().min(SHOWN)])
            ),
        });
        Err(SendError::Refused { what })
    }

    async fn send_with(&mut self, bytes: &[u8], deadline: Instant, discard: bool) -> Result<usize, SendError> {
        self.admit(bytes)?;
        let mut deadline = deadline;
        let mut written = 0;
        let mut discarded = 0;
        while written < bytes.len() {
            let room = if discard { READ_CHUNK } else { self.room() };
            let reading = !self.closed && room > 0;
            let step = {
                let stream = &self.stream;
                let scratch = &mut self.scratch;
                tokio::select! {
                    biased;
                    r = stream.write(&bytes[written..]) => Step::Wrote(r),
                    r = stream.read(&mut scratch[..room.max(1)]), if reading => Step::Read(r),
                    _ = tokio::time::sleep_until(deadline) => Step::Deadline,
                }
            };
            match step {
                Step::Wrote(Ok(0)) => return Err(SendError::Closed),
                Step::Wrote(Ok(n)) => {
                    let piece = &bytes[written..written + n];
                    if let Some(guard) = self.guard.as_mut() {
                        guard.sent(piece);
                    }
                    self.transcript.bytes_from(self.out_dir, piece, self.origin);
                    written += n;
                    if let Some(stall) = self.send_stall {
                        deadline = deadline.max(Instant::now() + stall);
                    }
                }
                Step::Wrote(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe || e.kind() == io::ErrorKind::ConnectionReset => {
                    self.closed = true;
                    return Err(SendError::Closed);
                }
                Step::Wrote(Err(e)) => return Err(e.into()),
                Step::Read(Ok(0)) => self.closed = true,
                Step::Read(Ok(n)) if discard => {
                    self.transcript.bytes(self.in_dir, &self.scratch[..n]);
                    discarded += n;
                }
                Step::Read(Ok(n)) => self.take_input(n),
                Step::Read(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
                Step::Read(Err(e)) => return Err(e.into()),
                Step::Deadline => {
                    let who = if self.out_dir == Direction::ToClient { "client" } else { "agent" };
                    self.transcript.event(Event::Timeout { waiting_for: format!("the {who} to take our bytes") });
                    return Err(SendError::Timeout { written, total: bytes.len() });
                }
            }
        }
        Ok(discarded)
    }

    /// Read and throw away input until none has come for `quiet`, or until
    /// `deadline`; returns the bytes dropped (they are in the transcript).
    pub async fn drain(&mut self, quiet: std::time::Duration, deadline: Instant) -> io::Result<usize> {
        let mut dropped = self.clear();
        loop {
            let until = deadline.min(Instant::now() + quiet);
            match self.fill(until).await? {
                Fill::Data(_) | Fill::Full => dropped += self.clear(),
                Fill::Timeout | Fill::Closed => return Ok(dropped),
            }
            if Instant::now() >= deadline {
                return Ok(dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Transport, TransportKind};
    use std::time::Duration;

    fn pair() -> (Connection, std::os::unix::net::UnixStream, Transport) {
        pair_with(1 << 16)
    }

    fn pair_with(max_buffered: usize) -> (Connection, std::os::unix::net::UnixStream, Transport) {
        let mut t = Transport::open(TransportKind::Socketpair).unwrap();
        let duplex = t.take_duplex().unwrap().unwrap();
        let peer = std::os::unix::net::UnixStream::from(t.agent_stdio().unwrap().try_clone_to_owned().unwrap());
        (Connection::new(duplex, Transcript::default(), max_buffered), peer, t)
    }

    #[tokio::test]
    async fn fill_times_out_on_silence() {
        let (mut c, _peer, _t) = pair();
        let start = Instant::now();
        assert_eq!(c.fill(start + Duration::from_millis(5)).await.unwrap(), Fill::Timeout);
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn send_is_bounded_when_the_peer_never_reads() {
        let (mut c, _peer, _t) = pair();
        let big = vec![b' '; 16 << 20];
        let err = c.send(&big, Instant::now() + Duration::from_millis(20)).await.unwrap_err();
        assert!(matches!(err, SendError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn reads_while_writing_so_a_chatty_peer_cannot_deadlock_us() {
        use std::io::{Read, Write};
        let (mut c, mut peer, _t) = pair_with(8 << 20);
        // The peer echoes everything back; without concurrent reads both
        // sides would block once the socket buffers fill.
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut total = 0;
            while total < (4 << 20) {
                let n = peer.read(&mut buf).unwrap();
                peer.write_all(&buf[..n]).unwrap();
                total += n;
            }
        });
        c.send(&vec![b'x'; 4 << 20], Instant::now() + Duration::from_secs(10)).await.unwrap();
        while c.buffered().len() < (4 << 20) {
            assert!(matches!(c.fill(Instant::now() + Duration::from_secs(5)).await.unwrap(), Fill::Data(_)));
        }
        echo.join().unwrap();
        assert_eq!(c.transcript().totals(), (4 << 20, 4 << 20));
    }

    /// Refuses any write with a `!` in it; remembers what went out.
    #[derive(Debug, Default, Clone)]
    struct Bang {
        sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl SendGuard for Bang {
        fn admit(&self, bytes: &[u8]) -> Result<(), String> {
            if bytes.contains(&b'!') {
                Err("a bang".into())
            } else {
                Ok(())
            }
        }
        fn sent(&mut self, bytes: &[u8]) {
            self.sent.lock().unwrap().extend_from_slice(bytes);
        }
    }

    /// Everything the peer can read right now.
    fn peer_input(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        peer.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_refused_write_sends_nothing_and_stops_writes_until_cleared() {
        let (mut c, mut peer, _t) = pair();
        let guard = Bang::default();
        c.set_guard(Box::new(guard.clone()));
        let soon = || Instant::now() + Duration::from_secs(1);
        c.send(b"one ", soon()).await.unwrap();
        let err = c.send(b"two!", soon()).await.unwrap_err();
        assert!(matches!(&err, SendError::Refused { what } if what == "a bang"), "{err}");
        assert_eq!(err.to_string(), "refused to send a bang: it is on the harness's deny-list");
        assert_eq!(c.refusal(), Some("a bang"));
        // Latched: harmless bytes, either write path, are refused too.
        assert!(matches!(c.send(b"three ", soon()).await, Err(SendError::Refused { .. })));
        assert!(matches!(c.send_discarding(b"four ", soon()).await, Err(SendError::Refused { .. })));
        assert_eq!(peer_input(&mut peer), b"one ");
        let notes = c.transcript().render(0, None);
        assert!(notes.contains("refused to send 4 byte(s) (a bang)"), "{notes}");
        assert!(notes.contains("more bytes after refusing a bang"), "{notes}");
        assert_eq!(c.clear_refusal().as_deref(), Some("a bang"));
        c.send_discarding(b"five", soon()).await.unwrap();
        assert_eq!(peer_input(&mut peer), b"five");
        assert_eq!(*guard.sent.lock().unwrap(), b"one five");
        assert_eq!(c.transcript().totals().0, 8);
    }

    #[tokio::test]
    async fn the_guard_is_told_exactly_what_went_out_of_a_partial_write() {
        let (mut c, _peer, _t) = pair();
        let guard = Bang::default();
        c.set_guard(Box::new(guard.clone()));
        let big = vec![b'x'; 16 << 20];
        let err = c.send(&big, Instant::now() + Duration::from_millis(20)).await.unwrap_err();
        let SendError::Timeout { written, total } = err else { panic!("{err}") };
        assert!(written > 0 && written < total);
        assert_eq!(guard.sent.lock().unwrap().len(), written);
    }

    /// A peer that reads `per_ms` bytes every millisecond until it has
    /// `total`, returning what it read.
    fn slow_reader(mut peer: std::os::unix::net::UnixStream, per_ms: usize, total: usize) -> std::thread::JoinHandle<usize> {
        use std::io::Read;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; per_ms];
            let mut got = 0;
            let mut next = std::time::Instant::now();
            while got < total {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                next += Duration::from_millis(1);
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
            got
        })
    }

    /// A socketpair with the smallest send buffer, as a serial line has.
    /// With the default one (~208 KiB), the kernel wakes a blocked writer
    /// only when the reader has drained three quarters of it: at 64 bytes a
    /// millisecond, that is seconds without any progress at the fd.
    fn narrow_pair() -> (Connection, std::os::unix::net::UnixStream, Transport) {
        let (c, peer, t) = pair();
        // SAFETY: the fd is the connection's, alive for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(c.raw_fd()) };
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &1).unwrap();
        (c, peer, t)
    }

    #[tokio::test]
    async fn a_slow_reader_passes_with_a_stall_timeout_and_fails_without() {
        const TOTAL: usize = 256 << 10;
        let (mut c, peer, _t) = narrow_pair();
        c.set_send_stall(Some(Duration::from_millis(250)));
        let reader = slow_reader(peer, 64, TOTAL);
        let start = Instant::now();
        c.send(&vec![b' '; TOTAL], start + Duration::from_millis(250)).await.unwrap();
        assert!(start.elapsed() > Duration::from_secs(1), "{:?}: the reader was not slow", start.elapsed());
        assert_eq!(reader.join().unwrap(), TOTAL);

        // The same reader, with today's fixed deadline.
        let (mut c, peer, _t) = narrow_pair();
        let _reader = slow_reader(peer, 64, TOTAL);
        let err = c.send(&vec![b' '; TOTAL], Instant::now() + Duration::from_millis(250)).await.unwrap_err();
        assert!(matches!(err, SendError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_write_still_times_out_with_a_stall_timeout() {
        let (mut c, _peer, _t) = pair();
        let stall = Duration::from_millis(250);
        let deadline = Duration::from_millis(250);
        c.set_send_stall(Some(stall));
        let start = Instant::now();
        let err = c.send(&vec![b' '; 16 << 20], start + deadline).await.unwrap_err();
        let elapsed = start.elapsed();
        let SendError::Timeout { written, total } = err else { panic!("{err}") };
        assert!(written > 0 && written < total, "{written} of {total}");
        assert!(elapsed >= deadline && elapsed < stall + deadline, "{elapsed:?}");
    }

    #[tokio::test]
    async fn buffer_is_bounded() {
        use std::io::Write;
        let (mut c, mut peer, _t) = pair();
        std::thread::spawn(move || while peer.write_all(&[b'y'; 4096]).is_ok() {});
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.fill(deadline).await.unwrap() {
                Fill::Full => break,
                Fill::Data(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(c.buffered().len(), 1 << 16);
    }
}
