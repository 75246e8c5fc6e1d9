//! `report`: run documents merged into every report format.

use super::args::ReportArgs;
use super::usage;
use crate::EXIT_HARNESS;
use qga_harness::report;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Merge run documents: one JUnit file and one Markdown summary per run,
/// and a Markdown matrix (cases as rows, runs as columns) over all of them.
pub fn report_cmd(args: ReportArgs) -> ExitCode {
    let mut runs = Vec::new();
    for path in &args.runs {
        match report::read_run(path) {
            Ok(r) => runs.push(r),
            Err(e) => return usage(e),
        }
    }
    let runs = match report::merge_shards(runs) {
        Ok((runs, notes)) => {
            for n in notes {
                eprintln!("qga-harness: {n}");
            }
            runs
        }
        Err(e) => return usage(e),
    };
    let pages = if args.link_pages {
        if runs.len() != args.runs.len() {
            return usage("--link-pages needs one report directory per run: shards merged into one run have no pages of their own");
        }
        match page_prefixes(&args.runs, &args.out.join("html")) {
            Ok(p) => Some(p),
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let command = format!("qga-harness report {}", args.runs.iter().map(|p| shell_words::quote(&p.display().to_string()).into_owned()).collect::<Vec<_>>().join(" "));
    if let Err(e) = report::write_dir(&args.out, report::DirContents::Merged { runs: &runs, json: args.json, pages: pages.as_deref() }, args.strict, &command) {
        eprintln!("qga-harness: {e}");
        return ExitCode::from(EXIT_HARNESS);
    }
    println!("{} run(s) merged into {}", runs.len(), args.out.display());
    ExitCode::SUCCESS
}

/// Per run document, the path from `html` (the matrix's html/) to the html/
/// beside it, with a trailing slash; each must hold the run's case pages.
fn page_prefixes(runs: &[PathBuf], html: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(html).map_err(|e| format!("cannot create {}: {e}", html.display()))?;
    let from = html.canonicalize().map_err(|e| format!("{}: {e}", html.display()))?;
    runs.iter()
        .map(|run| {
            let dir = run.parent().unwrap_or(Path::new(".")).join("html");
            let to = dir.canonicalize().map_err(|e| format!("--link-pages: {} has no html/ beside it ({e}): write it with `run --report-dir`", run.display()))?;
            if !to.join("index.html").is_file() {
                return Err(format!("--link-pages: {} holds no report pages", dir.display()));
            }
            Ok(format!("{}/", relative(&from, &to)))
        })
        .collect()
}

/// `to` as seen from `from` (both absolute, canonical).
fn relative(from: &Path, to: &Path) -> String {
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_owned(), f.len() - common).collect();
    parts.extend(t[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_report_directories() {
        assert_eq!(relative(Path::new("/r/clients/matrix/html"), Path::new("/r/clients/fc-qemu/html")), "../../fc-qemu/html");
        assert_eq!(relative(Path::new("/r/matrix/html"), Path::new("/r/qemu-ga-7.2/pty/html")), "../../qemu-ga-7.2/pty/html");
        assert_eq!(relative(Path::new("/a/html"), Path::new("/a/html")), ".");
    }
}
