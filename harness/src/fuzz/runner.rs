//! Running schedules: J jobs, each with its own agent and channel, each a
//! proptest runner seeded from (seed, job), so the same seed and job count
//! give the same schedules and the same verdicts.

use super::strategy::{schedule, FaultKind, Schedule, ScheduleParams};
use crate::case::{Case, CaseFile};
use crate::engine::{run_case, EngineOptions, Grading};
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::{Caps, Transcript};
use crate::verdict::{CaseResult, Level, RecoveryGrade};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    pub session: SessionConfig,
    /// Schedules to generate in all (shrinking runs come on top).
    pub schedules: u32,
    pub seed: u64,
    pub jobs: usize,
    /// The campaign's shard (`--shard K/N`): its jobs take the schedule
    /// streams K-1, K-1+N, ... of the seed, so N shards never share one.
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
    /// What `replay` needs to run a schedule as the fuzzer did: budgets,
    /// id seed, strictness.
    pub replay_flags: String,
}

/// Live counters, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub schedules: AtomicU64,
    pub runs: AtomicU64,
    pub failures: AtomicU64,
}

/// A failure found and shrunk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub job: usize,
    pub reason: String,
    pub steps: usize,
    pub replay: PathBuf,
}

/// What a fuzz run found and cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FuzzReport {
    pub schedules: u64,
    /// Schedule executions including repeats and shrinking.
    pub runs: u64,
    #[serde(with = "crate::verdict::micros")]
    pub elapsed: Duration,
    /// Faults applied, by kind (shrinking runs included).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Recovery resync times, in microseconds.
    pub resync_us: Vec<u64>,
    pub bytes_discarded: u64,
    pub failures: Vec<Found>,
    /// Harness errors (not failures of the agent).
    pub errors: Vec<String>,
    /// The schedule streams this campaign ran (one per job, by the global
    /// job number of its shard).
    pub streams: Vec<u64>,
    /// A digest of every schedule generated (shrinking aside): what a
    /// test compares to show two shards never ran the same one.
    pub schedule_digests: Vec<u64>,
}

/// The streams (global job numbers) of a campaign of `jobs` jobs.
pub fn streams(shard: Option<crate::case::shard::Shard>, jobs: usize) -> Vec<u64> {
    shard.map_or_else(|| (0..jobs as u64).collect(), |s| s.streams(jobs))
}

/// A digest of a generated schedule (its Debug form), for comparisons.
pub fn digest(x: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{x:?}").hash(&mut h);
    h.finish()
}

impl FuzzReport {
    pub fn resync_percentile(&self, q: f64) -> Option<Duration> {
        let mut v = self.resync_us.clone();
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * q).round() as usize).map(|&us| Duration::from_micros(us))
    }
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

struct Worker {
    rt: tokio::runtime::Runtime,
    session: Option<(Session, Grading)>,
    config: SessionConfig,
}

/// Why a schedule could not be judged.
enum RunError {
    /// The agent itself failed (it did not start or answer): a finding.
    Agent(String),
    /// The harness failed (spawn, channel): says nothing about the agent.
    Harness(String),
}

/// Start the agent if none runs.
async fn ensure_session(session: &mut Option<(Session, Grading)>, config: &SessionConfig) -> Result<(), RunError> {
    if session.is_none() {
        let t = Transcript::new(Caps { bytes: 256 * 1024, entries: 20_000 });
        match Session::start(config.clone(), t).await {
            Ok((mut s, profile)) => {
                let grading = Grading::new(profile, &[]);
                grading.pace_client(s.client_mut());
                *session = Some((s, grading))
            }
            Err(e @ (SessionError::Spawn(_) | SessionError::Transport { .. } | SessionError::NeedsPath)) => {
                return Err(RunError::Harness(e.to_string()))
            }
            Err(e) => return Err(RunError::Agent(format!("FAIL: the agent does not start: {e}"))),
        }
    }
    Ok(())
}

impl Worker {
    /// Run one case, starting (or restarting) the agent as needed.
    fn run(&mut self, case: &Case, eo: &EngineOptions) -> Result<CaseResult, RunError> {
        self.rt.block_on(async {
            ensure_session(&mut self.session, &self.config).await?;
            let (session, grading) = self.session.as_mut().expect("just started");
            // The same id stream `run_cases` gives this case id under this
            // seed, so `replay --seed` sends the same ids.
            let ids = session.client().ids.for_case(eo.seed, &case.id);
            session.client_mut().ids = ids;
            let (r, _) = run_case(session, case, grading, eo).await;
            session.transcript().reset();
            if r.recovery.grade == RecoveryGrade::Wedged {
                // The next schedule gets a fresh agent (on the same channel:
                // stale bytes there are part of what is being tested).
                if session.restart().await.is_err() {
                    self.session = None;
                }
            }
            Ok(r)
        })
    }
}

