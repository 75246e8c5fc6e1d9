//! One case's lifecycle on a live session: does it apply (transport,
//! commands offered, capabilities the probe found missing), a fresh agent
//! if it asks, its steps within the paced budget, then the recovery that
//! every case ends with, and the outcome from all of that.

use super::grading::Grading;
use super::recover::recover;
use super::run::EngineOptions;
use super::steps::{run_steps, Ctx, StepError};
use crate::agent::HostGone;
use crate::case::Case;
use crate::client::{stale, Capability};
use crate::session::Session;
use crate::transcript::{Event, Transcript};
use crate::verdict::{skeleton, CaseResult, Failure, FailureKind, Outcome, RecoveryGrade, Stage};
use std::time::Duration;
use tokio::time::Instant;

/// Run one case on a live session and grade it. The bool says whether the
/// channel must be renewed ([`Session::renew`]) before the next case.
pub async fn run_case(session: &mut Session, case: &Case, grading: &Grading, eo: &EngineOptions) -> (CaseResult, bool) {
    let mut r = skeleton(case);
    let transcript = session.transcript().clone();
    let from = transcript.mark();
    let began = Instant::now();
    let not_run = |kind: FailureKind, expected: &str, why: String| Failure {
        kind,
        stage: Stage::Start,
        requirement: case.requirement.clone(),
        expected: expected.into(),
        actual: why,
        transcript: (from, from),
        secondary: Vec::new(),
    };
    let supported = grading.profile.supported_commands.as_deref();

    if let Some(why) = case.not_applicable(session.transport_kind()) {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(not_run(FailureKind::NotApplicable, "the case applies", why));
        return (r, false);
    }
    if let Some(missing) = supported.and_then(|s| case.needs.iter().find(|n| !s.contains(n))) {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(not_run(FailureKind::NotApplicable, "the case applies", format!("guest-info does not list {missing} as enabled")));
        return (r, false);
    }
    if let Some((cap, by)) = grading.blocked(case) {
        r.outcome = Outcome::Blocked;
        let why = grading.profile.findings.iter().find(|f| f.capability == cap).map_or(String::new(), |f| f.detail.clone());
        r.failure = Some(not_run(
            FailureKind::Blocked,
            &format!("the agent has the {} capability the case needs", cap.tag()),
            format!("BLOCKED by {by}: {why}"),
        ));
        return (r, false);
    }
    transcript.event(Event::Note { text: format!("case {}: {}", case.id, case.title) });
    // Every case starts on a synced channel with nothing pending: whatever
    // trails the last recovery (a duplicate reply, a late sentinel) belongs
    // to the case before.
    if let Ok(conn) = session.conn() {
        // An agent found to answer twice: let the second copy of the
        // recovery's last reply arrive and go.
        let duplicate_gap = (!grading.profile.has(Capability::OneReply)).then_some(grading.quiet_gap);
        let n = stale::drop_leftovers(conn, duplicate_gap).await;
        if n > 0 {
            transcript.event(Event::Note { text: format!("dropped {n} byte(s) left from before the case") });
        }
    }

    let budget = case.timeout_ms.map_or(grading.budgets().case, |ms| grading.scale(Duration::from_millis(ms)));
    let mut killed = false;
    let mut restarted = false;
    let mut dirty = false;
    let mut secondary = Vec::new();
    let outcome = if case.fresh_agent {
        match session.restart().await {
            Ok(_) => None,
            Err(e) => Some(Err(StepError::Violation { kind: FailureKind::StartupFailed, expected: "a fresh agent starts".into(), actual: e.to_string(), must: true, at_most: None })),
        }
    } else {
        None
    };
    let steps_result = match outcome {
        Some(r) => Some(r),
        None => {
            let mut ctx = Ctx::new(session, grading, case);
            let res = tokio::time::timeout(budget, run_steps(&mut ctx, &case.steps)).await;
            killed = ctx.killed;
            restarted = ctx.restarted;
            dirty = ctx.dirty;
            secondary = std::mem::take(&mut ctx.secondary);
            res.ok()
        }
    };
    let steps_to = transcript.mark();
    let fail = |kind, expected: String, actual: String, to| Failure { kind, stage: Stage::Steps, requirement: case.requirement.clone(), expected, actual, transcript: (from, to), secondary: Vec::new() };
    match steps_result {
        None => {
            transcript.event(Event::Timeout { waiting_for: format!("case {} to finish within {budget:?}", case.id) });
            r.outcome = Outcome::Timeout;
            r.failure = Some(fail(FailureKind::CaseTimeout, format!("the case finishes within {budget:?}"), "it was still running".into(), transcript.mark()));
            // Whatever it was doing (a burst half-written, a reply half-read)
            // must not reach the next case.
            dirty = true;
        }
        Some(Ok(())) => {}
        Some(Err(StepError::Harness(kind, m))) => {
            r.outcome = Outcome::Error;
            r.failure = Some(fail(kind, "the harness runs the case".into(), m, steps_to));
            dirty = true;
        }
        Some(Err(StepError::Violation { kind, expected, actual, must, at_most })) => {
            let mut o = if must { Outcome::Fail } else { Outcome::for_violation(case.level) };
            if let Some(cap) = at_most {
                if o > cap {
                    o = cap;
                }
            }
            r.outcome = o;
            let mut f = fail(kind, expected, actual, steps_to);
            f.secondary = std::mem::take(&mut secondary);
            r.failure = Some(f);
        }
    }
    if let Some(gone) = session.host_gone().await {
        return host_gone(r, gone, fail(FailureKind::Harness, String::new(), String::new(), transcript.mark()), &transcript, from, began, eo);
    }
    if !killed {
        if let (Some(f), Some(why)) = (r.failure.as_mut(), agent_gone(session)) {
            blame_exit(f, &why);
        }
    }
    if r.outcome == Outcome::Error && r.failure.as_ref().is_some_and(|f| f.kind == FailureKind::Refused) {
        // The agent must never see the rest of a refused command: no
        // recovery on this channel, a new one for the next case.
        r.elapsed = began.elapsed();
        if eo.keep_transcripts {
            r.transcript = transcript.entries(from, None);
        }
        return (r, true);
    }

    // Recovery, always: the channel must come back whatever the case did.
    if killed {
        // The case left the agent dead on purpose; bring one back first.
        if let Err(e) = session.start_agent().await {
            transcript.event(Event::Note { text: format!("restart after the case failed: {e}") });
        }
    }
    let rec_from = transcript.mark();
    r.recovery = recover(session, grading, killed || restarted, from).await;
    let wedged = r.recovery.grade == RecoveryGrade::Wedged;
    if wedged {
        // The agent's host (a VM) may have ended while the case's last
        // bytes were read.
        if let Some(gone) = session.host_gone().await {
            return host_gone(r, gone, fail(FailureKind::Harness, String::new(), String::new(), transcript.mark()), &transcript, from, began, eo);
        }
    }
    if r.recovery.kind == Some(FailureKind::AgentGone) {
        // The agent went while the recovery ran: a reply the steps missed
        // was never coming.
        if let (Some(f), Some(why)) = (r.failure.as_mut(), r.recovery.detail.clone()) {
            blame_exit(f, &why);
        }
    }
    if wedged && r.outcome != Outcome::Error && !matches!(r.outcome, Outcome::Fail | Outcome::Timeout) {
        // A wedged channel fails the case whatever its level: keep what the
        // steps found, and say that the channel did not come back.
        let detail = r.recovery.detail.clone().unwrap_or_default();
        let earlier = r.failure.take().map(|f| format!(" (the steps had found: {})", f.actual)).unwrap_or_default();
        r.outcome = Outcome::Fail;
        r.failure = Some(Failure {
            kind: r.recovery.kind.unwrap_or(FailureKind::Wedged),
            stage: Stage::Recovery,
            requirement: "after any case, a client recovers through guest-sync-delimited and the next commands get their own replies".into(),
            expected: "resync, then ping, sync and info each answered with our ids".into(),
            actual: format!("{detail}{earlier}"),
            transcript: (rec_from, transcript.mark()),
            secondary: Vec::new(),
        });
    }
    if let Some(f) = r.failure.as_mut() {
        blame_flush_byte(f, grading, case);
    }
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    let renew = wedged || dirty || r.outcome == Outcome::Timeout;
    (r, renew)
}

