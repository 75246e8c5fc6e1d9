//! A self-contained HTML report directory, in the style of
//! Autobahn|Testsuite: `index.html` is a matrix (cases grouped by section as
//! rows, agent × transport as columns, coloured cells with durations, a
//! resync-time chart per run as inline SVG), and each cell links to a case
//! page with the requirement and source, expected vs actual, recovery
//! metrics and the wire log (numbered rows, direction, time, hex and escaped
//! text side by side, harness events marked). No scripts, no network.
//!
//! Every string that came from an agent is HTML-escaped (html-escape);
//! bytes were already rendered as `\xHH` text by the transcript.

use crate::engine::{CaseResult, RunResult};
use crate::transcript::{escape_bytes, Direction, Entry, Record};

use std::fmt::Write;
use std::path::Path;

/// Wire-log rows shown per case page; the rest is summarised.
const MAX_LOG_ROWS: usize = 2000;
/// Bytes shown per wire-log row.
const MAX_ROW_BYTES: usize = 256;

/// Agent text for HTML: control characters as `\xHH` first (a version
/// string may carry BEL or ESC), then markup escaped.
fn esc(text: &str) -> String {
    html_escape::encode_text(&super::sanitize(text)).into_owned()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;font-size:13px}\
td.PASS{background:#9e9}td.FAIL{background:#f88}td.NON-STRICT{background:#fd8}td.INFO{background:#9cf}td.UNSUPPORTED{background:#ddd}\
td.TIMEOUT{background:#f6a}td.ERROR{background:#c6f}tr.section th{background:#eee;text-align:left}td.mono,pre{font-family:monospace;white-space:pre-wrap;word-break:break-all}\
tr.to td{background:#eef}tr.from td{background:#efe}tr.event td{background:#ffd}";

fn page(title: &str, body: &str) -> String {
    format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n", esc(title))
}

fn case_file(run: usize, id: &str) -> String {
    format!("run{}-{}.html", run + 1, id.replace('/', "-"))
}

fn column_title(r: &RunResult) -> String {
    format!("{} ({})", r.agent_version.as_deref().unwrap_or(&r.agent), r.transport)
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

fn index(runs: &[RunResult]) -> String {
    let mut b = String::from("<h1>qga-harness conformance matrix</h1>\n<table id=\"matrix\"><thead><tr><th>case</th><th>level</th>");
    for r in runs {
        let _ = write!(b, "<th>{}</th>", esc(&column_title(r)));
    }
    b.push_str("</tr></thead><tbody>\n");
    let mut order: Vec<&CaseResult> = Vec::new();
    for r in runs {
        for c in &r.results {
            if !order.iter().any(|o| o.id == c.id) {
                order.push(c);
            }
        }
    }
    let mut section = String::new();
    for c in order {
        if c.section != section {
            section = c.section.clone();
            let _ = write!(b, "<tr class=\"section\"><th colspan=\"{}\">{}</th></tr>\n", runs.len() + 2, esc(&section));
        }
        let _ = write!(b, "<tr class=\"case\"><td>{} {}</td><td>{}</td>", esc(&c.id), esc(&c.title), c.level);
        for (i, r) in runs.iter().enumerate() {
            match r.results.iter().find(|x| x.id == c.id) {
                Some(x) => {
                    let _ = write!(
                        b,
                        "<td class=\"{o}\"><a href=\"{}\">{o}</a> {:.2} ms</td>",
                        case_file(i, &x.id),
                        x.elapsed.as_secs_f64() * 1e3,
                        o = x.outcome.as_str()
                    );
                }
                None => b.push_str("<td>—</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</tbody></table>\n<h2>Runs</h2>\n");
    for (i, r) in runs.iter().enumerate() {
        let counts: Vec<String> = super::counts(&r.results).into_iter().filter(|(_, n)| *n > 0).map(|(o, n)| format!("{n} {o}")).collect();
        let _ = write!(
            b,
            "<h3>Run {}: {}</h3><p>agent <code>{}</code>, transport {}, {:.3} s: {}</p><p>Recovery resync times:</p>{}\n",
            i + 1,
            esc(&column_title(r)),
            esc(&r.agent),
            esc(&r.transport),
            r.elapsed.as_secs_f64(),
            counts.join(", "),
            resync_chart(r)
        );
    }
    page("qga-harness conformance matrix", &b)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn wire_log(entries: &[Entry]) -> String {
    let mut b = String::from("<table class=\"wire\"><thead><tr><th>#</th><th>time (ms)</th><th>dir</th><th>hex</th><th>text</th></tr></thead><tbody>\n");
    for e in entries.iter().take(MAX_LOG_ROWS) {
        let at = e.at.as_secs_f64() * 1e3;
        match &e.record {
            Record::Bytes { dir, data } => {
                let (class, arrow) = match dir {
                    Direction::ToAgent => ("to", "&gt;&gt; to agent"),
                    Direction::FromAgent => ("from", "&lt;&lt; from agent"),
                };
                let shown = &data[..data.len().min(MAX_ROW_BYTES)];
                let more = if data.len() > shown.len() { format!(" … ({} more bytes)", data.len() - shown.len()) } else { String::new() };
                let _ = write!(
                    b,
                    "<tr class=\"{class}\"><td>{}</td><td>{at:.3}</td><td>{arrow}</td><td class=\"mono\">{}{more}</td><td class=\"mono\">{}{more}</td></tr>\n",
                    e.seq,
                    hex(shown),
                    esc(&escape_bytes(shown))
                );
            }
            Record::Event(ev) => {
                let text = serde_json::to_string(ev).unwrap_or_default();
                let _ = write!(b, "<tr class=\"event\"><td>{}</td><td>{at:.3}</td><td>harness</td><td colspan=\"2\" class=\"mono\">{}</td></tr>\n", e.seq, esc(&text));
            }
        }
    }
    if entries.len() > MAX_LOG_ROWS {
        let _ = write!(b, "<tr><td colspan=\"5\">truncated: {} more entries (see run.json)</td></tr>", entries.len() - MAX_LOG_ROWS);
    }
    b.push_str("</tbody></table>");
    b
}

fn case_page(r: &RunResult, c: &CaseResult) -> String {
    let mut b = format!("<p><a href=\"index.html\">matrix</a></p><h1>{} {}</h1>", esc(&c.id), esc(&c.title));
    let _ = write!(
        b,
        "<table><tr><th>run</th><td>{}</td></tr><tr><th>outcome</th><td class=\"{o}\">{o}</td></tr><tr><th>level</th><td>{}</td></tr><tr><th>requirement</th><td>{}</td></tr><tr><th>source</th><td>{}</td></tr>",
        esc(&column_title(r)),
        c.level,
        esc(&c.requirement),
        esc(&c.source),
        o = c.outcome.as_str()
    );
    if let Some(f) = &c.failure {
        let _ = write!(
            b,
            "<tr><th>expected</th><td class=\"mono\">{}</td></tr><tr><th>actual</th><td class=\"mono\">{}</td></tr><tr><th>transcript</th><td>#{}..#{}</td></tr>",
            esc(&f.expected),
            esc(&f.actual),
            f.transcript.0,
            f.transcript.1
        );
    }
    let rec = &c.recovery;
    let _ = write!(
        b,
        "<tr><th>recovery</th><td>{:?}: resync {:.1} µs, {} attempt(s), {} byte(s) discarded{}</td></tr></table>",
        rec.grade,
        rec.resync_time.as_secs_f64() * 1e6,
        rec.attempts,
        rec.bytes_discarded,
        rec.detail.as_ref().map_or(String::new(), |d| format!(" ({})", esc(d)))
    );
    b.push_str("<h2>Wire log</h2>");
    b.push_str(&wire_log(&c.transcript));
    page(&format!("{} {}", c.id, c.outcome), &b)
}

/// Write the report directory for these runs.
pub fn write(dir: &Path, runs: &[RunResult]) -> std::io::Result<()> {
    super::write_atomic(&dir.join("index.html"), index(runs).as_bytes())?;
    for (i, r) in runs.iter().enumerate() {
        for c in &r.results {
            super::write_atomic(&dir.join(case_file(i, &c.id)), case_page(r, c).as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Outcome;

    #[test]
    fn css_covers_every_outcome_and_markup_is_escaped() {
        for o in Outcome::ALL {
            assert!(STYLE.contains(&format!("td.{}{{", o.as_str())), "{o}");
        }
        assert_eq!(esc("<script>&\"\u{7}"), "&lt;script&gt;&amp;\"\\x07");
        assert_eq!(hex(b"\xff{"), "ff 7b");
    }
}
