//! The `qga-harness` command line: exit codes, the default agent, Ctrl-C.

mod common;

use assert_cmd::Command;
use common::*;
use predicates::prelude::*;
use std::time::{Duration, Instant};

fn harness() -> Command {
    Command::cargo_bin("qga-harness").unwrap()
}

/// The closing line, `P passed, F failed[, N NON-STRICT][, R not run (U
/// UNSUPPORTED, B BLOCKED)]`: (passed, failed, UNSUPPORTED, BLOCKED).
fn closing(stdout: &[u8]) -> (usize, usize, usize, usize) {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default().to_owned();
    let count = |what: &str| -> Option<usize> {
        let at = line.find(what)?;
        line[..at].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let (Some(passed), Some(failed)) = (count(" passed"), count(" failed")) else { panic!("no closing line in:\n{text}") };
    assert!(line.starts_with(&format!("{passed} passed, {failed} failed")), "no closing line in:\n{text}");
    (passed, failed, count(" UNSUPPORTED").unwrap_or(0), count(" BLOCKED").unwrap_or(0))
}

#[test]
fn default_run_uses_the_reference_agent_and_passes() {
    for transport in ["pty", "socketpair", "unix-listen"] {
        let out = harness().args(["run", "--transport", transport]).timeout(Duration::from_secs(60)).assert().code(0);
        let stdout = &out.get_output().stdout;
        assert!(String::from_utf8_lossy(stdout).contains("ref-agent"));
        let (passed, failed, _, blocked) = closing(stdout);
        assert!(passed >= 60 && failed == 0 && blocked == 0, "{passed} passed, {failed} failed, {blocked} BLOCKED");
    }
}

#[test]
fn run_against_qemu_ga_with_its_baselines() {
    let Some(bin) = qemu_ga() else { return };
    let root = env!("CARGO_MANIFEST_DIR");
    for (method, transport, baseline) in [
        ("isa-serial", "pty", "pty-isa-serial"),
        ("virtio-serial", "pty", "pty-isa-serial"),
        ("unix-listen", "unix-listen", "unix-listen"),
    ] {
        harness()
            .args(["run", "--agent", &format!("{bin} -m {method} -p {{path}} -t {{statedir}}"), "--transport", transport])
            .arg("--expect")
            .arg(format!("{root}/../reports/qemu-ga-7.2/{baseline}.expect.toml"))
            .timeout(Duration::from_secs(60))
            .assert()
            .code(0)
            .stdout(predicate::str::contains("baseline: 0 regression(s)"));
    }
}

#[test]
fn agent_that_dies_at_start_is_one_message_with_its_output_and_exit_1() {
    // Not a verdict per case: one message, the transcript's tail, and the
    // cases BLOCKED by the agent's defect (it started, then died): exit 1.
    let n = qga_harness::case::load::embedded_role(qga_harness::case::Role::Agent).unwrap().len();
    let out = harness()
        .args(["run", "--agent", "sh -c 'echo oops; exit 4'", "--transport", "socketpair", "--startup-timeout-ms", "300"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("the agent could not be run: the agent exited (exit status 4)"))
        .stdout(predicate::str::contains(format!("{n} cases not run")))
        .stdout(predicate::str::contains("sync/1").not())
        .stdout(predicate::str::contains("<< oops\\n"));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    // connection/* need a unix socket: UNSUPPORTED here, not BLOCKED.
    assert_eq!(closing(out.get_output().stdout.as_slice()), (0, 0, 2, n - 2));
    // One line per reason, not one per case; the finding, then the counts.
    assert!(stdout.contains(&format!("BLOCKED {} cases by agent-gone: the agent could not be run (", n - 2)), "{stdout}");
    let finding = stdout.find("1 distinct finding(s), most cases first:\n  agent-gone").expect("the finding is named");
    assert!(stdout.find("not run:\n").is_some_and(|at| at < finding) && stdout[finding..].contains(" cases in "), "{stdout}");
}

#[test]
fn an_agent_whose_probe_gets_nothing_usable_is_exit_1_not_2() {
    // It starts and answers every request, with an error: nothing a client
    // can sync with. Its defect, not the harness's.
    let errors_only = r#"sh -c 'while IFS= read -r l; do echo "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}"; done'"#;
    let out = harness()
        .args(["run", "--transport", "socketpair", "--case", "sync/1", "--startup-timeout-ms", "500", "--agent", errors_only])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("only error replies") && stdout.contains("BLOCKED 1 case by startup-failed: the agent could not be run (sync/1)"), "{stdout}");
    assert_eq!(closing(out.get_output().stdout.as_slice()), (0, 0, 0, 1));
    // A harness that cannot spawn the agent at all still errs (exit 2 or,
    // caught before the run, 3): never a verdict on an agent.
}

#[test]
fn a_mutant_fails_the_case_that_targets_it() {
    harness()
        .args(["run", "--transport", "socketpair", "--case", "sync-delimited/1", "--agent"])
        .arg(format!("{HARNESS} ref-agent --bug utf8-sentinel"))
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL        sync-delimited/1"))
        .stdout(predicate::str::contains("\\xC3\\xBF"));
}

/// What an agent's author reads: the probe's result first; the cases that
/// ran; the cases not run, one line per reason; the findings, most cases
/// first; the counts; the closing line.
#[test]
fn a_mutant_run_opens_with_the_probe_and_closes_with_its_findings() {
    let out = harness()
        .args(["run", "--transport", "socketpair", "--seed", "1", "--agent"])
        .arg(format!("{HARNESS} ref-agent --bug exit-on-parse-error"))
        .timeout(Duration::from_secs(120))
        .assert()
        .code(1);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let probe = lines.iter().position(|l| *l == "start-up probe:").expect("the probe's result");
    assert!(probe <= 4 && lines[probe + 1].starts_with("  sync: "), "{text}");
    assert!(lines[probe..].iter().take(8).any(|l| l.starts_with("  found dies-on-flush-byte ")), "{text}");
    // No case line for a case not run: one line per reason instead.
    assert!(!lines.iter().any(|l| l.starts_with("BLOCKED ") || l.starts_with("UNSUPPORTED ")), "{text}");
    let not_run = lines.iter().position(|l| *l == "not run:").expect("the cases not run");
    let blocked: Vec<&&str> = lines[not_run..].iter().filter(|l| l.starts_with("  BLOCKED ")).collect();
    assert!(blocked.len() == 1 && blocked[0].starts_with("  BLOCKED 19 cases by dies-on-flush-byte: "), "{text}");
    // The findings after the cases, most cases first, the probe's first on
    // a tie; then the counts and the closing line.
    let findings = lines.iter().position(|l| l.ends_with("distinct finding(s), most cases first:")).expect("findings");
    let counts = lines.iter().position(|l| l.contains(" cases in ")).unwrap();
    assert!(not_run < findings && findings < counts && counts + 2 == lines.len(), "{text}");
    let covered: Vec<usize> = lines[findings + 1..counts]
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && !l.starts_with("  also seen"))
        .map(|l| l.split(": ").nth(1).and_then(|c| c.split(' ').next()).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{l}")))
        .collect();
    assert!(covered.windows(2).all(|w| w[0] >= w[1]), "{covered:?}\n{text}");
    assert!(lines[findings + 1].starts_with("  dies-on-flush-byte — "), "{text}");
    let (passed, failed, unsupported, blocked) = closing(out.get_output().stdout.as_slice());
    let n = qga_harness::case::load::embedded_role(qga_harness::case::Role::Agent).unwrap().len();
    assert_eq!((unsupported > 0, blocked, passed + failed + unsupported + blocked), (true, 19, n));
    assert!(text.contains(&format!("{passed} passed, {failed} failed, {} not run ({unsupported} UNSUPPORTED, 19 BLOCKED)\n", unsupported + 19)), "{text}");
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
        &["run", "--case", "no-such-section/*"],
        &["run", "--tag", "no-such-tag"],
        &["list", "--case", "sycn/*"],
        &["no-such-command"],
    ] {
        harness().args(args).timeout(Duration::from_secs(10)).assert().code(3);
    }
}

