//! The case engine: runs catalogue cases against one agent on one channel
//! and grades each one.
//!
//! For each case: check it applies (transport, commands the agent offers per
//! guest-info), run its steps, stop at the first unmet expectation, and then
//! always measure recovery: the reference client must resync and the next
//! commands (ping, sync, info, each with fresh ids) must get exactly their
//! own replies. An agent that died or wedged is restarted for the next case.
//!
//! - [`request`]: send steps to bytes (through the qapi types).
//! - [`observe`]: reading replies with the bytes around them.
//! - [`denylist`]: commands never sent.

pub mod denylist;
pub mod observe;
pub mod request;

use crate::case::step::{Expect, GarbageKind, IdCheck, Send, Signal, Step};
use crate::case::{pattern, Case};
use crate::client::{execute, resync, ClientOptions, ResyncPolicy};
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::{Entry, Event, Transcript};
use crate::verdict::{Failure, Level, Outcome, Recovery, RecoveryGrade, Stage};
use crate::wire::Reply;
use qapi::qga;
use rand::{Rng, SeedableRng};
use request::Pending;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Default budget for one case.
    pub case_timeout: Duration,
    /// A recovery slower than this (or needing retries) is graded slow.
    pub quick_resync: Duration,
    /// Keep each case's transcript in the result.
    pub keep_transcripts: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { case_timeout: Duration::from_secs(5), quick_resync: Duration::from_millis(50), keep_transcripts: true }
    }
}

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub section: String,
    pub title: String,
    pub level: Level,
    pub requirement: String,
    pub source: String,
    pub outcome: Outcome,
    /// Requirement, expected, actual and transcript span, for anything but PASS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub recovery: Recovery,
    #[serde(with = "crate::verdict::micros")]
    pub elapsed: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<Entry>,
}

/// A whole run against one agent on one transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub agent: String,
    pub transport: String,
    /// guest-info's version, if the agent answered it.
    pub agent_version: Option<String>,
    /// Enabled commands per guest-info.
    pub supported_commands: Option<Vec<String>>,
    #[serde(with = "crate::verdict::micros")]
    pub elapsed: Duration,
    pub results: Vec<CaseResult>,
}

/// An unmet expectation, or a harness failure.
#[derive(Debug)]
enum StepError {
    /// The agent did not do what the case expects. `must` raises it to FAIL
    /// whatever the case's level (a client must always be able to resync).
    Violation { expected: String, actual: String, must: bool },
    Harness(String),
}

fn violation(expected: impl Into<String>, actual: impl Into<String>) -> StepError {
    StepError::Violation { expected: expected.into(), actual: actual.into(), must: false }
}

/// State while a case runs.
struct Ctx<'a> {
    session: &'a mut Session,
    opts: &'a ClientOptions,
    pending: VecDeque<Pending>,
    /// The last step killed the agent and no restart followed yet.
    killed: bool,
    /// The case started a new agent instance (it may still be starting).
    restarted: bool,
}

/// Run `cases` in order against one agent. The transcript is reset between
/// cases (each result carries its own part), so memory stays bounded.
pub async fn run_cases(config: SessionConfig, cases: &[Case], transcript: Transcript, eo: &EngineOptions) -> RunResult {
    let began = Instant::now();
    let mut run = RunResult {
        agent: config.template.to_string(),
        transport: config.transport.to_string(),
        agent_version: None,
        supported_commands: None,
        elapsed: Duration::ZERO,
        results: Vec::with_capacity(cases.len()),
    };
    let opts = config.client.clone();
    let start_mark = transcript.mark();
    let mut session = match Session::start(config, transcript.clone()).await {
        Ok((s, _)) => s,
        Err(e) => {
            let outcome = if matches!(e, SessionError::Spawn(_) | SessionError::Transport { .. } | SessionError::NeedsPath) {
                Outcome::Error
            } else {
                Outcome::Fail
            };
            let span = (start_mark, transcript.mark());
            let entries = transcript.entries(start_mark, None);
            for case in cases {
                let mut r = skeleton(case);
                r.outcome = outcome;
                r.failure = Some(Failure {
                    stage: Stage::Start,
                    requirement: case.requirement.clone(),
                    expected: "the agent starts and answers 0xFF + guest-sync-delimited".into(),
                    actual: e.to_string(),
                    transcript: span,
                });
                if eo.keep_transcripts {
                    r.transcript = entries.clone();
                }
                run.results.push(r);
            }
            run.elapsed = began.elapsed();
            return run;
        }
    };
    match execute(session.conn().expect("started"), qga::guest_info {}, &opts).await {
        Ok(Ok(info)) => {
            run.agent_version = Some(info.version.clone());
            run.supported_commands = Some(info.supported_commands.iter().filter(|c| c.enabled).map(|c| c.name.clone()).collect());
        }
        _ => {
            // What is left of a bad guest-info reply must not be blamed on
            // the first case: resync before it (a failure shows there).
            let _ = resync(session.conn().expect("started"), &opts.resync, &opts).await;
        }
    }
    for case in cases {
        let result = run_case(&mut session, case, &opts, run.supported_commands.as_deref(), eo).await;
        let wedged = result.recovery.grade == RecoveryGrade::Wedged;
        run.results.push(result);
        transcript.reset();
        if wedged {
            // A fresh agent for the next case, so one failure does not
            // cascade. If even that fails, later cases report it.
            let _ = session.restart().await;
        }
    }
    session.shutdown().await;
    run.elapsed = began.elapsed();
    run
}

