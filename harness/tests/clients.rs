//! Client mode, tested on clients: the harness's own reference client
//! (`qga-harness call`, the positive control), an independent correct
//! client (`fixture-client`) and its seven mutants, the `qapi` crate's
//! client, and, from a venv, qemu.qmp and fc.qemu. Each real client's known
//! weaknesses are asserted as findings, so a change in a client or in the
//! harness shows up here. Plus: no process of a hanging, forking client
//! survives, and a client cannot make the agent run a denied command.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Tests that run whole client catalogues (or campaigns) take this, so that
/// they do not share the machine's cores with each other: their verdicts
/// hang on clients' timeouts, and a starved client times out where it would
/// not (each test still runs its own work in parallel).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A binary of the fixtures crate, built beside the harness.
fn fixture_bin(name: &str) -> String {
    let p = std::path::Path::new(HARNESS).parent().unwrap().join(name);
    assert!(p.is_file(), "{} not built: `cargo build --workspace` builds it", p.display());
    p.display().to_string()
}

/// `(outcome, grade)` per case id, and the whole document.
struct ClientRun {
    cases: BTreeMap<String, (String, String)>,
    doc: Value,
    code: Option<i32>,
}

impl ClientRun {
    /// Ids of cases whose outcome is not PASS, with the outcome.
    fn not_passing(&self) -> BTreeMap<String, String> {
        self.cases.iter().filter(|(_, (o, _))| o != "PASS").map(|(id, (o, _))| (id.clone(), o.clone())).collect()
    }

    fn outcome(&self, id: &str) -> &str {
        &self.cases.get(id).unwrap_or_else(|| panic!("{id} not run")).0
    }

    fn grade(&self, id: &str) -> &str {
        &self.cases.get(id).unwrap_or_else(|| panic!("{id} not run")).1
    }

    fn habits(&self) -> Vec<String> {
        self.doc["client"]["habits"].as_array().map_or(Vec::new(), |a| a.iter().map(|h| h["kind"].as_str().unwrap_or("").to_owned()).collect())
    }

