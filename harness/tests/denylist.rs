//! The deny-list, end to end: case files that try to get destructive
//! commands to the agent (split across writes, escaped, behind whitespace,
//! pipelined) run through the whole CLI against the reference agent, which
//! records every byte it reads. Each must end in ERROR (exit 2), and the
//! agent must never have read a denied command's name.

mod common;

use assert_cmd::Command;
use common::HARNESS;
use qga_harness::wire::denylist::DENIED_PREFIXES;
use std::path::Path;
use std::time::Duration;

/// One attempt: its steps (TOML inline tables), and a harmless prefix of the
/// command that must have reached the agent (proving the stream was stopped
/// mid-name by the guard, not before it by a per-write check), if any.
struct Attempt {
    title: &'static str,
    steps: Vec<String>,
    reached: Option<&'static [u8]>,
}

/// `bytes` as the body of a TOML literal string in the case format: `\xHH`
/// for anything that is not printable ASCII, for `'`, and for a backslash
/// that would read as the start of `\x`.
fn toml_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        let starts_hex = b == b'\\' && bytes.get(i + 1) == Some(&b'x');
        if (0x20..0x7f).contains(&b) && b != b'\'' && !starts_hex {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

fn raw(bytes: &[u8]) -> String {
    format!("{{ send = {{ raw = '{}' }} }}", toml_bytes(bytes))
}

/// `bytes` as `n` raw send steps of about equal size.
fn split(bytes: &[u8], n: usize) -> Vec<String> {
    (0..n).map(|i| raw(&bytes[i * bytes.len() / n..(i + 1) * bytes.len() / n])).collect()
}

fn attempts() -> Vec<Attempt> {
    let long = br#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}"#;
    let file_open = br#"{"execute":"guest-file-open","arguments":{"path":"/etc/passwd"}}"#;
    vec![
        Attempt { title: "split over 2 writes", steps: vec![raw(br#"{"execute":"guest-shut"#), raw(br#"down"}"#)], reached: Some(b"guest-shut") },
        Attempt {
            title: "split over 3 writes",
            steps: vec![raw(br#"{"execute":"guest-"#), raw(b"fsfree"), raw(br#"ze-freeze"}"#)],
            reached: Some(b"guest-fsfree"),
        },
        Attempt { title: "split over 40 writes", steps: split(long, 40), reached: Some(b"guest-shutd") },
        Attempt {
            title: "a \\u escape split across writes",
            steps: vec![raw(br#"{"execute":"guest-shut\u00"#), raw(b"64ow"), raw(br#"n"}"#)],
            reached: Some(br"guest-shut\u0064ow"),
        },
        Attempt {
            title: "every character escaped, 3 writes",
            steps: split(br#"{"execute":"\u0067\u0075\u0065\u0073\u0074\u002d\u0065\u0078\u0065\u0063","arguments":{"path":"/bin/true"}}"#, 3),
            reached: None,
        },
        Attempt { title: "escaped, one write", steps: vec![raw(br#"{"execute":"guest-set-\u0074ime"}"#)], reached: None },
        Attempt {
            title: "behind whitespace, 2 writes",
            steps: vec![raw(b" \t\r\n{ \n \"execute\" :\t \"guest-"), raw(b"exec\", \"arguments\": {\"path\": \"/bin/true\"}}\n")],
            reached: Some(b"\"guest-"),
        },
        Attempt {
            title: "last of a pipelined batch, completed by the next write",
            steps: vec![
                r#"{ batch = [ { command = "guest-ping" }, { command = "guest-info" }, { raw = '{"execute":"guest-se' } ] }"#.into(),
                raw(br#"t-time","arguments":{}}"#),
            ],
            reached: Some(b"guest-se"),
        },
        Attempt {
            title: "inside a pipelined batch",
            steps: vec![r#"{ batch = [ { command = "guest-ping" }, { command = "guest-suspend-disk" }, { command = "guest-info" } ] }"#.into()],
            reached: None,
        },
        Attempt { title: "upper case, 2 writes", steps: vec![raw(br#"{"execute":"GUEST-SUSP"#), raw(br#"END-RAM"}"#)], reached: Some(b"GUEST-SUSP") },
        Attempt {
            title: "reset bytes inside the name, 2 writes",
            steps: vec![raw(b"\xff{\"execute\":\"guest-fs\xfftr"), raw(b"\xffim\"}")],
            reached: Some(b"guest-fs\xfftr"),
        },
        Attempt { title: "one byte a write", steps: split(file_open, file_open.len()), reached: Some(b"guest-file") },
    ]
}

fn case_file(attempts: &[Attempt]) -> String {
    let mut out = String::from("section = \"deny\"\ndescription = \"Destructive commands the harness must never let through.\"\n");
    for (i, a) in attempts.iter().enumerate() {
        out.push_str(&format!(
            "\n[[case]]\nid = \"deny/{}\"\ntitle = 'Denied command, {}'\nlevel = \"MUST\"\n\
             requirement = \"The harness refuses to send a denied command.\"\nsource = \"harness deny-list\"\nsteps = [\n",
            i + 1,
            a.title
        ));
        // A pause after each write, so the agent has read what went out
        // before a refusal ends the case (and the engine kills the agent).
        for s in &a.steps {
            out.push_str(&format!("  {s},\n  {{ pause = {{ ms = 5 }} }},\n"));
        }
        out.push_str("]\n");
    }
    out
}

/// The agent template for `transport`, recording to `record`.
fn agent(transport: &str, record: &Path) -> String {
    let record = shell_words_quote(&record.display().to_string());
    match transport {
        "pty" => format!("{HARNESS} ref-agent --path {{path}} --record {record}"),
        "unix-listen" => format!("{HARNESS} ref-agent --unix-listen {{path}} --record {record}"),
        _ => format!("{HARNESS} ref-agent --record {record}"),
    }
}

fn shell_words_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The stream as an agent could read it: `\uXXXX` undone, 0xFF and 0xFE
/// dropped, lower case.
fn as_read(bytes: &[u8]) -> String {
    let text: String = bytes.iter().filter(|&&b| b < 0xFE).map(|&b| char::from(b)).collect();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i]);
        match rest.get(i + 2..i + 6).and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32) {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 6..];
            }
            None => {
                out.push_str("\\u");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out.to_lowercase()
}

#[test]
fn destructive_commands_never_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir(&cases).unwrap();
    let attempts = attempts();
    std::fs::write(cases.join("deny.toml"), case_file(&attempts)).unwrap();

    let mut problems = Vec::new();
    for transport in ["socketpair", "pty", "unix-listen"] {
        // One run per case: each gets a fresh agent, session and guard, so a
        // refusal in one cannot stand in for the next.
        for (i, attempt) in attempts.iter().enumerate() {
            let id = format!("deny/{}", i + 1);
            let what = format!("{id} ({}) over {transport}", attempt.title);
            let record = dir.path().join(format!("{transport}-{}.bin", i + 1));
            let json = dir.path().join(format!("{transport}-{}.json", i + 1));
            let out = Command::cargo_bin("qga-harness")
                .unwrap()
                .args(["run", "--transport", transport, "--agent", &agent(transport, &record), "--cases"])
                .arg(&cases)
                .args(["--case", &id, "--json"])
                .arg(&json)
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap();
            let stdout = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if out.status.code() != Some(2) {
                problems.push(format!("{what}: exit {:?}, not 2\n{stdout}", out.status.code()));
            }
            match std::fs::read(&json).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
                Some(doc) => {
                    let outcomes: Vec<_> = doc["results"].as_array().into_iter().flatten().map(|r| r["outcome"].clone()).collect();
                    if outcomes != [serde_json::json!("ERROR")] {
                        problems.push(format!("{what}: outcomes {outcomes:?}, not [ERROR]\n{stdout}"));
                    }
                }
                None => problems.push(format!("{what}: no JSON run document\n{stdout}")),
            }
            let Ok(recorded) = std::fs::read(&record) else {
                problems.push(format!("{what}: the agent recorded nothing (does ref-agent take --record?)"));
                continue;
            };
            let read = as_read(&recorded);
            if !read.contains("guest-sync-delimited") {
                problems.push(format!("{what}: the record lacks even the start-up sync: {}", String::from_utf8_lossy(&recorded)));
            }
            if let Some(name) = DENIED_PREFIXES.iter().find(|n| read.contains(*n)) {
                problems.push(format!("{what}: THE AGENT READ {name}: {}", String::from_utf8_lossy(&recorded)));
            }
            if let Some(prefix) = attempt.reached {
                if !recorded.windows(prefix.len()).any(|w| w == prefix) {
                    problems.push(format!(
                        "{what}: {} did not reach the agent, so the name was not stopped mid-stream: {}",
                        String::from_utf8_lossy(prefix),
                        String::from_utf8_lossy(&recorded)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_oracle_undoes_escapes_and_reset_bytes() {
    assert_eq!(as_read(b"\xff{\"EXECUTE\":\"guest-shut\\u0064\xfeown\"}"), "{\"execute\":\"guest-shutdown\"}");
    assert_eq!(as_read(br"\u00"), r"\u00");
    let file = case_file(&attempts());
    let parsed: toml::Value = toml::from_str(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_eq!(parsed["case"].as_array().unwrap().len(), attempts().len());
}
