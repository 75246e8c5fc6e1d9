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

pub mod client_case;
pub mod denylist;
pub mod observe;
pub mod request;

use crate::case::step::{Expect, GarbageKind, IdCheck, Send, Signal, Step};
use crate::case::{pattern, Case};
use crate::client::{execute_skipping, resync, Capability, ClientOptions, Profile, ResyncPolicy};
use crate::connection::SendError;
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::{Entry, Event, Transcript};
use crate::verdict::{Failure, FailureKind, Level, Outcome, Recovery, RecoveryGrade, Stage};
use crate::wire::message::{compare_id, ids_equal, IdMatch, QAPI_ERROR_CLASSES};
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
    /// Default budget for one case, for a brisk agent; multiplied by the
    /// agent's measured pace factor.
    pub case_timeout: Duration,
    /// A recovery slower than this (or needing retries) is graded slow.
    pub quick_resync: Duration,
    /// Keep each case's transcript in the result.
    pub keep_transcripts: bool,
    /// Drives every random id (and nothing else is random): the same seed
    /// against the same agent sends the same requests.
    pub seed: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { case_timeout: Duration::from_secs(5), quick_resync: Duration::from_millis(50), keep_transcripts: true, seed: rand::random() }
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
    /// Client mode: the client's grade and what it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::proxy::grade::ClientCaseDetail>,
}

/// Client mode: what was graded, and behind what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRunInfo {
    /// The agent behind the proxy.
    pub agent: String,
    pub agent_transport: String,
    /// `{timeout_ms}` given to the client.
    pub timeout_ms: u64,
    /// What the client's own bytes showed, over the whole run.
    pub habits: Vec<crate::proxy::grade::Habit>,
    /// Bits of the widest sync id seen (None: no numeric id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id_bits: Option<u32>,
}

impl RunResult {
    /// A short name for what was graded, for a matrix column: the agent's
    /// version, or for a client run its program and arguments (paths cut to
    /// their last part, placeholders left out).
    pub fn subject(&self) -> String {
        match (&self.client, &self.agent_version) {
            (Some(_), _) => {
                let words = shell_words::split(&self.agent).unwrap_or_else(|_| vec![self.agent.clone()]);
                let mut short: Vec<String> = Vec::new();
                for (i, w) in words.iter().enumerate() {
                    let next_is_placeholder = words.get(i + 1).is_some_and(|n| n.contains('{'));
                    if w.contains('{') || (w.starts_with('-') && next_is_placeholder) {
                        continue;
                    }
                    let base = w.rsplit('/').next().unwrap_or(w);
                    if i == 0 && base.starts_with("python") {
                        continue;
                    }
                    short.push(base.to_owned());
                }
                format!("client {}", short.join(" "))
            }
            (None, Some(v)) => v.clone(),
            (None, None) => self.agent.clone(),
        }
    }
}

/// Why the agent could not be run at all: one message, not one per case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupError {
    pub message: String,
    /// What the agent wrote on stderr (escaped), if anything.
    #[serde(default)]
    pub stderr: String,
    /// A likely cause, when one can be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether the harness could not even spawn it or open the channel
    /// (as opposed to an agent that started and never answered).
    pub harness: bool,
    pub transcript: Vec<Entry>,
}

/// A whole run against one agent (or, in client mode, one client) on one
/// transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Who was graded. In client mode `agent` is the client's template and
    /// `client` says what agent stood behind the harness.
    #[serde(default, skip_serializing_if = "crate::case::Role::is_agent")]
    pub role: crate::case::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientRunInfo>,
    /// The shard of the catalogue this run covers (`--shard K/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::case::shard::Shard>,
    pub agent: String,
    pub transport: String,
    /// guest-info's version, if the agent answered it.
    pub agent_version: Option<String>,
    /// Enabled commands per guest-info.
    pub supported_commands: Option<Vec<String>>,
    /// The seed of every random id in the run (`--seed` reproduces it).
    #[serde(default)]
    pub seed: u64,
    /// What the start-up probe found: sync mode, defects, pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Set when the agent could not be run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_error: Option<StartupError>,
    /// The machine, for runs over a VM transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<crate::vm::VmRunInfo>,
    #[serde(with = "crate::verdict::micros")]
    pub elapsed: Duration,
    pub results: Vec<CaseResult>,
}

/// An unmet expectation, or a harness failure.
#[derive(Debug)]
enum StepError {
    /// The agent did not do what the case expects. `must` raises it to FAIL
    /// whatever the case's level (a client must always be able to resync);
    /// `at_most` caps the outcome (an id in float form is NON-STRICT even in
    /// a MUST case: the value is right, its form is not).
    Violation { kind: FailureKind, expected: String, actual: String, must: bool, at_most: Option<Outcome> },
    /// Our own write did not complete: the channel holds part of it.
    Harness(FailureKind, String),
}

fn violation(kind: FailureKind, expected: impl Into<String>, actual: impl Into<String>) -> StepError {
    StepError::Violation { kind, expected: expected.into(), actual: actual.into(), must: false, at_most: None }
}

/// How the engine grades, from the start-up profile: what the agent lacks,
/// which case shows it, and its pace.
#[derive(Debug, Clone)]
pub struct Grading {
    profile: Profile,
    /// For each missing capability, the case that tests it (in this run's
    /// selection), if any.
    blockers: Vec<(Capability, Option<String>)>,
    /// Budgets are multiplied by this.
    factor: f64,
    /// Once output has started, a gap this long means the agent has
    /// finished writing for now.
    quiet_gap: Duration,
}

impl Grading {
    pub fn new(profile: Profile, cases: &[Case]) -> Grading {
        let mut blockers = Vec::new();
        for f in &profile.findings {
            if blockers.iter().any(|(c, _)| *c == f.capability) {
                continue;
            }
            let shown_by = cases.iter().find(|c| c.tags.iter().any(|t| t == f.capability.tag())).map(|c| c.id.clone());
            blockers.push((f.capability, shown_by));
        }
        let factor = profile.pace.factor.max(1.0);
        let quiet_gap = QUIET_GAP.max(Duration::from_micros(profile.pace.max_gap_us * 3));
        Grading { profile, blockers, factor, quiet_gap }
    }

