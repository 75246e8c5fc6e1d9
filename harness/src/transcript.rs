//! The wire recorder: every byte in both directions, with monotonic
//! timestamps, interleaved with the harness's own actions (spawn, kill,
//! restart, fault, timeout). Verdicts cite entries by their sequence number.
//!
//! It is bounded: a flooding agent must not exhaust the harness's memory.
//! Three streams are budgeted apart, so that one cannot push another out:
//! bytes to the agent, bytes from the agent (each half of [`Caps::bytes`]),
//! and harness events (a third of [`Caps::entries`] each). Each stream keeps
//! its *head* (its first entries, half its budget) and its *tail* (a ring of
//! its latest entries, the other half); what falls between is counted, not
//! kept, and one [`Event::Truncated`] marker per stream stands where it was.
//!
//! Spans never point at nothing: every sequence number is either a kept
//! entry or covered by a marker, and a marker never straddles a
//! [`Transcript::mark`] (a gap that continues past a mark gets a second
//! marker), so a span `(from, to)` taken with two marks holds the kept
//! entries of that span and a marker for everything in it that was dropped.
//!
//! A `Transcript` is a cheap handle (an `Arc`), shared by the session (which
//! records process events) and the connection (which records bytes).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which link bytes were on, and which way they went. Agent mode has one
/// link (the harness's client and the agent); client mode adds the link to
/// the client under test, with the harness in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Written by the harness to the agent.
    ToAgent,
    /// Read by the harness from the agent.
    FromAgent,
    /// Written by the harness to the client under test (client mode).
    ToClient,
    /// Read by the harness from the client under test (client mode).
    FromClient,
}

impl Direction {
    /// The short arrow used in rendered transcripts.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ToAgent => ">>",
            Direction::FromAgent => "<<",
            Direction::ToClient => "C<",
            Direction::FromClient => "C>",
        }
    }
}

/// Where bytes written by the harness came from. Bytes read off a link
/// have no origin: they are what the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Made up by the harness: a fault (stale reply, garbage, a partial
    /// request left by "an earlier client").
    Injected,
    /// Received on the other link and passed on.
    Forwarded,
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
    /// Entries of one stream were not kept, or not whole: this marker
    /// stands at the first of them. Documents written before streams were
    /// budgeted apart carry only `cap`.
    Truncated {
        /// The stream's budget: bytes for channel data, entries for events.
        cap: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<Stream>,
        /// Whole entries not kept.
        #[serde(default)]
        entries: u64,
        /// Bytes not kept (of those entries, and cut from kept ones).
        #[serde(default)]
        bytes: u64,
        /// The last sequence number this marker covers (its own is the first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        through: Option<u64>,
    },
}

