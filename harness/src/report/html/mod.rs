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

mod summary;

use crate::verdict::{CaseResult, Outcome, RunResult};
use crate::transcript::{describe, escape_bytes, Direction, Entry, Event, Record};

use std::fmt::Write;
use std::path::Path;

/// Wire-log rows shown per case page: the first and the last entries...
const HEAD_ROWS: usize = 500;
const TAIL_ROWS: usize = 500;
/// ...and of the failure span up to this many more: the agent's bytes and
/// the harness events first, then our own writes, each as its head and tail
/// when there are too many. What is left out is counted in a row where it
/// was (run.json has every entry the transcript kept).
const SPAN_ROWS: usize = 3000;
/// Bytes shown per wire-log row...
const MAX_ROW_BYTES: usize = 256;
/// ...except for the agent's bytes in the failure span (the evidence),
/// which get up to this much per row, within a page budget.
const SPAN_ROW_BYTES: usize = 8192;
const SPAN_PAGE_BYTES: usize = 512 * 1024;

/// Agent text for HTML: control characters as `\xHH` first (a version
/// string may carry BEL or ESC), then markup escaped.
fn esc(text: &str) -> String {
    html_escape::encode_text(&super::sanitize(text)).into_owned()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;font-size:13px}\
td.PASS{background:#9e9}td.FAIL{background:#f88}td.WRONG{background:#d33;color:#fff}td.NON-STRICT{background:#fd8}td.INFO{background:#9cf}td.UNSUPPORTED{background:#ddd}td.BLOCKED{background:#ccc}\
td.TIMEOUT{background:#f6a}td.ERROR{background:#c6f}tr.section th{background:#eee;text-align:left}td.mono,pre{font-family:monospace;white-space:pre-wrap;word-break:break-all}\
tr.to td{background:#eef}tr.from td{background:#efe}tr.event td{background:#ffd}tr.gap td{background:#fee;font-style:italic}\
tr.span td:first-child{border-left:4px solid #c00}";

fn page(title: &str, body: &str) -> String {
    format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n", esc(title))
}

fn case_file(run: usize, id: &str) -> String {
    format!("run{}-{}.html", run + 1, id.replace('/', "-"))
}

fn column_title(r: &RunResult) -> String {
    format!("{} ({})", r.subject(), r.transport)
}

/// Where the matrix links run `i`'s page for case `id`: its own page here,
/// or with `pages`, the page in that run's own report directory.
/// Whether a case gets a page of its own: not one that passed (or did not
/// apply) and kept no transcript (`--transcripts failing`), whose verdict
/// the matrix cell already says in full.
fn has_page(c: &CaseResult) -> bool {
    !(matches!(c.outcome, Outcome::Pass | Outcome::Unsupported) && c.transcript.is_empty())
}

fn case_link(i: usize, id: &str, pages: Option<&[String]>) -> String {
    match pages.and_then(|p| p.get(i)) {
        Some(prefix) => format!("{prefix}{}", case_file(0, id)),
        None => case_file(i, id),
    }
}

fn index(runs: &[RunResult], pages: Option<&[String]>, strict: bool) -> String {
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
                Some(x) if has_page(x) => {
                    let _ = write!(
                        b,
                        "<td class=\"{o}\"><a href=\"{}\">{o}</a> {:.2} ms</td>",
                        case_link(i, &x.id, pages),
                        x.elapsed.as_secs_f64() * 1e3,
                        o = x.outcome.as_str()
                    );
                }
                Some(x) => {
                    let _ = write!(b, "<td class=\"{o}\">{o} {:.2} ms</td>", x.elapsed.as_secs_f64() * 1e3, o = x.outcome.as_str());
                }
                None => b.push_str("<td>—</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</tbody></table>\n<h2>Runs</h2>\n");
    for (i, r) in runs.iter().enumerate() {
        b.push_str(&summary::run_summary(i, r, strict));
    }
    page("qga-harness conformance matrix", &b)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn is_marker(e: &Entry) -> bool {
    matches!(e.record, Record::Event(Event::Truncated { .. }))
}

/// Which entries get a row: the head, the tail, transcript markers, and of
/// the failure span `from..to` the agent's bytes and events, then our
/// writes, within [`SPAN_ROWS`].
fn shown_rows(entries: &[Entry], span: Option<(u64, u64)>) -> Vec<bool> {
    let n = entries.len();
    let mut show: Vec<bool> = (0..n).map(|i| i < HEAD_ROWS || i + TAIL_ROWS >= n || is_marker(&entries[i])).collect();
    if let Some((from, to)) = span {
        let in_span = |e: &Entry| e.seq >= from && e.seq < to;
        let theirs: Vec<usize> = (0..n).filter(|&i| !show[i] && in_span(&entries[i]) && !matches!(entries[i].record, Record::Bytes { dir: Direction::ToAgent, .. })).collect();
        let ours: Vec<usize> = (0..n).filter(|&i| !show[i] && in_span(&entries[i]) && matches!(entries[i].record, Record::Bytes { dir: Direction::ToAgent, .. })).collect();
        let mut budget = SPAN_ROWS;
        for group in [theirs, ours] {
            let take = group.len().min(budget);
            budget -= take;
            // Its head and its tail.
            for &i in group.iter().take(take / 2).chain(group.iter().skip(group.len() - (take - take / 2))) {
                show[i] = true;
            }
        }
    }
    show
}

fn wire_log(entries: &[Entry], span: Option<(u64, u64)>) -> String {
    let mut b = String::from("<table class=\"wire\"><thead><tr><th>#</th><th>time (ms)</th><th>dir</th><th>hex</th><th>text</th></tr></thead><tbody>\n");
    let show = shown_rows(entries, span);
    let in_span = |seq: u64| span.is_some_and(|(from, to)| seq >= from && seq < to);
    let mut span_bytes_left = SPAN_PAGE_BYTES;
    let (mut hidden, mut hidden_bytes) = (0usize, 0usize);
    let gap_row = |b: &mut String, hidden: &mut usize, hidden_bytes: &mut usize| {
        if *hidden > 0 {
            let _ = write!(
                b,
                "<tr class=\"gap\"><td colspan=\"5\">… {} entr{} / {} byte(s) not shown here (run.json has them) …</td></tr>\n",
                hidden,
                if *hidden == 1 { "y" } else { "ies" },
                hidden_bytes
            );
            (*hidden, *hidden_bytes) = (0, 0);
        }
    };
    for (e, shown) in entries.iter().zip(show) {
        if !shown {
            hidden += 1;
            if let Record::Bytes { data, .. } = &e.record {
                hidden_bytes += data.len();
            }
            continue;
        }
        gap_row(&mut b, &mut hidden, &mut hidden_bytes);
        let at = e.at.as_secs_f64() * 1e3;
        let span_class = if in_span(e.seq) { " span" } else { "" };
        match &e.record {
            Record::Bytes { dir, data, origin } => {
                let (class, arrow) = match dir {
                    Direction::ToAgent => ("to", "&gt;&gt; to agent"),
                    Direction::FromAgent => ("from", "&lt;&lt; from agent"),
                    Direction::ToClient => ("to", "C&lt; to client"),
                    Direction::FromClient => ("from", "C&gt; from client"),
                };
                let arrow = match origin {
                    Some(crate::transcript::Origin::Injected) => format!("{arrow} (injected)"),
                    Some(crate::transcript::Origin::Forwarded) => format!("{arrow} (forwarded)"),
                    None => arrow.to_owned(),
                };
                let limit = if matches!(dir, Direction::FromAgent | Direction::FromClient) && in_span(e.seq) && span_bytes_left > 0 {
                    SPAN_ROW_BYTES.min(span_bytes_left).max(MAX_ROW_BYTES)
                } else {
                    MAX_ROW_BYTES
                };
                let shown = &data[..data.len().min(limit)];
                if limit > MAX_ROW_BYTES {
                    span_bytes_left = span_bytes_left.saturating_sub(shown.len());
                }
                let more = if data.len() > shown.len() { format!(" … ({} more bytes)", data.len() - shown.len()) } else { String::new() };
                let _ = write!(
                    b,
                    "<tr class=\"{class}{span_class}\"><td>{}</td><td>{at:.3}</td><td>{arrow}</td><td class=\"mono\">{}{more}</td><td class=\"mono\">{}{more}</td></tr>\n",
                    e.seq,
                    hex(shown),
                    esc(&escape_bytes(shown))
                );
            }
            Record::Event(ev @ Event::Truncated { .. }) => {
                let _ = write!(b, "<tr class=\"gap{span_class}\"><td>{}</td><td>{at:.3}</td><td>harness</td><td colspan=\"2\">{}</td></tr>\n", e.seq, esc(&describe(ev)));
            }
            Record::Event(ev) => {
                let text = serde_json::to_string(ev).unwrap_or_default();
                let _ = write!(b, "<tr class=\"event{span_class}\"><td>{}</td><td>{at:.3}</td><td>harness</td><td colspan=\"2\" class=\"mono\">{}</td></tr>\n", e.seq, esc(&text));
            }
        }
    }
    gap_row(&mut b, &mut hidden, &mut hidden_bytes);
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
            "<tr><th>finding</th><td><code>{}</code> {}</td></tr><tr><th>expected</th><td class=\"mono\">{}</td></tr><tr><th>actual</th><td class=\"mono\">{}</td></tr><tr><th>transcript</th><td>#{}..#{}</td></tr>",
            esc(&f.kind.code()),
            esc(f.kind.summary()),
            esc(&f.expected),
            esc(&f.actual),
            f.transcript.0,
            f.transcript.1
        );
    }
    if let Some(cl) = &c.client {
        let _ = write!(b, "<tr><th>client grade</th><td>{}; exit {}; {} sync(s), {} command request(s)</td></tr>", cl.grade, esc(cl.exit.as_deref().unwrap_or("none (killed)")), cl.syncs, cl.commands);
        for rep in &cl.reported {
            let _ = write!(
                b,
                "<tr><th>reported</th><td class=\"mono\">{} {}: {}{}</td></tr>",
                esc(&rep.command),
                esc(&rep.status),
                esc(&rep.value),
                rep.note.as_ref().map_or(String::new(), |n| format!(" ({})", esc(n)))
            );
        }
        b.push_str("</table>");
    } else {
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
    }
    b.push_str("<h2>Wire log</h2>");
    if c.failure.is_some() {
        b.push_str("<p>Rows of the failure's transcript span are marked at the left.</p>");
    }
    b.push_str(&wire_log(&c.transcript, c.failure.as_ref().map(|f| f.transcript)));
    page(&format!("{} {}", c.id, c.outcome), &b)
}

/// Write the report directory for these runs.
/// Write `index.html` and a page per case. With `pages` (one path prefix
/// per run, relative to `dir`), the matrix links each run's own report
/// directory and writes no copies of its pages.
pub fn write(dir: &Path, runs: &[RunResult], pages: Option<&[String]>, strict: bool) -> std::io::Result<()> {
    super::write_atomic(&dir.join("index.html"), index(runs, pages, strict).as_bytes())?;
    if pages.is_some() {
        return Ok(());
    }
    for (i, r) in runs.iter().enumerate() {
        for c in &r.results {
            if has_page(c) {
                super::write_atomic(&dir.join(case_file(i, &c.id)), case_page(r, c).as_bytes())?;
            }
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

    /// A framing/8-like case: a megabyte of our own writes (more rows and
    /// bytes than a page shows), then the agent's replies, then recovery.
    /// The replies are the evidence: they must be on the page.
    #[test]
    fn agent_replies_survive_a_megabyte_of_our_writes() {
        use crate::transcript::{Caps, Transcript};
        let t = Transcript::new(Caps::default());
        let from = t.mark();
        t.event(Event::Note { text: "case framing/8".into() });
        let request = b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}\n".repeat(64);
        for _ in 0..(1 << 20) / request.len() + 1 {
            t.bytes(Direction::ToAgent, &request);
        }
        // Replies arrive in small reads, more rows than a page shows.
        for i in 0..5000 {
            t.bytes(Direction::FromAgent, format!("{{\"return\": {i}}}\n").as_bytes());
        }
        let to = t.mark();
        t.bytes(Direction::ToAgent, b"\xff{\"execute\":\"guest-sync-delimited\"}");
        t.bytes(Direction::FromAgent, b"\xff{\"return\": 777}\n");
        let entries = t.entries(from, None);
        let html = wire_log(&entries, Some((from, to)));
        // Within the span the agent's rows win over ours: its head and tail.
        for i in [0, 1, 1499, 3500, 4998, 4999] {
            assert!(html.contains(&format!("{{\"return\": {i}}}\\n")), "reply {i} not shown");
        }
        assert!(html.matches("&lt;&lt; from agent").count() >= 3000);
        // The recovery at the end (the tail) is shown.
        assert!(html.contains("{\"return\": 777}"));
        // What is left out is said where it was, with the transcript's own marker.
        assert!(html.contains("not shown here (run.json has them)"), "no gap row");
        assert!(html.contains("to-agent entries /") && html.contains("not kept"), "no transcript marker row");
        assert!(html.len() < 8 << 20, "{}", html.len());
    }

    #[test]
    fn index_counts_pass_and_info_as_passed() {
        let run = crate::report::markdown::tests::run_with(&["PASS", "INFO", "UNSUPPORTED", "NON-STRICT", "FAIL"]);
        let html = index(std::slice::from_ref(&run), None, false);
        assert!(html.contains("5 cases: 2 passed, 1 failed, 1 NON-STRICT, 1 not run (1 UNSUPPORTED, 0 BLOCKED)."), "{html}");
        for o in ["PASS", "INFO", "UNSUPPORTED", "NON-STRICT", "FAIL"] {
            assert!(html.contains(&format!("<td class=\"{o}\">1 {o}</td>")), "{o}");
        }
    }

    #[test]
    fn agent_bytes_in_the_span_are_shown_whole() {
        use crate::transcript::Transcript;
        let t = Transcript::default();
        t.bytes(Direction::FromAgent, &[b'a'; 1000]);
        let from = t.mark();
        t.bytes(Direction::FromAgent, &[b'b'; 1000]);
        let to = t.mark();
        let html = wire_log(&t.entries(0, None), Some((from, to)));
        assert!(html.contains(&"b".repeat(1000)));
        assert!(!html.contains(&"a".repeat(257)) && html.contains("744 more bytes"));
        assert_eq!(html.matches("class=\"from span\"").count(), 1);
    }
}