    /// Budgets follow the agent's pace: the client's waits, multiplied.
    pub fn pace_client(&self, c: &mut ClientOptions) {
        c.reply_timeout = c.reply_timeout.mul_f64(self.factor);
        c.idle_timeout = c.idle_timeout.mul_f64(self.factor);
        c.send_timeout = c.send_timeout.mul_f64(self.factor);
        c.resync.budget = c.resync.budget.mul_f64(self.factor);
        c.resync.max_attempt = c.resync.max_attempt.mul_f64(self.factor);
    }

    /// The agent's output rate measured at start-up (guest-info's reply),
    /// bytes per second; unknown counts as fast.
    fn output_rate(&self) -> f64 {
        let p = &self.profile.pace;
        if p.info_us == 0 || p.info_bytes == 0 {
            return f64::INFINITY;
        }
        p.info_bytes as f64 / (p.info_us as f64 / 1e6)
    }

    /// Garbage that the agent can answer (about 40 bytes of error output
    /// per garbage byte, worst case) within about four seconds.
    /// Only for an agent measured slow (pace factor above 1), and rounded
    /// down to a power of two, so that runs against the same agent cut the
    /// same garbage (a seed repeats the run).
    /// Where the start-up measured garbage being answered (VM transports),
    /// that measurement sets the cap, whatever the pace factor.
    fn garbage_cap(&self) -> usize {
        let p = &self.profile.pace;
        let cap = if p.garbage_us > 0 && p.garbage_in > 0 {
            // Two seconds of answering: within the garbage cases' resync budgets.
            p.garbage_in as f64 * 2e6 / p.garbage_us as f64
        } else if self.factor <= 1.0 {
            return usize::MAX;
        } else {
            self.output_rate() * 4.0 / 40.0
        };
        if !cap.is_finite() {
            return usize::MAX;
        }
        let cap = (cap as usize).max(128);
        1 << (usize::BITS - 1 - cap.leading_zeros())
    }

    fn scale(&self, d: Duration) -> Duration {
        d.mul_f64(self.factor)
    }

    /// Whether `case` tests `cap` itself (then it runs, and grades it).
    fn tests(case: &Case, cap: Capability) -> bool {
        case.tags.iter().any(|t| t == cap.tag())
    }

    /// Whether the case may relax checks of a capability the agent lacks.
    fn relaxed(&self, case: &Case, cap: Capability) -> bool {
        !self.profile.has(cap) && !Grading::tests(case, cap)
    }

    /// The capability this case needs that is missing, and who shows it.
    fn blocked(&self, case: &Case) -> Option<(Capability, String)> {
        let needs = needed_capabilities(case);
        self.blockers
            .iter()
            .filter(|(cap, _)| cap.blocks())
            .find(|(cap, _)| needs.contains(cap) && !Grading::tests(case, *cap))
            .map(|(cap, by)| (*cap, by.clone().unwrap_or_else(|| "the start-up probe".into())))
    }
}

/// What a case's steps rely on beyond plain requests: a delimited sync
/// answered with the sentinel (a resync step, a delimited expectation), an
/// agent that survives a raw 0xFF (a flush byte, raw 0xFF/0xFE bytes,
/// random garbage, a resync), and guest-sync answered with its id.
pub fn needed_capabilities(case: &Case) -> Vec<Capability> {
    let mut caps = Vec::new();
    let mut need = |c: Capability| {
        if !caps.contains(&c) {
            caps.push(c);
        }
    };
    Step::visit(&case.steps, &mut |s| match s {
        Step::Resync(_) => {
            need(Capability::Sentinel);
            need(Capability::Flush);
        }
        Step::Expect(e) if e.delimited => need(Capability::Sentinel),
        Step::Send(x) => {
            if sends_flush_bytes(x) {
                need(Capability::Flush);
            }
            if x.command.as_deref() == Some("guest-sync") {
                need(Capability::GuestSync);
            }
        }
        Step::Batch(xs) => {
            if xs.iter().any(sends_flush_bytes) {
                need(Capability::Flush);
            }
            if xs.iter().any(|x| x.command.as_deref() == Some("guest-sync")) {
                need(Capability::GuestSync);
            }
        }
        Step::Garbage(g) if g.kind == GarbageKind::Any => need(Capability::Flush),
        _ => {}
    });
    caps
}

fn sends_flush_bytes(s: &Send) -> bool {
    s.flush || s.raw.as_ref().is_some_and(|r| r.0.iter().any(|&b| b == 0xFF || b == 0xFE))
}

/// State while a case runs.
struct Ctx<'a> {
    session: &'a mut Session,
    grading: &'a Grading,
    case: &'a Case,
    pending: VecDeque<Pending>,
    /// Ids of replies already received in this case (to name duplicates).
    answered: VecDeque<serde_json::Value>,
    /// The text of the last reply read (to skip an agent's known duplicates).
    last_reply: Vec<u8>,
    /// The last step killed the agent and no restart followed yet.
    killed: bool,
    /// The case started a new agent instance (it may still be starting).
    restarted: bool,
    /// Our own input is left half-written in the channel, or a write was
    /// refused: the next case needs a fresh channel.
    dirty: bool,
}

impl Ctx<'_> {
    fn opts(&self) -> &ClientOptions {
        self.session.client()
    }
}

