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
//!
//! Bytes are recorded when the harness reads them, so a timestamp is when the
//! harness saw them, a few microseconds after the agent wrote them.

use crate::transcript::{Direction, Event, Transcript};
use crate::transport::Duplex;
use std::io;
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
}

impl Connection {
    pub fn new(stream: Duplex, transcript: Transcript, max_buffered: usize) -> Connection {
        Connection { stream, buf: Vec::with_capacity(READ_CHUNK), scratch: vec![0; READ_CHUNK].into_boxed_slice(), max_buffered, transcript, closed: false }
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The channel's fd, for the benchmark's raw floor only.
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
        self.transcript.bytes(Direction::FromAgent, &self.scratch[..n]);
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
                self.transcript.event(Event::Note { text: "channel closed by the agent".into() });
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

    async fn send_with(&mut self, bytes: &[u8], deadline: Instant, discard: bool) -> Result<usize, SendError> {
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
                    self.transcript.bytes(Direction::ToAgent, &bytes[written..written + n]);
                    written += n;
                }
                Step::Wrote(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe || e.kind() == io::ErrorKind::ConnectionReset => {
                    self.closed = true;
                    return Err(SendError::Closed);
                }
                Step::Wrote(Err(e)) => return Err(e.into()),
                Step::Read(Ok(0)) => self.closed = true,
                Step::Read(Ok(n)) if discard => {
                    self.transcript.bytes(Direction::FromAgent, &self.scratch[..n]);
                    discarded += n;
                }
                Step::Read(Ok(n)) => self.take_input(n),
                Step::Read(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
                Step::Read(Err(e)) => return Err(e.into()),
                Step::Deadline => {
                    self.transcript.event(Event::Timeout { waiting_for: "the agent to take our bytes".into() });
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
