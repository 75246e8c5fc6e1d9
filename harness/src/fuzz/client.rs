//! Fuzzing clients (`qga-harness fuzz --client`): random schedules of
//! agent-side faults, each one a correct agent on a real channel can
//! produce, around a client under test. The property: whatever the
//! schedule, the client recovers (every job command reports the reply to
//! its own request, after its own retry if need be). A failing schedule is
//! shrunk by proptest and written as a client case file that
//! `qga-harness replay FILE --client TEMPLATE` runs again.
//!
//! Faults that only a broken agent produces (a stray reply after the sync
//! reply, a duplicate) are left out: a client may only be asked to detect
//! those, which the catalogue's SHOULD cases do.

use super::campaign::{self, FuzzReport, Plan, Progress, Replay, Run, StartError, Verdict};
use crate::case::bytes::ByteString;
use crate::case::step::{Await, Garbage, GarbageKind, ReplyFault, Send, Step};
use crate::case::{Case, CaseFile, Goal, Role};
use crate::engine::client_case::{run_client_case, ClientConfig};
use crate::engine::EngineOptions;
use crate::session::Session;
use crate::transcript::{Caps, Transcript};
use crate::verdict::Level;
use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// One fault of a client schedule: the steps that apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFault {
    pub name: &'static str,
    pub steps: Vec<Step>,
}

/// Faults before the client starts, then faults at its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSchedule {
    pub before: Vec<ClientFault>,
    pub at: Vec<ClientFault>,
}

