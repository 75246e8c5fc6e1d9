//! The step vocabulary: everything a case (or a fuzzed schedule) can do to
//! a channel and an agent, and everything it can expect back.
//!
//! In a case file each step is a one-key table, e.g.
//! `{ send = { command = "guest-ping" } }` or `{ kill = { signal = "KILL" } }`.
//! The full reference, with examples, is cases/README.md.

use super::bytes::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Write a request (or raw bytes), with control over framing.
    Send(Send),
    /// Several sends coalesced into one write (e.g. sync-delimited and the
    /// real command together, as Proxmox sends them).
    Batch(Vec<Send>),
    /// Write pseudo-random bytes from a seed.
    Garbage(Garbage),
    /// Read the first `after` bytes of what the agent sent and drop them,
    /// leaving the rest in the channel: a client that gave up mid-reply.
    Abandon(Abandon),
    /// Signal the agent's process group.
    Kill(Kill),
    /// Start a new agent instance on the same channel (killing any running one).
    Restart(Empty),
    /// Close the client connection and open a new one (unix-listen only;
    /// a no-op on channels that have no connections).
    Reconnect(Empty),
    /// Stale agent-side data: bytes put in front of what the client reads
    /// next, as if an earlier agent or conversation had left them. In
    /// client mode they are written to the client under test, and `$id`
    /// stands for the id of the request last awaited (its own id: a stale
    /// reply it cannot tell from its own by id), `$other-id` for an id it
    /// never sent.
    Inject(ByteString),
    /// Read replies and check them.
    Expect(Expect),
    /// Nothing but whitespace may arrive for this long.
    ExpectSilence(Silence),
    /// The reference client must resync within the budget.
    Resync(ResyncStep),
    /// Wait (bounded; for pacing faults, never to wait for a reply).
    Pause(Pause),
    /// Run `steps` `times` times.
    Repeat(Repeat),
    /// Client mode: forward both ways until the client under test has sent
    /// a request of this kind (then the next steps act, before the agent's
    /// reply to it is passed on).
    Await(Await),
    /// Client mode: a fault applied to the agent's next reply on its way to
    /// the client.
    Reply(ReplyFault),
}

/// Client mode: which request of the client under test to wait for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Await {
    /// `sync` (guest-sync or guest-sync-delimited), `command` (any other
    /// request), or a command name.
    pub request: String,
    /// The nth such request from here (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub nth: usize,
}

impl Await {
    /// Whether a request for `execute` is one this step waits for.
    pub fn matches(&self, execute: &str) -> bool {
        let is_sync = execute == "guest-sync" || execute == "guest-sync-delimited";
        match self.request.as_str() {
            "sync" => is_sync,
            "command" => !is_sync,
            "any" => true,
            name => name == execute,
        }
    }
}

/// Client mode: what happens to a reply on its way to the client: the
/// reply to the request the last `await` waited for (or, with no `await`
/// before it, the agent's next reply to any request), the complete JSON
/// value with the 0xFF and whitespace around it. Faults combine: `truncate`
/// and `restart` make "the agent died N bytes into its reply".
///
/// Faults are placed on the agent-to-client stream, never by what the
/// client wrote: a client that writes its sync and its command in one write
/// and one that writes them apart meet the fault at the same place in what
/// it reads. `before` puts stale bytes after everything the client was sent
/// before this reply (the sync reply included) and holds the reply back
/// until they have gone; `instead` puts them where the reply would have
/// been, and the reply is lost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyFault {
    /// Stale bytes for the client just before this reply (the same
    /// placeholders as `inject`); the reply follows [`PLACED_GAP_MS`] later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ByteString>,
    /// Stale bytes for the client in place of this reply, which is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instead: Option<ByteString>,
    /// Pass on only the first N bytes; the rest is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<usize>,
    /// Write it in pieces of this many bytes...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// ...this many microseconds apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_us: u64,
    /// Hold it this long before passing it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Hold it until the client's timeout (`{timeout_ms}`) has passed, plus
    /// a margin: a reply that arrives after the client gave up on it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub past_timeout: bool,
    /// Never pass it on (silence).
    #[serde(default, skip_serializing_if = "is_false")]
    pub drop: bool,
    /// Pass it on twice.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
    /// SIGKILL the agent once what is passed on has gone out, and start a
    /// new instance on the same channel (with `truncate`: a restart
    /// mid-reply).
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
}