/// Job `job`'s schedule stream under `seed`; `tag` keeps campaigns of
/// different kinds (agent, client) apart under one seed.
pub(crate) fn job_rng(seed: u64, job: usize, tag: &[u8; 8]) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(job as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(tag);
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Fuzz: generate, run, shrink, write replay files. `progress` is updated
/// as schedules run.
pub fn fuzz(cfg: &FuzzConfig, progress: &Progress) -> FuzzReport {
    let began = Instant::now();
    let report = Mutex::new(FuzzReport::default());
    let jobs = cfg.jobs.max(1);
    let streams = streams(cfg.shard, jobs);
    report.lock().unwrap().streams = streams.clone();
    std::thread::scope(|scope| {
        for (local, &stream) in streams.iter().enumerate() {
            let report = &report;
            let job = stream as usize;
            scope.spawn(move || {
                let cases = cfg.schedules / jobs as u32 + u32::from((local as u32) < cfg.schedules % jobs as u32);
                if cases == 0 {
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return report.lock().unwrap().errors.push(e.to_string()),
                };
                let mut w = Worker { rt, session: None, config: cfg.session.clone() };
                // An agent that cannot even start fails before any fault:
                // there is nothing to shrink.
                let started = w.rt.block_on(ensure_session(&mut w.session, &w.config));
                match started {
                    Ok(()) => {}
                    Err(RunError::Harness(e)) => return report.lock().unwrap().errors.push(e),
                    Err(RunError::Agent(e)) => {
                        progress.failures.fetch_add(1, Ordering::Relaxed);
                        return report.lock().unwrap().failures.push(Found { job, reason: e, steps: 0, replay: PathBuf::new() });
                    }
                }
                let worker = RefCell::new(w);
                let shrinking = std::cell::Cell::new(false);
                // Ids from the fuzz seed: the replay file's `--seed` repeats them.
                let eo = EngineOptions { keep_transcripts: false, seed: cfg.seed, ..Default::default() };
                // Shrinking is bounded in time as well as in steps: each
                // step of it runs the schedule against the agent again.
                let config = Config { cases, failure_persistence: None, max_shrink_iters: 2048, max_shrink_time: cfg.shrink_time.as_millis().min(u128::from(u32::MAX)) as u32, ..Config::default() };
                let mut runner = TestRunner::new_with_rng(config, job_rng(cfg.seed, job, b"qga-fuzz"));
                let harness_error = RefCell::new(None);
                let result = runner.run(&schedule(cfg.params.clone()), |s| {
                    if !shrinking.get() {
                        progress.schedules.fetch_add(1, Ordering::Relaxed);
                        report.lock().unwrap().schedule_digests.push(digest(&s));
                    }
                    let case = schedule_case(&s, "fuzz/1", "fuzzed schedule");
                    {
                        let mut rep = report.lock().unwrap();
                        for f in &s.faults {
                            *rep.faults.entry(f.kind).or_insert(0) += u64::from(cfg.repeat.max(1));
                        }
                    }
                    for _ in 0..cfg.repeat.max(1) {
                        progress.runs.fetch_add(1, Ordering::Relaxed);
                        let r = match worker.borrow_mut().run(&case, &eo) {
                            Ok(r) => r,
                            Err(RunError::Agent(e)) => {
                                shrinking.set(true);
                                return Err(TestCaseError::fail(e));
                            }
                            Err(RunError::Harness(e)) => {
                                *harness_error.borrow_mut() = Some(e.clone());
                                return Err(TestCaseError::fail(e));
                            }
                        };
                        let mut rep = report.lock().unwrap();
                        rep.runs += 1;
                        rep.resync_us.push(r.recovery.resync_time.as_micros() as u64);
                        rep.bytes_discarded += r.recovery.bytes_discarded;
                        drop(rep);
                        if r.outcome.is_failing(false) {
                            shrinking.set(true);
                            let f = r.failure.unwrap_or_else(|| crate::verdict::Failure {
                                kind: Default::default(),
                                stage: Default::default(),
                                requirement: String::new(),
                                expected: String::new(),
                                actual: String::new(),
                                transcript: (0, 0),
                            });
                            return Err(TestCaseError::fail(format!("{}: expected {}; got {}", r.outcome, f.expected, f.actual)));
                        }
                    }
                    Ok(())
                });
                let mut rep = report.lock().unwrap();
                match result {
                    Ok(()) => {}
                    Err(TestError::Fail(reason, minimal)) => {
                        if let Some(e) = harness_error.into_inner() {
                            rep.errors.push(e);
                            return;
                        }
                        progress.failures.fetch_add(1, Ordering::Relaxed);
                        let path = cfg.out_dir.join(format!("fuzz-seed{}-job{job}.toml", cfg.seed));
                        let write = write_replay(cfg, job, &minimal, &reason.to_string(), &path);
                        match write {
                            Ok(()) => rep.failures.push(Found { job, reason: reason.to_string(), steps: minimal.steps().len(), replay: path }),
                            Err(e) => rep.errors.push(format!("cannot write {}: {e}", path.display())),
                        }
                    }
                    Err(TestError::Abort(why)) => rep.errors.push(why.to_string()),
                }
            });
        }
    });
    let mut rep = report.into_inner().unwrap();
    rep.schedules = progress.schedules.load(Ordering::Relaxed);
    rep.elapsed = began.elapsed();
    rep
}

fn write_replay(cfg: &FuzzConfig, job: usize, schedule: &Schedule, reason: &str, path: &std::path::Path) -> std::io::Result<()> {
    let title = format!("Fuzzed schedule, seed {} job {job}, shrunk to {} fault(s)", cfg.seed, schedule.faults.len());
    let file = CaseFile {
        section: "fuzz".into(),
        description: format!("Found by: {}\nFailure: {reason}", cfg.command_line),
        cases: vec![schedule_case(schedule, "fuzz/1", &title)],
    };
    let body = toml::to_string(&file).map_err(std::io::Error::other)?;
    let header = format!(
        "# Found by qga-harness fuzz (seed {}, job {job} of {}).\n# Reproduce: {}\n# Replay:    qga-harness replay {} --repeat {} {} (same --agent and --transport)\n# Failure:   {}\n\n",
        cfg.seed,
        cfg.jobs,
        cfg.command_line,
        path.display(),
        cfg.repeat.max(1),
        cfg.replay_flags,
        reason.replace('\n', " ")
    );
    crate::report::write_atomic(path, format!("{header}{body}").as_bytes())
}
