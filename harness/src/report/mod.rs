//! Reports of a run: the terminal summary and the JSON document (the source
//! of truth that other formats are made from), JUnit XML ([`junit`]) and a
//! Markdown summary ([`markdown`]). Reading run documents back and writing
//! report files and directories: [`read_run`], [`write_dir`].

mod files;
pub mod html;
pub mod junit;
pub mod markdown;

pub use files::{read_run, write_baseline, write_dir, write_run, DirContents};

use crate::baseline::Comparison;
use crate::verdict::{CaseResult, RunResult};
use crate::transcript::{escape_bytes, render_entries};
use crate::verdict::{FailureKind, Outcome};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Version of the JSON document's layout.
pub const JSON_SCHEMA: &str = "qga-harness/run/3";

/// Merge the runs that are shards of one run (`--shard K/N`: same agent,
/// transport, role and seed) into that run: results in catalogue order,
/// elapsed the longest shard's (they run side by side). Other runs pass
/// through. A case in two shards of one run, or shards of one run that
/// disagree on N, is an error; missing shards are reported, not invented.
pub fn merge_shards(runs: Vec<RunResult>) -> Result<(Vec<RunResult>, Vec<String>), String> {
    let order: Vec<String> = crate::case::load::embedded().map(|c| c.into_iter().map(|c| c.id).collect()).unwrap_or_default();
    let rank = |id: &str| order.iter().position(|o| o == id).unwrap_or(usize::MAX);
    let mut out: Vec<RunResult> = Vec::new();
    let mut parts: Vec<Vec<crate::case::shard::Shard>> = Vec::new();
    let mut notes = Vec::new();
    for run in runs {
        let Some(shard) = run.shard else {
            out.push(run);
            parts.push(Vec::new());
            continue;
        };
        let same = out.iter().position(|m| {
            m.shard.is_some() && m.agent == run.agent && m.transport == run.transport && m.role == run.role && m.seed == run.seed
        });
        match same {
            None => {
                parts.push(vec![shard]);
                out.push(run);
            }
            Some(i) => {
                let m = &mut out[i];
                let n = parts[i][0].n;
                if shard.n != n {
                    return Err(format!("{} over {}: shards of {n} and of {} cannot be merged", run.agent, run.transport, shard.n));
                }
                if let Some(dup) = run.results.iter().find(|r| m.results.iter().any(|x| x.id == r.id)) {
                    return Err(format!("{} over {}: case {} is in two shards", run.agent, run.transport, dup.id));
                }
                parts[i].push(shard);
                m.results.extend(run.results);
                m.elapsed = m.elapsed.max(run.elapsed);
                if m.startup_error.is_none() {
                    m.startup_error = run.startup_error;
                }
            }
        }
    }
    for (m, p) in out.iter_mut().zip(&parts) {
        let Some(first) = p.first() else { continue };
        m.results.sort_by_key(|r| (rank(&r.id), r.id.clone()));
        let missing: Vec<String> = (1..=first.n).filter(|k| !p.iter().any(|s| s.k == *k)).map(|k| format!("{k}/{}", first.n)).collect();
        if missing.is_empty() {
            m.shard = None;
        } else {
            notes.push(format!("{} over {}: shard(s) {} missing; merged what is there", m.agent, m.transport, missing.join(", ")));
        }
    }
    Ok((out, notes))
}

/// Count of each outcome.
pub fn counts(results: &[CaseResult]) -> Vec<(Outcome, usize)> {
    Outcome::ALL.iter().map(|o| (*o, results.iter().filter(|r| r.outcome == *o).count())).collect()
}

/// One distinct defect and the cases that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FailureKind,
    pub summary: &'static str,
    /// What the start-up probe saw, when it found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Failing cases with this kind, and their outcomes.
    pub cases: Vec<(String, Outcome)>,
    /// Cases BLOCKED because of it.
    pub blocked: Vec<String>,
}

/// The run's distinct findings: the start-up probe's, then each failure
/// kind, each with the cases that show it. A single defect is one finding,
/// however many cases it touches.
pub fn findings(run: &RunResult, strict: bool) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    if let Some(p) = &run.profile {
        for f in &p.findings {
            let blocked = run
                .results
                .iter()
                .filter(|r| r.outcome == Outcome::Blocked && r.failure.as_ref().is_some_and(|x| x.actual.contains(&f.detail)))
                .map(|r| r.id.clone())
                .collect();
            out.push(Finding { kind: f.kind, summary: f.kind.summary(), probe: Some(f.detail.clone()), cases: Vec::new(), blocked });
        }
    }
    for r in &run.results {
        if !(r.outcome.is_failing(strict) || r.outcome == Outcome::NonStrict) || r.outcome == Outcome::Blocked {
            continue;
        }
        let kind = r.failure.as_ref().map_or(FailureKind::Other, |f| f.kind);
        match out.iter_mut().find(|f| f.kind == kind) {
            Some(f) => f.cases.push((r.id.clone(), r.outcome)),
            None => out.push(Finding { kind, summary: kind.summary(), probe: None, cases: vec![(r.id.clone(), r.outcome)], blocked: Vec::new() }),
        }
    }
    out
}