/// How long a reply placed behind stale bytes (`before`) is held after
/// them: long enough that a client reading what has come sees the stale
/// bytes alone, as it would if they had been in the channel first.
pub const PLACED_GAP_MS: u64 = 20;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A request or raw bytes to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// The command name. Arguments that fit the `qapi` crate's type for it
    /// are serialised through that type; others (deliberately bad ones) are
    /// written as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments. The string `"$fresh"` anywhere in them becomes a fresh
    /// random i64 (the sync id that `$sync` in an expectation refers to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The request's `id` member: absent = a fresh id (the reply must echo
    /// it), `"$none"` = no id member, anything else = sent as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Raw bytes instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<ByteString>,
    /// Write a raw 0xFF first (the client's flush).
    #[serde(default, skip_serializing_if = "is_false")]
    pub flush: bool,
    /// End each request with `\n` (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub newline: bool,
    /// Write only the first N bytes: a partial request. It expects no reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<usize>,
    /// N copies (each with its own ids) coalesced into one write.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: usize,
    /// Split the write into chunks of this many bytes...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// ...with this pause between chunks, in microseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_us: u64,
    /// Insert this many spaces after the request's opening brace: a large
    /// but valid request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Garbage {
    pub len: usize,
    pub seed: u64,
    /// `any` (all 256 values), `printable` (ASCII 0x20-0x7E, no braces), or
    /// `no-flush` (any byte except 0xFF and 0xFE, and no control bytes: what
    /// the agent's lexer must wade through without a reset).
    #[serde(default)]
    pub kind: GarbageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GarbageKind {
    #[default]
    Any,
    Printable,
    NoFlush,
}

impl GarbageKind {
    /// `len` pseudo-random bytes of this kind from `seed`: the same seed
    /// gives the same bytes (a case or a fuzz schedule repeats exactly).
    pub fn bytes(self, len: usize, seed: u64) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len)
            .map(|_| match self {
                GarbageKind::Any => rng.gen::<u8>(),
                GarbageKind::Printable => loop {
                    let b = rng.gen_range(0x20u8..0x7f);
                    if b != b'{' && b != b'}' && b != b'[' && b != b']' {
                        break b;
                    }
                },
                GarbageKind::NoFlush => loop {
                    let b = rng.gen::<u8>();
                    if (0x20..0xFE).contains(&b) {
                        break b;
                    }
                },
            })
            .collect()
    }
}

