//! `run`: the agent cases against an agent; and the one way `run` and
//! `client` print, write and gate what they ran.

use super::args::{OutputArgs, RunArgs, Transcripts};
use super::usage;
use crate::EXIT_HARNESS;
use qga_harness::baseline::Baseline;
use qga_harness::case::{Role, Selected};
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::report;
use qga_harness::verdict::{Outcome, RunResult};
use std::process::ExitCode;

pub async fn run(args: RunArgs) -> ExitCode {
    let config = match args.agent.session_config() {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let Selected { cases, catalogue_ids } = match args.select.select(Some(Role::Agent)) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let baseline = match load_baseline(&args.out, &catalogue_ids) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let transcript = args.agent.transcript();
    let eo = EngineOptions { seed: args.seed.unwrap_or_else(rand::random), ..EngineOptions::default() };
    let mut result = run_cases(config, &cases, transcript, &eo).await;
    result.shard = args.select.shard;
    finish(&result, &args.out, baseline.as_ref())
}

pub(super) fn load_baseline(out: &OutputArgs, all_ids: &[String]) -> Result<Option<Baseline>, String> {
    out.expect.as_deref().map(|path| Baseline::read(path, all_ids)).transpose()
}

/// Print, write and gate a run: the one exit policy of `run` and `client`.
pub(super) fn finish(result: &RunResult, args: &OutputArgs, baseline: Option<&Baseline>) -> ExitCode {
    let comparison = baseline.map(|b| b.compare(&result.results, args.strict));
    print!("{}", report::render_terminal(result, comparison.as_ref(), args.strict, args.transcript));
    let lean;
    let documented = if args.transcripts == Transcripts::Failing {
        lean = without_passing_transcripts(result);
        &lean
    } else {
        result
    };
    let written = (|| {
        let result = documented;
        if let Some(path) = &args.json {
            report::write_run(path, result, comparison.as_ref(), args.strict)?;
        }
        if let Some(dir) = &args.report_dir {
            let command = std::env::args().map(|a| shell_words::quote(&a).into_owned()).collect::<Vec<_>>().join(" ");
            report::write_dir(dir, report::DirContents::Run { run: result, comparison: comparison.as_ref() }, args.strict, &command)?;
        }
        match &args.write_baseline {
            Some(path) => report::write_baseline(path, result, args.strict),
            None => Ok(()),
        }
    })();
    if let Err(e) = written {
        eprintln!("qga-harness: {e}");
        return ExitCode::from(EXIT_HARNESS);
    }
    // The one exit policy (also the libtest target's).
    ExitCode::from(qga_harness::gate::gate(result, baseline, args.strict).exit_code())
}

/// The run with the wire transcripts of cases that PASSed or did not apply
/// left out (`--transcripts failing`); every other case keeps its whole.
fn without_passing_transcripts(result: &RunResult) -> RunResult {
    let mut lean = result.clone();
    for r in &mut lean.results {
        if matches!(r.outcome, Outcome::Pass | Outcome::Unsupported) {
            r.transcript.clear();
        }
    }
    lean
}
