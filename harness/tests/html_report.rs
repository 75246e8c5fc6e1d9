//! The HTML report as a user sees it: opened in a real headless browser
//! (Debian's chromium; .ci/run installs it), it loads with no console
//! messages, the matrix has one row per case, case pages load, and a
//! screenshot is written.

mod common;

use assert_cmd::Command;
use std::path::Path;

fn chromium() -> Option<&'static str> {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).is_file() {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("chromium is not installed, and CI is set: .ci/run must install it");
    }
    eprintln!("chromium not installed: skipping (this would fail under CI)");
    None
}

/// Load `page` headless; returns (DOM, console lines).
fn load(browser: &str, page: &Path, profile: &Path, screenshot: Option<&Path>) -> (String, Vec<String>) {
    let mut cmd = std::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,2000",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(s) => cmd.arg(format!("--screenshot={}", s.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(format!("file://{}", page.display()));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let console = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn html_report_loads_in_a_browser_with_one_row_per_case() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    // A mutant, so the report has failures with transcripts to show.
    let mutant = format!("{} ref-agent --bug raw-ff-in-reply", common::HARNESS);
    Command::cargo_bin("qga-harness").unwrap().args(["run", "--transport", "socketpair", "--agent", &mutant, "--report-dir"]).arg(&out).assert().code(1);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let cases = doc["results"].as_array().unwrap();

    let index = out.join("html/index.html");
    let (dom, console) = load(browser, &index, &dir.path().join("p1"), None);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert_eq!(dom.matches("<tr class=\"case\">").count(), cases.len());
    assert!(dom.contains("<svg"), "no resync chart");

    // A failing case's page: the wire log is there, and the agent's raw
    // bytes appear only escaped.
    let failing = cases.iter().find(|c| c["outcome"] == "FAIL").unwrap();
    let page = out.join("html").join(format!("run1-{}.html", failing["id"].as_str().unwrap().replace('/', "-")));
    let (dom, console) = load(browser, &page, &dir.path().join("p2"), None);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("Wire log") && dom.contains("from agent"), "{dom}");

    let shot = dir.path().join("index.png");
    load(browser, &index, &dir.path().join("p3"), Some(&shot));
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    // Keep a copy for people to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report-index.png");
    std::fs::copy(&shot, keep).unwrap();
}

/// Agent text with markup and control characters (the legal variant
/// markup-text) is inert in every report format.
#[test]
fn agent_markup_is_escaped_in_html_xml_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    // A case that fails with the agent's error text in "actual".
    std::fs::write(
        dir.path().join("m.toml"),
        "section = \"m\"\n[[case]]\nid = \"m/1\"\ntitle = \"t\"\nlevel = \"MUST\"\nrequirement = \"r\"\nsource = \"s\"\nsteps = [ { send = { command = \"guest-no-such-command\" } }, { expect = { error = \"GenericError\" } } ]\n",
    )
    .unwrap();
    let out = dir.path().join("report");
    let agent = format!("{} ref-agent --variant markup-text", common::HARNESS);
    Command::cargo_bin("qga-harness").unwrap().args(["run", "--transport", "socketpair", "--agent", &agent, "--cases"]).arg(dir.path().join("m.toml")).arg("--report-dir").arg(&out).assert().code(1);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    let (index, page, junit, md) = (read("html/index.html"), read("html/run1-m-1.html"), read("junit.xml"), read("summary.md"));
    for (name, text) in [("index", &index), ("case page", &page), ("summary.md", &md)] {
        assert!(!text.contains("<script>alert") && !text.contains("<img src"), "{name} carries live markup:\n{text}");
    }
    assert!(index.contains("&lt;script&gt;alert"), "the version is shown, escaped:\n{index}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"), "{page}");
    assert!(md.contains("&lt;img src=x"), "{md}");
    // JUnit: well-formed XML whose failure text holds the markup as text.
    let script = "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\nprint(r.find('.//failure').get('message'))";
    let parsed = std::process::Command::new("python3").args(["-c", script]).arg(out.join("junit.xml")).output().unwrap();
    assert!(parsed.status.success(), "{}\n{junit}", String::from_utf8_lossy(&parsed.stderr));
    assert!(String::from_utf8_lossy(&parsed.stdout).contains("<img src=x onerror=alert(1)>"), "{junit}");
    // No raw control characters anywhere.
    for (name, text) in [("index", &index), ("case page", &page), ("junit", &junit), ("summary.md", &md)] {
        assert!(!text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')), "{name} has raw control characters");
    }
}

