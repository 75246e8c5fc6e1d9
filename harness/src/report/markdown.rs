//! A Markdown summary short enough for a pull-request comment, in the
//! terminal report's order: the start-up probe's result, one line per case
//! that did not conform, the cases not run grouped by what is missing, the
//! findings (most cases first), the counts per outcome and the closing count
//! ([`Tally`]: PASS and INFO count as passed, UNSUPPORTED and BLOCKED as not
//! run), and the command that reproduces the run. Agent text is escaped: it
//! may hold markup.

use super::Tally;
use crate::verdict::{Outcome, RunResult};
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

/// The summary; `command` is the command line that reproduces the run.
pub fn render(run: &RunResult, strict: bool, command: &str) -> String {
    let mut out = String::new();
    let tally = Tally::new(&run.results, strict);
    let _ = writeln!(out, "## qga-harness: {} of {} cases", tally.sentence(), tally.total);
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
    let _ = writeln!(out, "\nSeed {} (`--seed {}` repeats the run's ids).", run.seed, run.seed);
    let probe = super::probe_lines(run);
    if !probe.is_empty() {
        let _ = writeln!(out, "\n### Start-up probe{}\n", if run.client.is_some() { " of the agent behind the harness" } else { "" });
        for line in probe {
            let _ = writeln!(out, "- {}", escape(&line));
        }
    }
    if let Some(e) = &run.startup_error {
        let _ = writeln!(out, "\n**The agent could not be run:** {}", escape(&e.message));
        if let Some(h) = &e.hint {
            let _ = writeln!(out, "\nHint: {}", escape(h));
        }
    }
    if let Some(vm) = &run.vm {
        let _ = writeln!(out, "\nVM: {}.", escape(&super::vm_line(vm)));
    }
    let notable: Vec<_> = run.results.iter().filter(|r| !matches!(r.outcome, Outcome::Pass | Outcome::Unsupported | Outcome::Blocked)).collect();
    if !notable.is_empty() {
        let _ = writeln!(out, "\n| case | outcome | finding | what happened |\n|---|---|---|---|");
        for r in notable {
            let what = r.failure.as_ref().map_or(String::new(), |f| f.actual.chars().take(200).collect());
            let kind = r.failure.as_ref().map_or(String::new(), |f| {
                let also: Vec<String> = f.secondary.iter().map(|s| format!("`{}`", s.kind.code())).collect();
                format!("`{}`{}", f.kind.code(), if also.is_empty() { String::new() } else { format!(" (also {})", also.join(", ")) })
            });
            let outcome = match &r.client {
                Some(c) => format!("{} ({})", r.outcome, c.grade),
                None => r.outcome.to_string(),
            };
            let _ = writeln!(out, "| {} {} | {} | {} | {} |", escape(&r.id), escape(&r.title), outcome, kind, escape(&what));
        }
    }
    let groups = super::not_run(run);
    if !groups.is_empty() {
        let _ = writeln!(out, "\n### Not run\n");
        for g in &groups {
            let _ = writeln!(out, "- {}", escape(&g.line(20)));
        }
    }
    let found = super::findings(run, strict);
    if !found.is_empty() {
        let _ = writeln!(out, "\n### Findings, most cases first\n\n| finding | what | cases |\n|---|---|---|");
        for f in &found {
            let mut what = f.summary.to_owned();
            if let Some(p) = &f.probe {
                what.push_str(&format!(" (start-up: {})", p.chars().take(200).collect::<String>()));
            }
            let _ = writeln!(out, "| `{}` | {} | {} |", f.kind.code(), escape(&what), escape(&super::covered(f, 20)));
        }
    }
    let also = super::also_seen(run, strict);
    if !also.is_empty() {
        let _ = writeln!(out);
        for a in &also {
            let _ = writeln!(out, "Also seen: {} ({}).", escape(&a.line(20)), escape(a.summary));
        }
    }
    let _ = writeln!(out, "\n| outcome | cases | counts as |\n|---|---|---|");
    for (o, n) in super::counts(&run.results).into_iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(out, "| {o} | {n} | {} |", Tally::counts_as(o, strict));
    }
    let _ = writeln!(out, "\n{}.", tally.sentence());
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
    // Per run, the closing count (NON-STRICT apart: the matrix knows no
    // --strict).
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
    fn passed_counts_pass_and_info_and_not_run_stands_apart() {
        let run = run_with(&["PASS", "PASS", "NON-STRICT", "INFO", "UNSUPPORTED", "UNSUPPORTED", "FAIL", "BLOCKED"]);
        let md = render(&run, false, "qga-harness run");
        assert!(md.starts_with("## qga-harness: 3 passed, 1 failed, 1 NON-STRICT, 3 not run (2 UNSUPPORTED, 1 BLOCKED) of 8 cases\n"), "{md}");
        for row in [
            "| PASS | 2 | passed |",
            "| NON-STRICT | 1 | apart (fails only under --strict) |",
            "| INFO | 1 | passed |",
            "| UNSUPPORTED | 2 | not run |",
            "| BLOCKED | 1 | not run (fails the run) |",
            "| FAIL | 1 | failed |",
        ] {
            assert!(md.contains(row), "{row} not in:\n{md}");
        }
        // The cases not run are one line per reason, not one row each.
        assert!(!md.contains("| s/5 t | UNSUPPORTED"), "{md}");
        // The closing count comes last, before the command.
        assert!(md.contains("\n3 passed, 1 failed, 1 NON-STRICT, 3 not run (2 UNSUPPORTED, 1 BLOCKED).\n\nReproduce:"), "{md}");
        assert!(render(&run, true, "x").contains("| NON-STRICT | 1 | failed |"));
        let m = matrix(&[run]);
        assert!(m.lines().last().unwrap().contains("3 passed, 1 failed, 1 NON-STRICT, 3 not run (2 UNSUPPORTED, 1 BLOCKED)"), "{m}");
    }
}