/// Run `cases` in order against one agent. The transcript is reset between
/// cases (each result carries its own part), so memory stays bounded.
pub async fn run_cases(config: SessionConfig, cases: &[Case], transcript: Transcript, eo: &EngineOptions) -> RunResult {
    let began = Instant::now();
    let mut config = config;
    config.client.ids = crate::client::Ids::seeded(eo.seed);
    let mut run = RunResult {
        role: crate::case::Role::Agent,
        client: None,
        shard: None,
        agent: config.template.to_string(),
        transport: config.transport.to_string(),
        agent_version: None,
        supported_commands: None,
        seed: eo.seed,
        profile: None,
        startup_error: None,
        vm: None,
        elapsed: Duration::ZERO,
        results: Vec::with_capacity(cases.len()),
    };
    let start_mark = transcript.mark();
    let transport = config.transport;
    let template = config.template.clone();
    let (mut session, profile) = match Session::start(config, transcript.clone()).await {
        Ok(s) => s,
        Err(e) => {
            fail_startup(&mut run, cases, e, &template, transport, &transcript, start_mark);
            run.elapsed = began.elapsed();
            return run;
        }
    };
    let mut profile = profile;
    if session.vm().is_some() {
        measure_garbage_answer(&mut session, &mut profile).await;
    }
    run.agent_version = profile.version.clone();
    run.supported_commands = profile.supported_commands.clone();
    run.vm = session.vm_info();
    let grading = Grading::new(profile.clone(), cases);
    grading.pace_client(session.client_mut());
    run.profile = Some(profile);
    let base_ids = session.client().ids.clone();
    for case in cases {
        // Each case's ids come from its own stream: reproducible whatever
        // earlier cases needed.
        session.client_mut().ids = base_ids.for_case(eo.seed, &case.id);
        let result = run_case(&mut session, case, &grading, eo).await;
        run.results.push(result.0);
        transcript.reset();
        if result.1 {
            // A fresh channel and agent for the next case, so one case's
            // leftovers (a half-written burst, a backlog) cannot change
            // another's outcome. If even that fails, later cases say so.
            if let Err(e) = session.renew().await {
                transcript.event(Event::Note { text: format!("could not renew the channel: {e}") });
            }
            transcript.reset();
        }
    }
    session.shutdown().await;
    run.elapsed = began.elapsed();
    run
}

/// The agent could not be started: one startup error for the run, and
/// every applicable case ERROR with it.
pub(crate) fn fail_startup(
    run: &mut RunResult,
    cases: &[Case],
    e: SessionError,
    template: &crate::agent::AgentTemplate,
    transport: crate::transport::TransportKind,
    transcript: &Transcript,
    start_mark: u64,
) {
    let harness = matches!(e, SessionError::Spawn(_) | SessionError::Transport { .. } | SessionError::NeedsPath);
    let entries = transcript.entries(start_mark, None);
    let stderr: Vec<String> = entries
        .iter()
        .filter_map(|en| match &en.record {
            crate::transcript::Record::Event(Event::Stderr { text }) => Some(text.clone()),
            _ => None,
        })
        .collect();
    let err = StartupError {
        message: e.to_string(),
        stderr: stderr.join("\n"),
        hint: startup_hint(template, transport, &stderr),
        harness,
        transcript: entries,
    };
    for case in cases {
        let mut r = skeleton(case);
        if let Some(why) = case.not_applicable(transport) {
            // Not applicable here whether or not the agent runs.
            r.outcome = Outcome::Unsupported;
            r.failure = Some(Failure {
                kind: FailureKind::NotApplicable,
                stage: Stage::Start,
                requirement: case.requirement.clone(),
                expected: "the case applies".into(),
                actual: why,
                transcript: (start_mark, start_mark),
            });
            run.results.push(r);
            continue;
        }
        r.outcome = Outcome::Error;
        r.failure = Some(Failure {
            kind: FailureKind::StartupFailed,
            stage: Stage::Start,
            requirement: case.requirement.clone(),
            expected: "the agent starts and answers a sync".into(),
            actual: err.message.clone(),
            transcript: (start_mark, start_mark),
        });
        run.results.push(r);
    }
    run.startup_error = Some(err);
}

/// A likely cause of a failed start, from the template and what the agent
/// said. (Mismatches visible in the template alone are usage errors before
/// anything starts.)
fn startup_hint(template: &crate::agent::AgentTemplate, transport: crate::transport::TransportKind, stderr: &[String]) -> Option<String> {
    let text = stderr.join(" ").to_lowercase();
    let program = template.program().rsplit('/').next().unwrap_or_default().to_owned();
    if transport.vm().is_some() {
        // The agent's stderr and the guest console are in the transcript;
        // a host-side reading of them would mislead.
        return Some(format!(
            "over --transport {transport} the agent runs in a QEMU guest: the transcript holds the guest console and the agent's stderr (qemu-ga needs -m {} there)",
            if transport == crate::transport::TransportKind::VmIsa { "isa-serial" } else { "virtio-serial" }
        ));
    }
    if text.contains("unlink") || text.contains("address already in use") {
        return Some(format!("the agent could not set up its channel: is its method the right one for --transport {transport}?"));
    }
    if text.contains("no such file") || text.contains("permission denied") {
        return Some("the agent could not open a path it was given: check {path} and {statedir} in the template".into());
    }
    if stderr.is_empty() && program.contains("qemu-ga") {
        return Some(format!("qemu-ga said nothing: with --transport {transport}, its -m method must match (isa-serial or virtio-serial on pty, unix-listen on unix-listen)"));
    }
    None
}

/// A bare result with `outcome`, for unit tests of what consumes results.
#[cfg(test)]
pub(crate) fn test_result(id: &str, outcome: Outcome) -> CaseResult {
    CaseResult {
        id: id.into(),
        section: "s".into(),
        title: String::new(),
        level: Level::MUST,
        requirement: String::new(),
        source: String::new(),
        outcome,
        failure: None,
        recovery: Recovery::not_run(),
        elapsed: Duration::ZERO,
        transcript: Vec::new(),
        client: None,
    }
}