fn skeleton(case: &Case) -> CaseResult {
    CaseResult {
        id: case.id.clone(),
        section: case.section().to_owned(),
        title: case.title.clone(),
        level: case.level,
        requirement: case.requirement.clone(),
        source: case.source.clone(),
        outcome: Outcome::Pass,
        failure: None,
        recovery: Recovery::not_run(),
        elapsed: Duration::ZERO,
        transcript: Vec::new(),
    }
}

/// Run one case on a live session and grade it.
pub async fn run_case(
    session: &mut Session,
    case: &Case,
    opts: &ClientOptions,
    supported: Option<&[String]>,
    eo: &EngineOptions,
) -> CaseResult {
    let mut r = skeleton(case);
    let transcript = session.transcript().clone();
    let from = transcript.mark();
    let began = Instant::now();
    let unsupported = |why: String| Failure { stage: Stage::Start, requirement: case.requirement.clone(), expected: "the case applies".into(), actual: why, transcript: (from, from) };

    if !case.transports.is_empty() && !case.transports.contains(&session.transport_kind()) {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(unsupported(format!("the case applies only to {:?}", case.transports)));
        return r;
    }
    if let Some(missing) = supported.and_then(|s| case.needs.iter().find(|n| !s.contains(n))) {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(unsupported(format!("guest-info does not list {missing} as enabled")));
        return r;
    }
    transcript.event(Event::Note { text: format!("case {}: {}", case.id, case.title) });

    let budget = case.timeout_ms.map_or(eo.case_timeout, Duration::from_millis);
    let mut killed = false;
    let mut restarted = false;
    let outcome = if case.fresh_agent {
        match session.restart().await {
            Ok(_) => None,
            Err(e) => Some(Err(StepError::Violation { expected: "a fresh agent starts".into(), actual: e.to_string(), must: true })),
        }
    } else {
        None
    };
    let steps_result = match outcome {
        Some(r) => Some(r),
        None => {
            let mut ctx = Ctx { session, opts, pending: VecDeque::new(), killed: false, restarted: false };
            let res = tokio::time::timeout(budget, run_steps(&mut ctx, &case.steps)).await;
            killed = ctx.killed;
            restarted = ctx.restarted;
            res.ok()
        }
    };
    let steps_to = transcript.mark();
    match steps_result {
        None => {
            transcript.event(Event::Timeout { waiting_for: format!("case {} to finish within {budget:?}", case.id) });
            r.outcome = Outcome::Timeout;
            r.failure = Some(Failure {
                stage: Stage::Steps,
                requirement: case.requirement.clone(),
                expected: format!("the case finishes within {budget:?}"),
                actual: "it did not".into(),
                transcript: (from, transcript.mark()),
            });
        }
        Some(Ok(())) => {}
        Some(Err(StepError::Harness(m))) => {
            r.outcome = Outcome::Error;
            r.failure = Some(Failure { stage: Stage::Steps, requirement: case.requirement.clone(), expected: "the harness runs the case".into(), actual: m, transcript: (from, steps_to) });
        }
        Some(Err(StepError::Violation { expected, actual, must })) => {
            r.outcome = if must { Outcome::Fail } else { Outcome::for_violation(case.level) };
            r.failure = Some(Failure { stage: Stage::Steps, requirement: case.requirement.clone(), expected, actual, transcript: (from, steps_to) });
        }
    }

    // Recovery, always: the channel must come back whatever the case did.
    if killed {
        // The case left the agent dead on purpose; bring one back first.
        if let Err(e) = session.start_agent().await {
            transcript.event(Event::Note { text: format!("restart after the case failed: {e}") });
        }
    }
    let rec_from = transcript.mark();
    r.recovery = recover(session, opts, supported, eo, killed || restarted).await;
    if r.recovery.grade == RecoveryGrade::Wedged && r.outcome != Outcome::Error {
        let detail = r.recovery.detail.clone().unwrap_or_default();
        if !r.outcome.is_failing(true) {
            r.outcome = Outcome::Fail;
            r.failure = Some(Failure {
                stage: Stage::Recovery,
                requirement: "after any case, a client recovers through guest-sync-delimited and the next commands get their own replies".into(),
                expected: "resync, then ping, sync and info each answered with our ids".into(),
                actual: detail,
                transcript: (rec_from, transcript.mark()),
            });
        }
    }
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    r
}

