//! Gating at CI scale: shards of `run` and of the libtest target partition
//! the catalogue exactly, `report` merges shards back into one run, fuzz
//! shards never share a schedule, the libtest target speaks the protocol
//! nextest relies on, the committed workflow only runs commands that exist,
//! and `.ci/run` kills nothing it did not start.

mod common;

use common::HARNESS;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const CONFORMANCE: &str = env!("CARGO_BIN_EXE_qga-harness"); // for the agent

/// The libtest target's binary: built by `cargo test` next to this one.
fn conformance_bin() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let mut found: Vec<_> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("conformance-") && !n.contains('.'))
                && std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found.pop().expect("the conformance test binary is built with the tests")
}

fn run_json(args: &[&str], out: &Path) -> Value {
    let st = Command::new(HARNESS).args(args).arg("--json").arg(out).output().unwrap();
    assert!(st.status.code().is_some_and(|c| c <= 1), "{args:?}: {}", String::from_utf8_lossy(&st.stderr));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn ids(doc: &Value) -> Vec<String> {
    doc["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn shards_of_run_and_of_the_libtest_target_partition_the_catalogue_and_merge_back() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["run", "--transport", "socketpair", "--seed", "5"];
    let full = run_json(&base, &dir.path().join("full.json"));
    let all: BTreeSet<String> = ids(&full).into_iter().collect();
    let listed = |shard: Option<&str>| -> Vec<String> {
        let mut c = Command::new(conformance_bin());
        c.args(["--list", "--format", "terse"]).env("QGA_TRANSPORT", "socketpair");
        if let Some(s) = shard {
            c.env("QGA_SHARD", s);
        }
        let out = c.output().unwrap();
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim_end_matches(": test").rsplit("::").next().unwrap().to_owned()).collect()
    };
    let full_list: BTreeSet<String> = listed(None).into_iter().collect();
    assert_eq!(full_list, all, "the libtest target lists the catalogue");
    for n in [1u32, 3, 4] {
        let mut union = BTreeSet::new();
        let mut list_union = BTreeSet::new();
        let mut files = Vec::new();
        for k in 1..=n {
            let shard = format!("{k}/{n}");
            let path = dir.path().join(format!("s{k}-{n}.json"));
            let mut args = base.to_vec();
            args.extend(["--shard", &shard]);
            let doc = run_json(&args, &path);
            assert_eq!(doc["shard"], shard.as_str());
            for id in ids(&doc) {
                assert!(union.insert(id.clone()), "{id} in two shards of {n}");
            }
            for id in listed(Some(&shard)) {
                assert!(list_union.insert(id.clone()), "{id} listed in two shards of {n}");
            }
            files.push(path);
        }
        assert_eq!(union, all, "the {n} shards of run");
        assert_eq!(list_union, all, "the {n} shards of the libtest target");
        // Merged, the shards are the run: same cases, same counts.
        let out = dir.path().join(format!("merged-{n}"));
        let st = Command::new(HARNESS).arg("report").args(&files).arg("--out").arg(&out).arg("--json").output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let merged: Value = serde_json::from_slice(&std::fs::read(out.join("run-1.json")).unwrap()).unwrap();
        assert!(!out.join("run-2.json").exists(), "shards merge into one run");
        assert_eq!(ids(&merged), ids(&full), "catalogue order");
        assert_eq!(merged["counts"], full["counts"]);
        assert!(merged.get("shard").is_none_or(Value::is_null));
    }
}

#[test]
fn the_libtest_target_speaks_the_protocol_nextest_relies_on() {
    let bin = conformance_bin();
    // One `name: test` line per case.
    let out = Command::new(&bin).args(["--list", "--format", "terse"]).env("QGA_TRANSPORT", "socketpair").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 90 && lines.iter().all(|l| l.starts_with("reference::socketpair::") && l.ends_with(": test")), "{text}");
    // --exact runs exactly one.
    let out = Command::new(&bin).args(["--exact", "reference::socketpair::sync/1"]).env("QGA_TRANSPORT", "socketpair").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed") && text.contains("filtered out"), "{text}");
    // A failing case: exit 101 with its failure text.
    let mutant = format!("{CONFORMANCE} ref-agent --bug no-sentinel");
    let name = "mutant::socketpair::sync-delimited/1";
    let out = Command::new(&bin)
        .args(["--exact", name])
        .env("QGA_TRANSPORT", "socketpair")
        .env("QGA_AGENT", &mutant)
        .env("QGA_AGENT_NAME", "mutant")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(101), "{text}");
    assert!(text.contains("requirement:") && text.contains("no-sentinel"), "{text}");
    // The same failure expected by a baseline passes.
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("b.toml");
    std::fs::write(&baseline, "[outcomes]\n\"sync-delimited/1\" = \"FAIL\"\n").unwrap();
    let out = Command::new(&bin)
        .args(["--exact", name])
        .env("QGA_TRANSPORT", "socketpair")
        .env("QGA_AGENT", &mutant)
        .env("QGA_AGENT_NAME", "mutant")
        .env("QGA_EXPECT", &baseline)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn fuzz_shards_never_run_the_same_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for k in 1..=2 {
        let json = dir.path().join(format!("f{k}.json"));
        let st = Command::new(HARNESS)
            .args(["fuzz", "--transport", "socketpair", "--cases", "24", "--seed", "9", "--jobs", "2", "--floor-spawns", "0", "--shard", &format!("{k}/2"), "--out"])
            .arg(dir.path())
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(st.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&st.stderr));
        let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        reports.push(doc["report"].clone());
    }
    let set = |r: &Value, k: &str| -> BTreeSet<u64> { r[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect() };
    assert!(set(&reports[0], "streams").is_disjoint(&set(&reports[1], "streams")));
    let (a, b) = (set(&reports[0], "schedule_digests"), set(&reports[1], "schedule_digests"));
    assert!(a.len() >= 20 && b.len() >= 20, "{} {}", a.len(), b.len());
    assert!(a.is_disjoint(&b), "a schedule ran in both shards");
}