    fn failure_text(&self, id: &str) -> String {
        let r = self.doc["results"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap();
        format!("{} / reported: {}", r["failure"]["actual"], r["client"]["reported"])
    }
}

fn run_client(client: &str, extra: &[&str]) -> ClientRun {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut defaults = vec!["--client-timeout-ms", "200", "--seed", "7"];
    if !extra.contains(&"--client-startup-ms") {
        defaults.extend(["--client-startup-ms", "1500"]);
    }
    let out = std::process::Command::new(HARNESS)
        .args(["client", "--client", client])
        .args(&defaults)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    let doc: Value = match std::fs::read(&json) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(e) => panic!("no JSON ({e}); stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    };
    let cases = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["id"].as_str().unwrap().to_owned(), (r["outcome"].as_str().unwrap().to_owned(), r["client"]["grade"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    ClientRun { cases, doc, code: out.status.code() }
}

fn reference_client(pty: bool) -> String {
    format!("{HARNESS} call {}--path {{path}} --timeout-ms {{timeout_ms}} --job {{job}}", if pty { "--pty " } else { "" })
}

#[test]
fn the_reference_client_passes_every_case_on_both_ports() {
    let _heavy = heavy();
    for (pty, transport) in [(false, "unix-listen"), (true, "pty")] {
        let run = run_client(&reference_client(pty), &["--transport", transport]);
        assert!(run.not_passing().is_empty(), "{transport}: {:?}", run.not_passing());
        assert_eq!(run.code, Some(0));
        assert!(run.cases.len() >= 30, "{}", run.cases.len());
        // A fault-free case is a recovery at the first attempt, and every
        // reported result was the reply to its own request.
        assert_eq!(run.grade("client-sync/1"), "recovered");
        let reported = &run.doc["results"].as_array().unwrap().iter().find(|r| r["id"] == "client-wire/1").unwrap()["client"]["reported"];
        assert!(reported.as_array().unwrap().iter().all(|r| r["status"] == "right"), "{reported}");
        assert_eq!(reported.as_array().unwrap().len(), 3);
    }
}

/// What the correct fixture client does not pass, in every shape: SHOULD
/// cases about stray replies after the sync reply (or in place of the
/// command's reply), which its "sync, then the next reply" design cannot
/// tell from its own.
const FIXTURE_BASELINE: &[(&str, &str)] = &[
    ("client-reply/1", "NON-STRICT"),
    ("client-reply/2", "NON-STRICT"),
    ("client-reply/3", "NON-STRICT"),
    ("client-reply/12", "NON-STRICT"),
    ("client-sync/5", "NON-STRICT"),
];

/// Each mutant: the cases it must not pass (baseline cases included), and
/// with `?` those it may fail beyond the baseline.
const MUTANTS: &[(&str, &[&str])] = &[
    ("one-line", &["client-channel/2", "?client-sync/11", "?client-reply/7", "?client-channel/4"]),
    ("no-ff", &["client-sync/9", "client-sync/12", "client-wire/1"]),
    ("fixed-id", &["client-channel/5", "client-wire/3", "?client-sync/10"]),
    ("16-bit", &["client-wire/3"]),
    ("pid-id", &["client-wire/3"]),
    ("first-after-sentinel", &["client-sync/3", "client-channel/4", "client-channel/5", "?client-sync/6", "?client-sync/10"]),
    ("no-timeout", &["client-reply/7", "client-reply/10", "client-sync/11", "?client-reply/11", "?client-channel/3"]),
    ("no-resync", &["client-reply/8", "?client-reply/7", "?client-sync/10", "?client-sync/11", "?client-channel/3"]),
    // Plain guest-sync: the stale pair in its own sync form is its sync
    // reply; a partial stale reply swallows the real one (no 0xFF to reset).
    ("plain-sync", &["client-sync/5", "client-wire/2", "?client-channel/2", "?client-reply/7", "?client-sync/11"]),
];

/// The correct fixture client's shapes: apart or pipelined, retrying or
/// surfacing a timeout, over a unix socket or a pty. One baseline for all.
const SHAPES: &[&str] = &["", "--pipelined", "--surface-timeout", "--pipelined --surface-timeout", "--pty", "--pty --pipelined"];

#[test]
fn the_fixture_client_passes_every_must_case_and_each_mutant_is_caught_by_its_own_cases() {
    let _heavy = heavy();
    let fixture = fixture_bin("fixture-client");
    let baseline: BTreeMap<String, String> = FIXTURE_BASELINE.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let shapes: Vec<(&str, ClientRun)> = std::thread::scope(|s| {
        let handles: Vec<_> = SHAPES
            .iter()
            .map(|shape| {
                let fixture = fixture.clone();
                s.spawn(move || {
                    let transport = if shape.contains("--pty") { "pty" } else { "unix-listen" };
                    (*shape, run_client(&format!("{fixture} {shape} {{path}} {{timeout_ms}} {{job}}"), &["--transport", transport]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (shape, run) in &shapes {
        let unexpected: Vec<String> = run.not_passing().into_iter().filter(|(id, o)| baseline.get(id) != Some(o)).map(|(id, o)| format!("{id} {o}: {}", run.failure_text(&id))).collect();
        assert_eq!(run.not_passing(), baseline, "shape {shape:?}: {unexpected:#?}");
        if shape.contains("--surface-timeout") {
            // It reports the timeout and is back in step on the next call.
            for id in ["client-reply/7", "client-reply/8", "client-reply/10", "client-reply/11", "client-sync/10", "client-sync/11"] {
                assert_eq!(run.grade(id), "recovered-after-error", "shape {shape:?} {id}: {}", run.failure_text(id));
            }
        }
    }
    // The mutants run side by side (most of their time is waiting out
    // timeouts); the newest also pipelined over a pty, where the same cases
    // must catch them.
    let variants: Vec<(&str, &[&str], &str)> = MUTANTS
        .iter()
        .map(|(bug, declared)| (*bug, *declared, ""))
        .chain(MUTANTS.iter().filter(|(b, _)| ["plain-sync", "pid-id"].contains(b)).map(|(bug, declared)| (*bug, *declared, "--pipelined --pty")))
        .collect();
    let runs: Vec<(String, &[&str], ClientRun)> = std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .iter()
            .map(|(bug, declared, shape)| {
                let fixture = fixture.clone();
                s.spawn(move || {
                    let transport = if shape.contains("--pty") { "pty" } else { "unix-listen" };
                    let run = run_client(&format!("{fixture} --bug {bug} {shape} {{path}} {{timeout_ms}} {{job}}"), &["--transport", transport]);
                    (format!("{bug} {shape}"), *declared, run)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (bug, declared, run) in runs {
        let caught: Vec<String> = run.not_passing().into_iter().filter(|(id, o)| baseline.get(id) != Some(o)).map(|(id, _)| id).collect();
        let must: Vec<&str> = declared.iter().filter(|d| !d.starts_with('?')).copied().collect();
        let may: Vec<&str> = declared.iter().map(|d| d.trim_start_matches('?')).collect();
        for m in &must {
            assert!(run.outcome(m) != "PASS", "{bug}: {m} not caught ({}); caught: {caught:?}", run.outcome(m));
        }
        for c in &caught {
            assert!(may.contains(&c.as_str()), "{bug}: {c} failed ({}) but is not one of its cases: {}", run.failure_text(c), run.outcome(c));
        }
    }
}

/// Where each client-reply fault lands, for a client that writes its sync
/// and its command together and for one that writes them apart: on the
/// reply to the awaited command, after the sync reply has gone to the
/// client; a `before` fault's stale bytes between the two, and the command
/// reply after them.
#[test]
fn client_reply_faults_land_where_the_case_says_for_pipelined_and_separate_writes() {
    let _heavy = heavy();
    let fixture = fixture_bin("fixture-client");
    let cases: Vec<qga_harness::case::Case> = qga_harness::case::load::embedded().unwrap().into_iter().filter(|c| c.id.starts_with("client-reply/")).collect();
    assert!(cases.len() >= 12);
    for shape in ["", "--pipelined"] {
        let run = run_client(&format!("{fixture} {shape} {{path}} {{timeout_ms}} {{job}}"), &["--case", "client-reply/*"]);
        for case in &cases {
            let r = run.doc["results"].as_array().unwrap().iter().find(|r| r["id"] == case.id.as_str()).unwrap();
            let t = r["transcript"].as_array().unwrap();
            let awaited = case.client_job()[case.faulted_command().unwrap()].clone();
            let what = format!("{shape:?} {}", case.id);
            // The first request for the awaited command, and the sync id the
            // client sent last before it (in the same write or before).
            let mut sync_id = None;
            let mut command_at = None;
            for e in t.iter().filter(|e| e["dir"] == "from-client") {
                let data = e["data"].as_str().unwrap();
                for part in data.split("\\n") {
                    if let Some(i) = part.find("\"id\":") {
                        if part.contains("guest-sync") {
                            sync_id = Some(part[i + 5..].chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect::<String>());
                        }
                    }
                    if part.contains(&format!("\"execute\":\"{awaited}\"")) {
                        command_at = Some(e["seq"].as_u64().unwrap());
                        break;
                    }
                }
                if command_at.is_some() {
                    break;
                }
            }
            let (sync_id, command_at) = (sync_id.expect(&what), command_at.expect(&what));
            let fault = t.iter().find(|e| e["kind"] == "fault" && e["detail"].as_str().unwrap().starts_with("on this reply")).unwrap_or_else(|| panic!("{what}: no reply fault"));
            let fault_at = fault["seq"].as_u64().unwrap();
            assert!(fault_at > command_at, "{what}");
            let to_client: Vec<&Value> = t.iter().filter(|e| e["dir"] == "to-client").collect();
            let sync_reply = format!("\\xFF{{\"return\": {sync_id}}}");
            let sync_at = to_client.iter().find(|e| e["data"].as_str().unwrap().starts_with(&sync_reply)).map(|e| e["seq"].as_u64().unwrap());
            assert!(sync_at.is_some_and(|s| s < fault_at), "{what}: the sync reply {sync_reply} went to the client before the fault ({sync_at:?} < {fault_at})");
            // What the client is sent next is the fault's: stale bytes, or
            // the command's reply (never another sync reply).
            let next = to_client.iter().find(|e| e["seq"].as_u64().unwrap() > fault_at);
            if let Some(next) = next {
                assert!(!next["data"].as_str().unwrap().starts_with("\\xFF"), "{what}: {next}");
            }
            let faults = serde_json::to_string(&case.steps).unwrap();
            if faults.contains("before") || faults.contains("instead") {
                let next = next.unwrap_or_else(|| panic!("{what}: nothing after the fault"));
                assert_eq!(next["origin"], "injected", "{what}: {next}");
            }
            if faults.contains("before") {
                // The command's reply follows the stale bytes, after a gap.
                let injected_at = next.unwrap()["at"].as_u64().unwrap();
                let reply = to_client.iter().find(|e| e["seq"].as_u64().unwrap() > next.unwrap()["seq"].as_u64().unwrap() && e["origin"] == "forwarded");
                let reply = reply.unwrap_or_else(|| panic!("{what}: the command's reply never followed"));
                assert!(reply["at"].as_u64().unwrap() >= injected_at + 15_000, "{what}: {reply} came {} us after the stale bytes", reply["at"].as_u64().unwrap() - injected_at);
            }
        }
    }
}

#[test]
fn the_qapi_crate_client_shows_its_known_weaknesses() {
    let _heavy = heavy();
    let qapi = fixture_bin("qapi-client");
    let run = run_client(&format!("{qapi} {{path}} {{timeout_ms}} {{job}}"), &[]);
    // No stale line before the reply is tolerated: it is its one line.
    assert_eq!(run.outcome("client-sync/1"), "FAIL", "{}", run.failure_text("client-sync/1"));
    assert_eq!(run.grade("client-sync/1"), "clean-error");
    // No timeout: a restart mid-reply hangs it.
    assert_eq!(run.outcome("client-reply/7"), "TIMEOUT");
    assert_eq!(run.grade("client-reply/7"), "hung");
    // A stray value of the right type is taken as the result.
    assert_eq!(run.grade("client-reply/2"), "wrong");
    // The stale pair comes the way its plain guest-sync's reply comes (no
    // 0xFF): it takes the pair's value as its result, where a 0xFF in front
    // used to stop it with a decode error first.
    assert_eq!(run.grade("client-sync/5"), "wrong", "{}", run.failure_text("client-sync/5"));
    // Plain guest-sync, no 0xFF.
    let habits = run.habits();
    for h in ["client-plain-sync", "client-no-flush-byte"] {
        assert!(habits.iter().any(|x| x == h), "{habits:?}");
    }
    // Fault-free: it works.
    assert_eq!(run.grade("client-wire/4"), "recovered");
}

/// The venv's Python with qemu.qmp and fc.qemu (.ci/run makes it). Under
/// CI its absence fails; elsewhere the test is skipped with a message.
fn client_python() -> Option<PathBuf> {
    let p = std::env::var_os("QGA_CLIENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-clients/bin/python"));
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} missing, and CI is set: .ci/run must create the client venv", p.display());
    }
    eprintln!("{} missing: skipping the Python clients (this would fail under CI)", p.display());
    None
}

fn adapter(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/clients").join(name).display().to_string()
}

#[test]
fn qemu_qmp_and_fc_qemu_show_their_known_weaknesses() {
    let _heavy = heavy();
    let Some(py) = client_python() else { return };
    let py = py.display().to_string();
    let (qmp, fc) = std::thread::scope(|s| {
        let a = s.spawn(|| run_client(&format!("{py} {} {{path}} {{timeout_ms}} {{job}}", adapter("qemu_qmp_client.py")), &["--client-startup-ms", "4000"]));
        let b = s.spawn(|| run_client(&format!("{py} {} {{path}} {{timeout_ms}} {{job}}", adapter("fc_qemu_client.py")), &["--client-startup-ms", "4000"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    // qemu.qmp: a lone 0xFF or garbage kills its reader.
    for id in ["client-sync/6", "client-sync/8"] {
        assert_eq!(qmp.outcome(id), "FAIL", "qemu.qmp {id}: {}", qmp.failure_text(id));
        assert_eq!(qmp.grade(id), "clean-error");
    }
    // It never sends 0xFF: an earlier client's partial request wedges it.
    assert_eq!(qmp.outcome("client-sync/12"), "FAIL");
    assert!(qmp.habits().iter().any(|h| h == "client-no-flush-byte" || h == "client-plain-sync"), "{:?}", qmp.habits());
    // Fault-free it works.
    assert_eq!(qmp.outcome("client-sync/1"), "PASS", "{}", qmp.failure_text("client-sync/1"));
    // fc.qemu: a stray reply shifts every later result by one.
    assert_eq!(fc.grade("client-reply/1"), "wrong", "{}", fc.failure_text("client-reply/1"));
    // 0xFF outside its sync: UnicodeDecodeError.
    assert_eq!(fc.outcome("client-sync/6"), "FAIL");
    assert!(fc.failure_text("client-sync/6").contains("UnicodeDecodeError"), "{}", fc.failure_text("client-sync/6"));
    // 16-bit sync ids.
    assert!(fc.habits().iter().any(|h| h == "client-predictable-ids"), "{:?}", fc.habits());
    assert_eq!(fc.outcome("client-sync/9"), "PASS", "{}", fc.failure_text("client-sync/9"));
}

#[test]
fn the_reference_client_passes_with_qemu_ga_behind() {
    let _heavy = heavy();
    let Some(bin) = qemu_ga() else { return };
    let run = run_client(&reference_client(false), &["--agent", &format!("{bin} -m isa-serial -p {{path}} -t {{statedir}}"), "--agent-transport", "pty"]);
    assert!(run.not_passing().is_empty(), "{:?}", run.not_passing());
    assert!(run.doc["agent_version"].as_str().is_some_and(|v| !v.contains("ref")), "{}", run.doc["agent_version"]);
}

#[test]
fn a_hanging_forking_client_is_killed_with_all_its_children() {
    // The client forks a sleeper and sleeps itself: hung, and both go.
    let client = "sh -c 'sleep 300 & sleep 300' sh {path}";
    let run = run_client(client, &["--case", "client-sync/1", "--client-startup-ms", "300"]);
    assert_eq!(run.grade("client-sync/1"), "hung");
    assert_eq!(run.outcome("client-sync/1"), "TIMEOUT");
    let entries = run.doc["results"][0]["transcript"].as_array().unwrap();
    let pid = entries.iter().find(|e| e["kind"] == "spawn" && e["argv"][0] == "sh").map(|e| e["pid"].as_i64().unwrap()).expect("spawn event");
    assert!(qga_harness::process::live_in_group(pid as i32).is_empty(), "processes of group {pid} survived");
}

#[test]
fn a_client_cannot_make_the_agent_run_a_denied_command() {
    // The command split across two writes: the deny-list sees the stream.
    let client = r#"python3 -c "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.send(b'{\"execute\":\"guest-shut'); time.sleep(0.05); s.send(b'down\"}\n'); time.sleep(0.2)" {path}"#;
    let run = run_client(client, &["--case", "client-sync/1", "--client-startup-ms", "500"]);
    assert_eq!(run.grade("client-sync/1"), "invalid", "{}", run.failure_text("client-sync/1"));
    assert_eq!(run.outcome("client-sync/1"), "ERROR");
    assert!(run.failure_text("client-sync/1").contains("guest-shutdown"), "{}", run.failure_text("client-sync/1"));
    let to_agent: String = run.doc["results"][0]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dir"] == "to-agent")
        .map(|e| e["data"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(!to_agent.contains("guest-shutdown"), "{to_agent}");
}

#[test]
fn client_usage_errors_exit_3() {
    for args in [
        vec!["client", "--client", "no-such-client-program {path}"],
        vec!["client", "--client", "true"],
        vec!["client", "--client", "true {path} {nope}"],
        vec!["client", "--client", "true {path}", "--transport", "socketpair"],
        vec!["client", "--client", "true {path}", "--case", "framing/*"],
        vec!["run", "--case", "client-sync/*"],
    ] {
        let out = std::process::Command::new(HARNESS).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn fuzz_client_finds_a_mutant_and_its_replay_file_reproduces_it() {
    let _heavy = heavy();
    let fixture = fixture_bin("fixture-client");
    let dir = tempfile::tempdir().unwrap();
    // The correct client survives every schedule.
    let good = format!("{fixture} {{path}} {{timeout_ms}} {{job}}");
    let out = std::process::Command::new(HARNESS)
        .args(["fuzz", "--client", &good, "--cases", "60", "--seed", "11", "--jobs", "2", "--client-timeout-ms", "300", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("0 failure(s) found in 60 schedules"), "{text}");
    // A client that takes the first object after a sentinel is found,
    // shrunk, and written as a client case file.
    let bad = format!("{fixture} --bug first-after-sentinel {{path}} {{timeout_ms}} {{job}}");
    let out = std::process::Command::new(HARNESS)
        .args(["fuzz", "--client", &bad, "--cases", "200", "--seed", "11", "--jobs", "1", "--client-timeout-ms", "150", "--shrink-time-ms", "10000", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let file = dir.path().join("fuzz-client-seed11-job0.toml");
    let case = std::fs::read_to_string(&file).unwrap();
    assert!(case.contains("role = \"client\""), "{case}");
    // Shrunk: one fault is enough to show it.
    assert!(case.matches("[[case.steps]]").count() <= 3, "{case}");
    let out = std::process::Command::new(HARNESS)
        .args(["replay"])
        .arg(&file)
        .args(["--client", &bad, "--client-timeout-ms", "150", "--repeat", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 of 3 run(s) failed"), "{text}");
    // The correct client passes the same file.
    let out = std::process::Command::new(HARNESS).args(["replay"]).arg(&file).args(["--client", &good, "--client-timeout-ms", "150"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // Client cases need a client.
    let out = std::process::Command::new(HARNESS).args(["replay"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

/// The client's stderr is the client's in the transcript: `client stderr:`
/// in text, `"source": "client"` in JSON, never filed as the agent's.
#[test]
fn the_clients_stderr_is_recorded_as_the_clients() {
    let client = format!("sh -c 'echo client-noise-on-stderr >&2; exec {}'", reference_client(false));
    let run = run_client(&client, &["--transport", "unix-listen", "--case", "client-wire/1", "--transcript"]);
    assert_eq!(run.doc["schema"], "qga-harness/run/4");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/schema/run-4.schema.json")).unwrap()).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema).unwrap().iter_errors(&run.doc).map(|e| format!("{e} at {}", e.instance_path())).take(5).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let events: Vec<&Value> = run.doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["transcript"].as_array().into_iter().flatten())
        .filter(|e| e["kind"] == "stderr" && e["text"].as_str().is_some_and(|t| t.contains("client-noise-on-stderr")))
        .collect();
    assert!(!events.is_empty(), "the client's stderr line is in the transcript: {}", run.doc["results"]);
    assert!(events.iter().all(|e| e["source"] == "client"), "{events:?}");
    let entry: qga_harness::transcript::Entry = serde_json::from_value(events[0].clone()).unwrap();
    let line = qga_harness::transcript::render_entries(&[entry]);
    assert!(line.contains("client stderr: client-noise-on-stderr"), "{line}");
}

/// A client that stops at its first error wrote version 1 of the contract:
/// the grade says so in words, and the case is an ERROR, not a verdict on
/// its recovery.
#[test]
fn a_client_that_stops_at_its_first_error_is_told_about_contract_version_2() {
    let client = r#"sh -c 'echo "{\"command\": \"guest-ping\", \"error\": \"timeout\"}"; exit 1' sh {path}"#;
    let run = run_client(client, &["--case", "client-sync/1", "--client-startup-ms", "500"]);
    assert_eq!(run.grade("client-sync/1"), "invalid", "{}", run.failure_text("client-sync/1"));
    assert_eq!(run.outcome("client-sync/1"), "ERROR");
    let text = run.failure_text("client-sync/1");
    assert!(text.contains("version 1 of the client contract") && text.contains("1 of 3 job command(s)"), "{text}");
}

/// The Proxmox-shaped client (fixtures/clients/pve_style_client.pl): the
/// sync and the command in one write, no 0xFF, ids from its pid and a
/// counter, the second line after the last 0xFF taken as the reply. The
/// stale value placed after its sync reply is its result (as the issue saw
/// with Proxmox behind such a proxy), on a socket and on a pty alike.
#[test]
fn the_pve_style_pipelined_client_takes_the_stale_value_after_its_sync_reply() {
    let _heavy = heavy();
    let script = adapter("pve_style_client.pl");
    for (transport, flag) in [("unix-listen", ""), ("pty", "--pty ")] {
        let run = run_client(&format!("perl {script} {flag}{{path}} {{timeout_ms}} {{job}}"), &["--transport", transport]);
        for id in ["client-reply/1", "client-reply/2", "client-reply/3", "client-reply/12", "client-sync/5"] {
            assert_eq!(run.grade(id), "wrong", "{transport} {id}: {}", run.failure_text(id));
        }
        // No 0xFF: an earlier client's partial request swallows its sync.
        assert_eq!(run.outcome("client-sync/12"), "FAIL", "{transport}: {}", run.failure_text("client-sync/12"));
        let habits = run.habits();
        for h in ["client-no-flush-byte", "client-predictable-ids"] {
            assert!(habits.iter().any(|x| x == h), "{transport}: {habits:?}");
        }
        assert!(run.failure_text("client-wire/3").contains("pid"), "{}", run.failure_text("client-wire/3"));
        // It surfaces a timeout and is back in step on its next call (a
        // new connection and a new sync).
        for id in ["client-reply/8", "client-reply/10", "client-sync/10"] {
            assert_eq!(run.grade(id), "recovered-after-error", "{transport} {id}: {}", run.failure_text(id));
        }
        assert_eq!(run.grade("client-wire/4"), "recovered");
    }
}
