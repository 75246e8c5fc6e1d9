//! The start-up probe: find out how a new agent syncs, instead of giving up
//! when the reference resync does not work.
//!
//! A real agent can have several defects at once, and the first must not
//! hide the others (protocol.md §6). So when `0xFF` + `guest-sync-delimited`
//! is not answered the reference way, the probe looks at what *did* come
//! and names it: no sentinel, the sentinel after the JSON, a UTF-8-encoded
//! sentinel, the id in another form (floating point, rounded, truncated to
//! 32 bits), an error, nothing at all. It then picks the best [`SyncMode`]
//! that works (no leading 0xFF, or an id loop without the sentinel, the way
//! libvirt syncs) and narrower ids where needed, so the run goes on and the
//! agent's other defects are found. Each defect becomes one
//! [`ProbeFinding`]; cases that need the missing capability are BLOCKED by
//! the case that shows it (engine).
//!
//! Then it measures the agent's pace (round trip, reply trickle, how fast it
//! takes input), from which the engine derives every budget.
//!
//! This module works on a [`Connection`] only. An agent that *dies* on the
//! 0xFF is the session's to restart; it calls [`probe_without_ff`] then.

use super::{execute_value, resync, ClientOptions, Deadline, IdWidth, ReplyMatch, ResyncPolicy, SyncCommand, SyncMode};
use crate::connection::{Connection, Fill};
use crate::transcript::{escape_bytes, Event};
use crate::finding::FailureKind;
use crate::wire::message::{compare_id, IdMatch};
use crate::wire::{scan, Reply, Scan, SENTINEL};
use qapi::qga;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// A capability every client relies on, which the probe may find missing.
/// Cases that need one the agent lacks are BLOCKED; cases tagged with it
/// (cases/README.md) test it and still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// guest-sync-delimited answered with one raw 0xFF right before the reply.
    Sentinel,
    /// The agent survives the client's 0xFF (and resets its lexer on it).
    Flush,
    /// Ids come back as sent, over the whole i64 range.
    ExactIds,
    /// Replies echo the request's id.
    IdEcho,
    /// guest-sync (libvirt's sync) is answered with its id.
    GuestSync,
    /// Error replies carry a QAPI error class.
    ErrorClass,
    /// Replies that are not delimited carry no raw 0xFF.
    CleanReplies,
    /// One reply per request, not two.
    OneReply,
    /// guest-ping returns `{}`.
    EmptyPing,
}

impl Capability {
    /// The catalogue tag of the cases that test this capability.
    pub fn tag(self) -> &'static str {
        match self {
            Capability::Sentinel => "sentinel",
            Capability::Flush => "flush",
            Capability::ExactIds => "id-range",
            Capability::IdEcho => "id-echo",
            Capability::GuestSync => "sync",
            Capability::ErrorClass => "errors",
            Capability::CleanReplies => "sentinel",
            Capability::OneReply => "one-reply",
            Capability::EmptyPing => "info",
        }
    }

    /// Whether cases that need it (and do not test it) cannot run without it.
    /// The others run with the client adapted (narrower ids, replies
    /// matched by order).
    pub fn blocks(self) -> bool {
        matches!(self, Capability::Sentinel | Capability::Flush | Capability::GuestSync)
    }
}

/// One defect the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFinding {
    pub kind: FailureKind,
    pub capability: Capability,
    /// What came, escaped.
    pub detail: String,
    /// Transcript entries that show it.
    pub transcript: (u64, u64),
}

/// What the probe found out about an agent. Goes into the run JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The sync the client uses with this agent.
    pub mode: SyncMode,
    pub id_width: IdWidth,
    pub matching: ReplyMatch,
    pub string_ids: bool,
    pub findings: Vec<ProbeFinding>,
    /// guest-info's version.
    pub version: Option<String>,
    /// Enabled commands per guest-info (None: guest-info gave none).
    pub supported_commands: Option<Vec<String>>,
    pub pace: Pace,
}

impl Profile {
    /// Whether the agent has `cap`.
    pub fn has(&self, cap: Capability) -> bool {
        !self.findings.iter().any(|f| f.capability == cap)
    }

