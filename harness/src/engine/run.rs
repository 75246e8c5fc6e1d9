//! A whole run against one agent: start it (the start-up probe profiles
//! it), run every case on the one session, renew the channel where a case
//! left it unusable, and turn a failed start into one error for the run.

use super::runner::AgentRunner;
use crate::case::Case;
use crate::session::{SessionConfig, SessionError};
use crate::transcript::{Event, Transcript};
use crate::verdict::{skeleton, Failure, FailureKind, Outcome, RunResult, Stage, StartupError};
use tokio::time::Instant;

/// How the engine runs (its time limits are the session's
/// [`crate::budget::Budgets`]).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Keep each case's transcript in the result.
    pub keep_transcripts: bool,
    /// Drives every random id (and nothing else is random): the same seed
    /// against the same agent sends the same requests.
    pub seed: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { keep_transcripts: true, seed: rand::random() }
    }
}

/// Run `cases` in order against one agent. The transcript is reset between
/// cases (each result carries its own part), so memory stays bounded.
pub async fn run_cases(config: SessionConfig, cases: &[Case], transcript: Transcript, eo: &EngineOptions) -> RunResult {
    let began = Instant::now();
    let mut run = RunResult::begin(crate::case::Role::Agent, config.template.to_string(), config.transport.to_string(), eo.seed);
    run.results.reserve(cases.len());
    run.budgets = Some(config.budgets);
    let Some(mut runner) = start_or_fail(&mut run, cases, config, &transcript, began, |c| AgentRunner::start(c, transcript.clone(), cases, eo, None)).await else {
        return run;
    };
    run.started(runner.profile(), runner.session().vm_info());
    for case in cases {
        let ran = runner.run(case).await;
        run.results.push(ran.result);
        // A fresh channel and agent for the next case, so one case's
        // leftovers cannot change another's outcome. If even that fails,
        // later cases say so.
        if ran.renew {
            if let Err(e) = runner.renew().await {
                transcript.event(Event::Note { text: format!("could not renew the channel: {e}") });
                transcript.reset();
            }
        }
    }
    runner.shutdown().await;
    run.elapsed = began.elapsed();
    run
}

/// Start the run's agent with `start` (given the session's config). If it
/// cannot start: the run's one start-up error ([`fail_startup`]), its
/// elapsed time, and None. Agent and client runs start the same way.
pub(crate) async fn start_or_fail<T, F>(run: &mut RunResult, cases: &[Case], config: SessionConfig, transcript: &Transcript, began: Instant, start: impl FnOnce(SessionConfig) -> F) -> Option<T>
where
    F: std::future::Future<Output = Result<T, SessionError>>,
{
    let start_mark = transcript.mark();
    let (transport, template) = (config.transport, config.template.clone());
    match start(config).await {
        Ok(started) => Some(started),
        Err(e) => {
            fail_startup(run, cases, e, &template, transport, transcript, start_mark);
            run.elapsed = began.elapsed();
            None
        }
    }
}

/// The finding a failed start is, when it is the agent's defect: it
/// started, then died or answered nothing usable. None when the harness
/// failed (it could not spawn the agent, open the channel or boot the
/// machine). The one place that tells the two apart: `run`, `client` and
/// `fuzz` gate on it.
pub fn startup_finding(e: &SessionError) -> Option<FailureKind> {
    match e {
        SessionError::Spawn(_) | SessionError::Transport { .. } | SessionError::NeedsPath | SessionError::NoAgent | SessionError::Vm(_) => None,
        SessionError::AgentExited { .. } => Some(FailureKind::AgentGone),
        SessionError::Connect { .. } | SessionError::NotReady { .. } => Some(FailureKind::StartupFailed),
    }
}

/// The agent could not be started: one startup error for the run. If that
/// is the agent's defect ([`startup_finding`]) every applicable case is
/// BLOCKED by it; if the harness failed, or the agent stood behind a client
/// under test (then it is the harness's own agent), every applicable case
/// is an ERROR.
pub(crate) fn fail_startup(
    run: &mut RunResult,
    cases: &[Case],
    e: SessionError,
    template: &crate::agent::AgentTemplate,
    transport: crate::transport::TransportKind,
    transcript: &Transcript,
    start_mark: u64,
) {
    let finding = startup_finding(&e).filter(|_| run.role.is_agent());
    let entries = transcript.entries(start_mark, None);
    let stderr: Vec<String> = entries
        .iter()
        .filter_map(|en| match &en.record {
            crate::transcript::Record::Event(Event::Stderr { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect();
    let err = StartupError {
        message: e.to_string(),
        stderr: stderr.join("\n"),
        hint: crate::agent::template::startup_hint(template, transport, &stderr),
        harness: finding.is_none(),
        finding,
        transcript: entries,
    };
    for case in cases {
        let mut r = skeleton(case);
        // Not applicable here whether or not the agent runs; else not run
        // for the run's one start-up message.
        let (outcome, kind, expected, actual) = match (case.not_applicable(transport), finding) {
            (Some(why), _) => (Outcome::Unsupported, FailureKind::NotApplicable, "the case applies", why),
            (None, Some(_)) => (Outcome::Blocked, FailureKind::Blocked, "the agent starts and answers a sync", format!("BLOCKED by the start: {}", err.message)),
            (None, None) => (Outcome::Error, FailureKind::StartupFailed, "the agent starts and answers a sync", err.message.clone()),
        };
        r.outcome = outcome;
        r.failure = Some(Failure {
            kind,
            stage: Stage::Start,
            requirement: case.requirement.clone(),
            expected: expected.into(),
            actual,
            transcript: (start_mark, start_mark),
            secondary: Vec::new(),
        });
        run.results.push(r);
    }
    run.startup_error = Some(err);
}