pub(crate) fn skeleton(case: &Case) -> CaseResult {
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
        client: None,
    }
}

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
        let _ = conn.poll_input();
        let mut n = conn.clear();
        if !grading.profile.has(Capability::OneReply) {
            // An agent found to answer twice: let the second copy of the
            // recovery's last reply arrive and go.
            n += conn.drain(grading.quiet_gap, Instant::now() + grading.quiet_gap * 10).await.unwrap_or(0);
        }
        if n > 0 {
            transcript.event(Event::Note { text: format!("dropped {n} byte(s) left from before the case") });
        }
    }

    let budget = grading.scale(case.timeout_ms.map_or(eo.case_timeout, Duration::from_millis));
    let mut killed = false;
    let mut restarted = false;
    let mut dirty = false;
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
            let mut ctx = Ctx { session, grading, case, pending: VecDeque::new(), answered: VecDeque::new(), last_reply: Vec::new(), killed: false, restarted: false, dirty: false };
            let res = tokio::time::timeout(budget, run_steps(&mut ctx, &case.steps)).await;
            killed = ctx.killed;
            restarted = ctx.restarted;
            dirty = ctx.dirty;
            res.ok()
        }
    };
    let steps_to = transcript.mark();
    let fail = |kind, expected: String, actual: String, to| Failure { kind, stage: Stage::Steps, requirement: case.requirement.clone(), expected, actual, transcript: (from, to) };
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
            r.failure = Some(fail(kind, expected, actual, steps_to));
        }
    }
    if let Some(gone) = session.vm_gone().await {
        return vm_gone(r, gone, fail(FailureKind::Harness, String::new(), String::new(), transcript.mark()), &transcript, from, began, eo);
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
    r.recovery = recover(session, grading, eo, killed || restarted).await;
    let wedged = r.recovery.grade == RecoveryGrade::Wedged;
    if wedged {
        // The VM may have ended while the case's last bytes were read.
        if let Some(gone) = session.vm_gone().await {
            return vm_gone(r, gone, fail(FailureKind::Harness, String::new(), String::new(), transcript.mark()), &transcript, from, began, eo);
        }
    }
    if wedged && r.outcome != Outcome::Error && !matches!(r.outcome, Outcome::Fail | Outcome::Timeout) {
        // A wedged channel fails the case whatever its level: keep what the
        // steps found, and say that the channel did not come back.
        let detail = r.recovery.detail.clone().unwrap_or_default();
        let earlier = r.failure.take().map(|f| format!(" (the steps had found: {})", f.actual)).unwrap_or_default();
        r.outcome = Outcome::Fail;
        r.failure = Some(Failure {
            kind: FailureKind::Wedged,
            stage: Stage::Recovery,
            requirement: "after any case, a client recovers through guest-sync-delimited and the next commands get their own replies".into(),
            expected: "resync, then ping, sync and info each answered with our ids".into(),
            actual: format!("{detail}{earlier}"),
            transcript: (rec_from, transcript.mark()),
        });
    }
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    let renew = wedged || dirty || r.outcome == Outcome::Timeout;
    (r, renew)
}

/// Random bytes (all 256 values, as the garbage cases send) a guest agent
/// answers before the cases, to measure how fast it writes error floods.
const GARBAGE_PROBE: usize = 1024;

/// VM transports: how long the agent takes to answer [`GARBAGE_PROBE`]
/// random bytes, into the profile's pace; the garbage cases' cap follows it
/// ([`Grading::garbage_cap`]). An emulated CPU writes error floods far more
/// slowly than its guest-info reply suggests.
async fn measure_garbage_answer(session: &mut Session, profile: &mut Profile) {
    let garbage = garbage(GARBAGE_PROBE, 0x9a4ba6e, GarbageKind::Any);
    let client = session.client().clone();
    let Ok(conn) = session.conn() else { return };
    if let Some(us) = crate::client::diagnose::measure_garbage_answer(conn, &client, &garbage).await {
        profile.pace.garbage_in = GARBAGE_PROBE as u64;
        profile.pace.garbage_us = us;
        conn.transcript().event(Event::Note { text: format!("{GARBAGE_PROBE} bytes of garbage answered in {us} µs") });
    }
}

/// The VM itself ended (QEMU killed, crashed, out of memory) during a
/// case: whatever the steps or the recovery saw follows from that, not from
/// the agent. ERROR, and the next case gets a new VM.
fn vm_gone(mut r: CaseResult, gone: String, mut f: Failure, transcript: &Transcript, from: u64, began: Instant, eo: &EngineOptions) -> (CaseResult, bool) {
    let earlier = r.failure.take().map(|f| format!(" (the case saw: {})", f.actual)).unwrap_or_default();
    f.expected = "the VM stays up for the whole case".into();
    f.actual = format!("{gone} during the case{earlier}");
    r.outcome = Outcome::Error;
    r.failure = Some(f);
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    (r, true)
}

/// Resync and verify with fresh commands; grade how it went. Uses the
/// client the start-up probe set up, and checks only that the replies are
/// ours: decoding them is the cases' business.
async fn recover(session: &mut Session, grading: &Grading, eo: &EngineOptions, after_restart: bool) -> Recovery {
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
    let quick = eo.quick_resync.mul_f64(grading.factor);
    let grade = if r.attempts == 1 && r.elapsed <= quick { RecoveryGrade::Resynced } else { RecoveryGrade::Slow };
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
    StepError::Harness(FailureKind::Harness, e.to_string())
}

/// A write that failed: refused by the deny-list (ERROR, nothing sent), or
/// the agent stopped taking bytes (our input is left half-written: the
/// channel must be renewed after the case).
fn send_failed(ctx: &mut Ctx<'_>, e: SendError) -> StepError {
    match e {
        SendError::Refused { .. } => StepError::Harness(FailureKind::Refused, e.to_string()),
        SendError::Timeout { .. } => {
            ctx.dirty = true;
            violation(FailureKind::NotReading, "the agent reads what we write", e.to_string())
        }
        SendError::Closed => {
            ctx.dirty = true;
            violation(FailureKind::AgentGone, "the agent reads what we write", e.to_string())
        }
        SendError::Io(_) => {
            ctx.dirty = true;
            harness(e)
        }
    }
}

async fn write(ctx: &mut Ctx<'_>, bytes: &[u8], chunk: Option<usize>, delay_us: u64) -> Result<(), StepError> {
    let send_timeout = ctx.opts().send_timeout;
    let pieces: Vec<&[u8]> = match chunk {
        Some(n) => bytes.chunks(n).collect(),
        None => vec![bytes],
    };
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.into_iter().enumerate() {
        // Each chunk gets its own deadline, and the connection extends it
        // while the agent keeps taking bytes: a slow reader is not a dead one.
        let conn = ctx.session.conn().map_err(harness)?;
        conn.set_send_stall(Some(send_timeout));
        if let Err(e) = conn.send(piece, Instant::now() + send_timeout).await {
            return Err(send_failed(ctx, e));
        }
        if delay_us > 0 && i < last {
            pause(Duration::from_micros(delay_us)).await;
        }
    }
    Ok(())
}

