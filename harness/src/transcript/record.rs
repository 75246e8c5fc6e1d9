//! What a transcript holds: numbered entries, each channel bytes (with
//! their direction and, for what the harness wrote, their origin) or a
//! harness event, and how they read and write as JSON.

use super::escape::{escape_bytes, micros, unescape_bytes};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which link bytes were on, and which way they went. Agent mode has one
/// link (the harness's client and the agent); client mode adds the link to
/// the client under test, with the harness in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Written by the harness to the agent.
    ToAgent,
    /// Read by the harness from the agent.
    FromAgent,
    /// Written by the harness to the client under test (client mode).
    ToClient,
    /// Read by the harness from the client under test (client mode).
    FromClient,
}

impl Direction {
    /// The short arrow used in rendered transcripts.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ToAgent => ">>",
            Direction::FromAgent => "<<",
            Direction::ToClient => "C<",
            Direction::FromClient => "C>",
        }
    }
}

/// Where bytes written by the harness came from. Bytes read off a link
/// have no origin: they are what the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Made up by the harness: a fault (stale reply, garbage, a partial
    /// request left by "an earlier client").
    Injected,
    /// Received on the other link and passed on.
    Forwarded,
}

/// Whose stderr a `Stderr` event carries: in client mode the client's and
/// the agent's both reach the transcript, and QEMU's beside the guest
/// agent's on the VM transports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StderrSource {
    /// The agent under test (on a VM transport: relayed from the guest).
    #[default]
    Agent,
    /// The client under test (client mode).
    Client,
    /// QEMU, hosting a guest for the VM transports.
    Qemu,
}

impl StderrSource {
    pub fn name(self) -> &'static str {
        match self {
            StderrSource::Agent => "agent",
            StderrSource::Client => "client",
            StderrSource::Qemu => "qemu",
        }
    }
}

/// Something the harness did or saw that is not channel data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    Spawn { pid: i32, argv: Vec<String> },
    Exit { pid: i32, status: String },
    Signal { pid: i32, signal: String },
    Connect { detail: String },
    Restart,
    Fault { detail: String },
    Timeout { waiting_for: String },
    /// A line or chunk a process wrote to its stderr, and whose it is.
    /// Documents before run/4 carry no source: it was always the agent's.
    Stderr {
        #[serde(default)]
        source: StderrSource,
        text: String,
    },
    Note { text: String },
    /// Entries of one stream were not kept, or not whole: this marker
    /// stands at the first of them. Documents written before streams were
    /// budgeted apart carry only `cap`.
    Truncated {
        /// The stream's budget: bytes for channel data, entries for events.
        cap: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<Stream>,
        /// Whole entries not kept.
        #[serde(default)]
        entries: u64,
        /// Bytes not kept (of those entries, and cut from kept ones).
        #[serde(default)]
        bytes: u64,
        /// The last sequence number this marker covers (its own is the first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        through: Option<u64>,
    },
}

/// The three separately budgeted streams of a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    ToAgent,
    FromAgent,
    Events,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::ToAgent => "to-agent",
            Stream::FromAgent => "from-agent",
            Stream::Events => "event",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl From<Direction> for Stream {
    /// Bytes are budgeted by where they head: agent-bound (to the agent,
    /// and from the client, which the proxy forwards to it) and
    /// client-bound (from the agent, and to the client).
    fn from(d: Direction) -> Stream {
        match d {
            Direction::ToAgent | Direction::FromClient => Stream::ToAgent,
            Direction::FromAgent | Direction::ToClient => Stream::FromAgent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", untagged)]
pub enum Record {
    Bytes {
        dir: Direction,
        #[serde(serialize_with = "serialize_bytes_escaped", deserialize_with = "deserialize_bytes_escaped")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    Event(Event),
}

/// One numbered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Time since the transcript was created, in microseconds.
    #[serde(with = "micros")]
    pub at: Duration,
    #[serde(flatten)]
    pub record: Record,
}

fn serialize_bytes_escaped<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape_bytes(b))
}

fn deserialize_bytes_escaped<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    unescape_bytes(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_says_whose_and_documents_before_run_4_read_as_the_agents() {
        let old: Event = serde_json::from_str(r#"{"kind": "stderr", "text": "x"}"#).unwrap();
        assert_eq!(old, Event::Stderr { source: StderrSource::Agent, text: "x".into() });
        let client = Event::Stderr { source: StderrSource::Client, text: "y".into() };
        let json = serde_json::to_value(&client).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "stderr", "source": "client", "text": "y"}));
        assert_eq!(crate::transcript::describe(&client), "client stderr: y");
    }
    use crate::transcript::{render_entries, Caps, Transcript};

    #[test]
    fn entries_round_trip_through_json() {
        let t = Transcript::default();
        t.bytes(Direction::FromAgent, b"\xff{\"return\": 1}\n\\x\x00");
        t.event(Event::Restart);
        let entries = t.entries(0, None);
        let json = serde_json::to_string(&entries).unwrap();
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].record, entries[0].record);
        assert_eq!(back[1].record, entries[1].record);
    }

    #[test]
    fn markers_round_trip_and_old_documents_still_read() {
        let t = Transcript::new(Caps { bytes: 4, entries: 100 });
        t.bytes(Direction::ToAgent, b"abcdefgh");
        let entries = t.entries(0, None);
        assert!(matches!(entries[0].record, Record::Event(Event::Truncated { stream: Some(Stream::ToAgent), bytes: 7, .. })), "{entries:?}");
        let json = serde_json::to_string(&entries).unwrap();
        assert!(json.contains(r#""kind":"truncated""#) && json.contains(r#""stream":"to-agent""#), "{json}");
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.iter().map(|e| (e.seq, &e.record)).collect::<Vec<_>>(), entries.iter().map(|e| (e.seq, &e.record)).collect::<Vec<_>>());
        let old: Entry = serde_json::from_str(r#"{"seq":3,"at":5,"kind":"truncated","cap":16384}"#).unwrap();
        assert_eq!(old.record, Record::Event(Event::Truncated { cap: 16384, stream: None, entries: 0, bytes: 0, through: None }));
        assert!(render_entries(&[old]).contains("truncated at 16384 bytes"));
    }
}
