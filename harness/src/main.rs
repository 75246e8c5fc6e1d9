//! The `qga-harness` command line.
//!
//! Exit codes: 0 all checks passed; 1 conformance failures; 2 harness error;
//! 3 bad usage or configuration (bad template, agent not found).

use clap::{Args, Parser, Subcommand};
use qga_harness::agent::AgentTemplate;
use qga_harness::checks::{self, Outcome};
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use std::process::ExitCode;
use std::time::Duration;

mod bench;

const EXIT_FAIL: u8 = 1;
const EXIT_HARNESS: u8 = 2;
const EXIT_USAGE: u8 = 3;

#[derive(Parser)]
#[command(name = "qga-harness", version, about = "Conformance harness for QEMU Guest Agent implementations")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the built-in checks against an agent.
    Run(RunArgs),
    /// Measure round trips, resync latency and start-up time.
    Bench(bench::BenchArgs),
    /// Serve as the in-tree reference agent (the default agent).
    #[command(hide = true, disable_help_flag = true)]
    RefAgent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Which agent, over which channel, with which limits.
#[derive(Args, Clone)]
pub struct AgentArgs {
    /// Agent command template; `{path}` is the channel path, `{statedir}` a
    /// fresh directory. Default: the in-tree reference agent.
    #[arg(long)]
    agent: Option<String>,
    /// Channel between harness and agent.
    #[arg(long, value_enum, default_value_t = TransportKind::Pty)]
    transport: TransportKind,
    /// Wait for one reply, in milliseconds.
    #[arg(long, default_value_t = 250)]
    reply_timeout_ms: u64,
    /// Wait from spawn to the first answered sync, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    startup_timeout_ms: u64,
    /// Total budget for one resync, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    resync_budget_ms: u64,
    /// Channel bytes kept in the transcript.
    #[arg(long, default_value_t = 1 << 20)]
    transcript_cap: usize,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Print the whole transcript after the results.
    #[arg(long)]
    transcript: bool,
    /// Write the verdicts and transcript as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

impl AgentArgs {
    /// The session configuration, or a usage error message.
    pub fn session_config(&self) -> Result<SessionConfig, String> {
        let template = match &self.agent {
            Some(t) => AgentTemplate::parse(t).map_err(|e| e.to_string())?,
            None => reference_agent(self.transport)?,
        };
        if self.transport == TransportKind::UnixListen && !template.uses_path() {
            return Err("--transport unix-listen needs {path} in the agent template".into());
        }
        if !program_exists(template.program()) {
            return Err(format!("agent program not found: {}", template.program()));
        }
        let mut config = SessionConfig::new(template, self.transport);
        config.client.reply_timeout = Duration::from_millis(self.reply_timeout_ms);
        config.client.resync.budget = Duration::from_millis(self.resync_budget_ms);
        config.startup_timeout = Duration::from_millis(self.startup_timeout_ms);
        Ok(config)
    }

    pub fn transcript(&self) -> Transcript {
        Transcript::new(qga_harness::transcript::Caps { bytes: self.transcript_cap, ..Default::default() })
    }
}

/// This binary, serving as the reference agent: always there, nothing to
/// build or install first.
fn reference_agent(transport: TransportKind) -> Result<AgentTemplate, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut words = vec![exe.to_string_lossy().into_owned(), "ref-agent".to_owned()];
    match transport {
        TransportKind::Pty => words.extend(["--path".into(), "{path}".into()]),
        TransportKind::UnixListen => words.extend(["--unix-listen".into(), "{path}".into()]),
        TransportKind::Socketpair => {}
    }
    AgentTemplate::from_words(words).map_err(|e| e.to_string())
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

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
        return qga_fixtures::run(args);
    }
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
        tokio::spawn(stop_on_signal());
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::RefAgent { .. } => unreachable!(),
        }
    })
}

/// Ctrl-C or SIGTERM: kill every agent group, then exit. Destructors do not
/// run on `exit`, so this is the path that guarantees no agent outlives us.
async fn stop_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let code = tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    qga_harness::agent::process::kill_all();
    eprintln!("qga-harness: interrupted; all agents killed");
    std::process::exit(code);
}

async fn run(args: RunArgs) -> ExitCode {
    let config = match args.agent.session_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qga-harness: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let transcript = args.agent.transcript();
    println!("agent: {}\ntransport: {}", config.template, config.transport);
    let report = checks::run_checks(config, transcript.clone()).await;
    print!("{}", checks::render(&report, &transcript, args.transcript));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "report": report, "transcript": transcript.entries(0, None) });
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            eprintln!("qga-harness: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_HARNESS);
        }
    }
    // ERROR on start means the harness could not run the agent at all (spawn
    // or channel failure); later ERRORs follow from an agent failure.
    if report.verdicts.first().is_some_and(|v| v.outcome == Outcome::Error) {
        return ExitCode::from(EXIT_HARNESS);
    }
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}
