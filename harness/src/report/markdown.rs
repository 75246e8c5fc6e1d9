//! A Markdown summary short enough for a pull-request comment: counts per
//! outcome (PASS alone counts as passed; INFO, UNSUPPORTED, NON-STRICT and
//! the rest are shown by name), one line per case that did not conform, and
//! the command that reproduces the run. Agent text is escaped: it may hold
//! markup.

use crate::verdict::{CaseResult, RunResult};
use crate::verdict::Outcome;
use std::fmt::Write;

/// Escape text for Markdown (and the HTML that Markdown renderers allow):
/// markup characters become entities or are backslash-escaped, control bytes
/// are already `\xHH` upstream, newlines become spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '|' | '`' | '*' | '_' | '[' | ']' | '#' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Honest counts: "passed" is PASS alone; "failing" is what fails the run
/// under this policy; everything else (INFO, UNSUPPORTED, NON-STRICT unless
/// strict, ...) is "neither", and each outcome keeps its own count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub passed: usize,
    /// Failing outcomes with their counts (non-zero only).
    pub failing: Vec<(Outcome, usize)>,
    /// Outcomes that neither pass nor fail, with their counts (non-zero only).
    pub neither: Vec<(Outcome, usize)>,
}

impl Tally {
    pub fn new(results: &[CaseResult], strict: bool) -> Tally {
        let mut t = Tally { total: results.len(), passed: 0, failing: Vec::new(), neither: Vec::new() };
        for o in Outcome::ALL {
            let n = results.iter().filter(|r| r.outcome == o).count();
            if n == 0 {
                continue;
            }
            if o == Outcome::Pass {
                t.passed = n;
            } else if o.is_failing(strict) {
                t.failing.push((o, n));
            } else {
                t.neither.push((o, n));
            }
        }
        t
    }

    pub fn failing_count(&self) -> usize {
        self.failing.iter().map(|(_, n)| n).sum()
    }

    pub fn neither_count(&self) -> usize {
        self.neither.iter().map(|(_, n)| n).sum()
    }

    /// `96 passed, 1 failing (1 FAIL), 4 neither (2 INFO, 2 UNSUPPORTED)`.
    pub fn sentence(&self) -> String {
        let list = |v: &[(Outcome, usize)]| v.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ");
        let mut out = format!("{} passed", self.passed);
        if !self.failing.is_empty() {
            out.push_str(&format!(", {} failing ({})", self.failing_count(), list(&self.failing)));
        } else {
            out.push_str(", 0 failing");
        }
        if !self.neither.is_empty() {
            out.push_str(&format!(", {} neither ({})", self.neither_count(), list(&self.neither)));
        }
        out
    }
}

/// How an outcome counts, for the summary table.
fn counts_as(o: Outcome, strict: bool) -> &'static str {
    if o == Outcome::Pass {
        "passed"
    } else if o.is_failing(strict) {
        "failing"
    } else if o.is_failing(true) {
        "neither (failing under --strict)"
    } else {
        "neither"
    }
}