/// tokio's timer has millisecond resolution; shorter pauses sleep on a
/// blocking-pool thread, so the runtime (timers, Ctrl-C, reading the
/// agent) never stalls behind them.
async fn pause(d: Duration) {
    if d >= Duration::from_millis(2) {
        tokio::time::sleep(d).await;
    } else if !d.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}

/// Once output has started, a gap this long means a brisk agent has
/// finished writing for now (it answers in tens of microseconds); the
/// engine uses three times the longest pause measured at start-up if that
/// is more.
const QUIET_GAP: Duration = Duration::from_millis(2);
/// How long a fault that acts "after K bytes" waits for the first byte. If
/// nothing comes (the request was swallowed by stale input, say), there is
/// nothing to act in the middle of; the fault goes ahead, a little later.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(20);

/// Fill until `n` bytes are buffered, the agent goes quiet after writing
/// something, or the wait for the first byte runs out. Faults that act
/// "after K bytes" use it: if the reply is shorter than K, they act once it
/// is complete.
async fn wait_for_bytes(conn: &mut crate::connection::Connection, n: usize, limit: Duration, first: Duration, quiet: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut until = Instant::now() + first.min(limit);
    while conn.buffered().len() < n {
        match conn.fill(until).await? {
            crate::connection::Fill::Data(_) => until = deadline.min(Instant::now() + quiet),
            _ => break,
        }
    }
    Ok(())
}

