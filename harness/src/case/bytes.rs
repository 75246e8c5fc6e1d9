//! Byte strings in case files.
//!
//! TOML strings are UTF-8, and the protocol's most important byte, 0xFF, is
//! never valid UTF-8. So a byte string is written as text in which `\xHH`
//! (two hex digits) stands for one raw byte; everything else is taken
//! literally as its UTF-8 bytes. Use TOML literal strings ('...') so that
//! JSON's own backslash escapes pass through untouched:
//! `'\xFF{"execute":"guest-ping"}'`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Raw bytes, written in case files with `\xHH` escapes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ByteString(pub Vec<u8>);

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", encode(&self.0))
    }
}

/// Parse `\xHH` escapes.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            let hex = text.get(i + 2..i + 4).ok_or_else(|| format!("\\x at byte {i} needs two hex digits"))?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| format!("\\x{hex} at byte {i} is not two hex digits"))?;
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The inverse of [`decode`]: non-UTF-8 and control bytes as `\xHH`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        let mut chars = chunk.valid().chars().peekable();
        while let Some(c) = chars.next() {
            // A literal backslash before an `x` is escaped itself, so that
            // decode(encode(b)) == b for every b.
            let literal_escape = c == '\\' && chars.peek() == Some(&'x');
            if (c.is_ascii_control() && !matches!(c, '\n' | '\t' | '\r')) || literal_escape {
                out.push_str(&format!("\\x{:02X}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map(ByteString).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes() {
        assert_eq!(decode(r#"\xFF{"a":"b\"c"}"#).unwrap(), b"\xff{\"a\":\"b\\\"c\"}");
        assert_eq!(decode(r"\xfe\x00").unwrap(), [0xfe, 0]);
        assert!(decode(r"\xZZ").is_err());
        assert!(decode(r"\x1").is_err());
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(bytes in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\\'), Just(b'x')], 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }
}
