//! The wire recorder: every byte in both directions, with monotonic
//! timestamps, interleaved with the harness's own actions (spawn, kill,
//! restart, fault, timeout). Verdicts cite entries by their sequence number.
//!
//! It is bounded: a flooding agent must not exhaust the harness's memory. Past
//! the byte cap, data is counted but not kept, and one `Truncated` event marks
//! where. Events are always kept (they are few and small) up to an entry cap.
//!
//! A `Transcript` is a cheap handle (an `Arc`), shared by the session (which
//! records process events) and the connection (which records bytes).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Written by the harness to the agent.
    ToAgent,
    /// Read by the harness from the agent.
    FromAgent,
}

/// Something the harness did or saw that is not channel data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    Spawn { pid: i32, argv: Vec<String> },
    Exit { pid: i32, status: String },
    Signal { pid: i32, signal: String },
    Connect { detail: String },
    Restart,
    Fault { detail: String },
    Timeout { waiting_for: String },
    Stderr { text: String },
    Note { text: String },
    /// The byte cap was reached; later data is counted, not kept.
    Truncated { cap: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", untagged)]
pub enum Record {
    Bytes {
        dir: Direction,
        #[serde(serialize_with = "serialize_bytes_escaped", deserialize_with = "deserialize_bytes_escaped")]
        data: Vec<u8>,
    },
    Event(Event),
}

/// One numbered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Time since the transcript was created, in microseconds.
    #[serde(with = "crate::verdict::micros")]
    pub at: Duration,
    #[serde(flatten)]
    pub record: Record,
}

fn serialize_bytes_escaped<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape_bytes(b))
}

fn deserialize_bytes_escaped<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    unescape_bytes(&s).map_err(serde::de::Error::custom)
}

/// The inverse of [`escape_bytes`].
pub fn unescape_bytes(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?);
                i += 2;
            }
            _ => return Err(format!("bad escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

/// Render bytes as printable ASCII: `\xFF` for non-ASCII and control bytes,
/// `\n` and friends for the common ones. Agent output is untrusted input;
/// this is the one form in which it is shown.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out
}

/// Limits on what one transcript keeps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Channel bytes kept, both directions together.
    pub bytes: usize,
    /// Entries kept (bytes and events).
    pub entries: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { bytes: 1 << 20, entries: 100_000 }
    }
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    caps: Caps,
    entries: Vec<Entry>,
    next_seq: u64,
    kept_bytes: usize,
    dropped_bytes: u64,
    truncated: bool,
    total: [u64; 2],
}

/// A shared, bounded recording of one session.
#[derive(Debug, Clone)]
pub struct Transcript {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript::new(Caps::default())
    }
}

