//! Reading what came back to a sync probe, byte by byte: which reply
//! answers one of our ids, how its sentinel was placed, which frames are
//! error replies and which are only our own request echoed back.

use crate::wire::message::{compare_id, IdMatch};
use crate::wire::{scan, Reply, Scan, SENTINEL};

/// A reply related to one of our sync ids, and how it was framed.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) id: i64,
    pub(super) how: IdMatch,
    pub(super) sentinel: Placement,
    pub(super) text: Vec<u8>,
}

/// Where the sentinel was, relative to the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// Exactly one raw 0xFF, immediately before the `{`.
    Right,
    None,
    After,
    Utf8,
    Elsewhere,
}

/// Walk `buf` and find the first reply that answers one of `ids`, with its
/// framing, or the error replies there are.
/// `sent` is what the probe wrote: a frame that is a piece of it is our
/// own request echoed back (a guest's serial port echoes input until the
/// agent sets raw mode), neither an answer nor an error.
pub(super) fn analyse(buf: &[u8], ids: &[i64], sent: &[u8]) -> (Option<Answer>, Vec<Vec<u8>>) {
    let mut errors = Vec::new();
    let mut at = 0;
    let mut gap_start = 0;
    while at < buf.len() {
        match scan(&buf[at..]) {
            Scan::Value { start, end } => {
                let (s, e) = (at + start, at + end);
                let text = &buf[s..e];
                match Reply::parse(text) {
                    Ok(Reply::Return { value, .. }) => {
                        for &id in ids {
                            let how = compare_id(id, Some(&value));
                            if matches!(how, IdMatch::Missing | IdMatch::Changed) {
                                continue;
                            }
                            let gap = &buf[gap_start..s];
                            // A 0xFF that starts a piece of our own request is
                            // an echo (a guest's serial port before the agent
                            // sets raw mode), not the agent's.
                            let echoed = |i: usize| {
                                let k = (gap.len() - i).min(12);
                                k > 1 && is_echo(&gap[i..i + k], sent)
                            };
                            let ffs = gap.iter().enumerate().filter(|&(i, &b)| b == SENTINEL && !echoed(i)).count();
                            let after = buf[e..].iter().find(|b| !matches!(b, b' ' | b'\t'));
                            let sentinel = if gap.last() == Some(&SENTINEL) && ffs == 1 {
                                Placement::Right
                            } else if gap.ends_with(&[0xC3, 0xBF]) {
                                Placement::Utf8
                            } else if ffs > 0 {
                                Placement::Elsewhere
                            } else if after == Some(&SENTINEL) {
                                Placement::After
                            } else {
                                Placement::None
                            };
                            return (Some(Answer { id, how, sentinel, text: text.to_vec() }), errors);
                        }
                    }
                    Ok(Reply::Error { .. }) | Err(_) if is_echo(text, sent) => {}
                    Ok(Reply::Error { .. }) | Err(_) => errors.push(text.to_vec()),
                }
                at = e;
                gap_start = e;
            }
            Scan::Sentinel { at: i } => {
                // A value cut short by a 0xFF (an echoed fragment, a reply
                // an agent abandoned) is garbage the 0xFF ends: the gap
                // before the next value starts at that 0xFF.
                if buf[at..at + i].iter().any(|b| !b.is_ascii_whitespace() && *b != SENTINEL) {
                    gap_start = at + i;
                }
                at += i + 1
            }
            Scan::Garbage { end } => at += end.max(1),
            Scan::Incomplete { .. } => break,
        }
    }
    (None, errors)
}

fn is_echo(text: &[u8], sent: &[u8]) -> bool {
    !text.is_empty() && text.len() <= sent.len() && sent.windows(text.len()).any(|w| w == text)
}

/// Whether `bytes` holds a JSON value whose text is exactly `text`.
pub(super) fn contains_value(bytes: &[u8], text: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match scan(&bytes[at..]) {
            Scan::Value { start, end } => {
                if &bytes[at + start..at + end] == text {
                    return true;
                }
                at += end;
            }
            Scan::Sentinel { at: i } => at += i + 1,
            Scan::Garbage { end } => at += end.max(1),
            Scan::Incomplete { .. } => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyse_names_the_sentinel_placement_and_id_form() {
        let ids = [18014398509481985i64];
        let (a, _) = analyse(b"\xff{\"return\": 18014398509481985}\n", &ids, &[]);
        let a = a.unwrap();
        assert_eq!((a.sentinel, a.how), (Placement::Right, IdMatch::Exact));
        let (a, _) = analyse(b"{\"return\": 18014398509481984.0}\n", &ids, &[]);
        let a = a.unwrap();
        assert_eq!((a.sentinel, a.how), (Placement::None, IdMatch::Rounded));
        let (a, _) = analyse(b"{\"return\": 18014398509481985}\xff\n", &ids, &[]);
        assert_eq!(a.unwrap().sentinel, Placement::After);
        let (a, _) = analyse(b"\xc3\xbf{\"return\": 18014398509481985}\n", &ids, &[]);
        assert_eq!(a.unwrap().sentinel, Placement::Utf8);
        let (a, errors) = analyse(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n\xff{\"return\": 5}\n", &ids, &[]);
        assert!(a.is_none());
        assert_eq!(errors.len(), 1);
        let truncated = [(1i64 << 32) + 77];
        let (a, _) = analyse(b"\xff{\"return\": 77}\n", &truncated, &[]);
        assert_eq!(a.unwrap().how, IdMatch::Truncated32);
    }

    #[test]
    fn an_echo_of_our_own_request_is_not_an_error_reply() {
        // A guest's ttyS1 echoes input until the agent sets raw mode.
        let sent = b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9}}\n";
        let (a, errors) = analyse(sent, &[9], sent);
        assert!(a.is_none());
        assert!(errors.is_empty(), "{errors:?}");
        // The same bytes, not sent by us, are an error the probe reports.
        let (_, errors) = analyse(sent, &[9], b"");
        assert_eq!(errors.len(), 1);
        // A partial echo before the agent's delimited reply leaves the reply's
        // sentinel where it belongs.
        let mut got = sent[..20].to_vec();
        got.extend_from_slice(b"\xff{\"return\": 9}\n");
        let (a, _) = analyse(&got, &[9], sent);
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // A value cut short by a 0xFF is garbage, whoever wrote it.
        let (a, _) = analyse(&got, &[9], b"");
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // An unbalanced fragment, then error lines, then the reply: what a
        // guest's ttyS1 gave during qemu-ga's start (seen over vm-isa).
        let got = b"\xff{{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n\xff{\"return\": 9}\n";
        let (a, _) = analyse(got, &[9], sent);
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // Two 0xFF bytes before the reply stay misplaced.
        let (a, _) = analyse(b"\n\xff\xff{\"return\": 9}\n", &[9], b"");
        assert_eq!(a.unwrap().sentinel, Placement::Elsewhere);
    }
}
