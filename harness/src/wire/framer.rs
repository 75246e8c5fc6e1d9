//! Streaming framing of agent output into JSON values.
//!
//! Agents answer with one JSON object per reply. Replies are `\n`-terminated
//! by qemu-ga, but a client must not rely on that: a reply is complete when
//! its braces balance (qemu-ga frames its *input* the same way, with a
//! streaming lexer, qobject/json-streamer.c). So the framer walks the bytes,
//! tracking strings and nesting, the two-phase way mini-redis does it:
//! [`scan`] only finds where the next frame ends (cheap, no allocation); the
//! caller then parses exactly those bytes. `Incomplete` is the normal state of
//! a stream, not an error: leftover bytes stay buffered for the next call.
//!
//! A raw 0xFF ends whatever it interrupts. Agents ASCII-escape their output,
//! so a 0xFF inside an object means the object was cut short (the agent was
//! restarted mid-reply) and a fresh stream starts after it. The framer reports
//! it as [`Scan::Sentinel`]; deciding what to do with it is the client's job.

use super::sentinel::SENTINEL;

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No complete frame yet. The first `skip` bytes are inter-value
    /// whitespace and may be dropped; everything after must be kept.
    Incomplete { skip: usize },
    /// A complete JSON object at `buf[start..end]` (`start` skips leading
    /// whitespace). It has balanced braces; whether it parses is up to serde.
    Value { start: usize, end: usize },
    /// A raw sentinel byte at `at`; `buf[..at]` is whitespace, garbage or a
    /// truncated value.
    Sentinel { at: usize },
    /// `buf[..end]` cannot begin a reply (it does not start with `{`); `end`
    /// stops at the next `{` or sentinel, so what may be a reply is kept.
    Garbage { end: usize },
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Find the first frame in `buf`. Never allocates; O(len) per call.
pub fn scan(buf: &[u8]) -> Scan {
    let start = match buf.iter().position(|&b| !is_json_whitespace(b)) {
        Some(i) => i,
        None => return Scan::Incomplete { skip: buf.len() },
    };
    match buf[start] {
        SENTINEL => return Scan::Sentinel { at: start },
        b'{' => {}
        _ => {
            let end = buf[start..]
                .iter()
                .position(|&b| b == b'{' || b == SENTINEL)
                .map_or(buf.len(), |i| start + i);
            return Scan::Garbage { end };
        }
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in buf.iter().enumerate().skip(start) {
        if b == SENTINEL {
            return Scan::Sentinel { at: i };
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                // A stray closer cannot underflow: the frame starts with `{`,
                // so depth is at least 1 here until the value ends.
                depth -= 1;
                if depth == 0 {
                    return Scan::Value { start, end: i + 1 };
                }
            }
            _ => {}
        }
    }
    Scan::Incomplete { skip: start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_object_without_newline() {
        assert_eq!(scan(br#"{"return": 1}"#), Scan::Value { start: 0, end: 13 });
    }

    #[test]
    fn leading_whitespace_is_skipped_and_rest_kept() {
        let buf = b"\r\n {\"return\": {}}\n{\"ret";
        assert_eq!(scan(buf), Scan::Value { start: 3, end: 17 });
        assert_eq!(scan(&buf[17..]), Scan::Incomplete { skip: 1 });
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_count() {
        let buf = br#"{"error": {"class": "GenericError", "desc": "stray '}' \"{\\"}}"#;
        assert_eq!(scan(buf), Scan::Value { start: 0, end: buf.len() });
    }

    #[test]
    fn sentinel_interrupts_a_truncated_value() {
        assert_eq!(scan(b"{\"return\": 4\xff{\"return\": 5}"), Scan::Sentinel { at: 12 });
        assert_eq!(scan(b"  \xff{}"), Scan::Sentinel { at: 2 });
        // Inside a string too: agents never write a raw 0xFF there.
        assert_eq!(scan(b"{\"desc\": \"a\xff"), Scan::Sentinel { at: 11 });
    }

    #[test]
    fn garbage_stops_at_what_may_be_a_reply() {
        assert_eq!(scan(b"y\ny\n{\"return\": 1}"), Scan::Garbage { end: 4 });
        assert_eq!(scan(b"oops\xff"), Scan::Garbage { end: 4 });
        assert_eq!(scan(b"y\ny\n"), Scan::Garbage { end: 4 });
    }

    #[test]
    fn empty_and_blank_are_incomplete() {
        assert_eq!(scan(b""), Scan::Incomplete { skip: 0 });
        assert_eq!(scan(b" \n"), Scan::Incomplete { skip: 2 });
    }

    /// Frames every value out of `stream`, feeding it in the given chunks, the
    /// way the connection does.
    fn frame_all(stream: &[u8], cuts: &[usize]) -> Vec<serde_json::Value> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        for p in points {
            buf.extend_from_slice(&stream[fed..p.max(fed)]);
            fed = p.max(fed);
            loop {
                match scan(&buf) {
                    Scan::Value { start, end } => {
                        out.push(serde_json::from_slice(&buf[start..end]).unwrap());
                        buf.drain(..end);
                    }
                    Scan::Incomplete { skip } => {
                        buf.drain(..skip);
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    fn arb_reply() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        let value = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z{}\"\\\\]{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        value.prop_map(|v| serde_json::json!({ "return": v }))
    }

    proptest! {
        /// However a stream of replies is cut into reads, and whatever
        /// whitespace separates them, the framer yields exactly those replies.
        #[test]
        fn chunking_never_changes_the_frames(
            replies in prop::collection::vec(arb_reply(), 1..6),
            seps in prop::collection::vec("[ \t\r\n]{0,3}", 6),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut stream = Vec::new();
            for (r, sep) in replies.iter().zip(&seps) {
                // serde_json escapes control characters but not non-ASCII;
                // agents escape those too, which this stream need not model.
                stream.extend_from_slice(serde_json::to_string(r).unwrap().as_bytes());
                stream.extend_from_slice(sep.as_bytes());
            }
            prop_assert_eq!(frame_all(&stream, &cuts), replies);
        }
    }
}