impl Garbage {
    /// The bytes this step writes, at most `len` of them (a slow agent's
    /// cap; the step's own length otherwise).
    pub fn bytes(&self, len: usize) -> Vec<u8> {
        self.kind.bytes(len.min(self.len), self.seed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abandon {
    pub after: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    KILL,
    TERM,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    pub signal: Signal,
    /// Wait until this many bytes have arrived from the agent since the step
    /// began, then signal (kill mid-reply). Absent: signal at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<usize>,
}

/// What to expect of the next reply (or the next `count` replies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `{"return": PATTERN}`.
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub return_: Option<Value>,
    /// `{"error": {"class": CLASS, ...}}`; `"$any"` for any class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the reply's `id` must relate to the request's.
    #[serde(default)]
    pub id: IdCheck,
    /// The reply must be preceded by exactly one raw 0xFF, immediately
    /// before its `{`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delimited: bool,
    /// Error replies without an id before the expected one are tolerated
    /// (the agent's legal answer to the client's 0xFF).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_errors_before: bool,
    /// Each reply must be one line: no newline inside it, and a `\n` after
    /// it (only spaces, tabs or CR between).
    #[serde(default, skip_serializing_if = "is_false")]
    pub line: bool,
    /// This many replies, each checked against the next pending request.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: usize,
    /// Deadline for each reply, in milliseconds (default: the client's reply
    /// timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Check the reply against the QGA schema: a return against the
    /// command's return type, an error for a valid class and a `desc`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub schema: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdCheck {
    /// The request's id, if it sent one; none if it did not.
    #[default]
    Echo,
    /// No `id` member.
    Absent,
    /// Anything.
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncStep {
    /// Total budget in milliseconds (default: the client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub times: usize,
    pub steps: Vec<Step>,
    /// Start no further round after this many milliseconds (scaled by the
    /// agent's pace; at least one round runs): a case that repeats a load
    /// to catch an intermittent defect bounds its own load on a slow agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Send {
    /// A plain request for `command`.
    pub fn command(command: &str, arguments: Option<Value>) -> Send {
        Send {
            command: Some(command.into()),
            arguments,
            id: None,
            raw: None,
            flush: false,
            newline: true,
            truncate: None,
            repeat: 1,
            chunk: None,
            delay_us: 0,
            pad: None,
        }
    }

    /// Whether the agent owes replies for this write (one per copy).
    pub fn expects_replies(&self) -> bool {
        self.command.is_some() && self.truncate.is_none()
    }
}

impl Step {
    /// Steps, flattened through `repeat`, for walking a case.
    pub fn visit<'a>(steps: &'a [Step], f: &mut dyn FnMut(&'a Step)) {
        for s in steps {
            f(s);
            if let Step::Repeat(r) = s {
                Step::visit(&r.steps, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        steps: Vec<Step>,
    }

    #[test]
    fn toml_form_of_each_step() {
        let doc: Doc = toml::from_str(
            r#"steps = [
                { send = { command = "guest-sync-delimited", arguments = { id = "$fresh" }, flush = true } },
                { send = { raw = '\xFF\xFE{"a"', newline = false, chunk = 1, delay_us = 10 } },
                { garbage = { len = 100, seed = 7, kind = "printable" } },
                { batch = [ { command = "guest-ping" }, { command = "guest-info", newline = false } ] },
                { abandon = { after = 7 } },
                { kill = { signal = "KILL", after_bytes = 3 } },
                { restart = {} },
                { reconnect = {} },
                { inject = '\xFF{"return": 5' },
                { expect = { return = "$sync", delimited = true, allow_errors_before = true } },
                { expect = { error = "CommandNotFound", id = "echo", count = 2, within_ms = 50, line = true } },
                { expect-silence = { ms = 20 } },
                { resync = {} },
                { pause = { ms = 1 } },
                { repeat = { times = 2, steps = [ { resync = { budget_ms = 100 } } ] } },
            ]"#,
        )
        .unwrap();
        assert_eq!(doc.steps.len(), 15);
        match &doc.steps[1] {
            Step::Send(s) => assert_eq!(s.raw.as_ref().unwrap().0, b"\xff\xfe{\"a\""),
            other => panic!("{other:?}"),
        }
        // Serialising and reading back gives the same steps (the fuzzer
        // writes case files this way).
        #[derive(Serialize)]
        struct Out<'a> {
            steps: &'a [Step],
        }
        let text = toml::to_string(&Out { steps: &doc.steps }).unwrap();
        let back: Doc = toml::from_str(&text).unwrap();
        assert_eq!(back.steps, doc.steps);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<Doc, _> = toml::from_str(r#"steps = [ { send = { comand = "guest-ping" } } ]"#);
        assert!(r.unwrap_err().to_string().contains("comand"));
        let r: Result<Doc, _> = toml::from_str(r#"steps = [ { explode = {} } ]"#);
        assert!(r.is_err());
    }

    #[test]
    fn garbage_is_seeded_and_of_its_kind() {
        let g = Garbage { len: 4096, seed: 7, kind: GarbageKind::NoFlush };
        assert_eq!(g.bytes(4096), g.bytes(4096));
        assert_eq!(g.bytes(100).len(), 100);
        assert_eq!(g.bytes(1 << 20).len(), 4096, "never longer than the step");
        assert!(g.bytes(4096).iter().all(|&b| (0x20..0xFE).contains(&b)));
        let p = GarbageKind::Printable.bytes(4096, 7);
        assert!(p.iter().all(|&b| (0x20..0x7f).contains(&b) && !b"{}[]".contains(&b)));
        let any = GarbageKind::Any.bytes(4096, 7);
        assert!(any.contains(&0xFF) && any.contains(&0));
    }
}
