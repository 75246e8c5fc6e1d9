//! The fuzzer: it finds nothing against correct agents, finds (and shrinks)
//! every mutant whose defect breaks resync, and is deterministic per seed.

mod common;

use common::*;
use qga_harness::agent::AgentTemplate;
use qga_harness::case::load;
use qga_harness::case::step::Step;
use qga_harness::fuzz::{fuzz, FuzzConfig, FuzzReport, Progress, ScheduleParams};
use qga_harness::budget::{Budgets, Mode};
use qga_harness::session::SessionConfig;
use qga_harness::transport::TransportKind;
use std::time::Duration;

fn config(template: &str, transport: TransportKind, schedules: u32, seed: u64, out: &std::path::Path) -> FuzzConfig {
    let mut session = SessionConfig::new(AgentTemplate::parse(template).unwrap(), transport);
    session.set_budgets(Budgets::defaults(transport, Mode::Fuzz));
    FuzzConfig {
        session,
        schedules,
        seed,
        jobs: 1,
        shard: None,
        repeat: 1,
        params: ScheduleParams::default(),
        out_dir: out.to_owned(),
        shrink_time: Duration::from_secs(5),
        command_line: "test".into(),
    }
}

/// One fuzz run at a time: each keeps both cores busy, and shrinking
/// decisions depend on timeouts that contention would stretch.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cfg: &FuzzConfig) -> FuzzReport {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    fuzz(cfg, &Progress::default())
}

#[test]
fn reference_agent_survives_every_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("{HARNESS} ref-agent"), TransportKind::Socketpair, 300, 1, dir.path());
    cfg.jobs = 2;
    let r = run(&cfg);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.schedules, 300);
    // Every kind of fault was applied.
    assert_eq!(r.faults.len(), qga_harness::fuzz::FaultKind::ALL.len(), "{:?}", r.faults);
}

/// Mutants whose defect breaks resync or the replies after it. (The others,
/// e.g. multi-line replies or a QMP greeting, do not trouble a streaming
/// client that resyncs first; the catalogue catches them.)
const RESYNC_BREAKING: &[&str] = &[
    "no-sentinel",
    "late-sentinel",
    "utf8-sentinel",
    "ff-line-start-only",
    "one-read-one-request",
    // no-id-echo, id-stringified, sentinel-leak, raw-ff-in-reply and
    // double-reply: the start-up probe finds them and the client adapts
    // (order matching, skipped 0xFF, skipped second copies); the catalogue
    // grades them, resync and recovery no longer break on them.
    "no-guest-sync",
    "silent-unknown",
    "exit-on-parse-error",
    "error-without-class",
    "sync-wrong-id",
    "burst-reply-loss",
];

