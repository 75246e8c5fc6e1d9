//! Reports on disk: run documents read back with their layout checked, and
//! the files a run (`run --json`, `--report-dir`, `--write-baseline`) or a
//! merge of runs (`report`) writes. The command line only says where.

use super::{html, junit, markdown, write_atomic, Comparison, JsonReport, RunResult, JSON_SCHEMA};
use crate::baseline::Baseline;
use std::path::Path;

/// Layouts of the run document this build reads besides [`JSON_SCHEMA`]:
/// later layouts only add members, so earlier documents read as they are.
const EARLIER_LAYOUTS: [&str; 3] = ["qga-harness/run/3", "qga-harness/run/2", "qga-harness/run/1"];

/// Read a run document written by `run --json` or `run --report-dir`. Know
/// what we read: a document of a layout this build does not know is
/// refused, not half-read.
pub fn read_run(path: &Path) -> Result<RunResult, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let version = serde_json::from_slice::<serde_json::Value>(&text).ok().and_then(|v| v.get("schema").and_then(|s| s.as_str()).map(str::to_owned));
    match version.as_deref() {
        Some(v) if v == JSON_SCHEMA || EARLIER_LAYOUTS.contains(&v) => {}
        Some(other) => return Err(format!("{}: run document of layout {other}; this build reads {} and the layouts before it", path.display(), JSON_SCHEMA)),
        None => return Err(format!("{}: not a qga-harness run document (no \"schema\" member)", path.display())),
    }
    serde_json::from_slice::<RunResult>(&text).map_err(|e| format!("{}: not a qga-harness run document: {e}", path.display()))
}

/// The run document of `run`, as `run --json` writes it.
pub fn write_run(path: &Path, run: &RunResult, comparison: Option<&Comparison>, strict: bool) -> Result<(), String> {
    write(path, run_document(run, comparison, strict))
}

/// A baseline that expects `run`'s outcomes, naming its agent, version and
/// transport.
pub fn write_baseline(path: &Path, run: &RunResult, strict: bool) -> Result<(), String> {
    let agent = format!("{} ({}) over {}", run.agent, run.agent_version.as_deref().unwrap_or("version unknown"), run.transport);
    let b = Baseline::from_results(&agent, &run.results, strict);
    write(path, toml::to_string(&b).unwrap_or_default().into_bytes())
}

/// What a report directory holds.
#[derive(Debug, Clone, Copy)]
pub enum DirContents<'a> {
    /// One run (`run --report-dir`): run.json (with the baseline
    /// comparison, if any), junit.xml, summary.md and html/.
    Run { run: &'a RunResult, comparison: Option<&'a Comparison> },
    /// Runs merged by `report`: run-N.junit.xml and run-N.md per run (and
    /// run-N.json with `json`), matrix.md (cases as rows, runs as columns),
    /// and html/ over all of them. `pages`: per run, where its own case
    /// pages are, relative to html/ (the matrix links them, no copies).
    Merged { runs: &'a [RunResult], json: bool, pages: Option<&'a [String]> },
}

/// Write every report format into `dir`; `command` is the command line the
/// Markdown summaries name. Nothing is written if the JUnit XML cannot be
/// rendered; every file is written atomically.
pub fn write_dir(dir: &Path, contents: DirContents<'_>, strict: bool, command: &str) -> Result<(), String> {
    let junit = |run: &RunResult| junit::render(run, strict).map_err(|e| format!("cannot render JUnit: {e}"));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let runs = match contents {
        DirContents::Run { run, comparison } => {
            files.push(("run.json".into(), run_document(run, comparison, strict)));
            files.push(("junit.xml".into(), junit(run)?.into_bytes()));
            files.push(("summary.md".into(), markdown::render(run, strict, command).into_bytes()));
            std::slice::from_ref(run)
        }
        DirContents::Merged { runs, json, .. } => {
            for (i, run) in runs.iter().enumerate() {
                files.push((format!("run-{}.junit.xml", i + 1), junit(run)?.into_bytes()));
                files.push((format!("run-{}.md", i + 1), markdown::render(run, strict, command).into_bytes()));
                if json {
                    files.push((format!("run-{}.json", i + 1), run_document(run, None, strict)));
                }
            }
            files.push(("matrix.md".into(), markdown::matrix(runs).into_bytes()));
            runs
        }
    };
    for (name, bytes) in files {
        write(&dir.join(name), bytes)?;
    }
    let pages = match contents {
        DirContents::Merged { pages, .. } => pages,
        DirContents::Run { .. } => None,
    };
    html::write(&dir.join("html"), runs, pages, strict).map_err(|e| format!("cannot write the HTML report: {e}"))
}

fn run_document(run: &RunResult, comparison: Option<&Comparison>, strict: bool) -> Vec<u8> {
    serde_json::to_vec_pretty(&JsonReport::new(run, comparison, strict)).unwrap_or_default()
}

fn write(path: &Path, bytes: Vec<u8>) -> Result<(), String> {
    write_atomic(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(schema: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), format!("{{\"schema\": \"{schema}\"}}")).unwrap();
        f
    }

    #[test]
    fn only_known_layouts_are_read() {
        let later = document("qga-harness/run/99");
        let e = read_run(later.path()).unwrap_err();
        assert!(e.contains("run document of layout qga-harness/run/99; this build reads qga-harness/run/4"), "{e}");
        let none = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(none.path(), "[]").unwrap();
        assert!(read_run(none.path()).unwrap_err().contains("no \"schema\" member"));
        // A known layout is read, and then must hold a run.
        for v in [JSON_SCHEMA, "qga-harness/run/3", "qga-harness/run/1"] {
            let e = read_run(document(v).path()).unwrap_err();
            assert!(e.contains("not a qga-harness run document: missing field"), "{e}");
        }
        assert!(read_run(Path::new("/nonexistent/run.json")).unwrap_err().starts_with("/nonexistent/run.json: "));
    }
}
