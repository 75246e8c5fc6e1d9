//! The sync sentinel.
//!
//! `guest-sync-delimited` is answered with a raw 0xFF byte followed by the
//! JSON reply (qga/main.c sets a one-shot flag that prefixes the next
//! response). A client writes the same byte before its sync request: 0xFF is
//! never valid in UTF-8, so the agent's JSON lexer treats it as a lexical
//! error and drops whatever partial request it was holding
//! (qobject/json-lexer.c, IN_RECOVERY).
//!
//! qemu-ga escapes every non-ASCII character as `\uXXXX` in its replies, so
//! the sentinel is the only raw 0xFF it ever writes (docs/protocol.md §1).

/// 0xFF or 0xFE: the two bytes that never occur in UTF-8. qemu-ga's JSON
/// lexer (qobject/json-lexer.c) takes either as a lexical error that resets
/// it; the protocol names only 0xFF. A raw one in a reply is a stray
/// sentinel; in a request, a flush.
pub fn is_reset_byte(b: u8) -> bool {
    b == SENTINEL || b == 0xFE
}

/// The raw sentinel byte. Not `'\u{ff}'`: that is two bytes (C3 BF) in UTF-8,
/// and an agent that writes those has a bug the suite must catch.
pub const SENTINEL: u8 = 0xFF;

/// The UTF-8 encoding of U+00FF, which a broken agent may write instead of
/// the raw byte (`"\u{ff}".as_bytes()` in Rust).
pub const SENTINEL_AS_UTF8: [u8; 2] = [0xC3, 0xBF];

/// Position of the first sentinel byte in `buf`.
pub fn find(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == SENTINEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_raw_byte_not_utf8_form() {
        assert_eq!(find(b"ab\xffcd"), Some(2));
        assert_eq!(find(&[0xC3, 0xBF]), None);
        assert_eq!(find(b""), None);
        assert_eq!("\u{ff}".as_bytes(), &SENTINEL_AS_UTF8);
    }
}