/// Resync and verify with fresh commands; grade how it went.
async fn recover(session: &mut Session, opts: &ClientOptions, supported: Option<&[String]>, eo: &EngineOptions, after_restart: bool) -> Recovery {
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
    let Ok(conn) = session.conn() else { return wedged("no connection to the agent".into(), 0, 0, Duration::ZERO) };
    // After a restart the agent may still be starting (isa-serial drops
    // input that arrives before it opens the tty): retry from 1 ms.
    let policy = if after_restart {
        ResyncPolicy { first_attempt: Duration::from_millis(1), max_attempt: Duration::from_millis(100), ..opts.resync.clone() }
    } else {
        opts.resync.clone()
    };
    let r = match resync(conn, &policy, opts).await {
        Ok(r) => r,
        Err(e) => return wedged(format!("resync failed: {e}"), 0, 0, Duration::ZERO),
    };
    let fail = |what: String| wedged(what, r.attempts, r.bytes_discarded, r.elapsed);
    let offers = |name: &str| supported.is_none_or(|s| s.iter().any(|c| c == name));
    match execute(conn, qga::guest_ping {}, opts).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return fail(format!("guest-ping after resync: error reply {e}")),
        Err(e) => return fail(format!("guest-ping after resync: {e}")),
    }
    if offers("guest-sync") {
        let id = crate::client::fresh_sync_id();
        match execute(conn, qga::guest_sync { id }, opts).await {
            Ok(Ok(got)) if got == id => {}
            Ok(Ok(got)) => return fail(format!("guest-sync after resync returned {got}, not {id}")),
            Ok(Err(e)) => return fail(format!("guest-sync after resync: error reply {e}")),
            Err(e) => return fail(format!("guest-sync after resync: {e}")),
        }
    }
    if offers("guest-info") {
        match execute(conn, qga::guest_info {}, opts).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return fail(format!("guest-info after resync: error reply {e}")),
            Err(e) => return fail(format!("guest-info after resync: {e}")),
        }
    }
    let grade = if r.attempts == 1 && r.elapsed <= eo.quick_resync { RecoveryGrade::Resynced } else { RecoveryGrade::Slow };
    Recovery { grade, resync_time: r.elapsed, bytes_discarded: r.bytes_discarded, attempts: r.attempts, detail: None }
}

fn run_steps<'s>(ctx: &'s mut Ctx<'_>, steps: &'s [Step]) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StepError>> + 's>> {
    // Boxed: `repeat` recurses.
    Box::pin(async move {
        for step in steps {
            run_step(ctx, step).await?;
        }
        Ok(())
    })
}

fn harness<E: std::fmt::Display>(e: E) -> StepError {
    StepError::Harness(e.to_string())
}

async fn write(ctx: &mut Ctx<'_>, bytes: &[u8], chunk: Option<usize>, delay_us: u64) -> Result<(), StepError> {
    if let Some(name) = denylist::denied_command(bytes) {
        return Err(StepError::Harness(format!("refused to send {name}: it is on the engine's deny-list")));
    }
    let send_timeout = ctx.opts.send_timeout;
    let conn = ctx.session.conn().map_err(harness)?;
    let pieces: Vec<&[u8]> = match chunk {
        Some(n) => bytes.chunks(n).collect(),
        None => vec![bytes],
    };
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.into_iter().enumerate() {
        // Each chunk gets its own deadline: a slow reader is not a dead one.
        conn.send(piece, Instant::now() + send_timeout).await.map_err(|e| violation("the agent reads what we write", e.to_string()))?;
        if delay_us > 0 && i < last {
            pause(Duration::from_micros(delay_us)).await;
        }
    }
    Ok(())
}

