//! The `qga-harness` command line.
//!
//! Exit codes: 0 conforming (or matching the baseline); 1 conformance
//! failures or regressions; 2 harness error; 3 bad usage or configuration
//! (bad template, agent not found, unreadable case or baseline file, no case
//! selected).

use clap::Parser;
use qga_harness::process::signals::{quiet_on_broken_pipe, stop_on_signal};
use std::process::ExitCode;

mod benchcmd;
mod cli;
mod fuzzcmd;

// benchcmd and fuzzcmd name it (and the exit codes) at the crate root.
pub use cli::args::AgentArgs;
use cli::args::{Cli, Cmd};

pub const EXIT_FAIL: u8 = 1;
pub const EXIT_HARNESS: u8 = 2;
pub const EXIT_USAGE: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Cmd::RefAgent { args } = cli.command {
        // The reference agent's stdout may be its channel: left as it was.
        return qga_fixtures::run(args);
    }
    match cli.command {
        Cmd::Completions { shell } => return cli::docs::completions(shell),
        Cmd::Man { ref out } => return cli::docs::man(out.as_deref()),
        _ => {}
    }
    quiet_on_broken_pipe();
    // One thread: the agent's parent-death signal is tied to the thread that
    // spawned it, and a single-threaded runtime keeps round trips short.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qga-harness: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_HARNESS);
        }
    };
    rt.block_on(async {
        stop_on_signal();
        match cli.command {
            Cmd::Run(args) => cli::run(args).await,
            Cmd::Client(args) => cli::client_cmd(args).await,
            Cmd::Call(args) => cli::call(args).await,
            Cmd::List(args) => cli::list(args),
            Cmd::Bench(args) => benchcmd::run(args).await,
            Cmd::Fuzz(args) => fuzzcmd::run(args).await,
            Cmd::Replay(args) => cli::replay(args).await,
            Cmd::Report(args) => cli::report_cmd(args),
            Cmd::RefAgent { .. } | Cmd::Completions { .. } | Cmd::Man { .. } => unreachable!(),
        }
    })
}
