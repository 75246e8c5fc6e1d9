//! The agent fuzzer: random fault schedules against an agent, each run as
//! one case through an [`AgentRunner`] (so a schedule is graded as `run`
//! and `replay` grade its replay file), on the campaign that both fuzzers
//! share ([`super::campaign`]).

use super::campaign::{self, FuzzReport, Plan, Progress, Replay, Run, StartError, Verdict};
use super::strategy::{schedule, FaultKind, Schedule, ScheduleParams};
use crate::case::{Case, CaseFile};
use crate::engine::{AgentRunner, EngineOptions};
use crate::session::SessionConfig;
use crate::transcript::{Caps, Transcript};
use crate::verdict::{Level, RecoveryGrade};
use proptest::strategy::Strategy;
use std::path::PathBuf;
use std::time::Duration;

/// One fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    /// The agent, its channel and the budgets of the run (unpaced: the
    /// replay files' flags are built from them, so a replay waits as the
    /// fuzzer did).
    pub session: SessionConfig,
    /// Schedules to generate in all (shrinking runs come on top).
    pub schedules: u32,
    /// Drives the schedules and every id sent (a replay's `--seed`).
    pub seed: u64,
    pub jobs: usize,
    /// As [`Plan::shard`].
    pub shard: Option<crate::case::shard::Shard>,
    /// Run each schedule this many times; it fails if any run fails (for
    /// intermittent defects).
    pub repeat: u32,
    pub params: ScheduleParams,
    /// Where replay files go.
    pub out_dir: PathBuf,
    /// Time allowed for shrinking one failure (each shrinking step runs the
    /// schedule against the agent again).
    pub shrink_time: Duration,
    /// The command line that reproduces the run, for the replay files.
    pub command_line: String,
}

/// The case a schedule becomes.
pub fn schedule_case(schedule: &Schedule, id: &str, title: &str) -> Case {
    Case {
        id: id.into(),
        title: title.into(),
        level: Level::MUST,
        requirement: "After any fault schedule, the reference client resyncs through guest-sync-delimited and the next commands each get exactly their own reply.".into(),
        source: "qga/qapi-schema.json guest-sync-delimited; the mission's resync property (qga-harness fuzz)".into(),
        tags: vec!["fuzz".into()],
        needs: vec![],
        fresh_agent: false,
        channel: vec![],
        transports: vec![],
        timeout_ms: Some(10_000),
        role: Default::default(),
        job: vec![],
        goal: None,
        checks: vec![],
        steps: schedule.steps(),
    }
}

/// Fuzz: generate, run, shrink, write replay files. `progress` is updated
/// as schedules run.
pub fn fuzz(cfg: &FuzzConfig, progress: &Progress) -> FuzzReport {
    let plan = Plan {
        schedules: cfg.schedules,
        seed: cfg.seed,
        jobs: cfg.jobs,
        shard: cfg.shard,
        repeat: cfg.repeat,
        shrink_time: cfg.shrink_time,
        max_shrink_iters: 2048,
        tag: *b"qga-fuzz",
    };
    // Ids from the fuzz seed: the replay file's `--seed` repeats them.
    let eo = EngineOptions { keep_transcripts: false, seed: cfg.seed };
    campaign::run(&plan, &AgentFuzzer { cfg, eo }, progress)
}

/// Schedules against an agent; a job holds its runner, or none after the
/// agent could not be restarted (the next schedule starts one).
struct AgentFuzzer<'a> {
    cfg: &'a FuzzConfig,
    eo: EngineOptions,
}

impl AgentFuzzer<'_> {
    async fn start_runner(&self) -> Result<AgentRunner, StartError> {
        let t = Transcript::new(Caps { bytes: 256 * 1024, entries: 20_000 });
        // The one policy on whose fault a failed start is (`run`'s too).
        AgentRunner::start(self.cfg.session.clone(), t, &[], &self.eo, None).await.map_err(|e| match crate::engine::startup_finding(&e) {
            None => StartError::Harness(e.to_string()),
            Some(kind) => StartError::Failure(format!("FAIL: the agent does not start ({}): {e}", kind.code())),
        })
    }
}

