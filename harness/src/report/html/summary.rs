//! One run's summary on the index page, in the terminal report's order:
//! what ran, the start-up probe's result, the cases not run grouped by what
//! is missing, the findings (most cases first; secondary findings apart),
//! the counts per outcome and the closing count.

use super::{column_title, esc};
use crate::report::{also_seen, counts, covered, findings, not_run, probe_lines, vm_line, Tally};
use crate::verdict::RunResult;
use std::fmt::Write;

/// Cases named per group or finding.
const NAMED: usize = 20;

/// The summary of run `i` (0-based); `strict`: NON-STRICT counts as failed,
/// as the run's exit status did under `--strict`.
pub(super) fn run_summary(i: usize, r: &RunResult, strict: bool) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h3>Run {}: {}</h3><p>agent <code>{}</code>, transport {}, seed {}, {:.3} s.</p>",
        i + 1,
        esc(&column_title(r)),
        esc(&r.agent),
        esc(&r.transport),
        r.seed,
        r.elapsed.as_secs_f64()
    );
    let probe = probe_lines(r);
    if !probe.is_empty() {
        let whose = if r.client.is_some() { " of the agent behind the harness" } else { "" };
        let _ = write!(b, "<p>Start-up probe{whose}:</p><ul class=\"probe\">{}</ul>", probe.iter().map(|l| format!("<li>{}</li>", esc(l))).collect::<String>());
    }
    if let Some(e) = &r.startup_error {
        let _ = write!(b, "<p class=\"ERROR\">The agent could not be run: {}</p>", esc(&e.message));
    }
    if let Some(vm) = &r.vm {
        let _ = write!(b, "<p>VM: {}.</p>", esc(&vm_line(vm)));
    }
    let groups = not_run(r);
    if !groups.is_empty() {
        let _ = write!(b, "<p>Not run:</p><ul class=\"not-run\">{}</ul>", groups.iter().map(|g| format!("<li>{}</li>", esc(&g.line(NAMED)))).collect::<String>());
    }
    let found = findings(r, strict);
    if !found.is_empty() {
        b.push_str("<p>Findings, most cases first:</p><table class=\"findings\"><thead><tr><th>finding</th><th>what</th><th>cases</th></tr></thead><tbody>");
        for f in &found {
            let probe = f.probe.as_ref().map_or(String::new(), |p| format!("<br><span class=\"mono\">start-up: {}</span>", esc(p)));
            let _ = write!(b, "<tr><td><code>{}</code></td><td>{}{}</td><td>{}</td></tr>", esc(&f.kind.code()), esc(f.summary), probe, esc(&covered(f, NAMED)));
        }
        b.push_str("</tbody></table>");
    }
    for a in also_seen(r, strict) {
        let _ = write!(b, "<p class=\"also\">Also seen: {} ({}).</p>", esc(&a.line(NAMED)), esc(a.summary));
    }
    let tally = Tally::new(&r.results, strict);
    let cells: String = counts(&r.results).into_iter().filter(|(_, n)| *n > 0).map(|(o, n)| format!("<td class=\"{o}\">{n} {o}</td>", o = o.as_str())).collect();
    let _ = write!(
        b,
        "<table class=\"counts\"><tr>{cells}</tr></table><p class=\"closing\">{} cases: {}.</p><p>Passed counts PASS and INFO; UNSUPPORTED and BLOCKED are not run (BLOCKED still fails a run); {}</p><p>Recovery resync times:</p>{}\n",
        tally.total,
        esc(&tally.sentence()),
        if strict { "this report was made with --strict: NON-STRICT (a SHOULD violated) counts as failed." } else { "NON-STRICT (a SHOULD violated) fails a run only under --strict." },
        resync_chart(r)
    );
    b
}

/// An inline SVG histogram of recovery resync times for one run.
fn resync_chart(r: &RunResult) -> String {
    let times: Vec<f64> = r.results.iter().filter(|c| c.recovery.attempts > 0).map(|c| c.recovery.resync_time.as_secs_f64() * 1e6).collect();
    if times.is_empty() {
        return String::from("<p>no recovery measured</p>");
    }
    // Logarithmic buckets from 10 µs to 1 s.
    let edges = [10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6];
    let mut counts = vec![0usize; edges.len() + 1];
    for t in &times {
        counts[edges.iter().position(|e| t < e).unwrap_or(edges.len())] += 1;
    }
    let max = *counts.iter().max().unwrap_or(&1) as f64;
    let labels = ["<10µs", "<30µs", "<100µs", "<300µs", "<1ms", "<3ms", "<10ms", "<30ms", "<100ms", "<300ms", "<1s", "≥1s"];
    let mut svg = String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"620\" height=\"140\" role=\"img\">");
    for (i, n) in counts.iter().enumerate() {
        let h = (*n as f64 / max.max(1.0)) * 100.0;
        let x = 10 + i * 50;
        let _ = write!(svg, "<rect x=\"{x}\" y=\"{:.1}\" width=\"40\" height=\"{h:.1}\" fill=\"#48c\"><title>{} {}</title></rect>", 110.0 - h, labels[i], n);
        let _ = write!(svg, "<text x=\"{x}\" y=\"125\" font-size=\"9\">{}</text><text x=\"{x}\" y=\"{:.1}\" font-size=\"9\">{n}</text>", labels[i], 108.0 - h);
    }
    svg.push_str("</svg>");
    svg
}
