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

/// What [`analyse`] found in the bytes.
#[derive(Debug, Default)]
pub(super) struct Analysis {
    pub(super) answer: Option<Answer>,
    /// Error replies (and unreadable ones), not echoes of ours.
    pub(super) errors: Vec<Vec<u8>>,
    /// Returns whose value is none of our ids in any form we know: a sync
    /// answered with the id changed beyond recognition.
    pub(super) unmatched: usize,
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
/// framing, or the error replies and unmatched returns there are.
/// `sent` is what the probe wrote: a frame that is a piece of it is our
/// own request echoed back (a guest's serial port echoes input until the
/// agent sets raw mode), neither an answer nor an error.
pub(super) fn analyse(buf: &[u8], ids: &[i64], sent: &[u8]) -> Analysis {
    let mut errors = Vec::new();
    let mut unmatched = 0;
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
                            let answer = Answer { id, how, sentinel, text: text.to_vec() };
                            return Analysis { answer: Some(answer), errors, unmatched };
                        }
                        unmatched += 1;
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
    Analysis { answer: None, errors, unmatched }
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
        let a = analyse(b"\xff{\"return\": 18014398509481985}\n", &ids, &[]).answer;
        let a = a.unwrap();
        assert_eq!((a.sentinel, a.how), (Placement::Right, IdMatch::Exact));
        let a = analyse(b"{\"return\": 18014398509481984.0}\n", &ids, &[]).answer;
        let a = a.unwrap();
        assert_eq!((a.sentinel, a.how), (Placement::None, IdMatch::Rounded));
        let a = analyse(b"{\"return\": 18014398509481985}\xff\n", &ids, &[]).answer;
        assert_eq!(a.unwrap().sentinel, Placement::After);
        let a = analyse(b"\xc3\xbf{\"return\": 18014398509481985}\n", &ids, &[]).answer;
        assert_eq!(a.unwrap().sentinel, Placement::Utf8);
        let Analysis { answer: a, errors, .. } = analyse(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n\xff{\"return\": 5}\n", &ids, &[]);
        assert!(a.is_none());
        assert_eq!(errors.len(), 1);
        let truncated = [(1i64 << 32) + 77];
        let a = analyse(b"\xff{\"return\": 77}\n", &truncated, &[]).answer;
        assert_eq!(a.unwrap().how, IdMatch::Truncated32);
    }

    #[test]
    fn a_fifteen_digit_answer_is_an_answer_and_a_mangled_one_is_counted() {
        let ids = [8653480422752571i64];
        let a = analyse(b"\xff{\"return\": 8.65348042275257e+15}\n", &ids, &[]).answer.unwrap();
        assert_eq!((a.sentinel, a.how), (Placement::Right, IdMatch::FifteenDigits));
        // A return that is no form of any id we sent: counted, not taken.
        let r = analyse(b"\xff{\"return\": 8.6534804e+15}\n\xff{\"return\": 12}\n", &ids, &[]);
        assert!(r.answer.is_none() && r.errors.is_empty());
        assert_eq!(r.unmatched, 2);
    }

    #[test]
    fn an_echo_of_our_own_request_is_not_an_error_reply() {
        // A guest's ttyS1 echoes input until the agent sets raw mode.
        let sent = b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9}}\n";
        let Analysis { answer: a, errors, .. } = analyse(sent, &[9], sent);
        assert!(a.is_none());
        assert!(errors.is_empty(), "{errors:?}");
        // The same bytes, not sent by us, are an error the probe reports.
        let errors = analyse(sent, &[9], b"").errors;
        assert_eq!(errors.len(), 1);
        // A partial echo before the agent's delimited reply leaves the reply's
        // sentinel where it belongs.
        let mut got = sent[..20].to_vec();
        got.extend_from_slice(b"\xff{\"return\": 9}\n");
        let a = analyse(&got, &[9], sent).answer;
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // A value cut short by a 0xFF is garbage, whoever wrote it.
        let a = analyse(&got, &[9], b"").answer;
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // An unbalanced fragment, then error lines, then the reply: what a
        // guest's ttyS1 gave during qemu-ga's start (seen over vm-isa).
        let got = b"\xff{{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n\xff{\"return\": 9}\n";
        let a = analyse(got, &[9], sent).answer;
        assert_eq!(a.unwrap().sentinel, Placement::Right);
        // Two 0xFF bytes before the reply stay misplaced.
        let a = analyse(b"\n\xff\xff{\"return\": 9}\n", &[9], b"").answer;
        assert_eq!(a.unwrap().sentinel, Placement::Elsewhere);
    }
}
