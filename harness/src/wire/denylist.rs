//! Commands the harness never sends, whatever a case file, the fuzzer or a
//! client under test asks.
//!
//! This machine is real (and tests run as root): an agent that obeyed
//! guest-shutdown, guest-fsfreeze-freeze or guest-exec would act on it.
//! Matching is on prefixes, so new commands in those families are covered
//! as well, and on the *byte stream*, not per write: an agent's parser joins
//! `{"execute":"guest-shut` and `down"}` however they were written.
//!
//! Before matching, the stream is decoded the way an agent could read it,
//! erring on the side of refusing:
//! - JSON `\uXXXX` escapes (and `\UXXXX`) become their characters, also when
//!   an escape is split across writes;
//! - letters are compared case-insensitively;
//! - the lexical reset bytes 0xFF and 0xFE are skipped: qemu-ga's lexer
//!   restarts on them, but another agent may drop them and read on, so
//!   `guest-shut\xFFdown` counts as guest-shutdown.
//!
//! Other non-ASCII bytes, and escapes of non-ASCII characters, break a name.
//!
//! The window across writes is kept decoded: the characters that could still
//! begin a denied name (one fewer than the longest prefix) plus an
//! unfinished escape. Unlike a window of raw bytes it cannot be outrun by
//! padding a name with escapes or reset bytes.

use std::sync::{Arc, Mutex, MutexGuard};
use super::sentinel::is_reset_byte;

/// Denied command names and name prefixes.
pub const DENIED_PREFIXES: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-",
    "guest-fsfreeze-",
    "guest-fstrim",
    "guest-set-",
    "guest-exec",
    "guest-file-",
    "guest-ssh-",
    "guest-network-",
];

/// Read-only commands inside denied families, allowed by their exact name:
/// the freeze *state* and the network getters (the schema section's
/// allow-list needs them). A name that is still being written and could
/// yet become one of these is let through until it is complete; its
/// completion is judged like any other name.
pub const ALLOWED_IN_DENIED_FAMILIES: &[&str] = &["guest-fsfreeze-status", "guest-network-get-interfaces", "guest-network-get-route"];

/// Every denied prefix starts with this.
const FAMILY: &[u8] = b"guest-";

/// What a byte or escape decodes to when it cannot be part of a name.
const NOT_NAME: u8 = 0x80;

/// The first denied command named in `bytes` alone (a stream that starts
/// with them), if any.
pub fn denied_command(bytes: &[u8]) -> Option<String> {
    DenyList::new().check(bytes)
}

/// The deny-list over one byte stream, as the guard of the connections that
/// carry it.
///
/// Clones share the stream: a session hands a clone to each connection it
/// opens, so a name split across a reconnect is still seen whole (qemu-ga
/// keeps one JSON parser for all clients of its unix socket).
#[derive(Debug, Clone, Default)]
pub struct DenyList {
    stream: Arc<Mutex<Window>>,
}

impl DenyList {
    pub fn new() -> DenyList {
        DenyList::default()
    }

    /// The denied command that writing `bytes` next would complete, if any.
    /// Only names that include at least one of `bytes` count: the stream so
    /// far is clean, or it would not have been sent.
    pub fn check(&self, bytes: &[u8]) -> Option<String> {
        let mut window = self.lock().clone();
        let mut text = std::mem::take(&mut window.tail);
        let old = text.len();
        window.decode(bytes, &mut text);
        find_denied(&text, old)
    }