#[test]
fn every_resync_breaking_mutant_is_found_and_shrunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for bug in RESYNC_BREAKING {
        let out = dir.path().join(bug);
        let mut cfg = config(&format!("{HARNESS} ref-agent --bug {bug}"), TransportKind::Socketpair, 200, 7, &out);
        // Every shrinking step that still fails costs a timeout: keep them
        // short, and give shrinking the time it needs.
        cfg.session.set_budgets(Budgets { resync: Duration::from_millis(100), ..cfg.session.budgets });
        cfg.shrink_time = Duration::from_secs(30);
        let r = run(&cfg);
        let Some(f) = r.failures.first() else {
            problems.push(format!("{bug}: not found in {} schedules", r.schedules));
            continue;
        };
        if f.replay.as_os_str().is_empty() {
            // Found at start-up, before any fault: nothing to shrink.
            assert!(f.reason.contains("does not start"), "{bug}: {}", f.reason);
            continue;
        }
        // The replay line gives the budgets this campaign ran with.
        let text = std::fs::read_to_string(&f.replay).unwrap();
        assert!(text.lines().any(|l| l.starts_with("# Replay:") && l.contains(" --resync-budget-ms 100 ")), "{bug}: {text}");
        let cases = load::from_path(&f.replay).unwrap();
        // The title says how many faults the schedule shrank to.
        let faults: usize = cases[0].title.split("shrunk to ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
        // ff-line-start-only fails only when a resync's 0xFF lands inside
        // partial input on every attempt, which depends on how reads split:
        // shrinking it is not reliable under load, so only finding it is
        // required (known limitation, in the closing note).
        if faults > 2 && *bug != "ff-line-start-only" {
            problems.push(format!("{bug}: shrunk only to {faults} faults: {:?}", cases[0].steps));
        }
        if *bug == "burst-reply-loss" {
            // It drops replies after the 16th of one read. Shrinking, bounded
            // in time, gets the largest burst down near that (other steps
            // can add replies to the same read).
            let repeat = cases[0].steps.iter().find_map(|s| match s {
                Step::Send(x) if x.repeat > 1 => Some(x.repeat),
                _ => None,
            });
            let burst: usize = cases[0].steps.iter().map(|s| match s {
                Step::Send(x) => x.repeat,
                Step::Batch(xs) => xs.len(),
                _ => 0,
            }).max().unwrap_or(0);
            assert!(repeat.is_some() && burst <= 40, "{:?}", cases[0].steps);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn same_seed_same_verdict_and_replay_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let agent = format!("{HARNESS} ref-agent --bug burst-reply-loss");
    let a = run(&config(&agent, TransportKind::Socketpair, 100, 42, &dir.path().join("a")));
    let b = run(&config(&agent, TransportKind::Socketpair, 100, 42, &dir.path().join("b")));
    assert_eq!(a.failures.len(), 1);
    assert_eq!(b.failures.len(), 1);
    // The same schedule (ids in it are drawn fresh at run time, so the
    // failure text differs; the steps do not).
    let steps = |p: &std::path::Path| load::from_path(p).unwrap().remove(0).steps;
    assert_eq!(steps(&a.failures[0].replay), steps(&b.failures[0].replay));
    // `replay` reproduces it against the mutant, and the reference passes it.
    use assert_cmd::Command;
    let replay = a.failures[0].replay.clone();
    // The file says how to replay it as the fuzzer ran it: its budgets and
    // its id seed.
    let text = std::fs::read_to_string(&replay).unwrap();
    let line = text.lines().find(|l| l.starts_with("# Replay:")).unwrap();
    let flags: Vec<&str> = line.split(" --repeat ").nth(1).unwrap().split(" (same").next().unwrap().split_whitespace().skip(1).collect();
    // Exactly the budgets the campaign ran with, and its seed.
    let want = format!("{} --seed 42", Budgets::defaults(TransportKind::Socketpair, Mode::Fuzz).flags());
    assert_eq!(flags.join(" "), want, "{line}");
    Command::cargo_bin("qga-harness").unwrap().args(["replay"]).arg(&replay).args(["--transport", "socketpair", "--agent", &agent]).args(&flags).assert().code(1);
    Command::cargo_bin("qga-harness").unwrap().args(["replay"]).arg(&replay).args(["--transport", "socketpair", "--repeat", "3"]).assert().code(0);
    Command::cargo_bin("qga-harness").unwrap().args(["run", "--transport", "socketpair", "--cases"]).arg(&replay).assert().code(0);
}

#[test]
fn qemu_ga_over_unix_survives_every_schedule_without_disconnects() {
    let Some((t, k)) = qemu_ga_template("unix-listen") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&t.to_string(), k, 300, 3, dir.path());
    cfg.jobs = 2;
    // Without client disconnects: qemu-ga 7.2 exits when a client closes
    // with a reply unread (connection/1 in the catalogue shows it).
    cfg.params.allow_reconnect = false;
    let r = run(&cfg);
    assert!(r.errors.is_empty() && r.failures.is_empty(), "{:?} {:?}", r.errors, r.failures);
}

#[test]
fn qemu_ga_pty_reply_loss_is_found_and_a_burst_cap_avoids_it() {
    let Some((t, k)) = qemu_ga_template("isa-serial") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The loss is intermittent: each schedule runs 4 times.
    let mut cfg = config(&t.to_string(), k, 300, 5, dir.path());
    cfg.repeat = 4;
    let r = run(&cfg);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let f = r.failures.first().expect("qemu-ga's reply loss over a pty was not found");
    assert!(f.reason.contains("lost") || f.reason.contains("reply"), "{}", f.reason);
    let cases = load::from_path(&f.replay).unwrap();
    let burst = cases[0].steps.iter().filter_map(|s| match s {
        Step::Send(x) => Some(x.repeat),
        _ => None,
    }).max().unwrap();
    assert!(burst > 16, "shrunk to a burst of {burst}: loss below 4 KiB was never seen");
    // Below the threshold, nothing.
    let mut cfg = config(&t.to_string(), k, 300, 5, &dir.path().join("capped"));
    cfg.params.max_burst = Some(2048);
    let r = run(&cfg);
    assert!(r.errors.is_empty() && r.failures.is_empty(), "{:?} {:?}", r.errors, r.failures);
}

/// An agent whose defect the start-up probe finds and the client adapts to
/// (here every reply after the first delimited sync carries a stray 0xFF):
/// no schedule fails, yet the campaign must not pass. The finding is named
/// at the top and at the end, and the campaign exits 1, in agent and in
/// client mode.
#[test]
fn a_probe_finding_fails_the_campaign_however_the_schedules_went() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = format!("{HARNESS} ref-agent --bug sentinel-leak");
    let client = format!("{HARNESS} call --path {{path}} --timeout-ms {{timeout_ms}} --job {{job}}");
    let agent_mode: &[&str] = &["--cases", "40", "--floor-spawns", "0"];
    let client_mode: &[&str] = &["--cases", "6", "--client", &client, "--client-timeout-ms", "300"];
    for (mode, extra) in [("agent", agent_mode), ("client", client_mode)] {
        let out = std::process::Command::new(HARNESS)
            .args(["fuzz", "--agent", &agent, "--transport", "socketpair", "--seed", "3", "--jobs", "1", "--out"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{mode}: {text}");
        let lines: Vec<&str> = text.lines().collect();
        // At the top, after the command line: the probe's result.
        assert!(lines.get(1).is_some_and(|l| l.starts_with("start-up probe")), "{mode}: {text}");
        assert!(lines[..8.min(lines.len())].iter().any(|l| l.contains("found stray-sentinel")), "{mode}: {text}");
        // At the end: the finding, and the closing line names it.
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.ends_with(" schedules, and 1 start-up probe finding(s): stray-sentinel"), "{mode}: {text}");
        // The agent fuzzer's client adapted: no schedule failed. (The
        // client under test in client mode need not adapt.)
        assert!(mode != "agent" || last.starts_with("0 failure(s) found in 40 schedules"), "{mode}: {text}");
        assert!(lines.iter().rev().nth(1).is_some_and(|l| l.starts_with("  stray-sentinel — ")), "{mode}: {text}");
    }
    // The reference agent: nothing found, exit 0.
    let out = std::process::Command::new(HARNESS)
        .args(["fuzz", "--transport", "socketpair", "--seed", "3", "--jobs", "1", "--cases", "40", "--floor-spawns", "0", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("  found no defect\n") && text.lines().last() == Some("0 failure(s) found in 40 schedules"), "{text}");
}