#[test]
fn malformed_case_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "section = \"x\"\n[[case]]\nid = \"x/1\"\ntitle = \"t\"\nlevel = \"MUST\"\nrequirement = \"r\"\nsource = \"s\"\nsteps = [ { send = { comand = \"guest-ping\" } } ]\n",
    )
    .unwrap();
    harness()
        .args(["list", "--cases"])
        .arg(dir.path())
        .assert()
        .code(3)
        .stderr(predicate::str::contains("bad.toml:8:"))
        .stderr(predicate::str::contains("comand"));
}

#[test]
fn baseline_gates_regressions_and_reports_unexpected_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mutant = format!("{HARNESS} ref-agent --bug silent-unknown");
    // Without a baseline the mutant fails.
    harness().args(["run", "--transport", "socketpair", "--case", "errors/1", "--case", "sync/1", "--agent", &mutant]).assert().code(1);
    // A baseline that knows the failure: exit 0.
    let known = dir.path().join("known.toml");
    std::fs::write(&known, "[outcomes]\n\"errors/1\" = \"FAIL\"\n\"sync/1\" = \"FAIL\"\n").unwrap();
    harness()
        .args(["run", "--transport", "socketpair", "--case", "errors/1", "--case", "sync/1", "--agent", &mutant, "--expect"])
        .arg(&known)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("UNEXPECTED PASS sync/1"));
    // A baseline with a typo in an id or an outcome: exit 3, naming the line.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[outcomes]\n\"sync-delimited/1\" = \"FIAL\"\n").unwrap();
    harness().args(["run", "--transport", "socketpair", "--case", "sync/1", "--expect"]).arg(&typo).assert().code(3).stderr(predicate::str::contains("typo.toml:2:"));
    // --write-baseline produces one that the same run then matches.
    let written = dir.path().join("written.toml");
    harness()
        .args(["run", "--transport", "socketpair", "--case", "errors/*", "--agent", &mutant, "--write-baseline"])
        .arg(&written)
        .assert()
        .code(1);
    harness().args(["run", "--transport", "socketpair", "--case", "errors/*", "--agent", &mutant, "--expect"]).arg(&written).assert().code(0);
}