/// tokio's timer has millisecond resolution; shorter pauses are spun on
/// the clock (they are microseconds, and only between chunks).
async fn pause(d: Duration) {
    if d >= Duration::from_millis(2) {
        tokio::time::sleep(d).await;
    } else {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// Once output has started, a gap this long means the agent has finished
/// writing for now (it answers in tens of microseconds).
const QUIET_GAP: Duration = Duration::from_millis(2);
/// How long a fault that acts "after K bytes" waits for the first byte. If
/// nothing comes (the request was swallowed by stale input, say), there is
/// nothing to act in the middle of; the fault goes ahead, a little later.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(20);

/// Fill until `n` bytes are buffered, the agent goes quiet after writing
/// something, or the wait for the first byte runs out. Faults that act
/// "after K bytes" use it: if the reply is shorter than K, they act once it
/// is complete.
async fn wait_for_bytes(conn: &mut crate::connection::Connection, n: usize, limit: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut until = Instant::now() + FIRST_BYTE_WAIT.min(limit);
    while conn.buffered().len() < n {
        match conn.fill(until).await? {
            crate::connection::Fill::Data(_) => until = deadline.min(Instant::now() + QUIET_GAP),
            _ => break,
        }
    }
    Ok(())
}

fn garbage(len: usize, seed: u64, kind: GarbageKind) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| match kind {
            GarbageKind::Any => rng.gen::<u8>(),
            GarbageKind::Printable => loop {
                let b = rng.gen_range(0x20u8..0x7f);
                if b != b'{' && b != b'}' && b != b'[' && b != b']' {
                    break b;
                }
            },
            GarbageKind::NoFlush => loop {
                let b = rng.gen::<u8>();
                if b >= 0x20 && b < 0xFE {
                    break b;
                }
            },
        })
        .collect()
}

async fn run_step(ctx: &mut Ctx<'_>, step: &Step) -> Result<(), StepError> {
    let reply_timeout = ctx.opts.reply_timeout;
    match step {
        Step::Send(s) => send(ctx, s).await,
        Step::Batch(sends) => {
            let mut bytes = Vec::new();
            let mut pending = Vec::new();
            for s in sends {
                let (b, p) = request::build(s);
                bytes.extend_from_slice(&b);
                pending.extend(p);
            }
            write(ctx, &bytes, None, 0).await?;
            ctx.pending.extend(pending);
            Ok(())
        }
        Step::Garbage(g) => {
            ctx.session.transcript().event(Event::Fault { detail: format!("{} bytes of {:?} garbage, seed {}", g.len, g.kind, g.seed) });
            // An agent may answer garbage with many times its size in error
            // lines (qemu-ga: one line per stray byte). That output is
            // dropped as it comes, or the harness's bounded buffer would fill,
            // it would stop reading, and the agent, blocked writing, would
            // stop reading our garbage. Afterwards, wait until the agent has
            // worked through it (output quiet for QUIET_GAP).
            let bytes = garbage(g.len, g.seed, g.kind);
            if let Some(name) = denylist::denied_command(&bytes) {
                return Err(StepError::Harness(format!("refused to send {name}: it is on the engine's deny-list")));
            }
            // The agent may be busy for a while with each chunk (qemu-ga
            // writes an error line per stray byte): more time than for a
            // request, still bounded.
            let send_timeout = ctx.opts.send_timeout * 4;
            let conn = ctx.session.conn().map_err(harness)?;
            let mut dropped = 0;
            for piece in bytes.chunks(16 * 1024) {
                dropped += conn
                    .send_discarding(piece, Instant::now() + send_timeout)
                    .await
                    .map_err(|e| violation("the agent reads what we write", e.to_string()))?;
            }
            dropped += conn.drain(QUIET_GAP, Instant::now() + Duration::from_secs(3)).await.map_err(harness)?;
            conn.transcript().event(Event::Note { text: format!("dropped {dropped} byte(s) of agent output during and after the garbage") });
            Ok(())
        }
        Step::Abandon(a) => {
            let conn = ctx.session.conn().map_err(harness)?;
            wait_for_bytes(conn, a.after, reply_timeout).await.map_err(harness)?;
            let n = a.after.min(conn.buffered().len());
            conn.consume(n);
            conn.transcript().event(Event::Fault { detail: format!("client abandoned the reply after {n} byte(s); the rest stays in the channel") });
            // The abandoned request is no longer owed to this client.
            ctx.pending.pop_front();
            Ok(())
        }
        Step::Kill(k) => {
            if let Some(after) = k.after_bytes {
                let conn = ctx.session.conn().map_err(harness)?;
                let have = conn.buffered().len();
                wait_for_bytes(conn, have + after, reply_timeout).await.map_err(harness)?;
            }
            match k.signal {
                Signal::KILL => ctx.session.kill_agent().await,
                Signal::TERM => ctx.session.terminate_agent().await,
            }
            ctx.pending.clear();
            ctx.killed = true;
            Ok(())
        }
        Step::Restart(_) => {
            ctx.session.start_agent().await.map_err(|e| StepError::Violation { expected: "the agent restarts".into(), actual: e.to_string(), must: true })?;
            ctx.pending.clear();
            ctx.killed = false;
            ctx.restarted = true;
            Ok(())
        }
        Step::Reconnect(_) => {
            ctx.session.reconnect().await.map_err(|e| violation("the agent accepts a new connection", e.to_string()))?;
            ctx.pending.clear();
            Ok(())
        }
        Step::Inject(bytes) => {
            ctx.session.conn().map_err(harness)?.inject(&bytes.0);
            Ok(())
        }
        Step::Expect(e) => expect(ctx, e).await,
        Step::ExpectSilence(s) => {
            let conn = ctx.session.conn().map_err(harness)?;
            observe::silence(conn, Instant::now() + Duration::from_millis(s.ms)).await.map_err(|bytes| {
                violation(format!("nothing for {} ms", s.ms), format!("received {}", crate::transcript::escape_bytes(&bytes)))
            })
        }
        Step::Resync(rs) => {
            let mut policy = ctx.opts.resync.clone();
            if let Some(ms) = rs.budget_ms {
                policy.budget = Duration::from_millis(ms);
            }
            // Start small: the step may follow a restart.
            policy.first_attempt = Duration::from_millis(1);
            policy.max_attempt = Duration::from_millis(100);
            let conn = ctx.session.conn().map_err(harness)?;
            resync(conn, &policy, ctx.opts).await.map_err(|e| StepError::Violation {
                expected: "the reference client resyncs through guest-sync-delimited within its budget".into(),
                actual: e.to_string(),
                must: true,
            })?;
            ctx.pending.clear();
            Ok(())
        }
        Step::Pause(p) => {
            pause(Duration::from_millis(p.ms)).await;
            Ok(())
        }
        Step::Repeat(r) => {
            for _ in 0..r.times {
                run_steps(ctx, &r.steps).await?;
            }
            Ok(())
        }
    }
}