impl Transcript {
    pub fn new(caps: Caps) -> Transcript {
        Transcript {
            inner: Arc::new(Mutex::new(Inner {
                origin: Instant::now(),
                caps,
                entries: Vec::new(),
                next_seq: 0,
                kept_bytes: 0,
                dropped_bytes: 0,
                truncated: false,
                total: [0, 0],
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent in a
        // way that matters for a log; keep recording.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record bytes; returns the entry's sequence number.
    pub fn bytes(&self, dir: Direction, data: &[u8]) -> u64 {
        let mut t = self.lock();
        t.total[dir as usize] += data.len() as u64;
        let room = t.caps.bytes.saturating_sub(t.kept_bytes);
        let keep = data.len().min(room);
        if keep < data.len() {
            t.dropped_bytes += (data.len() - keep) as u64;
            if !t.truncated {
                t.truncated = true;
                let cap = t.caps.bytes;
                if keep > 0 {
                    t.push(Record::Bytes { dir, data: data[..keep].to_vec() });
                    t.kept_bytes += keep;
                }
                return t.push(Record::Event(Event::Truncated { cap }));
            }
            return t.next_seq;
        }
        t.kept_bytes += keep;
        t.push(Record::Bytes { dir, data: data.to_vec() })
    }

    /// Record a harness event; returns its sequence number.
    pub fn event(&self, event: Event) -> u64 {
        self.lock().push(Record::Event(event))
    }

    /// Forget the entries kept so far (sequence numbers go on). The engine
    /// takes each case's entries out and then resets, so one long run keeps
    /// at most one case's worth under the cap.
    pub fn reset(&self) {
        let mut t = self.lock();
        t.entries.clear();
        t.kept_bytes = 0;
        t.truncated = false;
    }

    /// Sequence number the next entry will get: a mark to cite "from here".
    pub fn mark(&self) -> u64 {
        self.lock().next_seq
    }

    /// Entries with `seq` in `from..to` (or to the end).
    pub fn entries(&self, from: u64, to: Option<u64>) -> Vec<Entry> {
        let t = self.lock();
        t.entries
            .iter()
            .filter(|e| e.seq >= from && to.map_or(true, |to| e.seq < to))
            .cloned()
            .collect()
    }

    /// All bytes received from the agent since entry `from`, concatenated.
    pub fn received_since(&self, from: u64) -> Vec<u8> {
        let t = self.lock();
        let mut out = Vec::new();
        for e in t.entries.iter().filter(|e| e.seq >= from) {
            if let Record::Bytes { dir: Direction::FromAgent, data } = &e.record {
                out.extend_from_slice(data);
            }
        }
        out
    }

    /// Bytes in each direction, including those not kept.
    pub fn totals(&self) -> (u64, u64) {
        let t = self.lock();
        (t.total[Direction::ToAgent as usize], t.total[Direction::FromAgent as usize])
    }

    /// Bytes kept and bytes counted but dropped past the cap.
    pub fn kept_and_dropped(&self) -> (usize, u64) {
        let t = self.lock();
        (t.kept_bytes, t.dropped_bytes)
    }

    /// A human-readable rendering of entries `from..to`, one line each,
    /// every byte escaped.
    pub fn render(&self, from: u64, to: Option<u64>) -> String {
        render_entries(&self.entries(from, to))
    }
}

/// Entries as text, one line each: `#seq time >> bytes` (to the agent),
/// `<<` (from the agent), `--` (harness event). Every byte escaped.
pub fn render_entries(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let at = e.at.as_secs_f64() * 1e3;
        let _ = match &e.record {
            Record::Bytes { dir: Direction::ToAgent, data } => {
                writeln!(out, "#{:<5} {at:>10.3}ms  >> {}", e.seq, escape_bytes(data))
            }
            Record::Bytes { dir: Direction::FromAgent, data } => {
                writeln!(out, "#{:<5} {at:>10.3}ms  << {}", e.seq, escape_bytes(data))
            }
            Record::Event(ev) => writeln!(out, "#{:<5} {at:>10.3}ms  -- {}", e.seq, describe(ev)),
        };
    }
    out
}

fn describe(ev: &Event) -> String {
    match ev {
        Event::Spawn { pid, argv } => format!("spawn pid {pid}: {}", escape_bytes(shell_words::join(argv).as_bytes())),
        Event::Exit { pid, status } => format!("pid {pid} exited: {status}"),
        Event::Signal { pid, signal } => format!("{signal} to process group {pid}"),
        Event::Connect { detail } => format!("connect: {detail}"),
        Event::Restart => "restart on the same channel".into(),
        Event::Fault { detail } => format!("fault: {detail}"),
        Event::Timeout { waiting_for } => format!("timeout waiting for {waiting_for}"),
        Event::Stderr { text } => format!("agent stderr: {}", escape_bytes(text.as_bytes())),
        Event::Note { text } => text.clone(),
        Event::Truncated { cap } => format!("transcript truncated at {cap} bytes; later data counted, not kept"),
    }
}

impl Inner {
    fn push(&mut self, record: Record) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.entries.len() < self.caps.entries {
            self.entries.push(Entry { seq, at: self.origin.elapsed(), record });
        }
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_with_escaping() {
        let t = Transcript::default();
        let a = t.bytes(Direction::ToAgent, b"\xff{\"execute\":\"guest-ping\"}\n");
        let b = t.event(Event::Restart);
        assert_eq!((a, b), (0, 1));
        let text = t.render(0, None);
        assert!(text.contains(r#">> \xFF{"execute":"guest-ping"}\n"#), "{text}");
        assert!(text.contains("-- restart"), "{text}");
    }

    #[test]
    fn byte_cap_bounds_memory_and_marks_truncation() {
        let t = Transcript::new(Caps { bytes: 10, entries: 100 });
        for _ in 0..1000 {
            t.bytes(Direction::FromAgent, b"yyyy");
        }
        let (kept, dropped) = t.kept_and_dropped();
        assert_eq!(kept, 10);
        assert_eq!(dropped, 3990);
        assert_eq!(t.totals(), (0, 4000));
        let truncs = t.entries(0, None).iter().filter(|e| matches!(e.record, Record::Event(Event::Truncated { .. }))).count();
        assert_eq!(truncs, 1);
        assert!(t.entries(0, None).len() <= 5);
    }

    #[test]
    fn entries_round_trip_through_json() {
        let t = Transcript::default();
        t.bytes(Direction::FromAgent, b"\xff{\"return\": 1}\n\\x\x00");
        t.event(Event::Restart);
        let entries = t.entries(0, None);
        let json = serde_json::to_string(&entries).unwrap();
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].record, entries[0].record);
        assert_eq!(back[1].record, entries[1].record);
    }

    #[test]
    fn escapes_every_non_printable_byte() {
        assert_eq!(escape_bytes(b"<a>\x00\x1b\xc3\xbf\\"), "<a>\\x00\\x1B\\xC3\\xBF\\\\");
    }
}
