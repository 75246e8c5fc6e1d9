//! The host's end of the guest init's control port (protocol in
//! guest-init/src/protocol.rs): a line protocol over QEMU's chardev socket
//! for a virtio port of its own.
//!
//! Non-blocking throughout: [`Control::poll`] takes in what has arrived
//! (the agent's stderr and exits go straight into the transcript), and the
//! waits are async sleeps with deadlines, so a mute guest costs a bounded
//! wait and never blocks the runtime.

use super::protocol::{hex, unstamp};
use super::VmError;
use crate::transcript::{Event, Transcript};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use tokio::time::Instant;

/// The control port's name, as the guest init looks it up.
pub use super::protocol::CONTROL_PORT;
/// A control line longer than this is the guest misbehaving: dropped.
const MAX_LINE: usize = 256 * 1024;
const POLL: Duration = Duration::from_micros(500);
/// Messages kept unclaimed (oldest dropped): exits are kept for
/// [`Control::exit_of`], one per agent instance, and a long run has many.
const MAX_INBOX: usize = 1024;

/// A message from the guest init (stderr and exit events are handled as
/// they arrive and also kept here, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello { agent_path: String, uptime_ms: u64 },
    Started { pid: i32 },
    Ok,
    Exit { pid: i32, status: String },
    Status(String),
    Error(String),
}

#[derive(Debug)]
pub struct Control {
    stream: UnixStream,
    buf: Vec<u8>,
    inbox: VecDeque<Message>,
    transcript: Transcript,
    closed: bool,
    /// The guest's stamp on its hello and the host's time on reading it:
    /// later stamps are converted with this offset. The hello is read while
    /// the boot waits for nothing else, within a poll of its arrival.
    clock: Option<(u64, std::time::Instant)>,
}

/// Guest text that is not valid hex is kept as it came: it is evidence.
fn unhex(s: &str) -> Vec<u8> {
    super::protocol::unhex(s).unwrap_or_else(|| s.as_bytes().to_vec())
}

/// The init's `code N` / `signal N`, in the words ProcessGroup uses for a
/// local agent, so reports read the same whatever the transport.
fn describe(how: &str) -> String {
    let mut w = how.split_whitespace();
    match (w.next(), w.next().and_then(|n| n.parse::<i32>().ok())) {
        (Some("code"), Some(n)) => format!("exit status {n}"),
        (Some("signal"), Some(n)) => match nix::sys::signal::Signal::try_from(n) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {n}"),
        },
        _ => how.to_owned(),
    }
}

impl Control {
    pub fn new(stream: UnixStream, transcript: Transcript) -> io::Result<Control> {
        stream.set_nonblocking(true)?;
        Ok(Control { stream, buf: Vec::new(), inbox: VecDeque::new(), transcript, closed: false, clock: None })
    }

    /// True once the guest's side is gone (QEMU exited).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Take in whatever the guest has sent, without waiting.
    pub fn poll(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        while !self.closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.take_line(String::from_utf8_lossy(&line[..nl]).trim());
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
    }

    /// When a line stamped `stamp` was made, on the host's clock: now when
    /// there is no stamp or no offset yet, never later than now.
    fn when(&mut self, stamp: Option<u64>, is_hello: bool) -> std::time::Instant {
        let now = std::time::Instant::now();
        let Some(us) = stamp else { return now };
        if is_hello {
            self.clock = Some((us, now));
        }
        match self.clock {
            Some((hello_us, hello_at)) => (hello_at + Duration::from_micros(us.saturating_sub(hello_us))).min(now),
            None => now,
        }
    }

    fn take_line(&mut self, line: &str) {
        let (stamp, line) = unstamp(line);
        let when = self.when(stamp, line.starts_with("hello "));
        let mut w = line.splitn(3, ' ');
        let (word, a, b) = (w.next().unwrap_or(""), w.next().unwrap_or(""), w.next().unwrap_or(""));
        let msg = match word {
            "hello" => Message::Hello { agent_path: a.to_owned(), uptime_ms: b.parse().unwrap_or(0) },
            "started" => Message::Started { pid: a.parse().unwrap_or(0) },
            "ok" => Message::Ok,
            "exit" => {
                let pid = a.parse().unwrap_or(0);
                let status = describe(b);
                self.transcript.event_at(Event::Exit { pid, status: format!("{status} (in the guest)") }, when);
                Message::Exit { pid, status }
            }
            "stderr" => {
                // Which instance said it: a restart's old and new agents
                // can both have stderr in flight.
                let text = format!("[guest pid {a}] {}", String::from_utf8_lossy(&unhex(b)));
                self.transcript.event_at(Event::Stderr { source: crate::transcript::StderrSource::Agent, text }, when);
                return;
            }
            "running" | "exited" | "none" => Message::Status(line.to_owned()),
            "error" => Message::Error(String::from_utf8_lossy(&unhex(a)).into_owned()),
            _ => Message::Error(format!("unexpected control line: {line}")),
        };
        if self.inbox.len() >= MAX_INBOX {
            self.inbox.pop_front();
        }
        self.inbox.push_back(msg);
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        // A few bytes on a socket with room: a short write or EAGAIN here
        // means the guest stopped reading its control port.
        self.stream.set_nonblocking(false)?;
        self.stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let r = self.stream.write_all(format!("{line}\n").as_bytes());
        self.stream.set_nonblocking(true)?;
        r
    }

