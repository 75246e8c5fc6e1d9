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
//!
//! The steps, one file each: `probe` runs one probing round, `analyse`
//! reads the bytes that came back, this module picks the mode from what was
//! seen, `verify` checks it, finds which ids hold at which magnitudes
//! (`precision`) and which commands echo ids (`echo`), and measures the
//! [`Pace`] (kept in [`crate::budget`]); the
//! findings and the [`Profile`] are in `profile`, the garbage-answer
//! measurement in `garbage`, the waits the steps share in `wait`.

mod analyse;
mod echo;
mod garbage;
mod precision;
mod probe;
mod profile;
mod verify;
mod wait;
#[cfg(test)]
mod tests;

pub use garbage::measure_garbage_answer;
pub use crate::budget::Pace;
pub use profile::{Capability, ProbeFinding, Profile};

use analyse::{Answer, Placement};
use probe::{probe, Seen};
use verify::verify_and_measure;
use crate::client::{ClientOptions, SyncCommand, SyncMode};
use crate::connection::Connection;
use crate::transcript::{escape_bytes, Event};
use crate::finding::FailureKind;
use crate::wire::message::IdMatch;
use std::time::Duration;

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
            fallback(conn, opts, &mut profile, &format!("only error replies: {}", show_all(&errors)), first_mark, budget, gone).await?
        }
        Seen::Nothing(bytes) => fallback(conn, opts, &mut profile, &describe_nothing(&bytes), first_mark, budget, gone).await?,
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

/// Take an answer: record what is wrong with its framing and set the mode.
/// Its id says little (it is random): the precision probe settles the id
/// width and names the id defects; a float form only tells the client to
/// accept one until then.
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
        profile.note(ProbeFinding {
            kind,
            capability: Capability::Sentinel,
            detail: format!("guest-sync-delimited answered {text} with {what}"),
            transcript: span,
        });
        mode.need_sentinel = false;
    }
    mode.accept_float_ids = matches!(a.how, IdMatch::Rounded | IdMatch::FloatForm);
    conn.transcript().event(Event::Note { text: format!("start-up probe: syncing with {} (sync id {} came back as {}: {})", mode.describe(), a.id, text, a.how.describe()) });
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