/// One line per case; requirement, expected, actual for each case that did
/// not pass, with a transcript excerpt once per distinct finding; the
/// findings; counts; and a closing `N passed, N failed` line.
pub fn render_terminal(run: &RunResult, cmp: Option<&Comparison>, strict: bool, transcripts: bool) -> String {
    let mut out = String::new();
    match &run.client {
        Some(c) => {
            let _ = writeln!(out, "client: {}", escape_bytes(run.agent.as_bytes()));
            let _ = writeln!(out, "client's port: {} (timeout {} ms)", run.transport, c.timeout_ms);
            let _ = writeln!(out, "agent behind the harness: {} over {}", escape_bytes(c.agent.as_bytes()), c.agent_transport);
        }
        None => {
            let _ = writeln!(out, "agent: {}", escape_bytes(run.agent.as_bytes()));
            let _ = writeln!(out, "transport: {}", run.transport);
        }
    }
    if let Some(v) = &run.agent_version {
        let _ = writeln!(out, "agent version (guest-info): {}", escape_bytes(v.as_bytes()));
    }
    let _ = writeln!(out, "seed: {} (--seed {} repeats this run's ids)", run.seed, run.seed);
    if let Some(e) = &run.startup_error {
        let _ = writeln!(out, "\nthe agent could not be run: {}", sanitize(&e.message));
        if !e.stderr.is_empty() {
            let _ = writeln!(out, "its stderr:");
            for line in e.stderr.lines().take(20) {
                let _ = writeln!(out, "  {}", truncate(&sanitize(line), 300));
            }
        }
        if let Some(h) = &e.hint {
            let _ = writeln!(out, "hint: {h}");
        }
        let text = render_entries(&e.transcript);
        let lines: Vec<&str> = text.lines().collect();
        let _ = writeln!(out, "transcript ({} entries, last 15):", lines.len());
        for line in &lines[lines.len().saturating_sub(15)..] {
            let _ = writeln!(out, "  {}", truncate(line, 300));
        }
        let failed = run.results.iter().filter(|r| r.outcome.is_failing(strict)).count();
        let _ = writeln!(out, "\n{} cases not run", run.results.len());
        let _ = writeln!(out, "{} passed, {failed} failed", run.results.len() - failed);
        return out;
    }
    if let (Some(p), None) = (&run.profile, &run.client) {
        let _ = writeln!(out, "sync: {}; pace factor {:.1} (ping {} us)", p.mode.describe(), p.pace.factor, p.pace.rtt_us);
    }
    if let Some(vm) = &run.vm {
        let _ = writeln!(out, "vm: {}", vm_line(vm));
    }
    let mut shown_kinds = std::collections::HashSet::new();
    for r in &run.results {
        let rec = match (&r.client, r.recovery.grade) {
            (Some(c), _) => c.grade.to_string(),
            (None, crate::verdict::RecoveryGrade::NotRun) => String::new(),
            (None, g) => format!("{g:?}").to_lowercase(),
        };
        let _ = writeln!(out, "{:<11} {:<22} {:>9.3}ms  {:<8}  {}", r.outcome.as_str(), r.id, r.elapsed.as_secs_f64() * 1e3, rec, r.title);
        if let Some(c) = r.client.as_ref().filter(|_| r.outcome != Outcome::Pass) {
            for rep in &c.reported {
                let note = rep.note.as_deref().map(|n| format!(" ({})", sanitize(n))).unwrap_or_default();
                let _ = writeln!(out, "      reported:    {} {} {}{note}", rep.command, rep.status, truncate(&sanitize(&rep.value), 120));
            }
        }
        if r.outcome != Outcome::Pass {
            if let Some(f) = &r.failure {
                let _ = writeln!(out, "      requirement: {}", f.requirement);
                let _ = writeln!(out, "      expected:    {}", f.expected);
                let _ = writeln!(out, "      actual:      {}", sanitize(&f.actual));
                let _ = writeln!(out, "      finding:     {} ({})", f.kind.code(), f.kind.summary());
                // One transcript excerpt per distinct finding.
                let first_of_kind = shown_kinds.insert(f.kind);
                let show = transcripts || (r.outcome.is_failing(strict) && first_of_kind);
                if show && f.transcript.0 < f.transcript.1 {
                    let entries: Vec<_> = r.transcript.iter().filter(|e| e.seq >= f.transcript.0 && e.seq < f.transcript.1).cloned().collect();
                    let _ = writeln!(out, "      transcript #{}..#{}:", f.transcript.0, f.transcript.1);
                    let text = render_entries(&entries);
                    let lines: Vec<&str> = text.lines().collect();
                    // Long transcripts: the start and the end tell the story.
                    let shown: Vec<&str> = if lines.len() > 40 {
                        lines[..15].iter().chain(std::iter::once(&"        ...")).chain(&lines[lines.len() - 20..]).copied().collect()
                    } else {
                        lines
                    };
                    for line in shown {
                        let _ = writeln!(out, "        {}", truncate(line, 300));
                    }
                }
            }
        }
    }
    if let Some(c) = run.client.as_ref().filter(|c| !c.habits.is_empty()) {
        let _ = writeln!(out, "\nthe client's own bytes ({} habit(s); cases with `checks` grade them):", c.habits.len());
        for h in &c.habits {
            let _ = writeln!(out, "  {} — {}: {}", h.kind.code(), h.kind.summary(), truncate(&sanitize(&h.detail), 200));
        }
    }
    if let Some(bits) = run.client.as_ref().and_then(|c| c.sync_id_bits) {
        let _ = writeln!(out, "widest sync id: {bits} bits");
    }
    let found = findings(run, strict);
    if !found.is_empty() {
        let _ = writeln!(out, "\n{} distinct finding(s):", found.len());
        for f in &found {
            let cases: Vec<String> = f.cases.iter().map(|(id, o)| format!("{id} {o}")).collect();
            let _ = writeln!(out, "  {} — {}", f.kind.code(), f.summary);
            if let Some(p) = &f.probe {
                let _ = writeln!(out, "      start-up probe: {}", truncate(&sanitize(p), 300));
            }
            if !cases.is_empty() {
                let _ = writeln!(out, "      cases: {}", cases.join(", "));
            }
            if !f.blocked.is_empty() {
                let _ = writeln!(out, "      blocks: {} case(s)", f.blocked.len());
            }
        }
    }
    let summary: Vec<String> = counts(&run.results).into_iter().filter(|(_, n)| *n > 0).map(|(o, n)| format!("{n} {o}")).collect();
    let _ = writeln!(out, "\n{} cases in {:.3} s: {}", run.results.len(), run.elapsed.as_secs_f64(), summary.join(", "));
    if let Some(c) = cmp {
        for (id, o, exp) in &c.regressions {
            let _ = writeln!(out, "REGRESSION {id}: {o}, baseline expects {}", show_expected(exp));
        }
        for (id, o, exp) in &c.unexpected_passes {
            let _ = writeln!(out, "UNEXPECTED PASS {id}: {o}, baseline expects {} (tighten the baseline)", show_expected(exp));
        }
        let _ = writeln!(out, "baseline: {} regression(s), {} unexpected pass(es)", c.regressions.len(), c.unexpected_passes.len());
    }
    let failed = run.results.iter().filter(|r| r.outcome.is_failing(strict)).count();
    let _ = writeln!(out, "{} passed, {} failed", run.results.len() - failed, failed);
    out
}

