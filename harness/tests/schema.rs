//! The schema section: it covers the schema's read-only commands, nothing
//! outside its allow-list ever reaches an agent, the schema file is the
//! qapi-qga crate's, and real qemu-ga (7.2, and 10.0 where present) passes
//! every schema case or is INFO.

mod common;

use common::*;
use qga_harness::schema::{Schema, ALLOW_LIST, EXCLUDED};
use serde_json::Value;
use std::process::Command;

/// Commands that read and change nothing, by the schema's own naming.
fn looks_read_only(name: &str) -> bool {
    name.starts_with("guest-get-") || name.starts_with("guest-network-get-") || name.ends_with("-status") && !name.starts_with("guest-exec")
}

#[test]
fn the_section_covers_every_read_only_command_of_the_schema() {
    let schema = Schema::embedded();
    for name in schema.commands.keys().filter(|n| looks_read_only(n)) {
        assert!(
            ALLOW_LIST.contains(&name.as_str()) || EXCLUDED.iter().any(|(n, _)| n == name),
            "the schema's {name} is neither allow-listed nor excluded with a reason (schema::ALLOW_LIST / EXCLUDED)"
        );
    }
    for (name, why) in EXCLUDED {
        assert!(why.len() > 10, "{name}: say why it is excluded");
    }
    // Each allow-listed command is a read-only name, and the deny-list lets
    // each through (it has the last word).
    for name in ALLOW_LIST {
        assert!(looks_read_only(name) || ["guest-info", "guest-ping"].contains(name), "{name}");
        let req = format!(r#"{{"execute":"{name}"}}"#);
        assert_eq!(qga_harness::wire::denylist::denied_command(req.as_bytes()), None, "{name} is refused");
    }
    let ids: Vec<String> = qga_harness::case::load::embedded().unwrap().into_iter().filter(|c| c.section() == "schema").map(|c| c.id).collect();
    assert_eq!(ids.len(), ALLOW_LIST.len());
}

/// Every `"execute": "NAME"` in raw bytes an agent read.
fn executed(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(at) = rest.find("\"execute\"") {
        rest = &rest[at + 9..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix(':') else { continue };
        let after = after.trim_start();
        if let Some(body) = after.strip_prefix('"') {
            if let Some(end) = body.find('"') {
                let lit = format!("\"{}\"", &body[..end]);
                out.push(serde_json::from_str::<String>(&lit).unwrap_or(body[..end].to_owned()));
            }
        }
    }
    out
}

#[test]
fn no_command_outside_the_allow_list_ever_reaches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.bin");
    let agent = format!("{HARNESS} ref-agent --record {}", rec.display());
    let out = Command::new(HARNESS).args(["run", "--transport", "socketpair", "--seed", "3", "--agent", &agent]).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("121 cases") || text.contains(" cases in "), "{text}");
    let names = executed(&std::fs::read(&rec).unwrap());
    assert!(names.len() > 500, "{} requests recorded", names.len());
    let schema = Schema::embedded();
    let mut seen: Vec<&str> = Vec::new();
    for n in &names {
        let known = schema.commands.contains_key(n.as_str());
        let fine = ALLOW_LIST.contains(&n.as_str()) || n == "guest-sync" || n == "guest-sync-delimited";
        assert!(!known || fine, "{n} reached the agent: a schema command outside the allow-list");
        if known && !seen.contains(&n.as_str()) {
            seen.push(n);
        }
    }
    // The test can fail: the section's commands did reach the agent.
    for n in ["guest-get-osinfo", "guest-fsfreeze-status", "guest-network-get-interfaces"] {
        assert!(seen.contains(&n), "{n} never sent: {seen:?}");
    }
}

#[test]
fn the_schema_file_is_the_qapi_qga_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // Offline, for this host only (other platforms' crates are not fetched).
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(str::to_owned)).expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host, "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == "qapi-qga").expect("qapi-qga in the dependency graph");
    assert_eq!(pkg["version"], "0.13.0", "qga_harness::schema::SCHEMA_VERSION names 0.13.0: update both");
    let dir = std::path::Path::new(pkg["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf();
    let theirs = std::fs::read_to_string(dir.join("schema/qga/qapi-schema.json")).unwrap();
    assert!(theirs == qga_harness::schema::SCHEMA_TEXT, "harness/schema/qga/qapi-schema.json differs from {}", dir.display());
}

/// qemu-ga 10.0, unpacked by .ci/run from bookworm-backports when reachable.
fn qemu_ga_10() -> Option<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/qemu-ga-10.0/usr/sbin/qemu-ga");
    if p.is_file() {
        return Some(p.display().to_string());
    }
    eprintln!("qemu-ga 10.0 not unpacked at {} (.ci/run does it when bookworm-backports can be reached): skipped", p.display());
    None
}

#[test]
fn real_qemu_ga_passes_every_schema_case_or_is_info() {
    let mut agents: Vec<(String, &str)> = Vec::new();
    if let Some(bin) = qemu_ga() {
        agents.push((bin.to_owned(), "7.2"));
    }
    if let Some(bin) = qemu_ga_10() {
        agents.push((bin, "10.0"));
    }
    for (bin, v) in &agents {
        for (method, transport) in [("isa-serial", "pty"), ("unix-listen", "unix-listen")] {
            let agent = format!("{bin} -m {method} -p {{path}} -t {{statedir}}");
            let out = Command::new(HARNESS).args(["run", "--case", "schema/*", "--transport", transport, "--agent", &agent]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "qemu-ga {v} over {transport}:\n{text}");
            assert!(text.contains(&format!("agent version (guest-info): {v}")), "{text}");
            for line in text.lines().filter(|l| l.contains("schema/")) {
                let outcome = line.split_whitespace().next().unwrap_or("");
                assert!(["PASS", "INFO", "UNSUPPORTED"].contains(&outcome), "qemu-ga {v} over {transport}: {line}");
            }
            if *v == "10.0" {
                // guest-get-load came after the schema's QEMU 9.1: INFO, never FAIL.
                assert!(text.lines().any(|l| l.starts_with("INFO") && l.contains("schema/16")), "{text}");
            }
        }
    }
}

#[test]
fn qemu_ga_10_matches_its_committed_baselines() {
    let Some(bin) = qemu_ga_10() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (method, transport, name) in [("isa-serial", "pty", "pty-isa-serial"), ("unix-listen", "unix-listen", "unix-listen")] {
        let agent = format!("{bin} -m {method} -p {{path}} -t {{statedir}}");
        let expect = root.join(format!("reports/qemu-ga-10.0/{name}.expect.toml"));
        let out = Command::new(HARNESS).args(["run", "--transport", transport, "--agent", &agent, "--expect"]).arg(&expect).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "qemu-ga 10.0 over {transport} against {}:\n{text}", expect.display());
        assert!(text.contains("baseline: 0 regression(s)"), "{text}");
    }
}
