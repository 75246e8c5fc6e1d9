//! The bound: each stream's budget, split into a head (its first entries)
//! and a tail (a ring of its latest), and the bookkeeping behind
//! [`Transcript`](super::Transcript) that keeps an entry, evicts one, or
//! counts it under a truncation marker.

use super::record::{Entry, Event, Record, Stream};
use super::Caps;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
pub(super) struct StreamState {
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

/// What a transcript holds, behind its lock.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) origin: Instant,
    pub(super) caps: Caps,
    /// Everything kept, markers included, by seq.
    pub(super) entries: BTreeMap<u64, Entry>,
    pub(super) streams: [StreamState; 3],
    /// Marks handed out since the last reset, ascending, the first being
    /// where the transcript (re)started. Pruned below the oldest entry that
    /// could still be dropped.
    pub(super) marks: Vec<u64>,
    /// Prune `marks` when it grows past this.
    pub(super) prune_at: usize,
    pub(super) next_seq: u64,
    pub(super) kept_bytes: usize,
    pub(super) dropped_bytes: u64,
    pub(super) total: [u64; 4],
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
    pub(super) fn record(&mut self, stream: Stream, record: Record) -> u64 {
        let at = self.origin.elapsed();
        self.record_at(stream, record, at)
    }

    pub(super) fn record_at(&mut self, stream: Stream, record: Record, at: Duration) -> u64 {
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
    pub(super) fn prune_marks(&mut self) {
        let oldest = self.streams.iter().filter_map(|s| s.ring.front().map(|f| f.0)).min().unwrap_or(self.next_seq);
        let keep_from = self.segment(oldest);
        self.marks.retain(|&m| m >= keep_from);
        for s in &mut self.streams {
            s.markers.retain(|&seg, _| seg >= keep_from);
        }
    }
}

#[cfg(test)]
mod tests;