    /// The profile of an agent that does everything the reference way.
    pub fn reference() -> Profile {
        Profile {
            mode: SyncMode::REFERENCE,
            id_width: IdWidth::Full64,
            matching: ReplyMatch::IdEcho,
            string_ids: false,
            findings: Vec::new(),
            version: None,
            supported_commands: None,
            pace: Pace::default(),
        }
    }

    /// Set the client up the way this agent needs.
    pub fn apply(&self, opts: &mut ClientOptions) {
        opts.mode = self.mode;
        opts.ids.width = self.id_width;
        opts.matching = self.matching;
        opts.string_ids = self.string_ids;
        opts.skip_stray_ff = !self.has(Capability::CleanReplies);
    }
}

pub use crate::budget::Pace;

/// How long `garbage_in` bytes of garbage take to be answered:
/// from the write to the last byte of the agent's error output, in µs. The
/// channel is resynced afterwards. None when the agent does not resync.
pub async fn measure_garbage_answer(conn: &mut Connection, client: &ClientOptions, garbage: &[u8]) -> Option<u64> {
    let start = Instant::now();
    conn.send_discarding(garbage, Instant::now() + client.send_timeout).await.ok()?;
    conn.send_discarding(b"\n", Instant::now() + client.send_timeout).await.ok()?;
    let quiet = Duration::from_millis(50);
    let end = Instant::now() + client.reply_timeout * 10;
    let mut last = start;
    loop {
        match conn.fill(end.min(Instant::now() + quiet)).await {
            Ok(Fill::Data(_)) | Ok(Fill::Full) => {
                last = Instant::now();
                conn.clear();
            }
            _ => break,
        }
    }
    resync(conn, &client.resync, client).await.ok()?;
    Some(last.duration_since(start).as_micros() as u64)
}

/// A reply related to one of our sync ids, and how it was framed.
#[derive(Debug, Clone)]
struct Answer {
    id: i64,
    how: IdMatch,
    sentinel: Placement,
    text: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Exactly one raw 0xFF, immediately before the `{`.
    Right,
    None,
    After,
    Utf8,
    Elsewhere,
}

/// What one probing round saw.
#[derive(Debug)]
enum Seen {
    Answer(Answer),
    /// Only error replies (and no answer) came.
    Errors(Vec<Vec<u8>>),
    Nothing(Vec<u8>),
    Closed,
    /// More output than the resync byte budget, none of it an answer.
    Flood(u64),
}

