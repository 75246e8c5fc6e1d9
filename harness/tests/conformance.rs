//! The catalogue as a libtest-compatible test binary (`harness = false`,
//! built on libtest-mimic): every agent case is one test, named
//! `AGENT::TRANSPORT::CASE`, e.g. `qemu-ga::pty::framing/8`. So
//! `cargo test --test conformance`, `cargo nextest run --test conformance`
//! and `cargo nextest run --partition hash:2/4` run the conformance suite on
//! the engines CI already has (`--list --format terse`, `--exact`,
//! `--ignored`, filters all work).
//!
//! Configuration, from the environment:
//! - `QGA_AGENT`: the agent template (default: the in-tree reference agent);
//! - `QGA_TRANSPORT`: `pty` (default), `socketpair` or `unix-listen`;
//! - `QGA_EXPECT`: a baseline file: an expected failure passes;
//! - `QGA_AGENT_NAME`: the first part of the test names (default: the
//!   program's name, or `reference`);
//! - `QGA_SEED`: the ids' seed (default 1; a failure names it);
//! - `QGA_STRICT=1`: NON-STRICT fails;
//! - `QGA_SHARD=K/N`: only shard K of N, by the partition `run --shard`
//!   uses (for engines without partitions of their own; nextest has
//!   `--partition`).
//!
//! Each case runs through the engine's `AgentRunner` (as in `run`) and is gated by the
//! library's `gate` (the same as `run`). Tests in one process share one
//! agent, one case at a time (with `--test-threads` above 1 they take turns
//! on it). Under nextest each
//! test is a process of its own: it starts its own agent, but the start-up
//! probe's profile is cached on disk per agent and transport, so only the
//! first process probes.

use libtest_mimic::{Arguments, Failed, Trial};
use qga_harness::agent::AgentTemplate;
use qga_harness::baseline::Baseline;
use qga_harness::case::{Case, Role, Selected, Selection};
use qga_harness::client::Profile;
use qga_harness::engine::{AgentRunner, EngineOptions};
use qga_harness::gate::{gate_results, Gate};
use qga_harness::session::SessionConfig;
use qga_harness::transcript::{render_entries, Transcript};
use qga_harness::transport::TransportKind;
use std::sync::{Mutex, OnceLock};

const HARNESS: &str = env!("CARGO_BIN_EXE_qga-harness");

struct Config {
    template: AgentTemplate,
    /// The agent cases of the embedded catalogue (of `QGA_SHARD`, if set).
    selected: Selected,
    transport: TransportKind,
    baseline: Option<Baseline>,
    seed: u64,
    strict: bool,
}

/// The agent shared by the tests of this process.
struct Shared {
    rt: tokio::runtime::Runtime,
    runner: Option<AgentRunner>,
    /// Why the agent could not be started (every test then says so).
    broken: Option<String>,
}

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let transport = match std::env::var("QGA_TRANSPORT").as_deref() {
            Ok("socketpair") => TransportKind::Socketpair,
            Ok("unix-listen") => TransportKind::UnixListen,
            Ok("vm-virtio") => TransportKind::VmVirtio,
            Ok("vm-isa") => TransportKind::VmIsa,
            Ok("pty") | Err(_) => TransportKind::Pty,
            Ok(other) => panic!("QGA_TRANSPORT={other}: pty, socketpair, unix-listen, vm-virtio or vm-isa"),
        };
        let template = match std::env::var("QGA_AGENT") {
            Ok(t) => AgentTemplate::parse(&t).unwrap_or_else(|e| panic!("QGA_AGENT: {e}")),
            Err(_) => qga_harness::agent::template::reference_served_by(HARNESS, transport).expect("the reference agent's template"),
        };
        let shard = std::env::var("QGA_SHARD").ok().map(|s| qga_harness::case::shard::Shard::parse(&s).unwrap_or_else(|e| panic!("QGA_SHARD: {e}")));
        let selected = Selection { role: Some(Role::Agent), shard, ..Selection::default() }.select().unwrap_or_else(|e| panic!("{e}"));
        let baseline = std::env::var("QGA_EXPECT").ok().map(|path| Baseline::read(path.as_ref(), &selected.catalogue_ids).unwrap_or_else(|e| panic!("QGA_EXPECT: {e}")));
        let seed = std::env::var("QGA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let strict = std::env::var("QGA_STRICT").is_ok_and(|v| v == "1");
        Config { template, selected, transport, baseline, seed, strict }
    })
}

fn agent_name(c: &Config) -> String {
    if let Ok(n) = std::env::var("QGA_AGENT_NAME") {
        return n;
    }
    if std::env::var_os("QGA_AGENT").is_none() {
        return "reference".into();
    }
    c.template.program().rsplit('/').next().unwrap_or("agent").to_owned()
}

