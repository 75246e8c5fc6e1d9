//! Loading the catalogue: TOML files, one per section, validated as a whole.
//! Every error names the file, the line and the field, so a typo in a case
//! file is one clear message, never a silently skipped case.

use super::pattern::check_placeholders;
use super::step::Step;
use super::{Case, CaseFile, Role};
use std::collections::HashMap;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/embedded_cases.rs"));

/// A problem with a case file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The cases compiled into this binary (from the repository's cases/),
/// and the schema section generated from the QGA schema
/// ([`super::schema_section`]).
pub fn embedded() -> Result<Vec<Case>, LoadError> {
    let mut cases = load_all(EMBEDDED_CASES.iter().map(|(n, t)| (format!("cases/{n}"), (*t).to_owned())))?;
    for case in super::schema_section::section() {
        validate("schema", &case).map_err(|message| LoadError { file: "(generated) schema".into(), line: 0, message })?;
        if cases.iter().any(|c| c.id == case.id) {
            return Err(LoadError { file: "(generated) schema".into(), line: 0, message: format!("{} is also in a case file", case.id) });
        }
        cases.push(case);
    }
    Ok(cases)
}

/// The embedded cases of one role: agent cases for `run`, client cases for
/// `client`.
pub fn embedded_role(role: super::Role) -> Result<Vec<Case>, LoadError> {
    Ok(embedded()?.into_iter().filter(|c| c.role == role).collect())
}

/// Every `*.toml` in `dir`, or one file.
pub fn from_path(path: &Path) -> Result<Vec<Case>, LoadError> {
    let err = |e: std::io::Error| LoadError { file: path.display().to_string(), line: 0, message: e.to_string() };
    let mut files = Vec::new();
    if path.is_dir() {
        let mut paths: Vec<_> = std::fs::read_dir(path)
            .map_err(err)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| LoadError { file: p.display().to_string(), line: 0, message: e.to_string() })?;
            files.push((p.display().to_string(), text));
        }
    } else {
        files.push((path.display().to_string(), std::fs::read_to_string(path).map_err(err)?));
    }
    load_all(files)
}

