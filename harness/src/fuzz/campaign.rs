//! The campaign both fuzzers run: J jobs, each with its own peer and
//! channel, each a proptest runner seeded from (seed, job), so the same
//! seed and job count give the same schedules and the same verdicts. A job
//! runs its schedules (each `repeat` times), shrinks the first failure,
//! writes it as a replay file, and adds what it saw to one report.
//!
//! What a schedule is, how a job starts its peer and runs a case, and what
//! a replay file says differ between the agent fuzzer ([`super::runner`])
//! and the client fuzzer ([`super::client`]): a [`Fuzzer`] gives those.
//! Between the two layers there is plain data ([`Plan`], [`Run`],
//! [`Replay`]).

use super::strategy::FaultKind;
use crate::case::shard::Shard;
use crate::case::{Case, CaseFile};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shape of a campaign: how many schedules, on which streams, how
/// failures shrink.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Schedules to generate in all (shrinking runs come on top).
    pub schedules: u32,
    pub seed: u64,
    pub jobs: usize,
    /// The campaign's shard (`--shard K/N`): its jobs take the schedule
    /// streams K-1, K-1+N, ... of the seed, so N shards never share one.
    pub shard: Option<Shard>,
    /// Run each schedule this many times; it fails if any run fails (for
    /// intermittent defects).
    pub repeat: u32,
    /// Time allowed for shrinking one failure (each shrinking step runs the
    /// schedule against the peer again).
    pub shrink_time: Duration,
    pub max_shrink_iters: u32,
    /// Keeps campaigns of different kinds (agent, client) apart under one
    /// seed: see [`job_rng`].
    pub tag: [u8; 8],
}

/// How one run of a schedule ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// The peer under test failed: the schedule is shrunk.
    Fail(String),
    /// The harness failed (spawn, channel): says nothing about the peer,
    /// and ends the job with an error.
    Harness(String),
}

/// One run of a schedule, as the campaign counts it.
#[derive(Debug, Clone)]
pub struct Run {
    pub verdict: Verdict,
    /// A case result came back (it counts in [`FuzzReport::runs`]).
    pub judged: bool,
    /// The recovery resync's time, where the case measured one.
    pub resync_us: Option<u64>,
    pub bytes_discarded: u64,
}

impl Run {
    /// A run that ended before any case result (the peer or the harness
    /// failed on the way).
    pub fn unjudged(verdict: Verdict) -> Run {
        Run { verdict, judged: false, resync_us: None, bytes_discarded: 0 }
    }
}

/// Why a job could not start its peer.
#[derive(Debug, Clone)]
pub enum StartError {
    /// The peer under test fails before any fault: a failure with nothing
    /// to shrink.
    Failure(String),
    Harness(String),
}

/// A replay file: where it goes, its header (comment lines: how it was
/// found, how to replay it) and its case.
#[derive(Debug, Clone)]
pub struct Replay {
    pub path: PathBuf,
    pub header: String,
    pub file: CaseFile,
}

impl Replay {
    fn write(&self) -> std::io::Result<()> {
        let body = toml::to_string(&self.file).map_err(std::io::Error::other)?;
        crate::report::write_atomic(&self.path, format!("{}{body}", self.header).as_bytes())
    }
}

/// One kind of campaign: its schedules, and how a job runs them.
pub trait Fuzzer: Sync {
    type Schedule: Clone + std::fmt::Debug;
    /// What a job keeps between schedules (its peer, its channel).
    type Job;
    fn strategy(&self) -> impl Strategy<Value = Self::Schedule>;
    /// The case a schedule becomes.
    fn case(&self, s: &Self::Schedule) -> Case;
    /// The faults one run of `s` applies, for the report.
    fn faults(&self, _s: &Self::Schedule) -> Vec<FaultKind> {
        Vec::new()
    }
    fn start(&self) -> impl Future<Output = Result<Self::Job, StartError>>;
    fn run(&self, job: &mut Self::Job, case: &Case) -> impl Future<Output = Run>;
    fn stop(&self, job: Self::Job) -> impl Future<Output = ()>;
    /// What the start-up probe found about the job's agent: defects the
    /// client was adapted to, which fail the campaign all the same.
    fn probe_findings(&self, _job: &Self::Job) -> Vec<crate::client::ProbeFinding> {
        Vec::new()
    }
    /// The replay file of a shrunk failure found by job `job`.
    fn replay(&self, job: usize, s: &Self::Schedule, reason: &str) -> Replay;
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
    /// What the start-up probe found about the agent (each defect once):
    /// each fails the campaign, whatever the schedules did.
    pub probe: Vec<crate::client::ProbeFinding>,
    /// The schedule streams this campaign ran (one per job, by the global
    /// job number of its shard).
    pub streams: Vec<u64>,
    /// A digest of every schedule generated (shrinking aside): what a
    /// test compares to show two shards never ran the same one.
    pub schedule_digests: Vec<u64>,
}

impl FuzzReport {
    pub fn resync_percentile(&self, q: f64) -> Option<Duration> {
        let mut v = self.resync_us.clone();
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * q).round() as usize).map(|&us| Duration::from_micros(us))
    }
}