/// Where the start-up profile of this agent over this transport is kept
/// between test processes: keyed by the template, the transport, the
/// program's modification time and this binary's.
fn profile_cache(c: &Config) -> std::path::PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.template.to_string().hash(&mut h);
    c.transport.to_string().hash(&mut h);
    for p in [c.template.program(), HARNESS] {
        if let Ok(m) = std::fs::metadata(p).and_then(|m| m.modified()) {
            m.hash(&mut h);
        }
    }
    std::env::temp_dir().join(format!("qga-harness-profile-{:016x}.json", h.finish()))
}

fn shared() -> &'static Mutex<Shared> {
    static S: OnceLock<Mutex<Shared>> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Mutex::new(Shared { rt, runner: None, broken: None })
    })
}

/// Start the shared agent if it is not running: with the cached profile if
/// there is one, else probing (and caching what the probe found).
fn ensure(sh: &mut Shared) -> Result<(), String> {
    if let Some(b) = &sh.broken {
        return Err(b.clone());
    }
    if sh.runner.is_some() {
        return Ok(());
    }
    let c = config();
    let sc = SessionConfig::new(c.template.clone(), c.transport);
    let cache = profile_cache(c);
    let cached: Option<Profile> = std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let cases = &c.selected.cases;
    let eo = options(c);
    let started = sh.rt.block_on(async {
        let t = Transcript::default();
        if let Some(p) = cached {
            if let Ok(r) = AgentRunner::start(sc.clone(), t.clone(), cases, &eo, Some(&p)).await {
                return Ok(r);
            }
        }
        AgentRunner::start(sc, t.clone(), cases, &eo, None).await.map_err(|e| format!("the agent could not be run: {e}\n{}", t.render(0, None)))
    });
    match started {
        Ok(runner) => {
            let _ = std::fs::write(&cache, serde_json::to_vec(runner.profile()).unwrap_or_default());
            sh.runner = Some(runner);
            Ok(())
        }
        Err(e) => {
            sh.broken = Some(e.clone());
            Err(e)
        }
    }
}

/// The engine's options for every test: the seed's ids, transcripts kept
/// for the failure message.
fn options(c: &Config) -> EngineOptions {
    EngineOptions { keep_transcripts: true, seed: c.seed, ..EngineOptions::default() }
}

fn run_one(case: &Case) -> Result<(), Failed> {
    let c = config();
    let mut sh = shared().lock().unwrap_or_else(|p| p.into_inner());
    ensure(&mut sh).map_err(Failed::from)?;
    let Shared { rt, runner, .. } = &mut *sh;
    let r = runner.as_mut().expect("ensured");
    let (result, renew) = rt.block_on(async {
        let ran = r.run(case).await;
        if ran.renew && r.renew().await.is_err() {
            return (ran.result, true);
        }
        (ran.result, false)
    });
    if renew {
        // The channel could not be renewed: the next test starts afresh.
        *runner = None;
    }
    match gate_results(std::slice::from_ref(&result), c.baseline.as_ref(), c.strict) {
        Gate::Pass => Ok(()),
        Gate::Fail(_) | Gate::HarnessError(_) => {
            let mut msg = format!("{} {}: {}\n", result.outcome, result.id, result.title);
            if let Some(f) = &result.failure {
                msg.push_str(&format!(
                    "requirement: {}\nexpected:    {}\nactual:      {}\nfinding:     {} ({})\n",
                    f.requirement,
                    f.expected,
                    qga_harness::report::sanitize(&f.actual),
                    f.kind.code(),
                    f.kind.summary()
                ));
                let entries: Vec<_> = result.transcript.iter().filter(|e| e.seq >= f.transcript.0 && e.seq < f.transcript.1).cloned().collect();
                let text = render_entries(&entries);
                let lines: Vec<&str> = text.lines().collect();
                msg.push_str(&format!("transcript #{}..#{} (last 30 lines):\n", f.transcript.0, f.transcript.1));
                for l in &lines[lines.len().saturating_sub(30)..] {
                    msg.push_str(&format!("  {l}\n"));
                }
            }
            if let Some(exp) = c.baseline.as_ref().map(|b| b.expected(&result.id)).filter(|e| !e.is_empty()) {
                msg.push_str(&format!("the baseline expects {exp:?}\n"));
            }
            msg.push_str(&format!("(QGA_SEED={} repeats these ids)", c.seed));
            Err(msg.into())
        }
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // One agent per process, one case at a time on it (as `run` does).
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let c = config();
    let prefix = format!("{}::{}", agent_name(c), c.transport);
    let trials: Vec<Trial> = c
        .selected
        .cases
        .iter()
        .map(|case| {
            let name = format!("{prefix}::{}", case.id);
            Trial::test(name, move || run_one(case))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Whatever ran, the agent goes with this process: SIGKILL, no grace
    // (under nextest every test is a process, and a TERM grace per test
    // would be most of its time).
    if let Ok(mut sh) = shared().lock() {
        if let Some(mut r) = sh.runner.take() {
            sh.rt.block_on(r.kill_agent());
        }
    }
    conclusion.exit();
}