/// The index reads as the terminal report does: the probe's result first,
/// the cases not run one line per reason, the findings most cases first,
/// then the counts and the closing count (PASS and INFO passed, not run
/// apart).
#[test]
fn html_index_opens_with_the_probe_and_closes_with_findings_then_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let mutant = format!("{} ref-agent --bug exit-on-parse-error", common::HARNESS);
    Command::cargo_bin("qga-harness").unwrap().args(["run", "--transport", "socketpair", "--seed", "1", "--agent", &mutant, "--report-dir"]).arg(&out).assert().code(1);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let n = |o: &str| doc["results"].as_array().unwrap().iter().filter(|c| c["outcome"] == o).count();
    let html = std::fs::read_to_string(out.join("html/index.html")).unwrap();
    let at = |what: &str| html.find(what).unwrap_or_else(|| panic!("{what} not in:\n{html}"));
    let probe = at("<ul class=\"probe\"><li>sync: ");
    let not_run = at("<ul class=\"not-run\">");
    let findings = at("<table class=\"findings\">");
    let counts = at("<table class=\"counts\">");
    assert!(probe < not_run && not_run < findings && findings < counts, "out of order:\n{html}");
    // Every BLOCKED case on one line, named by the probe's finding.
    assert_eq!(html.matches(&format!("<li>BLOCKED {} cases by dies-on-flush-byte: ", n("BLOCKED"))).count(), 1, "{html}");
    // The findings: most cases first (the probe's first on a tie).
    let rows: Vec<usize> = html[findings..counts]
        .split("<tr><td><code>")
        .skip(1)
        .map(|row| row.split("</td><td>").nth(2).and_then(|c| c.split(' ').next()).and_then(|c| c.parse().ok()).unwrap())
        .collect();
    assert!(rows.len() >= 2 && rows.windows(2).all(|w| w[0] >= w[1]), "{rows:?}");
    assert!(html[findings..].starts_with("<table class=\"findings\"><thead><tr><th>finding</th><th>what</th><th>cases</th></tr></thead><tbody><tr><td><code>dies-on-flush-byte</code>"), "{html}");
    let closing = format!(
        "{} cases: {} passed, {} failed, {} not run ({} UNSUPPORTED, {} BLOCKED).",
        doc["results"].as_array().unwrap().len(),
        n("PASS") + n("INFO"),
        n("FAIL"),
        n("UNSUPPORTED") + n("BLOCKED"),
        n("UNSUPPORTED"),
        n("BLOCKED")
    );
    assert!(html[counts..].contains(&closing), "{closing} not in:\n{html}");
}

/// Committed reports stay lean: `--transcripts failing` keeps the wire log
/// of failing cases only, and `report --link-pages` writes a one-page matrix
/// whose cells open each run's own case pages (no copies); the index says
/// when it was made with `--strict`, and counts NON-STRICT as failed then.
#[test]
fn lean_reports_link_their_pages_and_the_index_honours_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mutant = format!("{} ref-agent --bug raw-ff-in-reply", common::HARNESS);
    for (name, agent) in [("a", None), ("b", Some(mutant.as_str()))] {
        let mut cmd = Command::cargo_bin("qga-harness").unwrap();
        cmd.args(["run", "--transport", "socketpair", "--case", "hygiene/*", "--transcripts", "failing", "--report-dir"]).arg(dir.path().join(name));
        if let Some(a) = agent {
            cmd.args(["--agent", a]);
        }
        let _ = cmd.output().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(name).join("run.json")).unwrap()).unwrap();
        for r in doc["results"].as_array().unwrap() {
            let has = r["transcript"].as_array().is_some_and(|t| !t.is_empty());
            let passing = r["outcome"] == "PASS" || r["outcome"] == "UNSUPPORTED";
            assert_eq!(has, !passing, "{name} {} {}", r["id"], r["outcome"]);
            // A passing case's verdict is its matrix cell: no page of its own.
            let page = dir.path().join(name).join("html").join(format!("run1-{}.html", r["id"].as_str().unwrap().replace('/', "-")));
            assert_eq!(page.is_file(), !passing, "{name} {} {}", r["id"], r["outcome"]);
        }
    }
    let b_failing = {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("b/run.json")).unwrap()).unwrap();
        doc["results"].as_array().unwrap().iter().filter(|r| r["outcome"] != "PASS").count()
    };
    assert!(b_failing > 0, "the mutant fails some hygiene case");
    let m = dir.path().join("m");
    Command::cargo_bin("qga-harness").unwrap().args(["report", "--link-pages", "--strict", "--out"]).arg(&m).arg(dir.path().join("a/run.json")).arg(dir.path().join("b/run.json")).assert().success();
    let pages: Vec<_> = std::fs::read_dir(m.join("html")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(pages, ["index.html"], "no copied case pages");
    let index = std::fs::read_to_string(m.join("html/index.html")).unwrap();
    let links: Vec<&str> = index.split("href=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    // Run a passed every case: its cells link nothing; b's failures link b's pages.
    assert!(!links.is_empty() && links.iter().all(|l| l.starts_with("../../b/html/")), "{links:?}");
    assert_eq!(links.len(), b_failing, "{links:?}");
    for l in &links {
        assert!(m.join("html").join(l).is_file(), "{l} does not open a page");
    }
    assert!(index.contains("made with --strict"), "the index says it was made with --strict");
}
