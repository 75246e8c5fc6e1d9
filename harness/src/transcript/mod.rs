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

mod escape;
mod record;
mod render;
mod streams;

pub use escape::{escape_bytes, micros, unescape_bytes};
pub use record::{Direction, Entry, Event, Origin, Record, StderrSource, Stream};
pub use render::{describe, render_entries};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use streams::Inner;

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
