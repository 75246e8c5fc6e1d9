//! A whole run against one agent: start it (the start-up probe profiles
//! it), run every case on the one session, renew the channel where a case
//! left it unusable, and turn a failed start into one error for the run.

use super::case::run_case;
use super::grading::Grading;
use crate::case::step::GarbageKind;
use crate::case::Case;
use crate::client::Profile;
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::{Event, Transcript};
use crate::verdict::{skeleton, Failure, FailureKind, Outcome, RunResult, Stage, StartupError};
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
        hint: crate::agent::template::startup_hint(template, transport, &stderr),
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

/// Random bytes (all 256 values, as the garbage cases send) a guest agent
/// answers before the cases, to measure how fast it writes error floods.
const GARBAGE_PROBE: usize = 1024;

/// VM transports: how long the agent takes to answer [`GARBAGE_PROBE`]
/// random bytes, into the profile's pace; the garbage cases' cap follows it
/// (the grading's garbage cap). An emulated CPU writes error floods far more
/// slowly than its guest-info reply suggests.
async fn measure_garbage_answer(session: &mut Session, profile: &mut Profile) {
    let garbage = GarbageKind::Any.bytes(GARBAGE_PROBE, 0x9a4ba6e);
    let client = session.client().clone();
    let Ok(conn) = session.conn() else { return };
    if let Some(us) = crate::client::diagnose::measure_garbage_answer(conn, &client, &garbage).await {
        profile.pace.garbage_in = GARBAGE_PROBE as u64;
        profile.pace.garbage_us = us;
        conn.transcript().event(Event::Note { text: format!("{GARBAGE_PROBE} bytes of garbage answered in {us} µs") });
    }
}
