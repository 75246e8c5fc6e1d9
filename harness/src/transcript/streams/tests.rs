//! The bound under load: memory stays under the caps, markers account for
//! what was dropped, and no span between two marks points at nothing.

use crate::transcript::*;

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
