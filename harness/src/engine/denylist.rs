//! Commands the harness never sends, whatever a case file or a fuzzer asks.
//!
//! This machine is real (and tests run as root): an agent that obeyed
//! guest-shutdown, guest-fsfreeze-freeze or guest-exec would act on it. So
//! every write is scanned, after undoing JSON `\u` escapes (which the agent
//! would decode too), for the name of a denied command. Matching is on
//! prefixes, so new commands in those families are covered as well.

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

/// The first denied command named in `bytes`, if any.
pub fn denied_command(bytes: &[u8]) -> Option<String> {
    let text = unescape_json_u(bytes).to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = text[at..].find("guest-") {
        let start = at + i;
        let name: String = text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if DENIED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Some(name);
        }
        at = start + 6;
    }
    None
}

/// The bytes as text with `\uXXXX` escapes replaced by their characters
/// (invalid UTF-8 is replaced too; it cannot hide ASCII letters).
fn unescape_json_u(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut rest = &text[..];
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 6).unwrap_or("");
        match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
            Some(c) if hex.len() == 4 => {
                out.push(c);
                rest = &rest[i + 6..];
            }
            _ => {
                out.push_str("\\u");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_denied_commands_however_spelled() {
        assert_eq!(denied_command(br#"{"execute":"guest-shutdown"}"#).as_deref(), Some("guest-shutdown"));
        assert_eq!(denied_command(br#"{"execute":"guest-fsfreeze-freeze"}"#).as_deref(), Some("guest-fsfreeze-freeze"));
        assert_eq!(denied_command(br#"{"execute":"guest-shut\u0064own"}"#).as_deref(), Some("guest-shutdown"));
        assert_eq!(denied_command(br#"{"execute":"GUEST-EXEC"}"#).as_deref(), Some("guest-exec"));
        assert_eq!(denied_command(b"\xff{'execute':'guest-set-time'}").as_deref(), Some("guest-set-time"));
        assert_eq!(denied_command(br#"{"execute":"guest-sync-delimited","arguments":{"id":1}}"#), None);
        assert_eq!(denied_command(br#"{"execute":"guest-get-time"}"#), None);
        assert_eq!(denied_command(br#"{"execute":"guest-no-such-command"}"#), None);
    }
}