async fn send(ctx: &mut Ctx<'_>, s: &Send) -> Result<(), StepError> {
    let (bytes, pending) = request::build(s);
    if s.truncate.is_some() {
        ctx.session.transcript().event(Event::Fault { detail: format!("partial request: {} byte(s)", bytes.len()) });
    }
    write(ctx, &bytes, s.chunk, s.delay_us).await?;
    ctx.pending.extend(pending);
    Ok(())
}

fn describe_reply(o: &observe::Observed) -> String {
    format!("{}{}", crate::transcript::escape_bytes(&o.before), crate::transcript::escape_bytes(&o.text))
}

async fn expect(ctx: &mut Ctx<'_>, e: &Expect) -> Result<(), StepError> {
    let within = e.within_ms.map_or(ctx.opts.reply_timeout, Duration::from_millis);
    let max_len = ctx.opts.max_reply_len;
    for n in 0..e.count {
        let pending = ctx.pending.pop_front();
        let want = describe_expectation(e, pending.as_ref());
        let which = if e.count > 1 { format!(" (reply {} of {})", n + 1, e.count) } else { String::new() };
        let conn = ctx.session.conn().map_err(harness)?;
        let deadline = Instant::now() + within;
        let mut skipped = 0;
        let o = loop {
            let o = observe::next_reply(conn, deadline, max_len).await.map_err(|why| violation(format!("{want}{which}"), why.to_string()))?;
            // Only when a return is expected: an error reply without an id
            // is then the agent's (legal) answer to our 0xFF, not ours.
            let tolerable = e.allow_errors_before
                && e.return_.is_some()
                && skipped < 8
                && matches!(&o.reply, Ok(Reply::Error { id: None, .. }));
            if tolerable {
                skipped += 1;
                continue;
            }
            break o;
        };
        let mut result = check(e, pending.as_ref(), &o);
        if result.is_ok() && e.line {
            result = line_terminated(conn, &o, deadline).await;
        }
        if let Err(actual) = result {
            // A reply that answers a later request means the ones between
            // were lost: say so, it is the finding.
            let later = o.reply.as_ref().ok().and_then(|r| {
                ctx.pending.iter().position(|p| p.id.as_ref().is_some_and(|id| r.id().is_some_and(|rid| ids_equal(id, rid))))
            });
            let actual = match later {
                Some(k) => format!("the reply to request {} of {}: {} repl{} lost ({actual})", n + k + 2, e.count, k + 1, if k == 0 { "y" } else { "ies" }),
                None => actual,
            };
            return Err(violation(format!("{want}{which}"), actual));
        }
    }
    Ok(())
}

