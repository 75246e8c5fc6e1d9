//! Transcripts as text: one line per entry, every byte escaped.

use super::escape::escape_bytes;
use super::record::{Entry, Event, Origin, Record, Stream};
use std::fmt::Write as _;

/// Entries as text, one line each: `#seq time >> bytes` (to the agent),
/// `<<` (from the agent), `C>` (from the client under test), `C<` (to it),
/// `--` (harness event); written bytes say if they were injected or
/// forwarded. Every byte escaped.
pub fn render_entries(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let at = e.at.as_secs_f64() * 1e3;
        let _ = match &e.record {
            Record::Bytes { dir, data, origin } => {
                let how = match origin {
                    Some(Origin::Injected) => " (injected)",
                    Some(Origin::Forwarded) => " (fwd)",
                    None => "",
                };
                writeln!(out, "#{:<5} {at:>10.3}ms  {}{how} {}", e.seq, dir.arrow(), escape_bytes(data))
            }
            Record::Event(ev) => writeln!(out, "#{:<5} {at:>10.3}ms  -- {}", e.seq, describe(ev)),
        };
    }
    out
}

/// One line for a harness event (agent text escaped).
pub fn describe(ev: &Event) -> String {
    match ev {
        Event::Spawn { pid, argv } => format!("spawn pid {pid}: {}", escape_bytes(shell_words::join(argv).as_bytes())),
        Event::Exit { pid, status } => format!("pid {pid} exited: {status}"),
        Event::Signal { pid, signal } => format!("{signal} to process group {pid}"),
        Event::Connect { detail } => format!("connect: {detail}"),
        Event::Restart => "restart on the same channel".into(),
        Event::Fault { detail } => format!("fault: {detail}"),
        Event::Timeout { waiting_for } => format!("timeout waiting for {waiting_for}"),
        Event::Stderr { source, text } => format!("{} stderr: {}", source.name(), escape_bytes(text.as_bytes())),
        Event::Note { text } => text.clone(),
        Event::Truncated { cap, stream: None, .. } => format!("transcript truncated at {cap} bytes; later data counted, not kept"),
        Event::Truncated { cap, stream: Some(s), entries, bytes, through } => {
            let what = match s {
                Stream::Events => format!("{entries} event(s)"),
                _ => format!("{entries} {} entr{} / {bytes} byte(s)", s.as_str(), if *entries == 1 { "y" } else { "ies" }),
            };
            let upto = through.map_or(String::new(), |t| format!(" through #{t}"));
            format!("… {what} not kept{upto} (over this stream's budget of {cap}: its first and last entries are kept) …")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::transcript::{Direction, Event, Transcript};

    #[test]
    fn records_in_order_with_escaping() {
        let t = Transcript::default();
        let a = t.bytes(Direction::ToAgent, b"\xff{\"execute\":\"guest-ping\"}\n");
        let b = t.event(Event::Restart);
        assert_eq!((a, b), (0, 1));
        let text = t.render(0, None);
        assert!(text.contains(r#">> \xFF{"execute":"guest-ping"}\n"#), "{text}");
        assert!(text.contains("-- restart"), "{text}");
    }
}