#[test]
fn strict_turns_non_strict_into_a_failure() {
    // limits/2 is a SHOULD; a case file of our own makes one that fails.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "section = \"s\"\n[[case]]\nid = \"s/1\"\ntitle = \"t\"\nlevel = \"SHOULD\"\nrequirement = \"r\"\nsource = \"s\"\nsteps = [ { send = { command = \"guest-ping\" } }, { expect = { return = 1 } } ]\n",
    )
    .unwrap();
    harness().args(["run", "--transport", "socketpair", "--cases"]).arg(dir.path()).assert().code(0).stdout(predicate::str::contains("NON-STRICT"));
    harness().args(["run", "--transport", "socketpair", "--strict", "--cases"]).arg(dir.path()).assert().code(1);
}

#[test]
fn list_and_selection() {
    let out = harness().arg("list").assert().code(0);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("sync-delimited/1") && text.contains("MUST"));
    let n: usize = text.lines().last().unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 60, "{n}");
    let out = harness().args(["list", "--case", "restart/*"]).assert().code(0);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.lines().filter(|l| l.contains('/')).all(|l| l.starts_with("restart/")), "{text}");
    let out = harness().args(["list", "--tag", "sentinel"]).assert().code(0);
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("hygiene/2"));
}

#[test]
fn json_output_has_verdicts_and_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    harness().args(["run", "--transport", "socketpair", "--case", "sync*/*", "--json"]).arg(&out).timeout(Duration::from_secs(30)).assert().code(0);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["schema"], "qga-harness/run/4");
    let results = doc["results"].as_array().unwrap();
    assert!(results.len() >= 15);
    assert!(results.iter().all(|v| v["outcome"] == "PASS" && v["recovery"]["grade"] == "resynced"));
    assert!(results.iter().all(|v| v["transcript"].as_array().is_some_and(|t| !t.is_empty())));
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
    // waiting on it when the SIGINT comes. A private TMPDIR shows that the
    // agent's state directory goes too (tests/vm.rs: a guest's directory).
    let marker = format!("31.{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(HARNESS)
        .args(["run", "--transport", "socketpair", "--startup-timeout-ms", "60000", "--agent"])
        .arg(format!("sh -c 'sleep {marker} & exec sleep {marker}'"))
        .env("TMPDIR", tmp.path())
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
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind in the temp dir: {left:?}");
}

