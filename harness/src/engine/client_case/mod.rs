//! Client cases: the engine's second composition. The agent session is the
//! same one agent cases use; in front of it a [`Pump`] gives the client
//! under test a port of its own, and the case's steps are faults on the
//! agent's side of the channel. Results are the same [`CaseResult`]s, with
//! the client's grade beside the outcome, so verdicts, findings, baselines
//! and every report format work unchanged.
//!
//! One case: open a fresh client port; run the steps before the first
//! `await` (stale bytes "before the first byte", a partial request an
//! earlier client left in the agent); start the client; run the rest of
//! the steps while the pump forwards; wait for the client to exit (or kill
//! it at the deadline: hung); grade from its report and the pump's logs.
//!
//! - [`steps`]: the client-mode step interpreter (`await`, `reply`, faults).
//! - [`habits`]: the client's habits over the whole run.

mod habits;
mod steps;

use super::run::start_or_fail;
use super::EngineOptions;
use crate::case::step::Step;
use crate::case::{Case, Goal, Role};
use crate::proxy::contract::{ClientRun, ClientTemplate, ReportLine};
use crate::proxy::grade::{grade, Evidence};
use crate::proxy::{ClientPort, Pump};
use crate::session::{Session, SessionConfig};
use crate::transcript::{Event, Transcript};
use crate::transport::TransportKind;
use crate::verdict::{skeleton, CaseResult, ClientGrade, ClientRunInfo, Failure, FailureKind, Level, Outcome, RunResult, Stage};
use habits::run_habits;
use serde_json::Value;
use steps::{Ctx, Flow};
use std::time::Duration;
use tokio::time::Instant;

/// Everything a client run needs beyond the cases.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client: ClientTemplate,
    /// The port the client is given: unix-listen or pty.
    pub port: TransportKind,
    /// The agent behind the harness, and its channel. Its budgets are the
    /// run's, the client's own included (`client_timeout`, `client_startup`).
    pub agent: SessionConfig,
}

impl ClientConfig {
    /// `{timeout_ms}`: the client's own wait for one reply.
    pub fn client_timeout(&self) -> Duration {
        self.agent.budgets.client_timeout
    }

    /// Time allowed for the client program to start (interpreters are slow).
    pub fn client_startup(&self) -> Duration {
        self.agent.budgets.client_startup
    }
}

/// A case's budget: the client's start-up, then for each command (and the
/// sync) room for a timeout and a retry, and the case's own pauses. Not
/// paced to the agent behind: every term is a limit the client or the case
/// sets itself (a client whose agent is slow times out on its own clock, and
/// reports that).
pub fn case_budget(case: &Case, cfg: &ClientConfig) -> Duration {
    if let Some(ms) = case.timeout_ms {
        return Duration::from_millis(ms) + cfg.client_startup();
    }
    let mut paused = Duration::ZERO;
    Step::visit(&case.steps, &mut |s| {
        if let Step::Pause(p) = s {
            paused += Duration::from_millis(p.ms);
        }
        if let Step::Reply(r) = s {
            paused += Duration::from_millis(r.delay_ms.unwrap_or(0));
        }
    });
    let commands = case.client_job().len() as u32 + 1;
    cfg.client_startup() + paused + cfg.client_timeout() * 3 * commands
}