/// The summary; `command` is the command line that reproduces the run.
pub fn render(run: &RunResult, strict: bool, command: &str) -> String {
    let mut out = String::new();
    let tally = Tally::new(&run.results, strict);
    let _ = writeln!(
        out,
        "## qga-harness: {} of {} cases failing, {} passed, {} neither",
        tally.failing_count(),
        tally.total,
        tally.passed,
        tally.neither_count()
    );
    let _ = writeln!(out);
    match &run.client {
        Some(c) => {
            let _ = writeln!(
                out,
                "Client `{}` on a {} port (timeout {} ms), in front of agent `{}` over {}{}",
                escape(&run.agent),
                run.transport,
                c.timeout_ms,
                escape(&c.agent),
                c.agent_transport,
                run.agent_version.as_ref().map_or(String::new(), |v| format!(", version {}", escape(v)))
            );
            if !c.habits.is_empty() {
                let _ = writeln!(out, "\nThe client's own bytes: {}.", escape(&c.habits.iter().map(|h| h.kind.code()).collect::<Vec<_>>().join(", ")));
            }
        }
        None => {
            let _ = writeln!(out, "Agent `{}` over {}{}", escape(&run.agent), run.transport, run.agent_version.as_ref().map_or(String::new(), |v| format!(", version {}", escape(v))));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| outcome | cases | counts as |\n|---|---|---|");
    for (o, n) in super::counts(&run.results).into_iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(out, "| {o} | {n} | {} |", counts_as(o, strict));
    }
    let _ = writeln!(out, "\nPassed counts PASS only{}.", if strict { "; NON-STRICT fails (--strict)" } else { "; NON-STRICT (a SHOULD violated) fails only under --strict" });
    if let Some(e) = &run.startup_error {
        let _ = writeln!(out, "\n**The agent could not be run:** {}", escape(&e.message));
        if let Some(h) = &e.hint {
            let _ = writeln!(out, "\nHint: {}", escape(h));
        }
    }
    if let (Some(p), None) = (&run.profile, &run.client) {
        let _ = writeln!(out, "\nSync: {}; pace factor {:.1}; seed {} (`--seed {}` repeats the run's ids).", escape(&p.mode.describe()), p.pace.factor, run.seed, run.seed);
    }
    if let Some(vm) = &run.vm {
        let _ = writeln!(out, "\nVM: {}.", escape(&super::vm_line(vm)));
    }
    let found = super::findings(run, strict);
    if !found.is_empty() {
        let _ = writeln!(out, "\n### Findings\n\n| finding | what | cases | blocks |\n|---|---|---|---|");
        for f in &found {
            let mut what = f.summary.to_owned();
            if let Some(p) = &f.probe {
                what.push_str(&format!(" (start-up probe: {})", p.chars().take(200).collect::<String>()));
            }
            let cases: Vec<String> = f.cases.iter().map(|(id, o)| format!("{id} {o}")).collect();
            let _ = writeln!(out, "| `{}` | {} | {} | {} |", f.kind.code(), escape(&what), escape(&cases.join(", ")), f.blocked.len());
        }
    }
    let notable: Vec<_> = run.results.iter().filter(|r| r.outcome != Outcome::Pass).collect();
    if !notable.is_empty() {
        let _ = writeln!(out, "\n| case | outcome | finding | what happened |\n|---|---|---|---|");
        for r in notable {
            let what = r.failure.as_ref().map_or(String::new(), |f| f.actual.chars().take(200).collect());
            let kind = r.failure.as_ref().map_or(String::new(), |f| format!("`{}`", f.kind.code()));
            let outcome = match &r.client {
                Some(c) => format!("{} ({})", r.outcome, c.grade),
                None => r.outcome.to_string(),
            };
            let _ = writeln!(out, "| {} {} | {} | {} | {} |", escape(&r.id), escape(&r.title), outcome, kind, escape(&what));
        }
    }
    let _ = writeln!(out, "\nReproduce:\n\n```\n{}\n```", command.replace("```", "'''"));
    out
}

/// Cases as rows (by section), runs as columns: one outcome per cell.
pub fn matrix(runs: &[RunResult]) -> String {
    let mut out = String::from("## qga-harness matrix\n\n| case |");
    for r in runs {
        let _ = write!(out, " {} ({}) |", escape(&r.subject()), r.transport);
    }
    out.push_str("\n|---|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push('\n');
    let mut ids: Vec<(String, String)> = Vec::new();
    for r in runs {
        for c in &r.results {
            if !ids.iter().any(|(id, _)| id == &c.id) {
                ids.push((c.id.clone(), c.title.clone()));
            }
        }
    }
    for (id, title) in ids {
        let _ = write!(out, "| {} {} |", escape(&id), escape(&title));
        for r in runs {
            let cell = r.results.iter().find(|c| c.id == id).map_or("—".to_string(), |c| c.outcome.to_string());
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    // Per run: PASS alone counts as passed (NON-STRICT as neither: the
    // matrix knows no --strict).
    out.push_str("| *counts* |");
    for r in runs {
        let _ = write!(out, " {} |", Tally::new(&r.results, false).sentence());
    }
    out.push('\n');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn markup_from_agents_is_inert() {
        assert_eq!(escape("<script>alert(1)</script> | `x` \n"), "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\`x\\`  ");
        assert_eq!(escape("\u{7}"), "\\x07");
    }

    /// A run document with these outcomes (built from JSON, the shape
    /// readers see).
    pub(crate) fn run_with(outcomes: &[&str]) -> RunResult {
        let results: Vec<serde_json::Value> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                serde_json::json!({
                    "id": format!("s/{}", i + 1), "section": "s", "title": "t", "level": "MUST",
                    "requirement": "r", "source": "src", "outcome": o, "elapsed": 1,
                    "recovery": { "grade": "resynced", "resync_time": 1, "bytes_discarded": 0, "attempts": 1 },
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "agent": "a", "transport": "pty", "elapsed": 1, "results": results })).unwrap()
    }

    #[test]
    fn passed_counts_only_pass() {
        let run = run_with(&["PASS", "PASS", "NON-STRICT", "INFO", "UNSUPPORTED", "UNSUPPORTED", "FAIL"]);
        let t = Tally::new(&run.results, false);
        assert_eq!((t.total, t.passed, t.failing_count(), t.neither_count()), (7, 2, 1, 4));
        assert_eq!(t.sentence(), "2 passed, 1 failing (1 FAIL), 4 neither (1 NON-STRICT, 1 INFO, 2 UNSUPPORTED)");
        let strict = Tally::new(&run.results, true);
        assert_eq!(strict.sentence(), "2 passed, 2 failing (1 NON-STRICT, 1 FAIL), 3 neither (1 INFO, 2 UNSUPPORTED)");

        let md = render(&run, false, "qga-harness run");
        assert!(md.starts_with("## qga-harness: 1 of 7 cases failing, 2 passed, 4 neither\n"), "{md}");
        for row in ["| PASS | 2 | passed |", "| NON-STRICT | 1 | neither (failing under --strict) |", "| INFO | 1 | neither |", "| UNSUPPORTED | 2 | neither |", "| FAIL | 1 | failing |"] {
            assert!(md.contains(row), "{row} not in:\n{md}");
        }
        assert!(render(&run, true, "x").contains("| NON-STRICT | 1 | failing |"));
        let m = matrix(&[run]);
        assert!(m.lines().last().unwrap().contains("2 passed, 1 failing (1 FAIL), 4 neither"), "{m}");
    }
}
