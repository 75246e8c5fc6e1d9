//! `replay`: a case file run N times, for failures that come and go.

use super::args::ReplayArgs;
use super::usage;
use crate::{EXIT_FAIL, EXIT_HARNESS};
use qga_harness::case::{load, Role};
use qga_harness::engine::client_case::{run_client_cases, ClientConfig};
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::proxy::ClientTemplate;
use qga_harness::report;
use std::process::ExitCode;
use std::time::Duration;

pub async fn replay(args: ReplayArgs) -> ExitCode {
    let config = match args.agent.session_config() {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cases = match load::from_path(&args.file) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return usage(format!("{}: no case in the file", args.file.display())),
        Err(e) => return usage(e),
    };
    let client_cfg = if cases.iter().any(|c| c.role == Role::Client) {
        let Some(t) = &args.client else {
            return usage(format!("{}: client cases: give the client under test with --client", args.file.display()));
        };
        let client = match ClientTemplate::parse(t) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
        let mut agent = config.clone();
        let mut budgets = agent.budgets;
        budgets.client_timeout = Duration::from_millis(args.client_timeout_ms);
        agent.set_budgets(budgets);
        Some(ClientConfig { client, port: args.client_transport, agent })
    } else {
        None
    };
    let mut failing_runs = 0;
    let mut errors = false;
    for i in 0..args.repeat.max(1) {
        let eo = EngineOptions { seed: args.seed.unwrap_or_else(rand::random), ..EngineOptions::default() };
        let result = match &client_cfg {
            Some(c) => run_client_cases(c.clone(), &cases, args.agent.transcript(), &eo).await,
            None => run_cases(config.clone(), &cases, args.agent.transcript(), &eo).await,
        };
        let bad: Vec<_> = result.results.iter().filter(|r| r.outcome.is_failing(args.strict)).collect();
        let g = qga_harness::gate::gate(&result, None, args.strict);
        errors |= matches!(g, qga_harness::gate::Gate::HarnessError(_));
        if g == qga_harness::gate::Gate::Pass {
            println!("run {}: {} case(s) conform", i + 1, result.results.len());
        } else {
            failing_runs += 1;
            if failing_runs == 1 {
                print!("{}", report::render_terminal(&result, None, args.strict, false));
            }
            println!("run {}: {}", i + 1, bad.iter().map(|r| format!("{} {}", r.id, r.outcome)).collect::<Vec<_>>().join(", "));
        }
    }
    println!("{failing_runs} of {} run(s) failed", args.repeat.max(1));
    if errors {
        ExitCode::from(EXIT_HARNESS)
    } else if failing_runs > 0 {
        ExitCode::from(EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    }
}