#[test]
fn the_engine_refuses_destructive_commands_whatever_a_case_says() {
    // A case file asking for guest-shutdown (hidden behind a JSON escape):
    // the engine refuses to write it and the case is an ERROR.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("evil.toml"),
        "section = \"evil\"\n[[case]]\nid = \"evil/1\"\ntitle = \"t\"\nlevel = \"MUST\"\nrequirement = \"r\"\nsource = \"s\"\nsteps = [ { send = { raw = '{\"execute\":\"guest-shut\\u0064own\"}' } } ]\n",
    )
    .unwrap();
    harness()
        .args(["run", "--transport", "socketpair", "--cases"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stdout(predicate::str::contains("ERROR       evil/1"))
        .stdout(predicate::str::contains("refused to send guest-shutdown"));
}

#[test]
fn report_dir_writes_json_junit_markdown_and_report_merges_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    harness().args(["run", "--transport", "socketpair", "--case", "errors/*", "--report-dir"]).arg(&a).assert().code(0);
    let mutant = format!("{HARNESS} ref-agent --bug silent-unknown");
    harness().args(["run", "--transport", "socketpair", "--case", "errors/*", "--agent", &mutant, "--report-dir"]).arg(&b).assert().code(1);
    for d in [&a, &b] {
        for f in ["run.json", "junit.xml", "summary.md"] {
            assert!(d.join(f).is_file(), "{}", d.join(f).display());
        }
    }
    // The JUnit file is read by a real JUnit consumer (junitparser, which
    // .ci/run installs with pip): one testsuite for the section, one
    // testcase per case, a failure per FAIL, no errors.
    let script = "import sys\nfrom junitparser import JUnitXml, Failure, Error\nx = JUnitXml.fromfile(sys.argv[1])\nsuites = list(x)\ncases = [c for s in suites for c in s]\nprint(len(suites), len(cases), sum(isinstance(r, Failure) for c in cases for r in c.result), sum(isinstance(r, Error) for c in cases for r in c.result))";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(b.join("junit.xml")).output().unwrap();
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No module named 'junitparser'") && std::env::var_os("CI").is_none() {
        eprintln!("junitparser not installed: skipping the JUnit consumer check (this would fail under CI)");
        return;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts: Vec<usize> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|n| n.parse().unwrap()).collect();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("run.json")).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let fails = results.iter().filter(|r| r["outcome"] == "FAIL").count();
    assert!(fails > 0);
    assert_eq!(counts, vec![1, results.len(), fails, 0]);
    let md = std::fs::read_to_string(b.join("summary.md")).unwrap();
    let passed = results.iter().filter(|r| r["outcome"] == "PASS" || r["outcome"] == "INFO").count();
    assert!(md.starts_with(&format!("## qga-harness: {passed} passed, {fails} failed")) && md.contains(&format!(" of {} cases\n", results.len())), "{md}");
    // Findings come after the cases, most cases first, before the counts.
    let (findings, counts_at) = (md.find("### Findings, most cases first").expect("findings"), md.find("| outcome | cases | counts as |").unwrap());
    assert!(md.find("| errors/1 ").is_some_and(|c| c < findings) && findings < counts_at, "{md}");
    assert!(md.contains("errors/1"), "{md}");
    // Merging both runs.
    let m = dir.path().join("merged");
    harness().arg("report").arg(a.join("run.json")).arg(b.join("run.json")).arg("--out").arg(&m).assert().code(0);
    let matrix = std::fs::read_to_string(m.join("matrix.md")).unwrap();
    assert!(matrix.lines().any(|l| l.starts_with("| errors/1 ") && l.contains("PASS") && l.contains("FAIL")), "{matrix}");
    assert!(m.join("run-1.junit.xml").is_file() && m.join("run-2.md").is_file());
    // Not a run document: usage error.
    std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
    harness().arg("report").arg(dir.path().join("bad.json")).arg("--out").arg(&m).assert().code(3);
}

