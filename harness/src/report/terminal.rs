//! The terminal report of `run`, `client` and `replay`, in the order an
//! agent's author reads it: what was run, what the start-up probe found,
//! each case that ran, the cases not run grouped by what is missing, the
//! findings (most cases first), and the counts.

use super::{also_seen, counts, covered, findings, not_run, probe_lines, sanitize, show_expected, truncate, vm_line, Tally};
use crate::baseline::Comparison;
use crate::transcript::{escape_bytes, render_entries};
use crate::verdict::{CaseResult, Outcome, RunResult};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Cases named per line of a group (not run, also seen, a finding's cases).
const NAMED: usize = 12;

/// The whole terminal report; `transcripts` shows every non-passing case's
/// transcript excerpt (else one per distinct finding).
pub fn render_terminal(run: &RunResult, cmp: Option<&Comparison>, strict: bool, transcripts: bool) -> String {
    let mut out = String::new();
    head(&mut out, run);
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
        let _ = writeln!(out, "\n{} cases not run", run.results.len());
    } else {
        let mut shown_kinds = HashSet::new();
        for r in run.results.iter().filter(|r| !matches!(r.outcome, Outcome::Unsupported | Outcome::Blocked)) {
            case(&mut out, r, strict, transcripts, &mut shown_kinds);
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
    tail(&mut out, run, cmp, strict);
    out
}

/// What was run, and what the start-up probe found.
fn head(out: &mut String, run: &RunResult) {
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
    let probe = probe_lines(run);
    if !probe.is_empty() {
        let whose = if run.client.is_some() { " of the agent behind the harness" } else { "" };
        let _ = writeln!(out, "start-up probe{whose}:");
        for line in probe {
            let _ = writeln!(out, "  {}", truncate(&sanitize(&line), 300));
        }
    }
    if let Some(vm) = &run.vm {
        let _ = writeln!(out, "vm: {}", vm_line(vm));
    }
}

/// One case that ran: its line, and for anything but PASS what was
/// required, expected and seen, with a transcript excerpt once per
/// distinct finding.
fn case(out: &mut String, r: &CaseResult, strict: bool, transcripts: bool, shown_kinds: &mut HashSet<crate::verdict::FailureKind>) {
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
    let Some(f) = r.failure.as_ref().filter(|_| r.outcome != Outcome::Pass) else { return };
    let _ = writeln!(out, "      requirement: {}", f.requirement);
    let _ = writeln!(out, "      expected:    {}", f.expected);
    let _ = writeln!(out, "      actual:      {}", sanitize(&f.actual));
    let _ = writeln!(out, "      finding:     {} ({})", f.kind.code(), f.kind.summary());
    for s in &f.secondary {
        let _ = writeln!(out, "      also:        {} ({}): {}", s.kind.code(), s.kind.summary(), truncate(&sanitize(&s.detail), 200));
    }
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

/// The cases not run (grouped), the findings (most cases first; secondary
/// findings apart), the counts, the baseline, and the closing line.
fn tail(out: &mut String, run: &RunResult, cmp: Option<&Comparison>, strict: bool) {
    let groups = not_run(run);
    if !groups.is_empty() {
        let _ = writeln!(out, "\nnot run:");
        for g in &groups {
            let _ = writeln!(out, "  {}", truncate(&sanitize(&g.line(NAMED)), 600));
        }
    }
    let found = findings(run, strict);
    if !found.is_empty() {
        let _ = writeln!(out, "\n{} distinct finding(s), most cases first:", found.len());
        for f in &found {
            let _ = writeln!(out, "  {} — {}: {}", f.kind.code(), f.summary, covered(f, NAMED));
            if let Some(p) = &f.probe {
                let _ = writeln!(out, "      {}: {}", if f.cases.is_empty() { "found at start-up" } else { "start-up probe" }, truncate(&sanitize(p), 300));
            }
        }
    }
    for a in also_seen(run, strict) {
        let _ = writeln!(out, "  also seen: {} ({})", a.line(NAMED), a.summary);
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
    let _ = writeln!(out, "{}", Tally::new(&run.results, strict).sentence());
}