/// Run client `cases` against one client program, with one agent behind.
pub async fn run_client_cases(cfg: ClientConfig, cases: &[Case], transcript: Transcript, eo: &EngineOptions) -> RunResult {
    let began = Instant::now();
    let mut agent_cfg = cfg.agent.clone();
    agent_cfg.client.ids = crate::client::Ids::seeded(eo.seed);
    let mut run = RunResult::begin(Role::Client, cfg.client.to_string(), cfg.port.to_string(), eo.seed);
    run.client = Some(ClientRunInfo {
        agent: agent_cfg.template.to_string(),
        agent_transport: agent_cfg.transport.to_string(),
        timeout_ms: cfg.client_timeout().as_millis() as u64,
        habits: Vec::new(),
        sync_id_bits: None,
    });
    run.results.reserve(cases.len());
    run.budgets = Some(agent_cfg.budgets);
    let Some((mut session, profile)) = start_or_fail(&mut run, cases, agent_cfg, &transcript, began, |c| Session::start(c, transcript.clone())).await else {
        return run;
    };
    run.started(&profile, session.vm_info());
    transcript.reset();
    // Sync ids the client used so far: `$previous-id`, and the fresh-ids check.
    let mut earlier: Vec<Value> = Vec::new();
    // Whether the client's last sync (in an earlier case) was plain guest-sync.
    let mut plain_sync = false;
    for case in cases {
        let (result, back) = run_client_case(session, case, &cfg, run.supported_commands.as_deref(), &earlier, plain_sync, eo).await;
        if let Some(c) = &result.client {
            if c.habits.iter().any(|h| h.kind == FailureKind::ClientPlainSync) {
                plain_sync = true;
            } else if !c.sync_ids.is_empty() {
                plain_sync = false;
            }
            // Most recent first: `$previous-id` is the last conversation's.
            for id in c.sync_ids.iter().rev() {
                earlier.insert(0, id.clone());
            }
            earlier.truncate(4096);
        }
        session = back;
        run.results.push(result);
        transcript.reset();
        // The next client meets an agent with nothing pending: a case's
        // leftovers (a partial request, a held reply) are the case's own.
        if session.wait_ready().await.is_err() {
            if let Err(e) = session.renew().await {
                transcript.event(Event::Note { text: format!("could not renew the agent: {e}") });
            }
        }
        if let Ok(conn) = session.conn() {
            crate::client::stale::drop_leftovers(conn, None).await;
        }
        transcript.reset();
    }
    session.shutdown().await;
    if let Some(info) = run.client.as_mut() {
        (info.habits, info.sync_id_bits) = run_habits(&run.results);
    }
    run.elapsed = began.elapsed();
    run
}

/// Run one client case; gives the agent session back.
pub async fn run_client_case(
    session: Session,
    case: &Case,
    cfg: &ClientConfig,
    supported: Option<&[String]>,
    earlier_ids: &[Value],
    plain_sync_before: bool,
    eo: &EngineOptions,
) -> (CaseResult, Session) {
    let mut r = skeleton(case);
    let transcript = session.transcript().clone();
    let from = transcript.mark();
    let began = Instant::now();
    let fail_at = |kind: FailureKind, expected: &str, actual: String, to: u64| Failure {
        kind,
        stage: Stage::Steps,
        requirement: case.requirement.clone(),
        expected: expected.into(),
        actual,
        transcript: (from, to),
        secondary: Vec::new(),
    };
    let job = case.client_job();
    if case.role != Role::Client {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(fail_at(FailureKind::NotApplicable, "a client case", "an agent case: run it with `run`".into(), from));
        return (r, session);
    }
    if let Some(missing) = supported.and_then(|s| job.iter().chain(&case.needs).find(|n| !s.contains(n))) {
        r.outcome = Outcome::Unsupported;
        r.failure = Some(fail_at(FailureKind::NotApplicable, "the case applies", format!("the agent behind does not offer {missing}"), from));
        return (r, session);
    }
    transcript.event(Event::Note { text: format!("case {}: {}", case.id, case.title) });
    let port = match ClientPort::open(cfg.port) {
        Ok(p) => p,
        Err(e) => {
            r.outcome = Outcome::Error;
            r.failure = Some(fail_at(FailureKind::Harness, "the harness opens the client's port", e.to_string(), transcript.mark()));
            return (r, session);
        }
    };
    let pump = match Pump::new(port, session, transcript.clone(), cfg.client_timeout()) {
        Ok(p) => p,
        Err(e) => panic!("a fresh client port always yields its link: {e}"),
    };
    let seed = eo.seed ^ crate::client::Ids::seeded(0).for_case(eo.seed, &case.id).sync_id() as u64;
    let budget = case_budget(case, cfg);
    let mut ctx = Ctx::new(pump, Instant::now() + budget, earlier_ids.first().cloned(), plain_sync_before, seed, case);
    // Steps before the first await set the scene before the client exists.
    let split = case.steps.iter().position(|s| matches!(s, Step::Await(_))).unwrap_or(case.steps.len());
    let (before, after) = case.steps.split_at(split);
    ctx.steps(before).await;
    let argv = cfg.client.expand(ctx.pump.client_path(), cfg.client_timeout(), &job);
    match ClientRun::start(argv, transcript.clone()) {
        Ok(run) => ctx.run = Some(run),
        Err(e) => {
            r.outcome = Outcome::Error;
            r.failure = Some(fail_at(FailureKind::Harness, "the client under test starts", e.to_string(), transcript.mark()));
            if eo.keep_transcripts {
                r.transcript = transcript.entries(from, None);
            }
            r.elapsed = began.elapsed();
            return (r, ctx.pump.into_session());
        }
    }
    let mut flow = ctx.steps(after).await;
    if flow == Flow::Reached {
        let deadline = ctx.deadline;
        flow = ctx.pump_until(deadline, &|_| false).await;
    }
    let hung = flow == Flow::Deadline;
    let mut run = ctx.run.take().expect("started");
    if hung {
        transcript.event(Event::Timeout { waiting_for: format!("the client to finish case {} within {budget:?}", case.id) });
    }
    // Whatever is left of the client's group goes (a fork that outlived it).
    let exit = run.process.exit_status().map(str::to_owned);
    run.process.kill().await;
    // Lines it wrote just before it exited (a client whose fork kept its
    // stdout open has had its group killed: the pipe closes now).
    while !run.stdout_closed {
        let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(20), run.next_line()).await else { break };
        let seq = transcript.event(crate::proxy::contract::note_for(&line.1));
        ctx.lines.push(ReportLine { at: line.0, seq, text: line.1 });
    }
    ctx.pump.settle();
    let to = transcript.mark();
    let graded = grade(&Evidence {
        job: &job,
        lines: &ctx.lines,
        pump: &ctx.pump,
        exit: exit.clone(),
        hung,
        client_pid: run.process.pid(),
        client_timeout: cfg.client_timeout(),
        earlier_ids,
        may_fail: if case.fault_costs_a_reply() { case.faulted_command() } else { None },
    });
    r.outcome = outcome_for(graded.detail.grade, case.goal.unwrap_or(Goal::Recover), case.level);
    if let Some((kind, actual)) = graded.problem.clone() {
        if r.outcome != Outcome::Pass {
            let expected = match case.goal {
                Some(Goal::Detect) => "no command reports a result that is not the reply to its request (a clean error is fine)",
                _ => "every job command reports the reply to its own request (after the client's own retry if need be)",
            };
            r.failure = Some(fail_at(kind, expected, actual, to));
        }
    }
    // The case's wire-level checks: a habit it names, seen here, fails it.
    if r.outcome == Outcome::Pass {
        let failed = case.checks.iter().find_map(|&c| graded.detail.habits.iter().find(|h| FailureKind::of_check(c) == h.kind).map(|h| (c, h)));
        if let Some((check, h)) = failed {
            r.outcome = Outcome::for_violation(case.level);
            r.failure = Some(fail_at(h.kind, check.expectation(), h.detail.clone(), to));
        }
    }
    r.client = Some(graded.detail);
    r.elapsed = began.elapsed();
    if eo.keep_transcripts {
        r.transcript = transcript.entries(from, None);
    }
    (r, ctx.pump.into_session())
}

