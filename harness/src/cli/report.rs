//! `report`: run documents merged into every report format.

use super::args::ReportArgs;
use super::usage;
use crate::EXIT_HARNESS;
use qga_harness::report;
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
    let command = format!("qga-harness report {}", args.runs.iter().map(|p| shell_words::quote(&p.display().to_string()).into_owned()).collect::<Vec<_>>().join(" "));
    if let Err(e) = report::write_dir(&args.out, report::DirContents::Merged { runs: &runs, json: args.json }, args.strict, &command) {
        eprintln!("qga-harness: {e}");
        return ExitCode::from(EXIT_HARNESS);
    }
    println!("{} run(s) merged into {}", runs.len(), args.out.display());
    ExitCode::SUCCESS
}