impl campaign::Fuzzer for AgentFuzzer<'_> {
    type Schedule = Schedule;
    type Job = Option<AgentRunner>;

    fn strategy(&self) -> impl Strategy<Value = Schedule> {
        schedule(self.cfg.params.clone())
    }

    fn case(&self, s: &Schedule) -> Case {
        schedule_case(s, "fuzz/1", "fuzzed schedule")
    }

    fn faults(&self, s: &Schedule) -> Vec<FaultKind> {
        s.faults.iter().map(|f| f.kind).collect()
    }

    async fn start(&self) -> Result<Option<AgentRunner>, StartError> {
        self.start_runner().await.map(Some)
    }

    async fn run(&self, job: &mut Option<AgentRunner>, case: &Case) -> Run {
        if job.is_none() {
            match self.start_runner().await {
                Ok(r) => *job = Some(r),
                // The agent itself failed (it did not start or answer): a finding.
                Err(StartError::Failure(e)) => return Run::unjudged(Verdict::Fail(e)),
                Err(StartError::Harness(e)) => return Run::unjudged(Verdict::Harness(e)),
            }
        }
        let runner = job.as_mut().expect("just started");
        let r = runner.run(case).await.result;
        // The next schedule gets a fresh agent (on the same channel: stale
        // bytes there are part of what is being tested).
        if r.recovery.grade == RecoveryGrade::Wedged && runner.restart().await.is_err() {
            *job = None;
        }
        let verdict = if r.outcome.is_failing(false) {
            let f = r.failure.unwrap_or_else(|| crate::verdict::Failure {
                kind: Default::default(),
                stage: Default::default(),
                requirement: String::new(),
                expected: String::new(),
                actual: String::new(),
                transcript: (0, 0),
                secondary: Vec::new(),
            });
            Verdict::Fail(format!("{}: expected {}; got {}", r.outcome, f.expected, f.actual))
        } else {
            Verdict::Pass
        };
        Run { verdict, judged: true, resync_us: Some(r.recovery.resync_time.as_micros() as u64), bytes_discarded: r.recovery.bytes_discarded }
    }

    fn probe_findings(&self, job: &Option<AgentRunner>) -> Vec<crate::client::ProbeFinding> {
        job.as_ref().map_or(Vec::new(), |r| r.profile().findings.clone())
    }

    async fn stop(&self, job: Option<AgentRunner>) {
        if let Some(r) = job {
            r.shutdown().await;
        }
    }

    fn replay(&self, job: usize, schedule: &Schedule, reason: &str) -> Replay {
        let cfg = self.cfg;
        let path = cfg.out_dir.join(format!("fuzz-seed{}-job{job}.toml", cfg.seed));
        let title = format!("Fuzzed schedule, seed {} job {job}, shrunk to {} fault(s)", cfg.seed, schedule.faults.len());
        let file = CaseFile {
            section: "fuzz".into(),
            description: format!("Found by: {}\nFailure: {reason}", cfg.command_line),
            cases: vec![schedule_case(schedule, "fuzz/1", &title)],
        };
        // The budgets in effect and the id seed are part of what reproduces
        // a failure.
        let header = format!(
            "# Found by qga-harness fuzz (seed {}, job {job} of {}).\n# Reproduce: {}\n# Replay:    qga-harness replay {} --repeat {} {} --seed {} (same --agent and --transport)\n# Failure:   {}\n\n",
            cfg.seed,
            cfg.jobs,
            cfg.command_line,
            path.display(),
            cfg.repeat.max(1),
            cfg.session.budgets.flags(),
            cfg.seed,
            reason.replace('\n', " ")
        );
        Replay { path, header, file }
    }
}
