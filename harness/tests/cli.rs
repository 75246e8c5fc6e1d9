//! The `qga-harness` command line: exit codes, the default agent, Ctrl-C.

mod common;

use assert_cmd::Command;
use common::*;
use predicates::prelude::*;
use std::time::{Duration, Instant};

fn harness() -> Command {
    Command::cargo_bin("qga-harness").unwrap()
}

#[test]
fn default_run_uses_the_reference_agent_and_passes() {
    for transport in ["pty", "socketpair", "unix-listen"] {
        harness()
            .args(["run", "--transport", transport])
            .timeout(Duration::from_secs(30))
            .assert()
            .code(0)
            .stdout(predicate::str::contains("7 passed, 0 failed"))
            .stdout(predicate::str::contains("ref-agent"));
    }
}

#[test]
fn run_against_qemu_ga() {
    let Some(bin) = qemu_ga() else { return };
    for (method, transport) in [("isa-serial", "pty"), ("virtio-serial", "pty"), ("unix-listen", "unix-listen")] {
        harness()
            .args(["run", "--agent", &format!("{bin} -m {method} -p {{path}} -t {{statedir}}"), "--transport", transport])
            .timeout(Duration::from_secs(30))
            .assert()
            .code(0)
            .stdout(predicate::str::contains("7 passed, 0 failed"));
    }
}

#[test]
fn failing_agent_exits_1_with_requirement_expected_actual_and_transcript() {
    harness()
        .args(["run", "--agent", "sh -c 'echo oops; exit 4'", "--transport", "socketpair", "--startup-timeout-ms", "300"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL  start"))
        .stdout(predicate::str::contains("expected:"))
        .stdout(predicate::str::contains("actual:   the agent exited (exit status 4)"))
        .stdout(predicate::str::contains("<< oops\\n"))
        .stdout(predicate::str::contains("0 passed, 7 failed"));
}

#[test]
fn usage_and_configuration_errors_exit_3() {
    for args in [
        &["run", "--agent", "/nonexistent/agent -p {path}"][..],
        &["run", "--agent", "qemu-ga -p {pth}"],
        &["run", "--agent", "unbalanced 'quote"],
        &["run", "--agent", "sleep 1", "--transport", "unix-listen"],
        &["run", "--transport", "carrier-pigeon"],
        &["run", "--no-such-flag"],
        &["no-such-command"],
    ] {
        harness().args(args).timeout(Duration::from_secs(10)).assert().code(3);
    }
}

#[test]
fn json_output_has_verdicts_and_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    harness().args(["run", "--transport", "socketpair", "--json"]).arg(&out).timeout(Duration::from_secs(30)).assert().code(0);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["report"]["verdicts"].as_array().unwrap().len(), 7);
    assert!(doc["report"]["verdicts"].as_array().unwrap().iter().all(|v| v["outcome"] == "pass"));
    assert!(doc["transcript"].as_array().unwrap().len() > 10);
}

/// Pids of live (not zombie) `sleep` processes whose command line contains
/// `marker`.
fn live_with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("Z");
        if cmdline.starts_with(b"sleep\0") && String::from_utf8_lossy(&cmdline).contains(marker) && state != "Z" {
            out.push(pid);
        }
    }
    out
}

#[test]
fn ctrl_c_kills_the_agent_group() {
    // A mute agent that forks, with a long start-up timeout: the harness is
    // waiting on it when the SIGINT comes.
    let marker = format!("31.{}", std::process::id());
    let mut child = std::process::Command::new(HARNESS)
        .args(["run", "--transport", "socketpair", "--startup-timeout-ms", "60000", "--agent"])
        .arg(format!("sh -c 'sleep {marker} & exec sleep {marker}'"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_with_marker(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "agent never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "harness did not exit on SIGINT");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(130));
    assert!(live_with_marker(&marker).is_empty(), "survivors: {:?}", live_with_marker(&marker));
}