#[test]
fn run_json_matches_the_published_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/schema/run-4.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A run with every kind of record: passes, failures, recovery, restarts.
    let mutant = format!("{HARNESS} ref-agent --bug silent-unknown");
    for (agent, name) in [(None, "ref.json"), (Some(mutant.as_str()), "mut.json")] {
        let mut cmd = harness();
        cmd.args(["run", "--transport", "socketpair", "--case", "errors/*", "--case", "restart/*", "--json"]).arg(dir.path().join(name));
        if let Some(a) = agent {
            cmd.args(["--agent", a]);
        }
        let _ = cmd.assert();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).take(5).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    // The budgets the run was given are in it, in microseconds, and read
    // back into the very value the harness used.
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("ref.json")).unwrap()).unwrap();
    let budgets: qga_harness::budget::Budgets = serde_json::from_value(doc["budgets"].clone()).unwrap();
    let defaults = qga_harness::budget::Budgets::defaults(qga_harness::transport::TransportKind::Socketpair, qga_harness::budget::Mode::Run);
    assert_eq!(budgets, defaults);
    assert_eq!(doc["budgets"]["reply"], serde_json::json!(250_000));
    // And the schema bites: a document with a made-up outcome fails it.
    doc["results"][0]["outcome"] = serde_json::json!("GREAT");
    assert!(!validator.is_valid(&doc));
}

/// A pipe whose write end becomes a child's stdout, with the smallest
/// buffer the kernel allows (one page), so that a child writing more than
/// that blocks until the reader reads or goes.
fn small_pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    // Close-on-exec: a child that inherits the read end never sees EPIPE.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // SAFETY: fcntl on a pipe fd we own.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&w), libc::F_SETPIPE_SZ, 4096) };
    (std::fs::File::from(r), w)
}