/// Every `qga-harness SUB ...` a workflow step runs: SUB exists and takes
/// each `--flag` given.
#[test]
fn the_ci_workflow_parses_and_runs_only_commands_that_exist() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.github/workflows/conformance.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let jobs = docs[0]["jobs"].as_hash().expect("jobs");
    assert!(jobs.len() >= 2, "a matrix job and a merge job");
    let mut runs = Vec::new();
    for (_, job) in jobs {
        for step in job["steps"].as_vec().expect("steps") {
            if let Some(r) = step["run"].as_str() {
                runs.push(r.replace("\\\n", " "));
            }
        }
    }
    let mut checked = 0;
    for script in &runs {
        for line in script.lines() {
            // The binary as a step runs it (not `cargo ... -p qga-harness`).
            let Some(at) = line.find("/qga-harness ") else { continue };
            let words: Vec<&str> = line[at + 1..].split_whitespace().collect();
            let sub = words[1];
            let help = Command::new(HARNESS).args([sub, "--help"]).output().unwrap();
            assert!(help.status.success(), "qga-harness {sub} does not exist ({line})");
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            for w in words.iter().skip(2).filter(|w| w.starts_with("--")) {
                let flag = w.split('=').next().unwrap();
                assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "qga-harness {sub} has no {flag} ({line})");
            }
            // Flags built up in a bash array: `args=(--transport ... --shard ...)`.
            checked += 1;
        }
        if let Some(args) = script.split("args=(").nth(1) {
            let help = String::from_utf8_lossy(&Command::new(HARNESS).args(["run", "--help"]).output().unwrap().stdout).into_owned();
            for flag in args.split_whitespace().filter(|w| w.starts_with("--")) {
                assert!(help.contains(&format!("{flag} ")), "qga-harness run has no {flag}");
            }
            for flag in script.split("args+=(").skip(1).filter_map(|s| s.split_whitespace().next()) {
                assert!(help.contains(&format!("{flag} ")), "qga-harness run has no {flag}");
            }
        }
    }
    assert!(checked >= 2, "{runs:?}");
    // The nextest job runs the libtest target that exists.
    assert!(runs.iter().any(|r| r.contains("--test conformance")));
}

#[test]
fn ci_run_kills_nothing_it_did_not_start() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run");
    let text = std::fs::read_to_string(path).unwrap();
    for bad in ["pkill", "killall", "kill -"] {
        assert!(!text.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains(bad)), ".ci/run runs {bad}");
    }
}
