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
        // Not applicable here whether or not the agent runs; else ERROR
        // with the run's one start-up message.
        let (outcome, kind, expected, actual) = match case.not_applicable(transport) {
            Some(why) => (Outcome::Unsupported, FailureKind::NotApplicable, "the case applies", why),
            None => (Outcome::Error, FailureKind::StartupFailed, "the agent starts and answers a sync", err.message.clone()),
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