#[test]
fn list_into_a_reader_that_stops_after_one_line_ends_quietly() {
    use std::io::Read;
    let (mut reader, w) = small_pipe();
    let child = std::process::Command::new(HARNESS)
        .arg("list")
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One line, a byte at a time (no read-ahead), then the reader goes:
    // the listing is longer than the pipe holds, so a write fails.
    let mut line = Vec::new();
    let mut byte = [0u8];
    while reader.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert!(!line.is_empty());
    drop(reader);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe") && !stderr.contains("backtrace"), "{stderr}");
    // Ended the way `cat | head` does: by SIGPIPE, quietly.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn run_whose_stdout_is_gone_ends_quietly() {
    // The reader is gone before the harness writes its first line.
    let (reader, w) = small_pipe();
    drop(reader);
    let out = std::process::Command::new(HARNESS)
        .args(["run", "--transport", "socketpair", "--case", "sync/1"])
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn a_template_that_cannot_work_over_the_transport_is_a_usage_error_with_a_hint() {
    for (agent, transport, hint) in [
        // {path} over socketpair, which has no path.
        ("my-agent --chardev {path}", "socketpair", "--transport socketpair has no channel path to put in {path}"),
        // qemu-ga's method against the transport, in its spellings.
        ("qemu-ga -m unix-listen -p {path} -t {statedir}", "pty", "qemu-ga's -m unix-listen listens on a socket: use --transport unix-listen"),
        ("qemu-ga --method unix-listen -p {path} -t {statedir}", "pty", "use --transport unix-listen"),
        ("/usr/sbin/qemu-ga -m=unix-listen -p {path} -t {statedir}", "socketpair", "use --transport unix-listen"),
        ("qemu-ga -m isa-serial -p {path} -t {statedir}", "unix-listen", "use --transport pty"),
        ("qemu-ga -m virtio-serial -p {path} -t {statedir}", "unix-listen", "use --transport pty"),
        ("qemu-ga -m isa-serial -p {path} -t {statedir}", "socketpair", "qemu-ga's -p {path} needs a channel path"),
        ("qemu-ga -m isa-serial -t {statedir}", "pty", "add -p {path}"),
    ] {
        // Every command that starts agents checks it, before anything runs.
        for cmd in ["run", "bench", "fuzz"] {
            harness()
                .args([cmd, "--agent", agent, "--transport", transport])
                .timeout(Duration::from_secs(10))
                .assert()
                .code(3)
                .stderr(predicate::str::contains(hint));
        }
    }
    // The README's three ways pass the check (and fail later only if qemu-ga
    // is not installed, as "agent program not found").
    for (method, transport) in [("isa-serial", "pty"), ("virtio-serial", "pty"), ("unix-listen", "unix-listen")] {
        let out = harness()
            .args(["run", "--agent", &format!("/nonexistent/qemu-ga -m {method} -p {{path}} -t {{statedir}}"), "--transport", transport])
            .timeout(Duration::from_secs(10))
            .assert()
            .code(3);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("agent program not found"));
    }
}

/// Shell completions and manual pages come from the parser's own
/// definitions: every user-facing subcommand is in them, and the hidden
/// reference agent gets no manual page.
#[test]
fn completions_and_man_pages_describe_every_subcommand() {
    let subcommands = ["run", "list", "bench", "fuzz", "replay", "report", "client", "call"];
    let bash = assert_cmd::Command::cargo_bin("qga-harness").unwrap().args(["completions", "bash"]).assert().success().get_output().stdout.clone();
    let bash = String::from_utf8(bash).unwrap();
    assert!(bash.contains("complete -F _qga-harness") || bash.contains("_qga__harness"), "{}", &bash[..bash.len().min(300)]);
    for s in subcommands {
        assert!(bash.contains(s), "bash completion lacks {s}");
    }
    for shell in ["zsh", "fish"] {
        assert_cmd::Command::cargo_bin("qga-harness").unwrap().args(["completions", shell]).assert().success();
    }
    assert_cmd::Command::cargo_bin("qga-harness").unwrap().args(["completions", "no-such-shell"]).assert().code(3);
    let man = assert_cmd::Command::cargo_bin("qga-harness").unwrap().arg("man").assert().success().get_output().stdout.clone();
    let man = String::from_utf8(man).unwrap();
    assert!(man.contains(".TH qga-harness 1"), "{}", &man[..man.len().min(300)]);
    let dir = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("qga-harness").unwrap().args(["man", "--out"]).arg(dir.path()).assert().success();
    for s in subcommands {
        let page = std::fs::read_to_string(dir.path().join(format!("qga-harness-{s}.1"))).unwrap_or_else(|e| panic!("qga-harness-{s}.1: {e}"));
        assert!(page.contains(".SH NAME"), "{s}");
    }
    assert!(!dir.path().join("qga-harness-ref-agent.1").exists());
}
