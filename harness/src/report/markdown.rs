//! A Markdown summary short enough for a pull-request comment: counts per
//! outcome, one line per case that did not conform, and the command that
//! reproduces the run. Agent text is escaped: it may hold markup.

use crate::engine::RunResult;
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
    let failing = run.results.iter().filter(|r| r.outcome.is_failing(strict)).count();
    let _ = writeln!(out, "## qga-harness: {} of {} cases failing", failing, run.results.len());
    let _ = writeln!(out);
    let _ = writeln!(out, "Agent `{}` over {}{}", escape(&run.agent), run.transport, run.agent_version.as_ref().map_or(String::new(), |v| format!(", version {}", escape(v))));
    let _ = writeln!(out);
    let _ = writeln!(out, "| outcome | cases |\n|---|---|");
    for (o, n) in super::counts(&run.results).into_iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(out, "| {o} | {n} |");
    }
    let notable: Vec<_> = run.results.iter().filter(|r| r.outcome != crate::verdict::Outcome::Pass).collect();
    if !notable.is_empty() {
        let _ = writeln!(out, "\n| case | outcome | what happened |\n|---|---|---|");
        for r in notable {
            let what = r.failure.as_ref().map_or(String::new(), |f| f.actual.chars().take(200).collect());
            let _ = writeln!(out, "| {} {} | {} | {} |", escape(&r.id), escape(&r.title), r.outcome, escape(&what));
        }
    }
    let _ = writeln!(out, "\nReproduce:\n\n```\n{}\n```", command.replace("```", "'''"));
    out
}

/// Cases as rows (by section), runs as columns: one outcome per cell.
pub fn matrix(runs: &[RunResult]) -> String {
    let mut out = String::from("## qga-harness matrix\n\n| case |");
    for r in runs {
        let _ = write!(out, " {} ({}) |", escape(r.agent_version.as_deref().unwrap_or(&r.agent)), r.transport);
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_from_agents_is_inert() {
        assert_eq!(escape("<script>alert(1)</script> | `x` \n"), "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\`x\\`  ");
        assert_eq!(escape("\u{7}"), "\\x07");
    }
}