/// What the agent runs on ended during a case (a VM: QEMU killed, crashed,
/// out of memory): whatever the steps or the recovery saw follows from
/// that, not from the agent. ERROR, and the next case gets a new host.
fn host_gone(mut r: CaseResult, gone: HostGone, mut f: Failure, transcript: &Transcript, from: u64, began: Instant, eo: &EngineOptions) -> (CaseResult, bool) {
    let earlier = r.failure.take().map(|f| f.actual);
    f.expected = gone.expected();
    f.actual = gone.actual(earlier.as_deref());
    r.outcome = Outcome::Error;
    r.failure = Some(f);
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    (r, true)
}

/// An agent the start-up probe saw exit on the client's 0xFF, gone in a
/// case that sends 0xFF (or 0xFE, garbage, a resync): the probe's finding
/// is the cause, and the case counts under it. Only the cases about
/// flushing run on such an agent; the rest are BLOCKED by the same finding.
fn blame_flush_byte(f: &mut Failure, grading: &Grading, case: &Case) {
    let exits_on_ff = grading.profile.findings.iter().any(|p| p.kind == FailureKind::DiesOnFlushByte);
    if f.kind == FailureKind::AgentGone && exits_on_ff && super::grading::needed_capabilities(case).contains(&Capability::Flush) {
        f.actual = format!("the agent exits on the client's 0xFF, as the start-up probe found: {}", f.actual);
        f.kind = FailureKind::DiesOnFlushByte;
    }
}

/// Whether the agent process has exited or closed the channel, and how.
fn agent_gone(session: &mut Session) -> Option<String> {
    if let Some(status) = session.agent().and_then(|a| a.exit_status().map(str::to_owned)) {
        return Some(format!("the agent exited ({status})"));
    }
    session.conn().ok().filter(|c| c.is_closed()).map(|_| "the agent closed the channel".to_string())
}

/// A step that saw nothing come (no reply, a failed resync) on an agent
/// that is gone: its exit is the finding, the silence its symptom.
fn blame_exit(f: &mut Failure, why: &str) {
    use FailureKind::*;
    if matches!(
        f.kind,
        NoReply
            | NoReplyWithoutNewline
            | PartialReply
            | ResyncFailed
            | NotReading
            | RequestSwallowed
            | FlushIgnored
            | Wedged
    ) {
        f.actual = format!("{why} (the steps had found: {})", f.actual);
        f.kind = AgentGone;
    }
}