    /// The first message `pick` accepts, removed from the inbox; waits up to
    /// `timeout` for it.
    pub async fn wait_for<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&Message) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(i) = self.inbox.iter().position(|m| pick(m).is_some()) {
                let m = self.inbox.remove(i)?;
                return pick(&m);
            }
            if self.closed || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status of `pid` if the guest has reported it (no waiting).
    pub fn exit_of(&mut self, pid: i32) -> Option<String> {
        self.poll();
        self.inbox.iter().find_map(|m| match m {
            Message::Exit { pid: p, status } if *p == pid => Some(status.clone()),
            _ => None,
        })
    }

    /// Start the agent in the guest; its pid.
    pub async fn start(&mut self, statedir: &str, argv: &[String], timeout: Duration) -> Result<i32, VmError> {
        let mut line = format!("start {}", hex(statedir.as_bytes()));
        for a in argv {
            line.push(' ');
            line.push_str(&hex(a.as_bytes()));
        }
        self.send(&line).map_err(VmError::ControlPort)?;
        let got = self
            .wait_for(timeout, |m| match m {
                Message::Started { pid } => Some(Ok(*pid)),
                Message::Error(e) => Some(Err(VmError::Agent(e.clone()))),
                _ => None,
            })
            .await;
        got.unwrap_or(Err(if self.closed { VmError::ControlClosed } else { VmError::NoAnswer(timeout) }))
    }

    /// Signal the agent's process group (`kill` or `term`) and wait up to
    /// `timeout` for its exit; the status, if it came.
    /// The group is signalled even when its leader has exited: a
    /// daemonising agent leaves its children in it.
    pub async fn signal(&mut self, word: &str, pid: i32, timeout: Duration) -> Option<String> {
        if let Some(s) = self.exit_of(pid) {
            if self.send(word).is_ok() {
                self.wait_for(timeout, |m| matches!(m, Message::Ok).then_some(())).await;
            }
            return Some(s);
        }
        self.send(word).ok()?;
        // One deadline for the acknowledgement and the exit together.
        let deadline = Instant::now() + timeout;
        self.wait_for(timeout, |m| matches!(m, Message::Ok).then_some(())).await;
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_for(left, |m| match m {
            Message::Exit { pid: p, status } if *p == pid => Some(status.clone()),
            _ => None,
        })
        .await
        .inspect(|s| {
            // Keep it findable by exit_of after the wait consumed it.
            self.inbox.push_back(Message::Exit { pid, status: s.clone() });
        })
    }

    /// Ask the guest to power off (best effort: QEMU is killed anyway).
    pub fn poweroff(&mut self) {
        let _ = self.send("poweroff");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_like_local_ones() {
        assert_eq!(describe("code 0"), "exit status 0");
        assert_eq!(describe("signal 9"), "killed by SIGKILL");
        assert_eq!(describe("signal 15"), "killed by SIGTERM");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn events_reach_the_transcript_and_replies_the_waiter() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = Transcript::new(Default::default());
        let mut c = Control::new(host, t.clone()).unwrap();
        guest.write_all(format!("hello /dev/vport1p1 2300\nstderr 7 {}\nstarted 7\nexit 7 signal 9\n", hex(b"oops\xff")).as_bytes()).unwrap();
        let hello = c.wait_for(Duration::from_secs(1), |m| matches!(m, Message::Hello { .. }).then(|| m.clone())).await;
        assert_eq!(hello, Some(Message::Hello { agent_path: "/dev/vport1p1".into(), uptime_ms: 2300 }));
        assert_eq!(c.exit_of(7).as_deref(), Some("killed by SIGKILL"));
        let text = format!("{:?}", t.entries(0, None));
        assert!(text.contains("oops"), "{text}");
        drop(guest);
        assert_eq!(c.wait_for(Duration::from_millis(50), |_| None::<()>).await, None);
        assert!(c.is_closed());
    }

    /// An exit the guest stamped 10 ms after its hello, read 80 ms later:
    /// the transcript says when it happened, not when the host polled.
    #[tokio::test(flavor = "current_thread")]
    async fn guest_events_carry_the_time_they_happened() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = Transcript::new(Default::default());
        let mut c = Control::new(host, t.clone()).unwrap();
        guest.write_all(b"@5000000 hello /dev/vport1p1 2300\n").unwrap();
        c.wait_for(Duration::from_secs(1), |m| matches!(m, Message::Hello { .. }).then_some(())).await.unwrap();
        let seq = t.event(Event::Note { text: "hello read".into() });
        let hello_at = t.entries(seq, None)[0].at;
        std::thread::sleep(Duration::from_millis(80));
        guest.write_all(b"@5010000 exit 7 code 0\n").unwrap();
        assert_eq!(c.exit_of(7).as_deref(), Some("exit status 0"));
        let exit = t.entries(0, None).into_iter().find(|e| matches!(e.record, crate::transcript::Record::Event(Event::Exit { .. }))).unwrap();
        let read_at = t.event(Event::Note { text: "now".into() });
        let now_at = t.entries(read_at, None)[0].at;
        assert!(exit.at < now_at.saturating_sub(Duration::from_millis(50)), "exit at {:?}, read at {now_at:?}", exit.at);
        assert!(exit.at + Duration::from_millis(1) >= hello_at + Duration::from_millis(10), "exit at {:?}, hello read at {hello_at:?}", exit.at);
    }
}