/// Walk `buf` and find the first reply that answers one of `ids`, with its
/// framing, or the error replies there are.
/// `sent` is what the probe wrote: a frame that is a piece of it is our
/// own request echoed back (a guest's serial port echoes input until the
/// agent sets raw mode), neither an answer nor an error.
fn analyse(buf: &[u8], ids: &[i64], sent: &[u8]) -> (Option<Answer>, Vec<Vec<u8>>) {
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

/// Bytes of the probe's own requests kept to recognise an echo.
const ECHO_WINDOW: usize = 4096;

fn is_echo(text: &[u8], sent: &[u8]) -> bool {
    !text.is_empty() && text.len() <= sent.len() && sent.windows(text.len()).any(|w| w == text)
}

/// Send sync requests in `mode` (each with a new id) until something
/// answers one of them, errors come, or `budget` runs out. Attempt waits
/// start at a millisecond (qemu-ga's isa-serial drops input that arrives
/// before it opens the tty) and double up to the reply timeout.
async fn probe(conn: &mut Connection, mode: &SyncMode, opts: &ClientOptions, budget: Duration, probe_ids: bool, gone: &mut dyn FnMut() -> bool) -> std::io::Result<Seen> {
    let start = Instant::now();
    let end = start + budget;
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    let mut wait = Duration::from_millis(1);
    let mut errors_since = None;
    let mut sent = Vec::new();
    conn.clear();
    while Instant::now() < end {
        // A dead agent answers nothing; no need to wait out the budget.
        if gone() {
            return Ok(Seen::Closed);
        }
        let id = if probe_ids { opts.ids.probe_id() } else { opts.ids.sync_id() };
        ids.push(id);
        let request = super::resync::sync_request_bytes_for(mode, id);
        // An echo is of recent requests: keep the last few KiB only, so the
        // search stays small however many attempts a slow start takes.
        if sent.len() > ECHO_WINDOW {
            sent.drain(..sent.len() - ECHO_WINDOW);
        }
        sent.extend_from_slice(&request);
        match conn.send_discarding(&request, end.min(Instant::now() + opts.send_timeout)).await {
            Ok(_) => {}
            Err(crate::connection::SendError::Closed) => return Ok(Seen::Closed),
            Err(crate::connection::SendError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => return Ok(Seen::Closed),
            Err(_) => return Ok(Seen::Nothing(seen)),
        }
        let mut deadline = Deadline::new(wait.min(end.saturating_duration_since(Instant::now())), opts.idle_timeout.min(wait.max(Duration::from_millis(5))), end.saturating_duration_since(Instant::now()));
        wait = (wait * 2).min(opts.reply_timeout);
        loop {
            match conn.fill(deadline.at()).await? {
                Fill::Data(n) => {
                    deadline.progress();
                    seen.extend_from_slice(conn.buffered());
                    conn.clear();
                    if seen.len() as u64 > opts.resync.byte_budget {
                        return Ok(Seen::Flood(seen.len() as u64));
                    }
                    // Only the tail can hold something new: a flood must not
                    // be scanned again from the start on every read.
                    let from = seen.len().saturating_sub(n + opts.max_reply_len.min(64 << 10));
                    let (answer, errors) = analyse(&seen[from..], &ids, &sent);
                    if let Some(mut a) = answer {
                        // A sentinel that comes after the JSON: give it a moment.
                        if a.sentinel == Placement::None {
                            let quiet = Instant::now() + opts.idle_timeout.min(Duration::from_millis(20));
                            if let Ok(Fill::Data(_)) = conn.fill(quiet).await {
                                seen.extend_from_slice(conn.buffered());
                                conn.clear();
                                a = analyse(&seen, &ids, &sent).0.unwrap_or(a);
                            }
                        }
                        return Ok(Seen::Answer(a));
                    }
                    if !errors.is_empty() {
                        errors_since.get_or_insert((Instant::now(), ids.len()));
                    }
                }
                Fill::Full => {
                    seen.extend_from_slice(conn.buffered());
                    conn.clear();
                }
                Fill::Closed => return Ok(Seen::Closed),
                Fill::Timeout => break,
            }
        }
        // A responsive agent that only ever answers errors is not going to
        // answer this way: three attempts after the first error settle it.
        // After it, not in all: a channel that is still settling (a guest's
        // serial port, flushed as the agent opens it) answers the first
        // attempts with errors about their remains.
        if let Some((t, n)) = errors_since {
            if ids.len() >= n + 3 && t.elapsed() > Duration::from_millis(2) {
                let (_, errors) = analyse(&seen, &ids, &sent);
                return Ok(Seen::Errors(errors));
            }
        }
    }
    let (_, errors) = analyse(&seen, &ids, &sent);
    Ok(if errors.is_empty() { Seen::Nothing(seen) } else { Seen::Errors(errors) })
}

/// Why no sync mode works: the start-up failure, with what came.
#[derive(Debug, Clone)]
pub struct NoSync {
    pub detail: String,
    /// The channel closed (the agent may have died).
    pub closed: bool,
}

/// Probe a freshly started agent. `budget` bounds the wait for a first
/// answer (the start-up timeout); the fallbacks get a share of the reply
/// timeout each.
/// `gone` says whether the agent process has exited.
pub async fn diagnose(conn: &mut Connection, opts: &ClientOptions, budget: Duration, gone: &mut dyn FnMut() -> bool) -> Result<Profile, NoSync> {
    let first_mark = conn.transcript().mark();
    let mut profile = Profile::reference();
    let seen = probe(conn, &SyncMode::REFERENCE, opts, budget, true, gone).await.map_err(|e| NoSync { detail: e.to_string(), closed: false })?;
    let span = |conn: &Connection| (first_mark, conn.transcript().mark());
    match seen {
        Seen::Answer(a) => adopt(conn, &mut profile, &a, SyncMode::REFERENCE, span(conn)),
        Seen::Closed => return Err(NoSync { detail: "the channel closed when the agent read 0xFF + guest-sync-delimited".into(), closed: true }),
        Seen::Flood(n) => return Err(NoSync { detail: format!("discarded {n} bytes without finding our reply (byte budget exceeded; is the agent flooding?)"), closed: false }),
        Seen::Errors(errors) => {
            // Responsive, but not to this: try the other ways a client syncs.
            fallback(conn, opts, &mut profile, &format!("only error replies: {}", show_all(&errors)), first_mark, budget, gone).await?;
        }
        Seen::Nothing(bytes) => {
            fallback(conn, opts, &mut profile, &describe_nothing(&bytes), first_mark, budget, gone).await?;
        }
    }
    verify_and_measure(conn, opts, profile).await
}

/// The agent died on the 0xFF and was restarted: probe without it.
pub async fn probe_without_ff(conn: &mut Connection, opts: &ClientOptions, budget: Duration, died_span: (u64, u64), gone: &mut dyn FnMut() -> bool) -> Result<Profile, NoSync> {
    let mut profile = Profile::reference();
    profile.findings.push(ProbeFinding {
        kind: FailureKind::DiesOnFlushByte,
        capability: Capability::Flush,
        detail: "the agent exited (or closed the channel) when it read the client's 0xFF before guest-sync-delimited".into(),
        transcript: died_span,
    });
    let mark = conn.transcript().mark();
    let mode = SyncMode { leading_ff: false, ..SyncMode::REFERENCE };
    match probe(conn, &mode, opts, budget, true, gone).await.map_err(|e| NoSync { detail: e.to_string(), closed: false })? {
        Seen::Answer(a) => adopt(conn, &mut profile, &a, mode, (mark, conn.transcript().mark())),
        Seen::Closed => return Err(NoSync { detail: "the channel closed again, without any 0xFF".into(), closed: true }),
        other => {
            let what = match other {
                Seen::Errors(e) => format!("only error replies: {}", show_all(&e)),
                Seen::Nothing(b) => describe_nothing(&b),
                Seen::Flood(n) => format!("{n} bytes of output (byte budget exceeded; is the agent flooding?)"),
                _ => String::new(),
            };
            let mode = SyncMode { command: SyncCommand::GuestSync, leading_ff: false, need_sentinel: false, accept_float_ids: false };
            match probe(conn, &mode, opts, opts.reply_timeout * 4, true, gone).await.map_err(|e| NoSync { detail: e.to_string(), closed: false })? {
                Seen::Answer(a) => adopt(conn, &mut profile, &a, mode, (mark, conn.transcript().mark())),
                _ => return Err(NoSync { detail: format!("after a restart, no sync without 0xFF was answered ({what})"), closed: false }),
            }
        }
    }
    verify_and_measure(conn, opts, profile).await
}

/// Try, in order: delimited sync without the 0xFF, plain guest-sync with
/// it, plain guest-sync without it.
async fn fallback(conn: &mut Connection, opts: &ClientOptions, profile: &mut Profile, why: &str, first_mark: u64, budget: Duration, gone: &mut dyn FnMut() -> bool) -> Result<(), NoSync> {
    // Within the start-up budget's order: a mute agent is told apart from
    // one that needs another mode without waiting long.
    let share = (opts.reply_timeout * 4).min(budget / 4).max(Duration::from_millis(20));
    let modes = [
        SyncMode { leading_ff: false, ..SyncMode::REFERENCE },
        SyncMode { command: SyncCommand::GuestSync, leading_ff: true, need_sentinel: false, accept_float_ids: false },
        SyncMode { command: SyncCommand::GuestSync, leading_ff: false, need_sentinel: false, accept_float_ids: false },
    ];
    for mode in modes {
        conn.transcript().event(Event::Note { text: format!("start-up probe: trying {}", mode.describe()) });
        match probe(conn, &mode, opts, share, true, gone).await {
            Ok(Seen::Answer(a)) => {
                let span = (first_mark, conn.transcript().mark());
                if mode.command == SyncCommand::GuestSync {
                    profile.findings.push(ProbeFinding {
                        kind: FailureKind::ResyncFailed,
                        capability: Capability::Sentinel,
                        detail: format!("0xFF + guest-sync-delimited got no answer ({why}); plain guest-sync works"),
                        transcript: span,
                    });
                } else {
                    profile.findings.push(ProbeFinding {
                        kind: FailureKind::ResyncFailed,
                        capability: Capability::Flush,
                        detail: format!("guest-sync-delimited preceded by 0xFF got no answer ({why}); without the 0xFF it is answered"),
                        transcript: span,
                    });
                }
                adopt(conn, profile, &a, mode, span);
                return Ok(());
            }
            Ok(Seen::Closed) => return Err(NoSync { detail: format!("{why}; then the channel closed"), closed: true }),
            Ok(Seen::Flood(n)) => return Err(NoSync { detail: format!("discarded {n} bytes without finding our reply (byte budget exceeded; is the agent flooding?)"), closed: false }),
            Ok(_) => {}
            Err(e) => return Err(NoSync { detail: e.to_string(), closed: false }),
        }
    }
    Err(NoSync { detail: why.to_owned(), closed: false })
}

/// Take an answer: record what is wrong with it and set the mode and id
/// width that will work.
fn adopt(conn: &Connection, profile: &mut Profile, a: &Answer, mode: SyncMode, span: (u64, u64)) {
    let mut mode = mode;
    let text = escape_bytes(&a.text);
    let delimited = mode.command == SyncCommand::GuestSyncDelimited;
    if delimited && mode.need_sentinel && a.sentinel != Placement::Right {
        let (kind, what) = match a.sentinel {
            Placement::None => (FailureKind::NoSentinel, "no 0xFF before it"),
            Placement::After => (FailureKind::LateSentinel, "the 0xFF after the JSON"),
            Placement::Utf8 => (FailureKind::Utf8Sentinel, "the sentinel UTF-8-encoded (C3 BF)"),
            _ => (FailureKind::MisplacedSentinel, "the 0xFF not immediately before the JSON"),
        };
        profile.findings.push(ProbeFinding {
            kind,
            capability: Capability::Sentinel,
            detail: format!("guest-sync-delimited answered {text} with {what}"),
            transcript: span,
        });
        mode.need_sentinel = false;
    }
    match a.how {
        IdMatch::Exact => {}
        IdMatch::FloatForm | IdMatch::Rounded | IdMatch::Truncated32 | IdMatch::Stringified => {
            let kind = match a.how {
                IdMatch::FloatForm => FailureKind::IdFloatForm,
                IdMatch::Rounded => FailureKind::IdRounded,
                IdMatch::Truncated32 => FailureKind::IdTruncated,
                _ => FailureKind::IdStringified,
            };
            profile.findings.push(ProbeFinding {
                kind,
                capability: Capability::ExactIds,
                detail: format!("sync id {} came back as {text}: {}", a.id, a.how.describe()),
                transcript: span,
            });
            match a.how {
                IdMatch::Rounded | IdMatch::FloatForm => {
                    profile.id_width = IdWidth::Double53;
                    mode.accept_float_ids = true;
                }
                IdMatch::Truncated32 => profile.id_width = IdWidth::Int32,
                _ => {}
            }
        }
        IdMatch::Missing | IdMatch::Changed => {}
    }
    conn.transcript().event(Event::Note { text: format!("start-up probe: syncing with {}", mode.describe()) });
    profile.mode = mode;
}

fn show_all(texts: &[Vec<u8>]) -> String {
    let shown: Vec<String> = texts.iter().take(3).map(|t| escape_bytes(&t[..t.len().min(160)])).collect();
    let more = texts.len().saturating_sub(3);
    format!("{}{}", shown.join(" "), if more > 0 { format!(" (+{more} more)") } else { String::new() })
}

fn describe_nothing(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        "nothing came".into()
    } else {
        format!("no reply, only {}", escape_bytes(&bytes[..bytes.len().min(200)]))
    }
}

/// With the mode chosen: resync for real, find out how replies are matched,
/// read guest-info leniently, and measure the pace.
async fn verify_and_measure(conn: &mut Connection, opts: &ClientOptions, mut profile: Profile) -> Result<Profile, NoSync> {
    let mut client = opts.clone();
    profile.apply(&mut client);
    let policy = ResyncPolicy { first_attempt: Duration::from_millis(5), max_attempt: client.reply_timeout, ..client.resync.clone() };
    resync(conn, &policy, &client).await.map_err(|e| NoSync { detail: format!("the agent answered a probe but then did not resync with {}: {e}", profile.mode.describe()), closed: false })?;

    // Let anything the sync provoked besides its reply (a duplicate, a
    // late sentinel) arrive and go, so it is not taken for the ping's reply.
    settle(conn, &client).await;
    // Id echo: a ping with a numeric id.
    let mark = conn.transcript().mark();
    let n = client.ids.request_id();
    let t0 = Instant::now();
    let ping = crate::wire::Request::new(qga::guest_ping {}, Some(n));
    let _ = t0;
    let reply = match conn.send(&ping.to_wire(), Instant::now() + client.send_timeout * 4).await {
        Ok(()) => super::observe::next_reply(conn, client.reply_deadline(), client.max_reply_len).await.ok(),
        Err(_) => None,
    };
    if let Some(o) = reply.as_ref().filter(|o| o.before.contains(&SENTINEL)) {
        profile.findings.push(ProbeFinding {
            kind: FailureKind::StraySentinel,
            capability: Capability::CleanReplies,
            detail: format!("guest-ping after a delimited sync was answered {}{}: a raw 0xFF on a reply that is not delimited", escape_bytes(&o.before), escape_bytes(&o.text)),
            transcript: (mark, conn.transcript().mark()),
        });
    }
    if let Some(o) = reply.as_ref() {
        // Anything more after the reply, with nothing asked? The same reply
        // again is a duplicate.
        let extra = collect_quiet(conn, &client).await;
        if contains_value(&extra, &o.text) {
            profile.findings.push(ProbeFinding {
                kind: FailureKind::DuplicateReply,
                capability: Capability::OneReply,
                detail: format!("guest-ping was answered twice: {}", escape_bytes(&o.text)),
                transcript: (mark, conn.transcript().mark()),
            });
        }
    }
    // An error object without a class is still an error here (the error
    // class probe below reports it).
    let reply = reply.and_then(|o| match o.reply {
        Ok(r) => Some(r),
        Err(_) => Reply::lenient_error(&o.text),
    });
    match reply {
        Some(Reply::Return { id, .. }) => match compare_id(n, id.as_ref()) {
            IdMatch::Exact => {}
            IdMatch::Missing => {
                profile.findings.push(ProbeFinding {
                    kind: FailureKind::IdNotEchoed,
                    capability: Capability::IdEcho,
                    detail: format!("guest-ping with \"id\": {n} was answered without an id"),
                    transcript: (mark, conn.transcript().mark()),
                });
                profile.matching = ReplyMatch::Order;
            }
            how => {
                if !profile.mode.accept_float_ids || how != IdMatch::FloatForm {
                    let kind = match how {
                        IdMatch::FloatForm => FailureKind::IdFloatForm,
                        IdMatch::Rounded => FailureKind::IdRounded,
                        IdMatch::Truncated32 => FailureKind::IdTruncated,
                        IdMatch::Stringified => FailureKind::IdStringified,
                        _ => FailureKind::IdChanged,
                    };
                    profile.findings.push(ProbeFinding {
                        kind,
                        capability: Capability::IdEcho,
                        detail: format!("guest-ping with \"id\": {n} came back with {}: {}", id.map_or("no id".into(), |v| v.to_string()), how.describe()),
                        transcript: (mark, conn.transcript().mark()),
                    });
                    profile.matching = ReplyMatch::Order;
                }
            }
        },
        Some(Reply::Error { .. }) => {
            // Rejected with a numeric id: does a string id work?
            let _ = resync(conn, &policy, &client).await;
            let sid = serde_json::Value::String(format!("qga-harness-{n}"));
            let ping = crate::wire::Request::with_id_value(qga::guest_ping {}, Some(sid.clone()));
            if let Some(Reply::Return { .. }) = round_trip(conn, &client, &ping.to_wire()).await {
                profile.findings.push(ProbeFinding {
                    kind: FailureKind::NumericIdRejected,
                    capability: Capability::IdEcho,
                    detail: format!("guest-ping with \"id\": {n} got an error; with \"id\": {sid} it is answered"),
                    transcript: (mark, conn.transcript().mark()),
                });
                profile.string_ids = true;
            }
        }
        None => {}
    }
    profile.apply(&mut client);
    let _ = resync(conn, &policy, &client).await;
    settle(conn, &client).await;

    // guest-sync, libvirt's sync: answered with exactly its id?
    let mark = conn.transcript().mark();
    let id = client.ids.sync_id();
    let what = match execute_value(conn, qga::guest_sync { id }, &client).await {
        Ok(reply) if super::resync::is_sync_reply(&reply, id, &client.mode) => None,
        Ok(Reply::Return { value, .. }) => Some((FailureKind::IdChanged, format!("guest-sync {{\"id\": {id}}} returned {value}: {}", compare_id(id, Some(&value)).describe()))),
        Ok(Reply::Error { class, desc, .. }) => Some((FailureKind::UnexpectedError, format!("guest-sync {{\"id\": {id}}} got an error: {class}: {}", escape_bytes(desc.as_bytes())))),
        Err(e) => Some((FailureKind::NoReply, format!("guest-sync {{\"id\": {id}}}: {e}"))),
    };
    if let Some((kind, detail)) = what {
        profile.findings.push(ProbeFinding { kind, capability: Capability::GuestSync, detail, transcript: (mark, conn.transcript().mark()) });
        let _ = resync(conn, &policy, &client).await;
    }
    settle(conn, &client).await;

    // An unknown command: is the error reply's class one QAPI has?
    let mark = conn.transcript().mark();
    let n = client.ids.request_id();
    let req = format!("{{\"execute\": \"qga-harness-probe-no-such-command\", \"id\": {}}}\n", client.request_id_value(n));
    if conn.send(req.as_bytes(), Instant::now() + client.send_timeout).await.is_ok() {
        if let Ok(o) = super::observe::next_reply(conn, client.reply_deadline(), client.max_reply_len).await {
            let finding = match &o.reply {
                Err(why) if why.kind == crate::wire::message::MalformedKind::ErrorWithoutClass => Some((FailureKind::ErrorWithoutClass, format!("an unknown command got {}: {}", escape_bytes(&o.text), why.reason))),
                Ok(Reply::Error { class, .. }) if !crate::wire::message::QAPI_ERROR_CLASSES.contains(&class.as_str()) => {
                    Some((FailureKind::ErrorClassNotQapi, format!("an unknown command got error class {}, which QAPI does not define", escape_bytes(class.as_bytes()))))
                }
                _ => None,
            };
            if let Some((kind, detail)) = finding {
                profile.findings.push(ProbeFinding { kind, capability: Capability::ErrorClass, detail, transcript: (mark, conn.transcript().mark()) });
            }
        }
    }
    let _ = resync(conn, &policy, &client).await;
    settle(conn, &client).await;

    // guest-info, leniently: a schema slip is the info cases' business.
    let t0 = Instant::now();
    let before = conn.transcript().mark();
    if let Ok(Reply::Return { value, .. }) = execute_value(conn, qga::guest_info {}, &client).await {
        profile.pace.info_us = t0.elapsed().as_micros() as u64;
        profile.version = value.get("version").and_then(|v| v.as_str()).map(str::to_owned);
        profile.supported_commands = value.get("supported_commands").and_then(|v| v.as_array()).map(|cmds| {
            cmds.iter()
                .filter(|c| c.get("enabled").and_then(|e| e.as_bool()).unwrap_or(true))
                .filter_map(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .collect()
        });
        let (bytes, gap) = agent_bytes_and_max_gap(conn, before);
        profile.pace.info_bytes = bytes;
        profile.pace.max_gap_us = gap.as_micros() as u64;
    } else {
        let _ = resync(conn, &policy, &client).await;
    }

    // Round trips; and guest-ping's return value, which many cases use as
    // their plain request: it must be `{}`.
    let mut rtts = Vec::new();
    let mut odd_ping = None;
    let mark = conn.transcript().mark();
    for _ in 0..5 {
        let t0 = Instant::now();
        if let Ok(reply) = execute_value(conn, qga::guest_ping {}, &client).await {
            rtts.push(t0.elapsed());
            if let Reply::Return { value, .. } = reply {
                if value != serde_json::json!({}) {
                    odd_ping.get_or_insert(value);
                }
            }
        } else {
            let _ = resync(conn, &policy, &client).await;
        }
    }
    if let Some(value) = odd_ping {
        profile.findings.push(ProbeFinding {
            kind: FailureKind::WrongReturn,
            capability: Capability::EmptyPing,
            detail: format!("guest-ping returned {} instead of {{}}", escape_bytes(value.to_string().as_bytes())),
            transcript: (mark, conn.transcript().mark()),
        });
    }
    rtts.sort();
    profile.pace.rtt_us = rtts.get(rtts.len() / 2).map_or(0, |d| d.as_micros() as u64);
    // Input pace: a ping padded to 8 KiB (a valid request).
    let n = client.ids.request_id();
    let mut padded = crate::wire::Request::with_id_value(qga::guest_ping {}, Some(client.request_id_value(n))).to_wire();
    padded.splice(1..1, std::iter::repeat_n(b' ', 8 << 10));
    let t0 = Instant::now();
    if round_trip(conn, &client, &padded).await.is_some() {
        profile.pace.padded_us = t0.elapsed().as_micros() as u64;
    }
    let _ = resync(conn, &policy, &client).await;
    profile.pace.factor = profile.pace.measured_factor();
    conn.transcript().event(Event::Note {
        text: format!(
            "start-up probe: ping {} us, guest-info {} us ({} bytes, longest pause {} us), 8 KiB request {} us: pace factor {:.1}",
            profile.pace.rtt_us, profile.pace.info_us, profile.pace.info_bytes, profile.pace.max_gap_us, profile.pace.padded_us, profile.pace.factor
        ),
    });
    Ok(profile)
}

/// What arrives until the agent has been quiet for a few milliseconds
/// (bounded), taken out of the connection.
async fn collect_quiet(conn: &mut Connection, client: &ClientOptions) -> Vec<u8> {
    let quiet = Duration::from_millis(3).max(client.idle_timeout / 50);
    let end = Instant::now() + quiet * 10;
    let mut got = conn.buffered().to_vec();
    conn.clear();
    loop {
        let until = end.min(Instant::now() + quiet);
        match conn.fill(until).await {
            Ok(Fill::Data(_)) => {
                got.extend_from_slice(conn.buffered());
                conn.clear();
                if got.len() > 1 << 20 {
                    return got;
                }
            }
            _ => return got,
        }
    }
}

/// Whether `bytes` holds a JSON value whose text is exactly `text`.
fn contains_value(bytes: &[u8], text: &[u8]) -> bool {
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

/// Wait until the agent has been quiet for a few milliseconds (bounded),
/// and drop what came.
async fn settle(conn: &mut Connection, client: &ClientOptions) {
    let quiet = Duration::from_millis(3).max(client.idle_timeout / 50);
    let _ = conn.drain(quiet, Instant::now() + quiet * 10).await;
}

/// Bytes read from the agent since `mark`, and the longest pause between
/// two reads after the first.
fn agent_bytes_and_max_gap(conn: &Connection, mark: u64) -> (u64, Duration) {
    use crate::transcript::{Direction, Record};
    let mut bytes = 0;
    let mut gap = Duration::ZERO;
    let mut last = None;
    for e in conn.transcript().entries(mark, None) {
        if let Record::Bytes { dir: Direction::FromAgent, data, .. } = &e.record {
            bytes += data.len() as u64;
            if let Some(prev) = last {
                gap = gap.max(e.at.saturating_sub(prev));
            }
            last = Some(e.at);
        }
    }
    (bytes, gap)
}

/// Send `bytes` (one request) and read one reply, with the paced deadline.
async fn round_trip(conn: &mut Connection, client: &ClientOptions, bytes: &[u8]) -> Option<Reply> {
    conn.send(bytes, Instant::now() + client.send_timeout * 4).await.ok()?;
    super::read_reply(conn, client.reply_deadline(), client, "probe").await.ok()
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