/// Text that already has agent bytes escaped, made safe for a terminal:
/// control characters become `\xHH` (backslashes are left alone, so
/// escapes made earlier are not doubled).
pub fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { format!("\\x{:02X}", c as u32) } else { c.to_string() }).collect()
}

fn show_expected(exp: &[Outcome]) -> String {
    if exp.is_empty() {
        "a conforming outcome".into()
    } else {
        exp.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(" or ")
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} more bytes)", &s[..end], s.len() - end)
    }
}

/// Where a VM run's findings were made, in one line: the device, the
/// accelerator and why, and the measured boot and control-port restart.
pub fn vm_line(vm: &crate::vm::VmRunInfo) -> String {
    format!(
        "the agent ran in a QEMU guest over {} ({}: {}); boot {} ms, control-port restart {} ms; kernel {}, image {}",
        vm.device,
        vm.accel,
        sanitize(&vm.accel_reason),
        vm.boot_ms,
        vm.restart_ms,
        sanitize(&vm.kernel),
        sanitize(&vm.image)
    )
}

/// The JSON document of a run.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub schema: &'static str,
    pub harness_version: &'static str,
    pub strict: bool,
    #[serde(flatten)]
    pub run: &'a RunResult,
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Distinct defects, each with the cases that show it.
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<&'a Comparison>,
}

impl<'a> JsonReport<'a> {
    pub fn new(run: &'a RunResult, baseline: Option<&'a Comparison>, strict: bool) -> JsonReport<'a> {
        JsonReport {
            schema: JSON_SCHEMA,
            harness_version: env!("CARGO_PKG_VERSION"),
            strict,
            run,
            counts: counts(&run.results).into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect(),
            findings: findings(run, strict),
            baseline,
        }
    }
}

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, then a rename, so an interrupted run never leaves a
/// half-written report that looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    // NamedTempFile creates 0600; a report is for reading.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