pub(crate) fn garbage(len: usize, seed: u64, kind: GarbageKind) -> Vec<u8> {
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
    let reply_timeout = ctx.opts().reply_timeout;
    let quiet = ctx.grading.quiet_gap;
    let first_byte = ctx.grading.scale(FIRST_BYTE_WAIT);
    match step {
        // The loader keeps client-mode steps out of agent cases.
        Step::Await(_) | Step::Reply(_) => Err(StepError::Harness(FailureKind::Harness, "a client-mode step in an agent case".into())),
        Step::Send(s) => send(ctx, s).await,
        Step::Batch(sends) => {
            let mut bytes = Vec::new();
            let mut pending = Vec::new();
            for s in sends {
                let (b, p) = request::build(s, ctx.opts());
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
            // worked through it (output quiet for the quiet gap).
            // The agent may answer each garbage byte with an error line: on an
            // agent that writes slowly, the full length would take minutes to
            // answer. Keep the answer to a few seconds of its output.
            let len = g.len.min(ctx.grading.garbage_cap());
            if len < g.len {
                ctx.session.transcript().event(Event::Note { text: format!("garbage cut to {len} of {} bytes: the agent writes about {} bytes/s", g.len, ctx.grading.output_rate() as u64) });
            }
            let bytes = garbage(len, g.seed, g.kind);
            // The agent may be busy for a while with each chunk (qemu-ga
            // writes an error line per stray byte, and takes no input while
            // it writes them): as long as the drain after it may take,
            // still bounded.
            let drain_cap = ctx.grading.scale(Duration::from_secs(3));
            let send_timeout = (ctx.opts().send_timeout * 4).max(drain_cap);
            let mut dropped = 0;
            for piece in bytes.chunks(16 * 1024) {
                let conn = ctx.session.conn().map_err(harness)?;
                match conn.send_discarding(piece, Instant::now() + send_timeout).await {
                    Ok(n) => dropped += n,
                    Err(e) => return Err(send_failed(ctx, e)),
                }
            }
            let conn = ctx.session.conn().map_err(harness)?;
            dropped += conn.drain(quiet, Instant::now() + drain_cap).await.map_err(harness)?;
            conn.transcript().event(Event::Note { text: format!("dropped {dropped} byte(s) of agent output during and after the garbage") });
            Ok(())
        }
        Step::Abandon(a) => {
            let conn = ctx.session.conn().map_err(harness)?;
            wait_for_bytes(conn, a.after, reply_timeout, first_byte, quiet).await.map_err(harness)?;
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
                wait_for_bytes(conn, have + after, reply_timeout, first_byte, quiet).await.map_err(harness)?;
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
            ctx.session.start_agent().await.map_err(|e| StepError::Violation {
                kind: FailureKind::StartupFailed,
                expected: "the agent restarts".into(),
                actual: e.to_string(),
                must: true,
                at_most: None,
            })?;
            ctx.pending.clear();
            ctx.killed = false;
            ctx.restarted = true;
            Ok(())
        }
        Step::Reconnect(_) => {
            ctx.session.reconnect().await.map_err(|e| violation(FailureKind::AgentGone, "the agent accepts a new connection", e.to_string()))?;
            ctx.pending.clear();
            Ok(())
        }
        Step::Inject(bytes) => {
            ctx.session.conn().map_err(harness)?.inject(&bytes.0);
            Ok(())
        }
        Step::Expect(e) => expect(ctx, e).await,
        Step::ExpectSilence(s) => {
            let until = Instant::now() + Duration::from_millis(s.ms);
            let skip_duplicate = ctx.grading.relaxed(ctx.case, Capability::OneReply) && !ctx.last_reply.is_empty();
            let last = ctx.last_reply.clone();
            let conn = ctx.session.conn().map_err(harness)?;
            let mut skipped = false;
            loop {
                match observe::silence(conn, until).await {
                    Ok(()) => return Ok(()),
                    Err(bytes) => {
                        // An agent found to answer twice: its second copy of
                        // the last reply is graded by the one-reply cases.
                        let rest = |c: &crate::connection::Connection| {
                            let text = c.buffered();
                            let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
                            text[start..].to_vec()
                        };
                        // A copy still arriving: wait for the rest of it.
                        while skip_duplicate && !skipped && rest(conn).len() < last.len() && last.starts_with(&rest(conn)) {
                            match conn.fill(until).await {
                                Ok(crate::connection::Fill::Data(_)) => {}
                                _ => break,
                            }
                        }
                        let dup = skip_duplicate && !skipped && rest(conn).starts_with(&last);
                        if dup {
                            let start = conn.buffered().iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
                            conn.consume(start + last.len());
                            skipped = true;
                            continue;
                        }
                        return Err(violation(FailureKind::UnexpectedOutput, format!("nothing for {} ms", s.ms), format!("received {}", crate::transcript::escape_bytes(&bytes))));
                    }
                }
            }
        }
        Step::Resync(rs) => {
            let opts = ctx.opts().clone();
            let mut policy = opts.resync.clone();
            if let Some(ms) = rs.budget_ms {
                policy.budget = ctx.grading.scale(Duration::from_millis(ms));
            }
            // Start small: the step may follow a restart.
            policy.first_attempt = Duration::from_millis(1);
            policy.max_attempt = policy.max_attempt.max(Duration::from_millis(100));
            let conn = ctx.session.conn().map_err(harness)?;
            resync(conn, &policy, &opts).await.map_err(|e| StepError::Violation {
                kind: FailureKind::ResyncFailed,
                expected: "the reference client resyncs through guest-sync-delimited within its budget".into(),
                actual: e.to_string(),
                must: true,
                at_most: None,
            })?;
            if ctx.grading.relaxed(ctx.case, Capability::OneReply) {
                // The second copy of the sync reply is not the next reply.
                let _ = conn.drain(quiet, Instant::now() + quiet * 10).await;
            }
            ctx.pending.clear();
            Ok(())
        }
        Step::Pause(p) => {
            pause(Duration::from_millis(p.ms)).await;
            Ok(())
        }
        Step::Repeat(r) => {
            let began = Instant::now();
            let budget = r.budget_ms.map(|ms| ctx.grading.scale(Duration::from_millis(ms)));
            for i in 0..r.times {
                if i > 0 && budget.is_some_and(|b| began.elapsed() >= b) {
                    ctx.session.transcript().event(Event::Note { text: format!("repeat: {i} of {} rounds within its budget; the rest skipped", r.times) });
                    break;
                }
                run_steps(ctx, &r.steps).await?;
            }
            Ok(())
        }
    }
}

async fn send(ctx: &mut Ctx<'_>, s: &Send) -> Result<(), StepError> {
    let (bytes, pending) = request::build(s, ctx.opts());
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

/// A check that did not hold: the defect's kind, what was seen, and a cap
/// on the outcome (see [`StepError::Violation`]).
struct Miss {
    kind: FailureKind,
    actual: String,
    at_most: Option<Outcome>,
}

fn miss(kind: FailureKind, actual: impl Into<String>) -> Miss {
    Miss { kind, actual: actual.into(), at_most: None }
}

async fn expect(ctx: &mut Ctx<'_>, e: &Expect) -> Result<(), StepError> {
    let within = e.within_ms.map_or(ctx.opts().reply_timeout, |ms| ctx.grading.scale(Duration::from_millis(ms)));
    let idle = ctx.opts().idle_timeout;
    let cap = ctx.opts().max_reply_wait();
    let max_len = ctx.opts().max_reply_len;
    for n in 0..e.count {
        let pending = ctx.pending.pop_front();
        let want = describe_expectation(e, pending.as_ref());
        let which = if e.count > 1 { format!(" (reply {} of {})", n + 1, e.count) } else { String::new() };
        let conn = ctx.session.conn().map_err(harness)?;
        let deadline = crate::client::Deadline::new(within, idle, cap.max(within));
        let mut skipped = 0;
        let o = loop {
            let o = match observe::next_reply(conn, deadline, max_len).await {
                Ok(o) => o,
                Err(why) => {
                    let kind = match &why {
                        observe::NoReply::Timeout { partial } if partial.iter().all(u8::is_ascii_whitespace) => {
                            if pending.as_ref().is_some_and(|p| !p.newline) {
                                FailureKind::NoReplyWithoutNewline
                            } else {
                                FailureKind::NoReply
                            }
                        }
                        observe::NoReply::Timeout { .. } => FailureKind::PartialReply,
                        observe::NoReply::Closed { .. } => FailureKind::AgentGone,
                        observe::NoReply::Garbage { bytes } if e.delimited && bytes.ends_with(&[0xC3, 0xBF]) => FailureKind::Utf8Sentinel,
                        observe::NoReply::Garbage { .. } => FailureKind::GarbageOutput,
                        observe::NoReply::Interrupted { .. } => FailureKind::StraySentinel,
                        observe::NoReply::TooLong => FailureKind::MalformedReply,
                        observe::NoReply::Io(_) => FailureKind::Harness,
                    };
                    return Err(violation(kind, format!("{want}{which}"), why.to_string()));
                }
            };
            // Only when a return is expected: an error reply without an id
            // is then the agent's (legal) answer to our 0xFF, not ours. (An
            // agent found to omit the error class: any error object.)
            let id_less_error = match &o.reply {
                Ok(Reply::Error { id: None, .. }) => true,
                Err(_) if ctx.grading.relaxed(ctx.case, Capability::ErrorClass) => matches!(Reply::lenient_error(&o.text), Some(Reply::Error { id: None, .. })),
                _ => false,
            };
            let tolerable = e.allow_errors_before && e.return_.is_some() && skipped < 8 && id_less_error;
            // An agent found to send each reply twice: outside the cases
            // about it, the second copy is skipped.
            let known_duplicate = ctx.grading.relaxed(ctx.case, Capability::OneReply) && skipped < 8 && !ctx.last_reply.is_empty() && o.text == ctx.last_reply;
            if tolerable || known_duplicate {
                skipped += 1;
                continue;
            }
            ctx.last_reply = o.text.clone();
            break o;
        };
        let mut result = check(ctx, e, pending.as_ref(), &o);
        if result.is_ok() && e.line {
            let conn = ctx.session.conn().map_err(harness)?;
            result = line_terminated(conn, &o, deadline.at()).await;
        }
        if let Some(id) = o.reply.as_ref().ok().and_then(|r| r.id().cloned()) {
            ctx.answered.push_back(id);
            if ctx.answered.len() > 64 {
                ctx.answered.pop_front();
            }
        }
        if let Err(m) = result {
            let reply_id = o.reply.as_ref().ok().and_then(|r| r.id().cloned());
            // A reply that answers a later request means the ones between
            // were lost: say so, it is the finding.
            let later = reply_id.as_ref().and_then(|rid| ctx.pending.iter().position(|p| p.id.as_ref().is_some_and(|id| ids_equal(id, rid))));
            // A reply to a request already answered is a duplicate.
            let earlier = reply_id.as_ref().is_some_and(|rid| {
                let n = ctx.answered.len();
                ctx.answered.iter().take(n.saturating_sub(1)).any(|a| ids_equal(a, rid))
            });
            let (kind, actual) = match (later, earlier) {
                (Some(k), _) => (
                    FailureKind::RepliesLost,
                    format!("the reply to request {} of {}: {} repl{} lost ({})", n + k + 2, e.count.max(n + k + 2), k + 1, if k == 0 { "y" } else { "ies" }, m.actual),
                ),
                (None, true) => (FailureKind::DuplicateReply, format!("a second reply to a request already answered: {}", describe_reply(&o))),
                (None, false) => (m.kind, m.actual),
            };
            return Err(StepError::Violation { kind, expected: format!("{want}{which}"), actual, must: false, at_most: m.at_most });
        }
    }
    Ok(())
}

/// A reply checked against the QGA schema ([`crate::schema`]): every
/// violation is listed, a member the schema lacks is NON-STRICT, a command
/// the schema version does not know is INFO, and a valid error reply (the
/// command failed on this machine) is INFO.
/// `agent_newer`: the agent's version is newer than the schema's, so a
/// member the schema lacks may be one the agent's QEMU added: INFO, not
/// NON-STRICT.
fn check_schema(command: &str, reply: &Reply, got: &str, agent_newer: bool) -> Result<(), Miss> {
    use crate::schema::{validate, Kind, Schema, SCHEMA_VERSION};
    let schema = Schema::embedded();
    let info = |kind, actual: String| Miss { kind, actual, at_most: Some(Outcome::Info) };
    match reply {
        Reply::Error { class, desc, .. } => {
            if !QAPI_ERROR_CLASSES.contains(&class.as_str()) {
                return Err(miss(FailureKind::ErrorClassNotQapi, format!("error class {class}, which QAPI does not define: {got}")));
            }
            Err(info(FailureKind::CommandFailedHere, format!("{command} failed here ({class}: {})", crate::transcript::escape_bytes(desc.as_bytes()))))
        }
        Reply::Return { value, .. } => {
            let Some(def) = schema.commands.get(command) else {
                return Err(info(FailureKind::NotInSchema, format!("{command} is not in schema version {SCHEMA_VERSION}; its reply was not checked: {got}")));
            };
            let Some(ty) = &def.returns else {
                // A command that returns nothing answers `{}`.
                return match value.as_object() {
                    Some(m) if m.is_empty() => Ok(()),
                    _ => Err(miss(FailureKind::SchemaViolation, format!("return: expected {{}} ({command} returns nothing), got {} ({SCHEMA_VERSION})", value))),
                };
            };
            let violations = validate(schema, value, ty, "return");
            let (extra, hard): (Vec<_>, Vec<_>) = violations.iter().partition(|v| v.kind == Kind::Extra);
            let list = |vs: &[&crate::schema::Violation]| {
                let shown: Vec<String> = vs.iter().take(5).map(|v| v.to_string()).collect();
                let more = if vs.len() > 5 { format!(" (and {} more)", vs.len() - 5) } else { String::new() };
                format!("{}{more}", shown.join("; "))
            };
            if !hard.is_empty() {
                return Err(miss(FailureKind::SchemaViolation, format!("{} violation(s): {}", hard.len(), list(&hard))));
            }
            if !extra.is_empty() && agent_newer {
                return Err(info(FailureKind::NotInSchema, format!("{} member(s) not in schema version {SCHEMA_VERSION}, which is older than the agent: {}", extra.len(), list(&extra))));
            }
            if !extra.is_empty() {
                return Err(Miss {
                    kind: FailureKind::SchemaExtraMember,
                    actual: format!("{} member(s) the schema does not have: {}", extra.len(), list(&extra)),
                    at_most: Some(Outcome::NonStrict),
                });
            }
            Ok(())
        }
    }
}

/// The reply was one line: no newline inside, and a newline after it with
/// at most spaces, tabs or CR between (libvirt splits replies on `\n`).
async fn line_terminated(conn: &mut crate::connection::Connection, o: &observe::Observed, deadline: Instant) -> Result<(), Miss> {
    if o.text.contains(&b'\n') {
        return Err(miss(FailureKind::MultiLineReply, format!("a reply spread over several lines: {}", describe_reply(o))));
    }
    loop {
        let buf = conn.buffered();
        match buf.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
            Some(i) if buf[i] == b'\n' => return Ok(()),
            Some(i) => {
                return Err(miss(
                    FailureKind::NoNewline,
                    format!("no newline after the reply {}; next came {}", describe_reply(o), crate::transcript::escape_bytes(&buf[i..buf.len().min(i + 40)])),
                ))
            }
            None => {}
        }
        match conn.fill(deadline).await {
            Ok(crate::connection::Fill::Data(_)) => {}
            _ => return Err(miss(FailureKind::NoNewline, format!("no newline after the reply {}", describe_reply(o)))),
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

/// The failure kind for an id that came back as `how`.
fn id_kind(how: IdMatch) -> FailureKind {
    match how {
        IdMatch::Exact => FailureKind::Other,
        IdMatch::FloatForm => FailureKind::IdFloatForm,
        IdMatch::Rounded => FailureKind::IdRounded,
        IdMatch::Truncated32 => FailureKind::IdTruncated,
        IdMatch::Stringified => FailureKind::IdStringified,
        IdMatch::Missing => FailureKind::IdNotEchoed,
        IdMatch::Changed => FailureKind::IdChanged,
    }
}

/// The id policy for one echoed value (a sync return or an `id` member):
/// equal is fine; the same value in float form is NON-STRICT (unless the
/// start-up probe already reported it and the case is not about ids);
/// anything else says how it changed.
fn check_id(ctx: &Ctx<'_>, what: &str, sent: i64, got: Option<&serde_json::Value>, seen: &str, about: Capability) -> Result<(), Miss> {
    let how = compare_id(sent, got);
    match how {
        IdMatch::Exact => Ok(()),
        IdMatch::FloatForm if ctx.opts().mode.accept_float_ids && !Grading::tests(ctx.case, about) => Ok(()),
        IdMatch::FloatForm => Err(Miss {
            kind: FailureKind::IdFloatForm,
            actual: format!("{what} {sent} came back as {}: {} ({seen})", got.map_or("nothing".into(), |v| v.to_string()), how.describe()),
            at_most: Some(Outcome::NonStrict),
        }),
        _ => Err(miss(id_kind(how), format!("{what} {sent} came back as {}: {} ({seen})", got.map_or("nothing".into(), |v| v.to_string()), how.describe()))),
    }
}

fn check(ctx: &mut Ctx<'_>, e: &Expect, p: Option<&Pending>, o: &observe::Observed) -> Result<(), Miss> {
    let got = || describe_reply(o);
    // An agent found to send error replies without a class: cases not
    // about errors take any error object as an error.
    let lenient = match &o.reply {
        Err(_) if ctx.grading.relaxed(ctx.case, Capability::ErrorClass) => Reply::lenient_error(&o.text),
        _ => None,
    };
    let reply = match (&o.reply, &lenient) {
        (Ok(r), _) => r,
        (Err(_), Some(r)) => r,
        (Err(why), None) => {
            let kind = if why.contains("class") {
                FailureKind::ErrorWithoutClass
            } else if why.contains("both") {
                FailureKind::ReturnAndError
            } else {
                FailureKind::MalformedReply
            };
            return Err(miss(kind, format!("malformed reply {}: {why}", got())));
        }
    };
    if e.delimited && !o.is_delimited() {
        let conn = ctx.session.conn().ok();
        let next = conn.map(|c| c.buffered().iter().find(|b| !matches!(b, b' ' | b'\t')).copied()).unwrap_or(None);
        let kind = if o.before.ends_with(&[0xC3, 0xBF]) {
            FailureKind::Utf8Sentinel
        } else if o.before.contains(&0xFF) {
            FailureKind::MisplacedSentinel
        } else if next == Some(0xFF) {
            FailureKind::LateSentinel
        } else {
            FailureKind::NoSentinel
        };
        return Err(miss(kind, format!("not delimited: {}", got())));
    }
    let allowed_ff = usize::from(e.delimited);
    // An agent found to put 0xFF on every reply: only the cases about
    // sentinels grade that.
    let leaked_ff_only = ctx.grading.relaxed(ctx.case, Capability::CleanReplies) && !o.text.iter().any(|&b| b == 0xFF || b == 0xFE);
    if o.stray_flush_bytes() > allowed_ff && !leaked_ff_only {
        return Err(miss(FailureKind::StraySentinel, format!("raw 0xFF/0xFE bytes where none may be: {}", got())));
    }
    if e.schema {
        let newer = ctx.grading.profile.version.as_deref().is_some_and(crate::schema::newer_than_schema);
        return check_schema(p.map_or("", |p| p.command.as_str()), reply, &got(), newer);
    }
    let bindings = pattern::Bindings { sync_id: p.and_then(|p| p.sync_id) };
    match (reply, &e.return_, &e.error) {
        (Reply::Return { value, .. }, Some(pat), _) => {
            if let (Some("$sync"), Some(sent)) = (pat.as_str(), p.and_then(|p| p.sync_id)) {
                check_id(ctx, "sync id", sent, Some(value), &got(), Capability::ExactIds)?;
            } else if p.is_some_and(|p| p.command == "guest-ping") && ctx.grading.relaxed(ctx.case, Capability::EmptyPing) {
                // An agent found to return something else than {} for
                // guest-ping: the info cases grade that value, not every
                // case that uses a ping as its plain request.
            } else if let (Some(sent), true) = (pat.as_i64(), value.is_number()) {
                // An explicit id the case sent (sync/3's i64::MAX, say).
                check_id(ctx, "sync id", sent, Some(value), &got(), Capability::ExactIds)?;
            } else {
                pattern::matches(pat, value, &bindings).map_err(|m| miss(FailureKind::WrongReturn, format!("{} ({m})", got())))?;
            }
        }
        (Reply::Error { class, .. }, _, Some(want)) => {
            if ctx.grading.relaxed(ctx.case, Capability::ErrorClass) {
                // Reported once by the probe; the errors cases grade it.
            } else if !QAPI_ERROR_CLASSES.contains(&class.as_str()) {
                return Err(miss(FailureKind::ErrorClassNotQapi, format!("error class {class}, which QAPI does not define: {}", got())));
            }
            if want != "$any" && class != want {
                return Err(miss(FailureKind::WrongErrorClass, format!("error class {class}: {}", got())));
            }
        }
        (Reply::Error { .. }, Some(_), None) => return Err(miss(FailureKind::UnexpectedError, got())),
        (Reply::Return { .. }, None, Some(_)) => return Err(miss(FailureKind::UnexpectedReturn, got())),
        _ => return Err(miss(FailureKind::Other, got())),
    }
    match e.id {
        IdCheck::Any => {}
        IdCheck::Absent => {
            if reply.id().is_some() {
                return Err(miss(FailureKind::IdUnexpected, format!("an id where none was sent: {}", got())));
            }
        }
        IdCheck::Echo => match (p.and_then(|p| p.id.as_ref()), reply.id()) {
            (None, None) => {}
            (None, Some(_)) => return Err(miss(FailureKind::IdUnexpected, format!("an id where none was sent: {}", got()))),
            // An agent found not to echo ids (or to change them): replies
            // are matched by order, and only the cases about ids grade it.
            (Some(_), _) if ctx.grading.relaxed(ctx.case, Capability::IdEcho) => {}
            (Some(sent), echoed) => match sent.as_i64() {
                Some(n) if !ctx.opts().string_ids || !sent.is_string() => {
                    if !(ctx.grading.relaxed(ctx.case, Capability::IdEcho) && echoed.is_some_and(|v| v.is_string()) && ctx.opts().string_ids) {
                        check_id(ctx, "request id", n, echoed, &got(), Capability::IdEcho)?;
                    }
                }
                _ => {
                    if !echoed.is_some_and(|v| ids_equal(sent, v)) {
                        let kind = if echoed.is_none() { FailureKind::IdNotEchoed } else { FailureKind::IdChanged };
                        return Err(miss(kind, format!("expected id {sent}, got {}: {}", echoed.map_or("no id".into(), |v| v.to_string()), got())));
                    }
                }
            },
        },
    }
    Ok(())
}