    /// Record that `bytes` were written to the stream.
    pub fn record(&self, bytes: &[u8]) {
        let mut window = self.lock();
        let mut text = std::mem::take(&mut window.tail);
        window.decode(bytes, &mut text);
        text.drain(..text.len().saturating_sub(window_len()));
        window.tail = text;
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // The window is always consistent between statements; a panic
        // elsewhere while holding the lock leaves it usable.
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn longest_prefix() -> usize {
    DENIED_PREFIXES.iter().map(|p| p.len()).max().unwrap_or(1)
}

/// Characters the window keeps: enough to finish any denied prefix, and to
/// judge an allowed name whose end has not been written yet.
fn window_len() -> usize {
    let allowed = ALLOWED_IN_DENIED_FAMILIES.iter().map(|a| a.len()).max().unwrap_or(0);
    (longest_prefix() - 1).max(allowed)
}

/// The decoded end of the stream written so far.
#[derive(Debug, Clone, Default)]
struct Window {
    /// The last decoded characters (lowercase ASCII, or [`NOT_NAME`]), at
    /// most [`window_len`] of them.
    tail: Vec<u8>,
    /// An escape not finished yet: `\`, `\u`, `\uX`, `\uXX` or `\uXXX`.
    escape: Vec<u8>,
}

impl Window {
    /// Decode `bytes`, continuing the stream, appending characters to `out`.
    fn decode(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if is_reset_byte(b) {
            return;
        }
        match self.escape.len() {
            0 if b == b'\\' => self.escape.push(b),
            0 => out.push(plain(b)),
            1 if b == b'u' || b == b'U' => self.escape.push(b),
            2..=5 if b.is_ascii_hexdigit() => {
                self.escape.push(b);
                if self.escape.len() == 6 {
                    let hex = std::str::from_utf8(&self.escape[2..]).expect("hex digits");
                    let code = u32::from_str_radix(hex, 16).expect("hex digits");
                    out.push(u8::try_from(code).ok().filter(u8::is_ascii).map_or(NOT_NAME, plain));
                    self.escape.clear();
                }
            }
            _ => {
                // Not an escape after all: its bytes are text, and this
                // byte starts afresh (it may begin another escape).
                out.extend(self.escape.drain(..).map(plain));
                self.byte(b, out);
            }
        }
    }
}

/// One unescaped byte as a decoded character.
fn plain(b: u8) -> u8 {
    if b.is_ascii() {
        b.to_ascii_lowercase()
    } else {
        NOT_NAME
    }
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// The first denied name in `text` that a new character (at `old` or
/// after) completes or terminates, as far as `text` spells it. A name in
/// [`ALLOWED_IN_DENIED_FAMILIES`] is not denied once terminated; one that
/// may still grow into such a name is not denied yet.
fn find_denied(text: &[u8], old: usize) -> Option<String> {
    let mut found: Option<(usize, usize)> = None;
    // Where the run of name characters through each position ends, found
    // in one pass from the back: every start in a run shares its end, so the
    // check stays linear however many `guest-` a write repeats.
    let mut run_end = vec![0usize; text.len() + 1];
    run_end[text.len()] = text.len();
    for i in (0..text.len()).rev() {
        run_end[i] = if is_name_char(text[i]) { run_end[i + 1] } else { i };
    }
    for start in (0..text.len()).filter(|&i| text[i..].starts_with(FAMILY)) {
        let name_end = run_end[start];
        let name = &text[start..name_end];
        // A name terminated before the new text was judged then.
        if name_end < old {
            continue;
        }
        let terminated = name_end < text.len();
        let allowed = if terminated {
            ALLOWED_IN_DENIED_FAMILIES.iter().any(|a| a.as_bytes() == name)
        } else {
            ALLOWED_IN_DENIED_FAMILIES.iter().any(|a| a.as_bytes().starts_with(name))
        };
        if allowed {
            continue;
        }
        for p in DENIED_PREFIXES {
            let end = start + p.len();
            if text[start..].starts_with(p.as_bytes()) && found.is_none_or(|(_, e)| end < e) {
                found = Some((start, end));
            }
        }
    }
    found.map(|(start, _)| text[start..run_end[start]].iter().copied().map(char::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::SendGuard;
    use proptest::prelude::*;

    #[test]
    fn catches_denied_commands_however_spelled() {
        assert_eq!(denied_command(br#"{"execute":"guest-shutdown"}"#).as_deref(), Some("guest-shutdown"));
        assert_eq!(denied_command(br#"{"execute":"guest-fsfreeze-freeze"}"#).as_deref(), Some("guest-fsfreeze-freeze"));
        assert_eq!(denied_command(br#"{"execute":"guest-shut\u0064own"}"#).as_deref(), Some("guest-shutdown"));
        assert_eq!(denied_command(br#"{"execute":"GUEST-EXEC"}"#).as_deref(), Some("guest-exec"));
        assert_eq!(denied_command(b"\xff{'execute':'guest-set-time'}").as_deref(), Some("guest-set-time"));
        assert_eq!(denied_command(b"{'execute':'guest-shut\xffdo\xfewn'}").as_deref(), Some("guest-shutdown"));
        assert_eq!(denied_command(br#"{"execute":"\u0047\u0055\u0045\u0053\u0054\u002d\u0045\u0058\u0045\u0043"}"#).as_deref(), Some("guest-exec"));
        assert_eq!(denied_command(br#"{"execute":"guest-sync-delimited","arguments":{"id":1}}"#), None);
        assert_eq!(denied_command(br#"{"execute":"guest-get-time"}"#), None);
        assert_eq!(denied_command(br#"{"execute":"guest-no-such-command"}"#), None);
        // Broken escapes and non-ASCII characters break a name.
        assert_eq!(denied_command(br#"{"execute":"guest-shut\u00e9down"}"#), None);
        assert_eq!(denied_command(b"{\"execute\":\"guest-shut\xc3\xa9down\"}"), None);
        assert_eq!(denied_command(br#"{"execute":"guest-shut\u00g4down"}"#), None);
        // A broken escape's bytes stay text (breaking the name); the escape after it still decodes.
        assert_eq!(denied_command(br#"{"execute":"guest-\u00\u0073hutdown"}"#), None);
        // An escaped backslash is a character: JSON reads `guest-\u0073hutdown`.
        assert_eq!(denied_command(br#"{"execute":"guest-\\u0073hutdown"}"#), None);
        assert_eq!(denied_command(br#"{"execute":"guest-\\\u0073hutdown"}"#), None);
    }

    /// Feed `chunks` through a guard as a connection would: each admitted
    /// write is recorded as sent, the first refused one ends the stream.
    /// Returns what went out and what was refused.
    fn stream(chunks: &[&[u8]]) -> (Vec<u8>, Option<String>) {
        let mut guard = DenyList::new();
        let mut out = Vec::new();
        for c in chunks {
            match guard.admit(c) {
                Ok(()) => {
                    guard.sent(c);
                    out.extend_from_slice(c);
                }
                Err(name) => return (out, Some(name)),
            }
        }
        (out, None)
    }

    /// `bytes` in `n` pieces of about equal size (at least one byte each).
    fn split(bytes: &[u8], n: usize) -> Vec<&[u8]> {
        let n = n.min(bytes.len()).max(1);
        let mut cuts: Vec<usize> = (0..=n).map(|i| i * bytes.len() / n).collect();
        cuts.dedup();
        cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    /// The request, split into `n` writes, is refused, and what went out
    /// does not name a denied command. The refusal names the command as
    /// far as the refused write spells it.
    fn assert_refused(request: &[u8], n: usize, name: &str) {
        let (out, refused) = stream(&split(request, n));
        let refused = refused.unwrap_or_else(|| panic!("{} in {n} writes went out", String::from_utf8_lossy(request)));
        assert!(name.starts_with(&refused) && DENIED_PREFIXES.iter().any(|p| refused.starts_with(p)), "{refused} for {name}");
        assert_eq!(denied_command(&out), None, "{} went out", String::from_utf8_lossy(&out));
    }

    #[test]
    fn names_split_over_2_3_and_40_writes() {
        for n in [2, 3, 40] {
            assert_refused(br#"{"execute":"guest-shutdown"}"#, n, "guest-shutdown");
            assert_refused(br#"{"execute":"guest-fsfreeze-freeze","arguments":{}}"#, n, "guest-fsfreeze-freeze");
            assert_refused(b"\xff{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/true\"}}\n", n, "guest-exec");
        }
        // The piece that would finish the name is refused, whatever it is.
        let (out, refused) = stream(&[br#"{"execute":"guest-shut"#, br#"down"}"#]);
        assert_eq!((out.as_slice(), refused.as_deref()), (&br#"{"execute":"guest-shut"#[..], Some("guest-shutdown")));
        let (out, _) = stream(&[br#"{"execute":"guest-"#, b"shut", b"dow", br#"n"}"#]);
        assert_eq!(out, br#"{"execute":"guest-shutdow"#);
    }

    #[test]
    fn names_with_escapes_also_split_inside_an_escape() {
        for n in [2, 3, 40] {
            assert_refused(br#"{"execute":"guest-shut\u0064own"}"#, n, "guest-shutdown");
            assert_refused(br#"{"execute":"\u0067\u0075\u0065\u0073\u0074\u002D\u0073\u0065\u0074\u002D\u0074\u0069\u006D\u0065"}"#, n, "guest-set-time");
        }
        for cut in 1..6 {
            let escape = br"\u0064";
            let first = [&br#"{"execute":"guest-shut"#[..], &escape[..cut]].concat();
            let second = [&escape[cut..], &br#"own"}"#[..]].concat();
            let (out, refused) = stream(&[&first, &second]);
            assert_eq!((out, refused.as_deref()), (first.clone(), Some("guest-shutdown")), "escape cut after {cut}");
        }
        // Split escape, then the rest of the name, a write at a time.
        let (out, refused) = stream(&[br#"{"execute":"guest-shut\u00"#, b"64", b"ow", br#"n"}"#]);
        assert_eq!(refused.as_deref(), Some("guest-shutdown"));
        assert_eq!(out, br#"{"execute":"guest-shut\u0064ow"#);
    }

    #[test]
    fn a_long_run_of_name_characters_is_checked_in_linear_time() {
        let text = "guest-".repeat(200_000);
        let began = std::time::Instant::now();
        assert_eq!(denied_command(format!("{{\"execute\":\"{text}\"}}").as_bytes()), None);
        // Quadratic would be about 7e10 steps; linear is a few milliseconds.
        assert!(began.elapsed() < std::time::Duration::from_secs(2), "{:?}", began.elapsed());
    }

    #[test]
    fn read_only_commands_in_denied_families_pass_and_near_misses_do_not() {
        for n in [1, 2, 3, 7, 40] {
            for name in ALLOWED_IN_DENIED_FAMILIES {
                let req = format!("{{\"execute\":\"{name}\"}}\n");
                let (out, refused) = stream(&req.as_bytes().chunks(n).collect::<Vec<_>>());
                assert_eq!((out.as_slice(), refused), (req.as_bytes(), None), "{name} in {n}-byte writes");
            }
            // One character more, or another verb: refused when it shows.
            assert_refused(br#"{"execute":"guest-fsfreeze-status2"}"#, n, "guest-fsfreeze-status2");
            assert_refused(br#"{"execute":"guest-fsfreeze-freeze"}"#, n, "guest-fsfreeze-freeze");
            assert_refused(br#"{"execute":"guest-network-get-routes"}"#, n, "guest-network-get-routes");
            assert_refused(br#"{"execute":"guest-network-set-interface"}"#, n, "guest-network-set-interface");
        }
        // An allowed name escaped and split still passes; its neighbour not.
        let (out, refused) = stream(&[br#"{"execute":"guest-fsfreeze-st"#, br#"atus"}"#]);
        assert_eq!(refused, None, "{}", String::from_utf8_lossy(&out));
        let (_, refused) = stream(&[br#"{"execute":"guest-fsfreeze-st"#, br#"op"}"#]);
        assert_eq!(refused.as_deref(), Some("guest-fsfreeze-stop"));
    }

    #[test]
    fn names_behind_whitespace_in_batches_and_upper_case() {
        for n in [1, 2, 3, 40] {
            assert_refused(b" \t\r\n  {  \"execute\" :\n\t  \"guest-shutdown\" }\n", n, "guest-shutdown");
            let batch = b"{\"execute\":\"guest-ping\"}\n{\"execute\":\"guest-sync\",\"arguments\":{\"id\":7}}\n{\"execute\":\"guest-suspend-disk\"}\n";
            assert_refused(batch, n, "guest-suspend-disk");
            assert_refused(br#"{"execute":"GUEST-SHUTDOWN"}"#, n, "guest-shutdown");
            assert_refused(br#"{"execute":"Guest-Fstrim"}"#, n, "guest-fstrim");
            assert_refused(b"\xff\xfe{\"execute\":\"guest-network-get-interfacez\"}", n, "guest-network-get-interfacez");
        }
        // Reset bytes anywhere in the name do not split it.
        assert_refused(b"{\"execute\":\"g\xffu\xffe\xffs\xfft\xff-\xffs\xffs\xffh\xff-\xff\"}", 40, "guest-ssh-");
    }

    const ALLOWED: &[&[u8]] = &[
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1234567}}\n",
        b"{\"execute\":\"guest-ping\"}\n",
        b"{\"execute\":\"guest-info\",\"id\":\"a\"}",
        b"{\"execute\":\"guest-get-time\"}",
        b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":-9}}\n",
        br#"{"execute":"guest-sync-\u0064elimited","arguments":{"id":1}}"#,
        br#"{"execute":"GUEST-GET-TIME"}"#,
    ];

    #[test]
    fn allowed_commands_are_never_refused_however_split() {
        let all = ALLOWED.concat();
        for n in [1, 2, 3, 40, all.len()] {
            assert_eq!(stream(&split(&all, n)), (all.clone(), None), "in {n} writes");
        }
        for request in ALLOWED {
            for cut in 0..=request.len() {
                let (a, b) = request.split_at(cut);
                assert_eq!(stream(&[a, b]).1, None, "{} cut at {cut}", String::from_utf8_lossy(request));
            }
        }
    }

    #[test]
    fn clones_share_the_stream() {
        let first = DenyList::new();
        let mut second = first.clone();
        first.record(br#"{"execute":"guest-shut"#);
        assert_eq!(second.admit(br#"down"}"#), Err("guest-shutdown".into()));
        second.sent(b"\n");
        assert_eq!(first.check(br#"{"execute":"guest-ping"}"#), None);
    }

    /// A denied request spelled in one of the ways an agent would read as
    /// the command, possibly behind allowed requests.
    fn denied_request() -> impl Strategy<Value = (Vec<u8>, String)> {
        let names = prop::sample::select(vec![
            "guest-shutdown",
            "guest-suspend-disk",
            "guest-fsfreeze-freeze",
            "guest-fstrim",
            "guest-set-time",
            "guest-exec",
            "guest-exec-status",
            "guest-file-open",
            "guest-ssh-add-authorized-keys",
            "guest-network-set-interface",
            "guest-fsfreeze-thaw",
        ]);
        (names, prop::collection::vec(0u8..4, 40), prop::collection::vec(0usize..ALLOWED.len(), 0..3), "[ \t\r\n]{0,4}", any::<bool>()).prop_map(
            |(name, spelling, before, ws, flush)| {
                let mut bytes: Vec<u8> = before.iter().flat_map(|&i| ALLOWED[i].to_vec()).collect();
                if flush {
                    bytes.push(0xFF);
                }
                bytes.extend_from_slice(format!("{{{ws}\"execute\":{ws}\"").as_bytes());
                for (c, how) in name.bytes().zip(spelling.iter().cycle()) {
                    match how {
                        0 => bytes.push(c),
                        1 => bytes.push(c.to_ascii_uppercase()),
                        2 => bytes.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
                        _ => bytes.extend_from_slice(format!("\\u{:04X}", c.to_ascii_uppercase()).as_bytes()),
                    }
                }
                bytes.extend_from_slice(format!("\"{ws}}}\n").as_bytes());
                (bytes, name.to_owned())
            },
        )
    }

    /// `bytes` cut at the given points (taken modulo the length).
    fn cut_at(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).chain([0, bytes.len()]).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    proptest! {
        #[test]
        fn any_split_of_a_denied_request_is_refused_before_the_name_is_out(
            (request, name) in denied_request(),
            points in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let chunks = cut_at(&request, &points);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (out, refused) = stream(&refs);
            let refused = refused.expect("refused");
            // Named as far as the refused write spells it.
            prop_assert!(name.starts_with(&refused) && DENIED_PREFIXES.iter().any(|p| refused.starts_with(p)), "{} for {}", refused, name);
            prop_assert_eq!(denied_command(&out), None);
            prop_assert!(out.len() < request.len());
        }

        #[test]
        fn any_split_of_allowed_traffic_is_sent(
            requests in prop::collection::vec(0usize..ALLOWED.len(), 1..8),
            points in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let traffic: Vec<u8> = requests.iter().flat_map(|&i| ALLOWED[i].to_vec()).collect();
            let chunks = cut_at(&traffic, &points);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(stream(&refs), (traffic.clone(), None));
        }
    }
}
