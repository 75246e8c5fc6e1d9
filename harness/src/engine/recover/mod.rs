//! The recovery after every case: the reference client must resync, and
//! the next commands must each get their own reply. Its grade is the second
//! axis of every result; when it fails, [`classify`] names what came back.

mod classify;
#[cfg(test)]
mod tests;

pub(in crate::engine) use classify::{classify, fallback, Accept};

use super::grading::Grading;
use crate::client::{execute_skipping, resync, Capability, ReplyMatch, ResyncPolicy};
use crate::session::Session;
use crate::transcript::{Direction, Record, Transcript};
use crate::verdict::{FailureKind, Recovery, RecoveryGrade};
use crate::wire::Reply;
use qapi::qga;
use std::time::Duration;

/// How far a failed recovery got.
struct Stopped {
    detail: String,
    attempts: u32,
    bytes: u64,
    elapsed: Duration,
}

fn stopped(detail: String) -> Stopped {
    Stopped { detail, attempts: 0, bytes: 0, elapsed: Duration::ZERO }
}

/// Resync and verify with fresh commands; grade how it went. Uses the
/// client the start-up probe set up, and checks only that the replies are
/// ours: decoding them is the cases' business. `case_from` is where the
/// case's transcript begins (what it sent is stale to the recovery).
pub(super) async fn recover(session: &mut Session, grading: &Grading, after_restart: bool, case_from: u64) -> Recovery {
    let transcript = session.transcript().clone();
    let rec_from = transcript.mark();
    match verify(session, grading, after_restart).await {
        Ok(rec) => rec,
        Err(s) => {
            let (kind, detail) = what_came_back(session, &transcript, case_from, rec_from, &s.detail);
            Recovery { grade: RecoveryGrade::Wedged, resync_time: s.elapsed, bytes_discarded: s.bytes, attempts: s.attempts, detail: Some(detail), kind: Some(kind) }
        }
    }
}

/// The finding a failed recovery shows: the agent gone, else what the
/// replies it read say ([`classify`]), else `wedged` with the evidence.
fn what_came_back(session: &mut Session, transcript: &Transcript, case_from: u64, rec_from: u64, failed: &str) -> (FailureKind, String) {
    if let Some(status) = session.agent().and_then(|a| a.exit_status().map(str::to_owned)) {
        return (FailureKind::AgentGone, format!("the agent exited ({status}); {failed}"));
    }
    if session.conn().map_or(true, |c| c.is_closed()) {
        return (FailureKind::AgentGone, format!("the agent closed the channel; {failed}"));
    }
    let opts = session.client();
    let accept = Accept { float_ids: opts.mode.accept_float_ids, by_order: opts.matching == ReplyMatch::Order };
    let (earlier, sent, received) = (sent_between(transcript, case_from, rec_from), sent_between(transcript, rec_from, u64::MAX), transcript.received_since(rec_from));
    if let Some((kind, what)) = classify(&earlier, &sent, &received, accept) {
        return (kind, format!("{what} ({failed})"));
    }
    let (kind, what) = fallback(&received);
    (kind, format!("{what}: {failed} ({} byte(s) received)", received.len()))
}

/// The bytes written to the agent in transcript entries `from..to`.
fn sent_between(transcript: &Transcript, from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for e in transcript.entries(from, (to != u64::MAX).then_some(to)) {
        if let Record::Bytes { dir: Direction::ToAgent, data, .. } = &e.record {
            out.extend_from_slice(data);
        }
    }
    out
}

async fn verify(session: &mut Session, grading: &Grading, after_restart: bool) -> Result<Recovery, Stopped> {
    if let Some(agent) = session.agent() {
        if let Some(status) = agent.exit_status() {
            return Err(stopped(format!("the agent process is gone ({status})")));
        }
    }
    let opts = session.client().clone();
    let Ok(conn) = session.conn() else { return Err(stopped("no connection to the agent".into())) };
    // After a restart the agent may still be starting (isa-serial drops
    // input that arrives before it opens the tty): retry from 1 ms.
    let policy = if after_restart {
        ResyncPolicy { first_attempt: Duration::from_millis(1), max_attempt: opts.resync.max_attempt.max(Duration::from_millis(100)), ..opts.resync.clone() }
    } else {
        opts.resync.clone()
    };
    let r = match resync(conn, &policy, &opts).await {
        Ok(r) => r,
        Err(e) => return Err(stopped(format!("resync ({}) failed: {e}", opts.mode.describe()))),
    };
    let fail = |detail: String| Stopped { detail, attempts: r.attempts, bytes: r.bytes_discarded, elapsed: r.elapsed };
    let offers = |name: &str| grading.profile.supported_commands.as_ref().is_none_or(|s| s.iter().any(|c| c == name));
    // Each command after a sync of its own: recovery proves the channel
    // comes back and answers each command with its own reply; a duplicate
    // or trailing byte the case's defect makes is the cases' to grade.
    match execute_skipping(conn, qga::guest_ping {}, &opts, 4).await {
        Ok(Reply::Return { .. }) => {}
        Ok(Reply::Error { class, desc, .. }) => return Err(fail(format!("guest-ping after resync: error reply {class}: {desc}"))),
        Err(e) => return Err(fail(format!("guest-ping after resync: {e}"))),
    }
    if offers("guest-sync") && grading.profile.has(Capability::GuestSync) {
        if let Err(e) = resync(conn, &opts.resync, &opts).await {
            return Err(fail(format!("resync before guest-sync: {e}")));
        }
        let id = opts.ids.sync_id();
        match execute_skipping(conn, qga::guest_sync { id }, &opts, 4).await {
            Ok(reply) if crate::client::resync::is_sync_reply(&reply, id, &opts.mode) => {}
            Ok(reply) => return Err(fail(format!("guest-sync after resync: expected return {id}, got {reply:?}"))),
            Err(e) => return Err(fail(format!("guest-sync after resync: {e}"))),
        }
    }
    // guest-info only where the start-up probe could read it (a reply it
    // cannot frame is the info cases' finding, not a recovery failure).
    if offers("guest-info") && grading.profile.supported_commands.is_some() {
        if let Err(e) = resync(conn, &opts.resync, &opts).await {
            return Err(fail(format!("resync before guest-info: {e}")));
        }
        match execute_skipping(conn, qga::guest_info {}, &opts, 4).await {
            Ok(Reply::Return { .. }) => {}
            Ok(Reply::Error { class, desc, .. }) => return Err(fail(format!("guest-info after resync: error reply {class}: {desc}"))),
            Err(e) => return Err(fail(format!("guest-info after resync: {e}"))),
        }
    }
    let quick = grading.budgets().quick_resync;
    let grade = if r.attempts == 1 && r.elapsed <= quick { RecoveryGrade::Resynced } else { RecoveryGrade::Slow };
    Ok(Recovery { grade, resync_time: r.elapsed, bytes_discarded: r.bytes_discarded, attempts: r.attempts, detail: None, kind: None })
}