/// The streams (global job numbers) of a campaign of `jobs` jobs.
pub fn streams(shard: Option<Shard>, jobs: usize) -> Vec<u64> {
    shard.map_or_else(|| (0..jobs as u64).collect(), |s| s.streams(jobs))
}

/// A digest of a generated schedule (its Debug form), for comparisons.
pub fn digest(x: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{x:?}").hash(&mut h);
    h.finish()
}

/// Job `job`'s schedule stream under `seed`; `tag` keeps campaigns of
/// different kinds (agent, client) apart under one seed.
pub fn job_rng(seed: u64, job: usize, tag: &[u8; 8]) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(job as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(tag);
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Run the campaign: generate, run, shrink, write replay files. `progress`
/// is updated as schedules run.
pub fn run<F: Fuzzer>(plan: &Plan, fuzzer: &F, progress: &Progress) -> FuzzReport {
    let began = Instant::now();
    let report = Mutex::new(FuzzReport::default());
    let jobs = plan.jobs.max(1);
    let streams = streams(plan.shard, jobs);
    report.lock().unwrap().streams = streams.clone();
    std::thread::scope(|scope| {
        for (local, &stream) in streams.iter().enumerate() {
            let report = &report;
            let cases = plan.schedules / jobs as u32 + u32::from((local as u32) < plan.schedules % jobs as u32);
            if cases == 0 {
                continue;
            }
            scope.spawn(move || run_job(plan, fuzzer, progress, report, stream as usize, cases));
        }
    });
    let mut rep = report.into_inner().unwrap();
    rep.schedules = progress.schedules.load(Ordering::Relaxed);
    rep.elapsed = began.elapsed();
    rep
}

/// One job: its own runtime, peer and schedule stream.
fn run_job<F: Fuzzer>(plan: &Plan, fuzzer: &F, progress: &Progress, report: &Mutex<FuzzReport>, job: usize, cases: u32) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report.lock().unwrap().errors.push(e.to_string()),
    };
    let state = match rt.block_on(fuzzer.start()) {
        Ok(s) => {
            super::probe::merge(&mut report.lock().unwrap().probe, &fuzzer.probe_findings(&s));
            RefCell::new(s)
        }
        Err(StartError::Harness(e)) => return report.lock().unwrap().errors.push(e),
        Err(StartError::Failure(e)) => {
            progress.failures.fetch_add(1, Ordering::Relaxed);
            return report.lock().unwrap().failures.push(Found { job, reason: e, steps: 0, replay: PathBuf::new() });
        }
    };
    // Shrinking is bounded in time as well as in steps: each step of it
    // runs the schedule against the peer again.
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: plan.max_shrink_iters,
        max_shrink_time: plan.shrink_time.as_millis().min(u128::from(u32::MAX)) as u32,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, job_rng(plan.seed, job, &plan.tag));
    let shrinking = Cell::new(false);
    let harness_error = RefCell::new(None);
    let repeat = plan.repeat.max(1);
    let result = runner.run(&fuzzer.strategy(), |s| {
        if harness_error.borrow().is_some() {
            // The harness failed, not the agent: nothing to shrink, and no
            // candidate is run against a harness known to be broken (each
            // passes at once, so proptest's shrinking ends).
            return Ok(());
        }
        if !shrinking.get() {
            progress.schedules.fetch_add(1, Ordering::Relaxed);
            report.lock().unwrap().schedule_digests.push(digest(&s));
        }
        let case = fuzzer.case(&s);
        {
            let mut rep = report.lock().unwrap();
            for kind in fuzzer.faults(&s) {
                *rep.faults.entry(kind).or_insert(0) += u64::from(repeat);
            }
        }
        for _ in 0..repeat {
            progress.runs.fetch_add(1, Ordering::Relaxed);
            let run = rt.block_on(fuzzer.run(&mut state.borrow_mut(), &case));
            if run.judged {
                let mut rep = report.lock().unwrap();
                rep.runs += 1;
                rep.resync_us.extend(run.resync_us);
                rep.bytes_discarded += run.bytes_discarded;
            }
            match run.verdict {
                Verdict::Pass => {}
                Verdict::Fail(why) => {
                    shrinking.set(true);
                    return Err(TestCaseError::fail(why));
                }
                Verdict::Harness(why) => {
                    shrinking.set(true);
                    *harness_error.borrow_mut() = Some(why.clone());
                    return Err(TestCaseError::fail(why));
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(_, _)) if harness_error.borrow().is_some() => {
            report.lock().unwrap().errors.extend(harness_error.take());
        }
        Err(TestError::Fail(reason, minimal)) => {
            progress.failures.fetch_add(1, Ordering::Relaxed);
            let reason = reason.to_string();
            let steps = fuzzer.case(&minimal).steps.len();
            let replay = fuzzer.replay(job, &minimal, &reason);
            let mut rep = report.lock().unwrap();
            match replay.write() {
                Ok(()) => rep.failures.push(Found { job, reason, steps, replay: replay.path }),
                Err(e) => rep.errors.push(format!("cannot write {}: {e}", replay.path.display())),
            }
        }
        Err(TestError::Abort(why)) => report.lock().unwrap().errors.push(why.to_string()),
    }
    rt.block_on(fuzzer.stop(state.into_inner()));
}