/// A client grade as a case outcome, by the case's goal and level.
pub fn outcome_for(grade: ClientGrade, goal: Goal, level: Level) -> Outcome {
    let violated = || Outcome::for_violation(level);
    match grade {
        ClientGrade::Recovered | ClientGrade::RecoveredAfterRetry | ClientGrade::RecoveredAfterError => Outcome::Pass,
        ClientGrade::Invalid => Outcome::Error,
        // Wrong data is the worst grade: WRONG whatever the goal, unless the
        // case is only a SHOULD (a fault only a broken agent produces).
        ClientGrade::Wrong if level == Level::MUST => Outcome::Wrong,
        ClientGrade::Wrong => violated(),
        ClientGrade::Hung if level == Level::MUST => Outcome::Timeout,
        ClientGrade::Hung => violated(),
        ClientGrade::CleanError => match goal {
            Goal::Detect => Outcome::Pass,
            Goal::Recover => violated(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_map_to_outcomes() {
        assert_eq!(outcome_for(ClientGrade::Wrong, Goal::Recover, Level::MUST), Outcome::Wrong);
        assert_eq!(outcome_for(ClientGrade::Wrong, Goal::Detect, Level::SHOULD), Outcome::NonStrict);
        assert_eq!(outcome_for(ClientGrade::CleanError, Goal::Detect, Level::SHOULD), Outcome::Pass);
        assert_eq!(outcome_for(ClientGrade::CleanError, Goal::Recover, Level::MUST), Outcome::Fail);
        assert_eq!(outcome_for(ClientGrade::RecoveredAfterRetry, Goal::Recover, Level::MUST), Outcome::Pass);
        assert_eq!(outcome_for(ClientGrade::Hung, Goal::Recover, Level::MUST), Outcome::Timeout);
        assert_eq!(outcome_for(ClientGrade::Invalid, Goal::Recover, Level::MUST), Outcome::Error);
    }
}