/// The three separately budgeted streams of a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    ToAgent,
    FromAgent,
    Events,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::ToAgent => "to-agent",
            Stream::FromAgent => "from-agent",
            Stream::Events => "event",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Direction> for Stream {
    /// Bytes are budgeted by where they head: agent-bound (to the agent,
    /// and from the client, which the proxy forwards to it) and
    /// client-bound (from the agent, and to the client).
    fn from(d: Direction) -> Stream {
        match d {
            Direction::ToAgent | Direction::FromClient => Stream::ToAgent,
            Direction::FromAgent | Direction::ToClient => Stream::FromAgent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", untagged)]
pub enum Record {
    Bytes {
        dir: Direction,
        #[serde(serialize_with = "serialize_bytes_escaped", deserialize_with = "deserialize_bytes_escaped")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    Event(Event),
}

/// One numbered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Time since the transcript was created, in microseconds.
    #[serde(with = "micros")]
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

/// Limits on what one transcript keeps (between two [`Transcript::reset`]s).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Channel bytes kept: half for each direction, and of each half, the
    /// first quarter of the total goes to the head and the rest to the tail.
    pub bytes: usize,
    /// Entries kept: a third for each stream (bytes to, bytes from, events),
    /// half of that for its head and half for its tail. Truncation markers
    /// are not counted (there are at most a few per mark). 0 keeps nothing,
    /// not even markers: the transcript then only counts.
    pub entries: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { bytes: 1 << 20, entries: 100_000 }
    }
}

/// What one stream may keep.
#[derive(Debug, Clone, Copy)]
struct Budget {
    head_bytes: usize,
    head_entries: usize,
    tail_bytes: usize,
    tail_entries: usize,
    /// For the marker: the stream's whole budget (bytes, or entries for events).
    cap: usize,
}

impl Budget {
    fn of(caps: Caps, stream: Stream) -> Budget {
        let third = caps.entries / 3;
        let entries = match stream {
            Stream::Events => caps.entries - 2 * third,
            _ => third,
        };
        let (bytes, cap) = match stream {
            Stream::ToAgent => (caps.bytes / 2, caps.bytes / 2),
            Stream::FromAgent => (caps.bytes - caps.bytes / 2, caps.bytes - caps.bytes / 2),
            // Events are budgeted by count only.
            Stream::Events => (usize::MAX, entries),
        };
        let head_bytes = if bytes == usize::MAX { usize::MAX } else { bytes / 2 };
        Budget {
            head_bytes,
            head_entries: entries / 2,
            tail_bytes: if bytes == usize::MAX { usize::MAX } else { bytes - head_bytes },
            tail_entries: entries - entries / 2,
            cap,
        }
    }
}

/// One stream's bookkeeping.
#[derive(Debug, Default)]
struct StreamState {
    head_bytes: usize,
    head_entries: usize,
    /// Once an entry did not fit the head, later ones go to the tail: the
    /// head stays a prefix of the stream.
    head_closed: bool,
    /// The tail: (seq, bytes) of kept entries, oldest first.
    ring: std::collections::VecDeque<(u64, usize)>,
    ring_bytes: usize,
    /// Truncation markers by the mark that starts their segment: segment
    /// start -> the marker's seq.
    markers: BTreeMap<u64, u64>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    caps: Caps,
    /// Everything kept, markers included, by seq.
    entries: BTreeMap<u64, Entry>,
    streams: [StreamState; 3],
    /// Marks handed out since the last reset, ascending, the first being
    /// where the transcript (re)started. Pruned below the oldest entry that
    /// could still be dropped.
    marks: Vec<u64>,
    /// Prune `marks` when it grows past this.
    prune_at: usize,
    next_seq: u64,
    kept_bytes: usize,
    dropped_bytes: u64,
    total: [u64; 4],
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

/// Marks kept before pruning is tried.
const MARKS_PRUNE_AT: usize = 1024;

impl Transcript {
    pub fn new(caps: Caps) -> Transcript {
        Transcript {
            inner: Arc::new(Mutex::new(Inner {
                origin: Instant::now(),
                caps,
                entries: BTreeMap::new(),
                streams: Default::default(),
                marks: vec![0],
                prune_at: MARKS_PRUNE_AT,
                next_seq: 0,
                kept_bytes: 0,
                dropped_bytes: 0,
                total: [0; 4],
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent in a
        // way that matters for a log; keep recording.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record bytes; returns the entry's sequence number (whether or not
    /// the entry is kept: a marker covers it if not).
    pub fn bytes(&self, dir: Direction, data: &[u8]) -> u64 {
        self.bytes_from(dir, data, None)
    }

    /// Record bytes the harness wrote, saying where they came from.
    pub fn bytes_from(&self, dir: Direction, data: &[u8], origin: Option<Origin>) -> u64 {
        let mut t = self.lock();
        t.total[dir as usize] += data.len() as u64;
        t.record(dir.into(), Record::Bytes { dir, data: data.to_vec(), origin })
    }

    /// Record a harness event; returns its sequence number.
    pub fn event(&self, event: Event) -> u64 {
        self.lock().record(Stream::Events, Record::Event(event))
    }

    /// Record an event that happened at `when`, earlier than now (one a
    /// guest reported late): its entry carries that time, its place in the
    /// sequence is where it was learnt.
    pub fn event_at(&self, event: Event, when: Instant) -> u64 {
        let mut t = self.lock();
        let at = when.saturating_duration_since(t.origin);
        t.record_at(Stream::Events, Record::Event(event), at)
    }

    /// Forget the entries kept so far (sequence numbers go on). The engine
    /// takes each case's entries out and then resets, so one long run keeps
    /// at most one case's worth under the caps.
    pub fn reset(&self) {
        let mut t = self.lock();
        t.entries.clear();
        t.streams = Default::default();
        t.marks = vec![t.next_seq];
        t.prune_at = MARKS_PRUNE_AT;
        t.kept_bytes = 0;
    }

    /// Sequence number the next entry will get: a mark to cite "from here".
    /// A truncation gap never spans a mark, so the span between two marks
    /// always holds the marker for what it lost.
    pub fn mark(&self) -> u64 {
        let mut t = self.lock();
        let seq = t.next_seq;
        if t.marks.last() != Some(&seq) {
            t.marks.push(seq);
        }
        if t.marks.len() > t.prune_at {
            t.prune_marks();
            // Amortised: the tails may span many marks.
            t.prune_at = (2 * t.marks.len()).max(MARKS_PRUNE_AT);
        }
        seq
    }

    /// Kept entries and markers with `seq` in `from..to` (or to the end).
    pub fn entries(&self, from: u64, to: Option<u64>) -> Vec<Entry> {
        let t = self.lock();
        match to {
            Some(to) if to <= from => Vec::new(),
            Some(to) => t.entries.range(from..to).map(|(_, e)| e.clone()).collect(),
            None => t.entries.range(from..).map(|(_, e)| e.clone()).collect(),
        }
    }

    /// All kept bytes received from the agent since entry `from`, concatenated.
    pub fn received_since(&self, from: u64) -> Vec<u8> {
        let t = self.lock();
        let mut out = Vec::new();
        for e in t.entries.range(from..).map(|(_, e)| e) {
            if let Record::Bytes { dir: Direction::FromAgent, data, .. } = &e.record {
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

    /// Channel bytes kept now, and bytes counted but not kept (since the
    /// transcript was created).
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
/// `<<` (from the agent), `C>` (from the client under test), `C<` (to it),
/// `--` (harness event); written bytes say if they were injected or
/// forwarded. Every byte escaped.
pub fn render_entries(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let at = e.at.as_secs_f64() * 1e3;
        let _ = match &e.record {
            Record::Bytes { dir, data, origin } => {
                let how = match origin {
                    Some(Origin::Injected) => " (injected)",
                    Some(Origin::Forwarded) => " (fwd)",
                    None => "",
                };
                writeln!(out, "#{:<5} {at:>10.3}ms  {}{how} {}", e.seq, dir.arrow(), escape_bytes(data))
            }
            Record::Event(ev) => writeln!(out, "#{:<5} {at:>10.3}ms  -- {}", e.seq, describe(ev)),
        };
    }
    out
}

/// One line for a harness event (agent text escaped).
pub fn describe(ev: &Event) -> String {
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
        Event::Truncated { cap, stream: None, .. } => format!("transcript truncated at {cap} bytes; later data counted, not kept"),
        Event::Truncated { cap, stream: Some(s), entries, bytes, through } => {
            let what = match s {
                Stream::Events => format!("{entries} event(s)"),
                _ => format!("{entries} {} entr{} / {bytes} byte(s)", s.as_str(), if *entries == 1 { "y" } else { "ies" }),
            };
            let upto = through.map_or(String::new(), |t| format!(" through #{t}"));
            format!("… {what} not kept{upto} (over this stream's budget of {cap}: its first and last entries are kept) …")
        }
    }
}

impl Inner {
    fn alloc(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The mark that starts the segment `seq` is in.
    fn segment(&self, seq: u64) -> u64 {
        let i = self.marks.partition_point(|&m| m <= seq);
        self.marks[i.saturating_sub(1)]
    }

    /// Keep `record` in its stream's head or tail if the budget allows;
    /// otherwise count it under a marker. Returns the entry's seq.
    fn record(&mut self, stream: Stream, record: Record) -> u64 {
        let at = self.origin.elapsed();
        self.record_at(stream, record, at)
    }

    fn record_at(&mut self, stream: Stream, record: Record, at: Duration) -> u64 {
        let len = match &record {
            Record::Bytes { data, .. } => data.len(),
            Record::Event(_) => 0,
        };
        if self.caps.entries == 0 {
            self.dropped_bytes += len as u64;
            return self.alloc();
        }
        let b = Budget::of(self.caps, stream);
        let s = &mut self.streams[stream.index()];
        if !s.head_closed && s.head_entries < b.head_entries && s.head_bytes.saturating_add(len) <= b.head_bytes {
            s.head_entries += 1;
            s.head_bytes += len;
            if stream != Stream::Events {
                self.kept_bytes += len;
            }
            let seq = self.alloc();
            self.entries.insert(seq, Entry { seq, at, record });
            return seq;
        }
        s.head_closed = true;
        if b.tail_entries == 0 || (len > 0 && b.tail_bytes == 0) {
            let seq = self.alloc();
            self.dropped(stream, b, seq, at, 1, len as u64);
            return seq;
        }
        // Too big for the whole tail: keep its first bytes.
        let (record, cut) = match record {
            Record::Bytes { dir, mut data, origin } if data.len() > b.tail_bytes => {
                let cut = data.len() - b.tail_bytes;
                data.truncate(b.tail_bytes);
                (Record::Bytes { dir, data, origin }, cut)
            }
            r => (r, 0),
        };
        let keep = len - cut;
        loop {
            let s = &self.streams[stream.index()];
            if s.ring.len() < b.tail_entries && s.ring_bytes + keep <= b.tail_bytes {
                break;
            }
            let Some((old, old_len)) = self.streams[stream.index()].ring.pop_front() else { break };
            self.streams[stream.index()].ring_bytes -= old_len;
            let old_at = self.entries.remove(&old).map_or(at, |e| e.at);
            if stream != Stream::Events {
                self.kept_bytes -= old_len;
            }
            self.dropped(stream, b, old, old_at, 1, old_len as u64);
        }
        if cut > 0 {
            // Into this segment's marker; or a new one just before the
            // entry, so that it shares every span the entry is in.
            let current = self.segment(self.next_seq);
            let seq = match self.streams[stream.index()].markers.get(&current) {
                Some(&m) => m,
                None => self.alloc(),
            };
            self.dropped(stream, b, seq, at, 0, cut as u64);
        }
        let seq = self.alloc();
        self.entries.insert(seq, Entry { seq, at, record });
        let s = &mut self.streams[stream.index()];
        s.ring.push_back((seq, keep));
        s.ring_bytes += keep;
        if stream != Stream::Events {
            self.kept_bytes += keep;
        }
        seq
    }

    /// Count `entries` entries / `bytes` bytes at `seq` as not kept: into
    /// the marker of `seq`'s segment, or into a new marker at `seq`, which
    /// must be free (a dropped entry's, or one just allocated for it).
    fn dropped(&mut self, stream: Stream, b: Budget, seq: u64, at: Duration, entries: u64, bytes: u64) {
        if stream != Stream::Events {
            self.dropped_bytes += bytes;
        }
        let segment = self.segment(seq);
        let (mut at, mut through, mut entries, mut bytes) = (at, seq, entries, bytes);
        if let Some(m) = self.streams[stream.index()].markers.get(&segment).copied() {
            match self.entries.get_mut(&m) {
                Some(Entry { record: Record::Event(Event::Truncated { entries: e, bytes: by, through: th, .. }), .. }) if m <= seq => {
                    *e += entries;
                    *by += bytes;
                    *th = Some(th.map_or(seq, |t| t.max(seq)));
                    return;
                }
                // A marker after `seq` (an empty entry lingered in the
                // tail): it moves back to `seq`, so it covers it.
                _ => {
                    if let Some(Entry { at: a, record: Record::Event(Event::Truncated { entries: e, bytes: by, through: th, .. }), .. }) = self.entries.remove(&m) {
                        at = at.min(a);
                        through = th.unwrap_or(m).max(seq);
                        entries += e;
                        bytes += by;
                    }
                }
            }
        }
        self.streams[stream.index()].markers.insert(segment, seq);
        let marker = Event::Truncated { cap: b.cap, stream: Some(stream), entries, bytes, through: Some(through) };
        self.entries.insert(seq, Entry { seq, at, record: Record::Event(marker) });
    }

    /// Forget marks no future drop can fall under: drops come from the
    /// fronts of the tails and from new entries.
    fn prune_marks(&mut self) {
        let oldest = self.streams.iter().filter_map(|s| s.ring.front().map(|f| f.0)).min().unwrap_or(self.next_seq);
        let keep_from = self.segment(oldest);
        self.marks.retain(|&m| m >= keep_from);
        for s in &mut self.streams {
            s.markers.retain(|&seg, _| seg >= keep_from);
        }
    }
}

/// Durations as whole microseconds in JSON.
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
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

    fn markers(entries: &[Entry]) -> Vec<(u64, Stream, u64, u64, u64)> {
        entries
            .iter()
            .filter_map(|e| match &e.record {
                Record::Event(Event::Truncated { stream: Some(s), entries, bytes, through, .. }) => {
                    Some((e.seq, *s, *entries, *bytes, through.unwrap_or(e.seq)))
                }
                _ => None,
            })
            .collect()
    }

    /// Every seq in `from..to` that `ops` recorded is kept, or covered by
    /// a marker of its stream inside the span.
    fn assert_span_covered(t: &Transcript, ops: &[(u64, Stream)], from: u64, to: u64) {
        let got = t.entries(from, Some(to));
        let marks = markers(&got);
        for &(seq, stream) in ops.iter().filter(|(s, _)| (from..to).contains(s)) {
            let kept = got.iter().any(|e| e.seq == seq && !matches!(e.record, Record::Event(Event::Truncated { .. })));
            let covered = marks.iter().any(|&(m, s, _, _, through)| s == stream && m <= seq && seq <= through);
            assert!(kept || covered, "#{seq} ({stream:?}) in span {from}..{to} points at nothing:\n{}", render_entries(&got));
        }
    }

    #[test]
    fn byte_cap_bounds_memory_and_marks_truncation() {
        let t = Transcript::new(Caps { bytes: 16, entries: 100 });
        let mut ops = Vec::new();
        for _ in 0..1000 {
            ops.push((t.bytes(Direction::FromAgent, b"yyyy"), Stream::FromAgent));
        }
        let (kept, dropped) = t.kept_and_dropped();
        assert_eq!(kept, 8, "half the cap per direction");
        assert_eq!(dropped, 3992);
        assert_eq!(t.totals(), (0, 4000));
        let all = t.entries(0, None);
        let m = markers(&all);
        assert_eq!(m.len(), 1, "{}", render_entries(&all));
        // The head (the first entry) and the tail (the last entry) are kept.
        assert_eq!(all.first().unwrap().seq, 0);
        assert_eq!(all.last().unwrap().seq, 999);
        assert_eq!((m[0].2, m[0].3), (998, 3992));
        assert!(all.len() <= 5);
        assert_span_covered(&t, &ops, 0, t.mark());
    }

    #[test]
    fn past_the_entry_cap_a_marker_says_what_was_dropped() {
        let t = Transcript::new(Caps { bytes: 1 << 20, entries: 30 });
        let mut ops = Vec::new();
        for i in 0..200 {
            ops.push((t.event(Event::Note { text: format!("note {i}") }), Stream::Events));
        }
        let all = t.entries(0, None);
        // 10 events: 5 first, 5 last, and the marker.
        assert_eq!(all.len(), 11, "{}", render_entries(&all));
        let m = markers(&all);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].0, m[0].2, m[0].4), (5, 190, 194));
        assert!(render_entries(&all).contains("… 190 event(s) not kept through #194"), "{}", render_entries(&all));
        assert_span_covered(&t, &ops, 0, t.mark());
    }

    #[test]
    fn a_gap_never_straddles_a_mark() {
        let t = Transcript::new(Caps { bytes: 1 << 20, entries: 12 });
        let mut ops = Vec::new();
        let mut marks = vec![t.mark()];
        for round in 0..5 {
            for i in 0..20 {
                ops.push((t.bytes(Direction::ToAgent, format!("r{round} w{i}\n").as_bytes()), Stream::ToAgent));
                ops.push((t.event(Event::Note { text: format!("r{round} e{i}") }), Stream::Events));
            }
            marks.push(t.mark());
        }
        for (i, &from) in marks.iter().enumerate() {
            for &to in &marks[i..] {
                assert_span_covered(&t, &ops, from, to);
            }
        }
        // The marker of the middle spans is inside them.
        assert!(!markers(&t.entries(marks[2], Some(marks[3]))).is_empty());
    }

    #[test]
    fn megabyte_of_our_writes_does_not_push_out_the_agent_replies() {
        let t = Transcript::default();
        let from = t.mark();
        t.event(Event::Note { text: "case framing/8".into() });
        let chunk = vec![b'x'; 4096];
        for _ in 0..256 {
            t.bytes(Direction::ToAgent, &chunk);
        }
        // One write bigger than the whole tail, too.
        t.bytes(Direction::ToAgent, &vec![b'y'; 2 << 20]);
        let mut ops = Vec::new();
        for i in 0..400 {
            let reply = format!("{{\"return\": {i}}}\n");
            ops.push((t.bytes(Direction::FromAgent, reply.as_bytes()), Stream::FromAgent));
        }
        let to = t.mark();
        let (kept, _) = t.kept_and_dropped();
        assert!(kept <= 1 << 20, "{kept}");
        let received = String::from_utf8(t.received_since(from)).unwrap();
        for i in 0..400 {
            assert!(received.contains(&format!("{{\"return\": {i}}}\n")), "reply {i} lost");
        }
        // Every reply is in the span as its own entry.
        let span = t.entries(from, Some(to));
        assert!(ops.iter().all(|(s, _)| span.iter().any(|e| e.seq == *s)));
        let m = markers(&span);
        assert!(m.iter().any(|x| x.1 == Stream::ToAgent && x.3 > 1 << 20), "{m:?}");
    }

    #[test]
    fn an_entry_bigger_than_the_tail_is_cut_behind_a_marker() {
        let t = Transcript::new(Caps { bytes: 64, entries: 100 });
        let a = t.mark();
        let first = t.bytes(Direction::ToAgent, &[b'a'; 40]);
        assert_eq!(first, a + 1, "the marker comes right before the cut entry");
        assert_eq!(markers(&t.entries(a, None))[0].3, 24);
        let seq = t.bytes(Direction::ToAgent, &[b'b'; 100]);
        let b = t.mark();
        let all = t.entries(a, Some(b));
        assert_eq!(all.len(), 2, "{}", render_entries(&all));
        let m = markers(&all);
        assert_eq!(m.len(), 1);
        // The first write, cut to the 16-byte tail behind a new marker, then
        // evicted by the second, which is cut too: one marker for it all.
        assert_eq!(m[0].0, a);
        assert_eq!(all[1].seq, seq);
        assert_eq!((m[0].2, m[0].3), (1, 40 + 84));
        match &all[1].record {
            Record::Bytes { data, .. } => assert_eq!(data, &[b'b'; 16]),
            r => panic!("{r:?}"),
        }
        assert_eq!(t.kept_and_dropped(), (16, 124));
    }

    #[test]
    fn zero_entries_keeps_nothing_but_counts() {
        let t = Transcript::new(Caps { bytes: 0, entries: 0 });
        t.bytes(Direction::ToAgent, b"abc");
        t.event(Event::Restart);
        t.mark();
        assert!(t.entries(0, None).is_empty());
        assert_eq!(t.totals(), (3, 0));
        assert_eq!(t.mark(), 2);
    }

    #[test]
    fn marks_stay_bounded() {
        let t = Transcript::new(Caps { bytes: 100, entries: 9 });
        for i in 0..100_000u32 {
            t.bytes(Direction::FromAgent, &i.to_le_bytes());
            t.mark();
        }
        assert!(t.lock().marks.len() <= 2 * MARKS_PRUNE_AT, "{}", t.lock().marks.len());
        let (from, to) = (t.mark(), {
            t.bytes(Direction::FromAgent, b"last");
            t.mark()
        });
        assert_eq!(t.received_since(from), b"last");
        assert_eq!(t.entries(from, Some(to)).len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Whatever is recorded under whatever caps: memory stays under the
        /// caps, the accounts add up, and every span between two marks
        /// holds its entries or a marker for them.
        #[test]
        fn spans_never_point_at_nothing(
            bytes_cap in 0usize..200,
            entries_cap in 1usize..40,
            ops in proptest::collection::vec((0u8..4, 0usize..60), 0..300),
        ) {
            let t = Transcript::new(Caps { bytes: bytes_cap, entries: entries_cap });
            let mut recorded = Vec::new();
            let mut marks = vec![t.mark()];
            let mut sent = [0u64; 2];
            for (kind, n) in ops {
                match kind {
                    0 => { sent[0] += n as u64; recorded.push((t.bytes(Direction::ToAgent, &vec![b'>'; n]), Stream::ToAgent)) }
                    1 => { sent[1] += n as u64; recorded.push((t.bytes(Direction::FromAgent, &vec![b'<'; n]), Stream::FromAgent)) }
                    2 => recorded.push((t.event(Event::Note { text: "e".into() }), Stream::Events)),
                    _ => marks.push(t.mark()),
                }
            }
            marks.push(t.mark());
            let all = t.entries(0, None);
            let (kept, dropped) = t.kept_and_dropped();
            proptest::prop_assert!(kept <= bytes_cap);
            proptest::prop_assert_eq!(kept as u64 + dropped, sent[0] + sent[1]);
            let kept_now: usize = all.iter().map(|e| match &e.record { Record::Bytes { data, .. } => data.len(), _ => 0 }).sum();
            proptest::prop_assert_eq!(kept_now, kept);
            let plain = all.iter().filter(|e| !matches!(e.record, Record::Event(Event::Truncated { .. }))).count();
            proptest::prop_assert!(plain <= entries_cap);
            for (i, &from) in marks.iter().enumerate() {
                for &to in &marks[i..] {
                    assert_span_covered(&t, &recorded, from, to);
                }
            }
            // Markers account for exactly what is missing.
            for stream in [Stream::ToAgent, Stream::FromAgent, Stream::Events] {
                let ops_n = recorded.iter().filter(|r| r.1 == stream).count() as u64;
                let kept_n = all.iter().filter(|e| match (&e.record, stream) {
                    (Record::Bytes { dir, .. }, s) => Stream::from(*dir) == s,
                    (Record::Event(Event::Truncated { .. }), _) => false,
                    (Record::Event(_), s) => s == Stream::Events,
                }).count() as u64;
                let marked: u64 = markers(&all).iter().filter(|m| m.1 == stream).map(|m| m.2).sum();
                proptest::prop_assert_eq!(kept_n + marked, ops_n, "{:?}", stream);
            }
        }
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
    fn markers_round_trip_and_old_documents_still_read() {
        let t = Transcript::new(Caps { bytes: 4, entries: 100 });
        t.bytes(Direction::ToAgent, b"abcdefgh");
        let entries = t.entries(0, None);
        assert!(matches!(entries[0].record, Record::Event(Event::Truncated { stream: Some(Stream::ToAgent), bytes: 7, .. })), "{entries:?}");
        let json = serde_json::to_string(&entries).unwrap();
        assert!(json.contains(r#""kind":"truncated""#) && json.contains(r#""stream":"to-agent""#), "{json}");
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.iter().map(|e| (e.seq, &e.record)).collect::<Vec<_>>(), entries.iter().map(|e| (e.seq, &e.record)).collect::<Vec<_>>());
        let old: Entry = serde_json::from_str(r#"{"seq":3,"at":5,"kind":"truncated","cap":16384}"#).unwrap();
        assert_eq!(old.record, Record::Event(Event::Truncated { cap: 16384, stream: None, entries: 0, bytes: 0, through: None }));
        assert!(render_entries(&[old]).contains("truncated at 16384 bytes"));
    }

    #[test]
    fn escapes_every_non_printable_byte() {
        assert_eq!(escape_bytes(b"<a>\x00\x1b\xc3\xbf\\"), "<a>\\x00\\x1B\\xC3\\xBF\\\\");
    }
}