impl ClientSchedule {
    pub fn steps(&self) -> Vec<Step> {
        self.before.iter().chain(&self.at).flat_map(|f| f.steps.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.before.len() + self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn bytes(b: &[u8]) -> ByteString {
    ByteString(b.to_vec())
}

/// Stale data waiting in the channel: replies, sentinels and halves of
/// them from an earlier conversation or a dead agent, or noise.
fn stale_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"{\"return\": $other-id}\n".to_vec()),
        Just(b"\xFF{\"return\": $other-id}\n".to_vec()),
        Just(b"{\"return\": {}}\n".to_vec()),
        Just(b"{\"return\": 1234567890}\n".to_vec()),
        Just(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n".to_vec()),
        Just(b"\xFF".to_vec()),
        Just(b"\xFF{\"return\": 7".to_vec()),
        Just(b"{\"return\": {\"version\": \"stale".to_vec()),
    ]
}

fn before_fault() -> impl Strategy<Value = ClientFault> {
    prop_oneof![
        stale_bytes().prop_map(|b| ClientFault { name: "stale-data", steps: vec![Step::Inject(bytes(&b))] }),
        // TOML integers are i64: seeds stay below 2^62.
        (1usize..300, 0u64..1 << 62).prop_map(|(len, seed)| ClientFault {
            name: "garbage",
            steps: vec![Step::Garbage(Garbage { len, seed, kind: GarbageKind::NoFlush })]
        }),
        (1usize..50, 0usize..40).prop_map(|(cut, depth)| {
            let mut raw = b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 1, \"x\": ".to_vec();
            raw.extend(std::iter::repeat_n(b'[', depth));
            raw.truncate(cut.max(1).min(raw.len()));
            let mut s = Send::command("", None);
            s.command = None;
            s.raw = Some(ByteString(raw));
            s.newline = false;
            ClientFault { name: "partial-request", steps: vec![Step::Send(s)] }
        }),
    ]
}

fn reply_fault() -> impl Strategy<Value = (&'static str, ReplyFault)> {
    prop_oneof![
        (1usize..24, 0u64..3000).prop_map(|(chunk, delay_us)| ("split-reply", ReplyFault { chunk: Some(chunk), delay_us, ..Default::default() })),
        (0usize..24).prop_map(|n| ("restart-mid-reply", ReplyFault { truncate: Some(n), restart: true, ..Default::default() })),
        Just(("late-reply", ReplyFault { past_timeout: true, ..Default::default() })),
    ]
}

fn at_fault() -> impl Strategy<Value = ClientFault> {
    let sync = (1usize..3, stale_bytes()).prop_map(|(nth, b)| ClientFault {
        name: "stale-at-sync",
        steps: vec![Step::Await(Await { request: "sync".into(), nth }), Step::Inject(bytes(&b))],
    });
    let reply = (prop_oneof![Just("sync"), Just("command")], 1usize..3, reply_fault()).prop_map(|(request, nth, (name, f))| ClientFault {
        name,
        steps: vec![Step::Await(Await { request: request.into(), nth }), Step::Reply(f)],
    });
    prop_oneof![sync, reply]
}

/// Faults after which the client sees no reply to a request and must time
/// out and retry.
fn costs_a_timeout(f: &ClientFault) -> bool {
    matches!(f.name, "restart-mid-reply" | "late-reply")
}

/// Schedules of at most `max_faults` faults, with at most one that costs
/// the client a timeout: a client that retries once must get through any
/// schedule (two in a row would ask for more retries than the protocol
/// asks of anyone).
pub fn client_schedule(max_faults: usize) -> impl Strategy<Value = ClientSchedule> {
    let max = max_faults.max(1);
    (prop::collection::vec(before_fault(), 0..=max.min(2)), prop::collection::vec(at_fault(), 0..=max))
        .prop_filter("at least one fault", |(b, a)| !b.is_empty() || !a.is_empty())
        .prop_filter("at most one timeout", |(_, a)| a.iter().filter(|f| costs_a_timeout(f)).count() <= 1)
        .prop_map(move |(before, mut at)| {
            at.truncate(max.saturating_sub(before.len()).max(1));
            ClientSchedule { before, at }
        })
}

/// The case a schedule becomes.
pub fn client_schedule_case(s: &ClientSchedule, id: &str, title: &str) -> Case {
    Case {
        id: id.into(),
        title: title.into(),
        level: Level::MUST,
        requirement: "After any schedule of faults a correct agent on a real channel can produce, every job command reports the reply to its own request.".into(),
        source: "qga/qapi-schema.json guest-sync-delimited; the mission's resync property for clients (qga-harness fuzz --client)".into(),
        tags: vec!["fuzz".into()],
        needs: vec![],
        fresh_agent: false,
        channel: vec![],
        transports: vec![],
        timeout_ms: None,
        role: Role::Client,
        job: vec![],
        goal: Some(Goal::Recover),
        checks: vec![],
        steps: s.steps(),
    }
}

/// What one client fuzzing campaign needs.
#[derive(Debug, Clone)]
pub struct ClientFuzzConfig {
    /// The client, its port, and the agent behind the harness with the
    /// budgets of the run (the replay file's flags are built from them).
    pub client: ClientConfig,
    pub schedules: u32,
    /// Drives the schedules and every id sent (a replay's `--seed`).
    pub seed: u64,
    pub jobs: usize,
    /// As [`super::FuzzConfig::shard`].
    pub shard: Option<crate::case::shard::Shard>,
    pub max_faults: usize,
    pub out_dir: PathBuf,
    pub shrink_time: Duration,
    /// For the replay file's header.
    pub command_line: String,
}

/// Keeps client campaigns' schedule streams apart from the agent
/// fuzzer's under one seed.
const CAMPAIGN_TAG: &[u8; 8] = b"qga-cli!";

/// Run the campaign: parallel jobs, each with its own agent.
pub fn fuzz_clients(cfg: &ClientFuzzConfig, progress: &Progress) -> FuzzReport {
    let plan = Plan {
        schedules: cfg.schedules,
        seed: cfg.seed,
        jobs: cfg.jobs,
        shard: cfg.shard,
        repeat: 1,
        shrink_time: cfg.shrink_time,
        max_shrink_iters: 512,
        tag: *CAMPAIGN_TAG,
    };
    let eo = EngineOptions { keep_transcripts: false, seed: cfg.seed };
    campaign::run(&plan, &ClientFuzzer { cfg, eo }, progress)
}

/// Schedules around a client under test.
struct ClientFuzzer<'a> {
    cfg: &'a ClientFuzzConfig,
    eo: EngineOptions,
}

/// A job's agent behind the harness (lent to each case, which gives it
/// back), and the sync ids the client sent so far (newest first, at most
/// 1024): a client must not reuse them.
struct ClientJob {
    session: Option<Session>,
    earlier: Vec<Value>,
    /// What the start-up probe found about the agent behind the harness.
    probe: Vec<crate::client::ProbeFinding>,
}

