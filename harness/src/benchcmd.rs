//! `qga-harness bench`: the command-line face of [`qga_harness::bench`].

use crate::AgentArgs;
use clap::Args;
use qga_harness::bench::{self, BenchOptions};
use std::process::ExitCode;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Round trips and resyncs measured per figure (vm-*: pings, at most 500).
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Agent start-ups measured (vm-*: boots, at most 5, and twice as many
    /// control-port restarts, at most 40).
    #[arg(long, default_value_t = 30)]
    pub spawns: usize,
    /// Measure client mode instead: this client template runs a fault-free
    /// client case, against a floor client that exits at once (`true`).
    #[arg(long)]
    client: Option<String>,
    /// With --client: the client case measured (a fault-free one).
    #[arg(long, default_value = "client-wire/4")]
    client_case: String,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let config = match args.agent.session_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qga-harness: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    println!("agent: {}\ntransport: {}\niterations: {}, spawns: {}", config.template, config.transport, args.iterations, args.spawns);
    let opts = BenchOptions { iterations: args.iterations, spawns: args.spawns, client: args.client, client_case: args.client_case };
    match bench::measure(config, &opts).await {
        Ok(figures) => {
            print!("{figures}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qga-harness bench: {e}");
            ExitCode::from(crate::EXIT_HARNESS)
        }
    }
}
