//! The recovery after every case: the reference client must resync, and
//! the next commands must each get their own reply. Its grade is the second
//! axis of every result.

use super::grading::Grading;
use crate::client::{execute_skipping, resync, Capability, ResyncPolicy};
use crate::session::Session;
use crate::verdict::{Recovery, RecoveryGrade};
use crate::wire::Reply;
use qapi::qga;
use std::time::Duration;

/// Resync and verify with fresh commands; grade how it went. Uses the
/// client the start-up probe set up, and checks only that the replies are
/// ours: decoding them is the cases' business.
pub(super) async fn recover(session: &mut Session, grading: &Grading, after_restart: bool) -> Recovery {
    let wedged = |detail: String, attempts: u32, bytes: u64, t: Duration| Recovery {
        grade: RecoveryGrade::Wedged,
        resync_time: t,
        bytes_discarded: bytes,
        attempts,
        detail: Some(detail),
    };
    if let Some(agent) = session.agent() {
        if let Some(status) = agent.exit_status() {
            return wedged(format!("the agent process is gone ({status})"), 0, 0, Duration::ZERO);
        }
    }
    let opts = session.client().clone();
    let Ok(conn) = session.conn() else { return wedged("no connection to the agent".into(), 0, 0, Duration::ZERO) };
    // After a restart the agent may still be starting (isa-serial drops
    // input that arrives before it opens the tty): retry from 1 ms.
    let policy = if after_restart {
        ResyncPolicy { first_attempt: Duration::from_millis(1), max_attempt: opts.resync.max_attempt.max(Duration::from_millis(100)), ..opts.resync.clone() }
    } else {
        opts.resync.clone()
    };
    let r = match resync(conn, &policy, &opts).await {
        Ok(r) => r,
        Err(e) => return wedged(format!("resync ({}) failed: {e}", opts.mode.describe()), 0, 0, Duration::ZERO),
    };
    let fail = |what: String| wedged(what, r.attempts, r.bytes_discarded, r.elapsed);
    let offers = |name: &str| grading.profile.supported_commands.as_ref().is_none_or(|s| s.iter().any(|c| c == name));
    // Each command after a sync of its own: recovery proves the channel
    // comes back and answers each command with its own reply; a duplicate
    // or trailing byte the case's defect makes is the cases' to grade.
    match execute_skipping(conn, qga::guest_ping {}, &opts, 4).await {
        Ok(Reply::Return { .. }) => {}
        Ok(Reply::Error { class, desc, .. }) => return fail(format!("guest-ping after resync: error reply {class}: {desc}")),
        Err(e) => return fail(format!("guest-ping after resync: {e}")),
    }
    if offers("guest-sync") && grading.profile.has(Capability::GuestSync) {
        if let Err(e) = resync(conn, &opts.resync, &opts).await {
            return fail(format!("resync before guest-sync: {e}"));
        }
        let id = opts.ids.sync_id();
        match execute_skipping(conn, qga::guest_sync { id }, &opts, 4).await {
            Ok(reply) if crate::client::resync::is_sync_reply(&reply, id, &opts.mode) => {}
            Ok(reply) => return fail(format!("guest-sync after resync: expected return {id}, got {reply:?}")),
            Err(e) => return fail(format!("guest-sync after resync: {e}")),
        }
    }
    // guest-info only where the start-up probe could read it (a reply it
    // cannot frame is the info cases' finding, not a recovery failure).
    if offers("guest-info") && grading.profile.supported_commands.is_some() {
        if let Err(e) = resync(conn, &opts.resync, &opts).await {
            return fail(format!("resync before guest-info: {e}"));
        }
        match execute_skipping(conn, qga::guest_info {}, &opts, 4).await {
            Ok(Reply::Return { .. }) => {}
            Ok(Reply::Error { class, desc, .. }) => return fail(format!("guest-info after resync: error reply {class}: {desc}")),
            Err(e) => return fail(format!("guest-info after resync: {e}")),
        }
    }
    let quick = grading.budgets().quick_resync;
    let grade = if r.attempts == 1 && r.elapsed <= quick { RecoveryGrade::Resynced } else { RecoveryGrade::Slow };
    Recovery { grade, resync_time: r.elapsed, bytes_discarded: r.bytes_discarded, attempts: r.attempts, detail: None }
}