impl campaign::Fuzzer for ClientFuzzer<'_> {
    type Schedule = ClientSchedule;
    type Job = ClientJob;

    fn strategy(&self) -> impl Strategy<Value = ClientSchedule> {
        client_schedule(self.cfg.max_faults)
    }

    fn case(&self, s: &ClientSchedule) -> Case {
        client_schedule_case(s, "fuzz-client/1", "fuzzed client schedule")
    }

    async fn start(&self) -> Result<ClientJob, StartError> {
        let t = Transcript::new(Caps { bytes: 256 * 1024, entries: 20_000 });
        match Session::start(self.cfg.client.agent.clone(), t).await {
            Ok((s, p)) => Ok(ClientJob { session: Some(s), earlier: Vec::new(), probe: p.findings }),
            Err(e) => Err(StartError::Harness(format!("the agent behind the harness does not start: {e}"))),
        }
    }

    async fn run(&self, job: &mut ClientJob, case: &Case) -> Run {
        let session = job.session.take().expect("the session comes back after each case");
        let (r, mut session) = run_client_case(session, case, &self.cfg.client, None, &job.earlier, false, &self.eo).await;
        session.transcript().reset();
        if session.wait_ready().await.is_err() {
            let _ = session.renew().await;
        }
        job.session = Some(session);
        if let Some(c) = &r.client {
            job.earlier = c.sync_ids.iter().cloned().chain(job.earlier.iter().cloned()).take(1024).collect();
        }
        let verdict = if r.outcome == crate::verdict::Outcome::Error {
            Verdict::Harness(r.failure.map(|f| f.actual).unwrap_or_default())
        } else if r.outcome.is_failing(false) {
            let grade = r.client.as_ref().map_or(String::new(), |c| c.grade.to_string());
            let actual = r.failure.map(|f| f.actual).unwrap_or_default();
            Verdict::Fail(format!("{} ({grade}): {actual}", r.outcome))
        } else {
            Verdict::Pass
        };
        Run { verdict, judged: true, resync_us: None, bytes_discarded: 0 }
    }

    fn probe_findings(&self, job: &ClientJob) -> Vec<crate::client::ProbeFinding> {
        job.probe.clone()
    }

    async fn stop(&self, job: ClientJob) {
        if let Some(s) = job.session {
            s.shutdown().await;
        }
    }

    fn replay(&self, job: usize, s: &ClientSchedule, reason: &str) -> Replay {
        let cfg = self.cfg;
        let path = cfg.out_dir.join(format!("fuzz-client-seed{}-job{job}.toml", cfg.seed));
        let title = format!("Fuzzed client schedule, seed {} job {job}, shrunk to {} fault(s)", cfg.seed, s.len());
        let file = CaseFile {
            section: "fuzz-client".into(),
            description: format!("Found by: {}\nFailure: {reason}", cfg.command_line),
            cases: vec![client_schedule_case(s, "fuzz-client/1", &title)],
        };
        // The budgets in effect (the agent's and the client's) and the id
        // seed are part of what reproduces a failure.
        let budgets = &cfg.client.agent.budgets;
        let header = format!(
            "# Found by qga-harness fuzz --client (seed {}, job {job} of {}).\n# Reproduce: {}\n# Replay:    qga-harness replay {} --client {} --client-timeout-ms {} --client-transport {} {} --seed {} (same --agent and --transport)\n# Failure:   {}\n\n",
            cfg.seed,
            cfg.jobs,
            cfg.command_line,
            path.display(),
            shell_words::quote(&cfg.client.client.to_string()),
            budgets.client_timeout.as_millis(),
            cfg.client.port,
            budgets.flags(),
            cfg.seed,
            reason.lines().next().unwrap_or_default()
        );
        Replay { path, header, file }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};

    #[test]
    fn schedules_are_valid_client_cases_and_round_trip_through_toml() {
        let mut runner = TestRunner::new_with_rng(Config::default(), campaign::job_rng(1, 0, CAMPAIGN_TAG));
        for _ in 0..200 {
            let s = client_schedule(4).new_tree(&mut runner).unwrap().current();
            assert!(!s.is_empty() && s.len() <= 4 + 2);
            assert!(s.at.iter().filter(|f| costs_a_timeout(f)).count() <= 1);
            let case = client_schedule_case(&s, "fuzz-client/1", "t");
            crate::case::load::validate("fuzz-client", &case).unwrap();
            let file = CaseFile { section: "fuzz-client".into(), description: String::new(), cases: vec![case.clone()] };
            let text = toml::to_string(&file).unwrap();
            let back = crate::case::load::load_all([("f.toml".to_string(), text)]).unwrap();
            assert_eq!(back[0].steps, case.steps);
        }
    }
}