/// Parse and validate files given as (name, text).
pub fn load_all(files: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Case>, LoadError> {
    let mut cases = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (name, text) in files {
        let file: CaseFile = toml::from_str(&text).map_err(|e| LoadError {
            file: name.clone(),
            line: e.span().map_or(0, |s| line_of(&text, s.start)),
            message: e.message().to_owned(),
        })?;
        for case in file.cases {
            let line = text.find(&format!("\"{}\"", case.id)).map_or(0, |at| line_of(&text, at));
            let fail = |message: String| LoadError { file: name.clone(), line, message: format!("case {}: {message}", case.id) };
            validate(&file.section, &case).map_err(fail)?;
            if let Some(other) = seen.insert(case.id.clone(), name.clone()) {
                return Err(fail(format!("duplicate id (also in {other})")));
            }
            cases.push(case);
        }
    }
    Ok(cases)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Checks that serde cannot express.
pub fn validate(section: &str, case: &Case) -> Result<(), String> {
    match case.id.rsplit_once('/') {
        Some((s, n)) if s == section && n.parse::<u32>().is_ok_and(|n| n > 0) => {}
        _ => return Err(format!("field id: must be \"{section}/N\" with N a positive integer")),
    }
    for (field, value) in [("title", &case.title), ("requirement", &case.requirement), ("source", &case.source)] {
        if value.trim().is_empty() {
            return Err(format!("field {field}: must not be empty"));
        }
    }
    if case.steps.is_empty() {
        return Err("field steps: a case needs at least one step".into());
    }
    match case.role {
        Role::Agent if !case.job.is_empty() || case.goal.is_some() || !case.checks.is_empty() => {
            return Err("fields job, goal and checks are for role = \"client\" cases".into());
        }
        Role::Client if case.goal.is_none() => {
            return Err("field goal: a client case says \"recover\" or \"detect\"".into());
        }
        Role::Client if case.job.iter().any(|c| c.starts_with("guest-sync")) => {
            return Err("field job: the client syncs on its own; the job lists commands".into());
        }
        _ => {}
    }
    let mut problem = None;
    Step::visit(&case.steps, &mut |s| {
        if problem.is_none() {
            problem = check_step(s).and_then(|()| check_role(case.role, s)).err();
        }
    });
    problem.map_or(Ok(()), Err)
}

/// Each role has its own steps: an agent case plays the client, a client
/// case plays the agent's side of the channel.
fn check_role(role: Role, step: &Step) -> Result<(), String> {
    let name = match step {
        Step::Send(_) => "send",
        Step::Batch(_) => "batch",
        Step::Garbage(_) => "garbage",
        Step::Abandon(_) => "abandon",
        Step::Kill(_) => "kill",
        Step::Restart(_) => "restart",
        Step::Reconnect(_) => "reconnect",
        Step::Inject(_) => "inject",
        Step::Expect(_) => "expect",
        Step::ExpectSilence(_) => "expect-silence",
        Step::Resync(_) => "resync",
        Step::Pause(_) => "pause",
        Step::Repeat(_) => "repeat",
        Step::Await(_) => "await",
        Step::Reply(_) => "reply",
    };
    let ok = match role {
        Role::Agent => !matches!(step, Step::Await(_) | Step::Reply(_)),
        Role::Client => matches!(
            step,
            Step::Await(_) | Step::Reply(_) | Step::Inject(_) | Step::Garbage(_) | Step::Kill(_) | Step::Restart(_) | Step::Pause(_)
        ) || matches!(step, Step::Send(s) if s.raw.is_some() || s.truncate.is_some()),
    };
    if ok {
        return Ok(());
    }
    Err(match role {
        Role::Agent => format!("{name}: a client-mode step; this case grades the agent (role = \"client\" to grade clients)"),
        Role::Client => format!("{name}: not a client-mode step (client cases use await, reply, inject, garbage, send with raw or truncate, kill, restart, pause)"),
    })
}

fn check_step(step: &Step) -> Result<(), String> {
    match step {
        Step::Batch(sends) => {
            if sends.is_empty() {
                return Err("batch: give at least one send".into());
            }
            sends.iter().try_for_each(|s| check_step(&Step::Send(s.clone())))?;
        }
        Step::Send(s) => {
            if s.pad.is_some_and(|n| n > 64 << 20) {
                return Err("send: pad is at most 64 MiB".into());
            }
            if s.command.is_some() == s.raw.is_some() {
                return Err("send: give exactly one of command and raw".into());
            }
            if s.raw.is_some() && (s.arguments.is_some() || s.id.is_some()) {
                return Err("send: arguments and id go with command, not raw".into());
            }
            if s.repeat == 0 || s.repeat > 100_000 {
                return Err("send: repeat must be 1..=100000".into());
            }
            if s.chunk == Some(0) {
                return Err("send: chunk must be at least 1".into());
            }
            if s.delay_us > 100_000 {
                return Err("send: delay_us is at most 100000".into());
            }
        }
        Step::Expect(e) => {
            if e.schema && (e.return_.is_some() || e.error.is_some()) {
                return Err("expect: schema = true checks the reply against the schema; give no return or error".into());
            }
            if !e.schema && e.return_.is_some() == e.error.is_some() {
                return Err("expect: give exactly one of return and error".into());
            }
            if let Some(p) = &e.return_ {
                check_placeholders(p).map_err(|m| format!("expect.return: {m}"))?;
            }
            if e.count == 0 {
                return Err("expect: count must be at least 1".into());
            }
        }
        Step::Garbage(g) if g.len > 64 << 20 => return Err("garbage: len is at most 64 MiB".into()),
        Step::Pause(p) if p.ms > 10_000 => return Err("pause: ms is at most 10000".into()),
        Step::ExpectSilence(s) if s.ms > 10_000 => return Err("expect-silence: ms is at most 10000".into()),
        Step::Repeat(r) if r.times == 0 || r.times > 10_000 => return Err("repeat: times must be 1..=10000".into()),
        Step::Await(a) if a.nth == 0 || a.nth > 1000 => return Err("await: nth must be 1..=1000".into()),
        Step::Reply(r) => {
            if r.chunk == Some(0) {
                return Err("reply: chunk must be at least 1".into());
            }
            if r.delay_us > 100_000 || r.delay_ms.is_some_and(|d| d > 10_000) {
                return Err("reply: delay_us is at most 100000, delay_ms at most 10000".into());
            }
            if r.drop && (r.duplicate || r.truncate.is_some() || r.chunk.is_some()) {
                return Err("reply: drop goes with nothing but restart".into());
            }
            if r.instead.is_some() && (r.drop || r.duplicate || r.truncate.is_some() || r.chunk.is_some() || r.before.is_some() || r.delay_ms.is_some() || r.past_timeout) {
                return Err("reply: instead (the reply lost, stale bytes in its place) goes with nothing but restart".into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Case>, LoadError> {
        load_all([("x.toml".to_string(), text.to_string())])
    }

    const GOOD: &str = r#"
section = "demo"
[[case]]
id = "demo/1"
title = "t"
level = "MUST"
requirement = "r"
source = "s"
steps = [ { send = { command = "guest-ping" } }, { expect = { return = {} } } ]
"#;

    #[test]
    fn loads_a_good_file() {
        let cases = load(GOOD).unwrap();
        assert_eq!(cases[0].section(), "demo");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace("level = \"MUST\"", "level = \"MAYBE\"");
        let e = load(&bad).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("x.toml", 6), "{e}");
        assert!(e.message.contains("MAYBE"), "{e}");

        let bad = GOOD.replace("demo/1", "other/1");
        let e = load(&bad).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().contains("field id"), "{e}");

        let bad = GOOD.replace("{ return = {} }", "{ return = {}, error = \"x\" }");
        assert!(load(&bad).unwrap_err().to_string().contains("exactly one of return and error"));

        let bad = GOOD.replace("return = {}", "return = \"$nope\"");
        assert!(load(&bad).unwrap_err().to_string().contains("$nope"));

        let twice = format!("{GOOD}{}", &GOOD[GOOD.find("[[case]]").unwrap()..]);
        assert!(load(&twice).unwrap_err().to_string().contains("duplicate id"));
    }

    #[test]
    fn the_embedded_catalogue_loads() {
        let cases = embedded().unwrap();
        let mut ids: Vec<_> = cases.iter().map(|c| c.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), cases.len());
    }
}