/// The reply was one line: no newline inside, and a newline after it with
/// at most spaces, tabs or CR between (libvirt splits replies on `\n`).
async fn line_terminated(conn: &mut crate::connection::Connection, o: &observe::Observed, deadline: Instant) -> Result<(), String> {
    if o.text.contains(&b'\n') {
        return Err(format!("a reply spread over several lines: {}", describe_reply(o)));
    }
    loop {
        let buf = conn.buffered();
        match buf.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
            Some(i) if buf[i] == b'\n' => return Ok(()),
            Some(i) => return Err(format!("no newline after the reply {}; next came {}", describe_reply(o), crate::transcript::escape_bytes(&buf[i..buf.len().min(i + 40)]))),
            None => {}
        }
        match conn.fill(deadline).await {
            Ok(crate::connection::Fill::Data(_)) => {}
            _ => return Err(format!("no newline after the reply {}", describe_reply(o))),
        }
    }
}

fn describe_expectation(e: &Expect, p: Option<&Pending>) -> String {
    let body = match (&e.return_, &e.error) {
        (Some(r), _) => format!("{{\"return\": {}}}", show_pattern(r, p)),
        (_, Some(c)) => format!("{{\"error\": {{\"class\": \"{c}\", ...}}}}"),
        _ => String::new(),
    };
    let id = match (e.id, p.and_then(|p| p.id.as_ref())) {
        (IdCheck::Echo, Some(id)) => format!(" with \"id\": {id}"),
        (IdCheck::Echo, None) | (IdCheck::Absent, _) => " without an id".into(),
        (IdCheck::Any, _) => String::new(),
    };
    let delim = if e.delimited { "a raw 0xFF immediately followed by " } else { "" };
    format!("{delim}{body}{id}")
}

fn show_pattern(v: &serde_json::Value, p: Option<&Pending>) -> String {
    match (v.as_str(), p.and_then(|p| p.sync_id)) {
        (Some("$sync"), Some(id)) => id.to_string(),
        _ => v.to_string(),
    }
}

fn check(e: &Expect, p: Option<&Pending>, o: &observe::Observed) -> Result<(), String> {
    let got = || describe_reply(o);
    let reply = o.reply.as_ref().map_err(|why| format!("malformed reply {}: {why}", got()))?;
    if e.delimited && !o.is_delimited() {
        return Err(format!("not delimited: {}", got()));
    }
    let allowed_ff = usize::from(e.delimited);
    if o.stray_flush_bytes() > allowed_ff {
        return Err(format!("raw 0xFF/0xFE bytes where none may be: {}", got()));
    }
    let bindings = pattern::Bindings { sync_id: p.and_then(|p| p.sync_id) };
    match (reply, &e.return_, &e.error) {
        (Reply::Return { value, .. }, Some(pat), _) => pattern::matches(pat, value, &bindings).map_err(|m| format!("{} ({m})", got()))?,
        (Reply::Error { class, .. }, _, Some(want)) => {
            if want != "$any" && class != want {
                return Err(format!("error class {class}: {}", got()));
            }
        }
        _ => return Err(got()),
    }
    match e.id {
        IdCheck::Any => {}
        IdCheck::Absent => {
            if reply.id().is_some() {
                return Err(format!("an id where none was sent: {}", got()));
            }
        }
        IdCheck::Echo => match (p.and_then(|p| p.id.as_ref()), reply.id()) {
            (None, None) => {}
            (Some(sent), Some(echoed)) if ids_equal(sent, echoed) => {}
            (Some(_), None) => return Err(format!("the request id is not echoed: {}", got())),
            (_, _) => return Err(format!("wrong id: {}", got())),
        },
    }
    Ok(())
}

/// Ids compare as JSON values, numbers by value (agents re-serialise them).
fn ids_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_f64(), b.as_f64()) {
        (Some(x), Some(y), _, _) => x == y,
        (None, None, Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
