//! The `qga-harness` command line.
//!
//! Exit codes: 0 conforming (or matching the baseline); 1 conformance
//! failures or regressions; 2 harness error; 3 bad usage or configuration
//! (bad template, agent not found, unreadable case or baseline file, no case
//! selected).

use clap::{Args, Parser, Subcommand};
use qga_harness::agent::AgentTemplate;
use qga_harness::baseline::Baseline;
use qga_harness::budget::{Budgets, Mode};
use qga_harness::case::{load, Case, Role, Selected};
use qga_harness::engine::client_case::{run_client_cases, ClientConfig};
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::proxy::ClientTemplate;
use qga_harness::report;
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use qga_harness::verdict::RunResult;
use std::process::ExitCode;
use std::time::Duration;

mod benchcmd;
mod fuzzcmd;

pub const EXIT_FAIL: u8 = 1;
pub const EXIT_HARNESS: u8 = 2;
pub const EXIT_USAGE: u8 = 3;

#[derive(Parser)]
#[command(name = "qga-harness", version, about = "Conformance harness for QEMU Guest Agent implementations")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the conformance catalogue against an agent.
    Run(RunArgs),
    /// List the catalogue: id, level, title.
    List(ListArgs),
    /// Measure round trips, resync latency and start-up time.
    Bench(benchcmd::BenchArgs),
    /// Fuzz resync with random fault schedules; shrink failures to case files.
    Fuzz(fuzzcmd::FuzzArgs),
    /// Re-run a case file (e.g. one the fuzzer wrote), N times.
    Replay(ReplayArgs),
    /// Merge run JSON files into JUnit, Markdown and an HTML matrix.
    Report(ReportArgs),
    /// Grade a client: run it against an agent through a fault-injecting
    /// proxy, with the client cases of the catalogue.
    Client(ClientArgs),
    /// Be a client under test: the harness's own reference client,
    /// following the client contract (the positive control of `client`).
    Call(CallArgs),
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
    /// Wait for one reply, in milliseconds [default: 250; fuzz: 50].
    #[arg(long)]
    reply_timeout_ms: Option<u64>,
    /// Wait from spawn to the first answered sync, in milliseconds.
    /// [default: 2000]
    #[arg(long)]
    startup_timeout_ms: Option<u64>,
    /// Total budget for one resync, in milliseconds [default: 1000; fuzz: 250;
    /// vm-*: 4000].
    #[arg(long)]
    resync_budget_ms: Option<u64>,
    /// How long one write may block (an agent that does not read), in
    /// milliseconds [default: 250; vm-*: 5000, since an emulated ISA serial
    /// port takes in about 113 KiB/s].
    #[arg(long)]
    send_timeout_ms: Option<u64>,
    /// Channel bytes kept in the transcript.
    #[arg(long, default_value_t = 1 << 20)]
    transcript_cap: usize,
    /// Transcript entries kept per case (reads, writes and events; an
    /// emulated serial port delivers a byte or two per read, so its
    /// transcripts have many small entries).
    #[arg(long, default_value_t = 100_000)]
    transcript_entries: usize,
    /// vm-*: the accelerator (auto: KVM when /dev/kvm boots a guest, probed
    /// once per host boot; else TCG).
    #[arg(long, value_enum, default_value_t = qga_harness::vm::AccelChoice::Auto)]
    vm_accel: qga_harness::vm::AccelChoice,
    /// vm-*: from QEMU's start to the guest init's hello, in milliseconds
    /// [default: 30000].
    #[arg(long)]
    vm_boot_timeout_ms: Option<u64>,
}

/// Which cases.
#[derive(Args, Clone)]
pub struct SelectArgs {
    /// Case files: a directory of *.toml or one file. Default: the catalogue
    /// built into this binary (the repository's cases/).
    #[arg(long)]
    cases: Option<std::path::PathBuf>,
    /// Select cases whose id matches this glob (e.g. 'restart/*'); repeatable.
    #[arg(long = "case")]
    case_globs: Vec<String>,
    /// Select cases with this tag; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only shard K of N (e.g. 2/4) of the selection: a fixed partition by
    /// case id, so N machines run one run between them (`report` merges
    /// their JSON back into one).
    #[arg(long)]
    shard: Option<qga_harness::case::shard::Shard>,
}

#[derive(Args)]
struct ReplayArgs {
    /// The case file.
    file: std::path::PathBuf,
    #[command(flatten)]
    agent: AgentArgs,
    /// Run it this many times (for intermittent failures).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Seed of the ids (a fuzz replay file names the one the fuzzer used).
    #[arg(long)]
    seed: Option<u64>,
    /// Treat NON-STRICT as failing.
    #[arg(long)]
    strict: bool,
    /// For client cases (a `fuzz --client` replay file): the client under
    /// test; `--transport` is then the agent's channel.
    #[arg(long)]
    client: Option<String>,
    /// With --client: the port the client is given.
    #[arg(long, value_enum, default_value_t = TransportKind::UnixListen)]
    client_transport: TransportKind,
    /// With --client: `{timeout_ms}`.
    #[arg(long, default_value_t = 1000)]
    client_timeout_ms: u64,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Seed of every random id the run sends (default: random, printed and
    /// recorded in the JSON): the same seed sends the same requests.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct OutputArgs {
    /// Treat NON-STRICT (a SHOULD violated) as failing.
    #[arg(long)]
    strict: bool,
    /// Baseline of known outcomes; the run fails only on regressions.
    #[arg(long)]
    expect: Option<std::path::PathBuf>,
    /// Write the run (verdicts, transcripts) as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write a baseline that expects this run's outcomes.
    #[arg(long)]
    write_baseline: Option<std::path::PathBuf>,
    /// Print the transcript of every case that did not pass, not only failures.
    #[arg(long)]
    transcript: bool,
    /// Write every report format into this directory: run.json,
    /// junit.xml, summary.md, html/ (index.html and a page per case).
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct ClientArgs {
    /// The client under test: a command template with `{path}` (the socket
    /// or pty to talk to), `{timeout_ms}` and `{job}` (comma-separated
    /// commands). See the client contract in README.md.
    #[arg(long)]
    client: String,
    /// The port the client is given: a unix socket the harness listens on,
    /// or a pty whose slave the client opens.
    #[arg(long, value_enum, default_value_t = TransportKind::UnixListen)]
    transport: TransportKind,
    /// The agent behind the harness (default: the in-tree reference agent).
    #[arg(long)]
    agent: Option<String>,
    /// The channel between the harness and that agent.
    #[arg(long, value_enum, default_value_t = TransportKind::Pty)]
    agent_transport: TransportKind,
    /// The client's timeout for one reply, passed as `{timeout_ms}`; cases
    /// that hold a reply past it wait this long [default: 1000].
    #[arg(long)]
    client_timeout_ms: Option<u64>,
    /// Time allowed for the client program to start, added to every case's
    /// budget (interpreters start slowly) [default: 2000].
    #[arg(long)]
    client_startup_ms: Option<u64>,
    /// Wait from the agent's spawn to its first answered sync, in
    /// milliseconds [default: 2000].
    #[arg(long)]
    startup_timeout_ms: Option<u64>,
    /// Seed of the harness's own ids and injected values.
    #[arg(long)]
    seed: Option<u64>,
    /// Channel bytes kept in the transcript.
    #[arg(long, default_value_t = 1 << 20)]
    transcript_cap: usize,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct CallArgs {
    /// The agent's socket (or, with --pty, its serial device).
    #[arg(long)]
    path: std::path::PathBuf,
    /// `path` is a serial device (a pty slave), not a unix socket.
    #[arg(long)]
    pty: bool,
    /// Wait for one reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Commands to run, comma-separated.
    #[arg(long, default_value = "guest-ping,guest-get-time,guest-info")]
    job: String,
}

#[derive(Args)]
struct ReportArgs {
    /// Run documents written by `run --json` or `run --report-dir`.
    #[arg(required = true)]
    runs: Vec<std::path::PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Also write each merged run as JSON (run-N.json): shards of one run
    /// come out as one document.
    #[arg(long)]
    json: bool,
    /// Treat NON-STRICT as failing.
    #[arg(long)]
    strict: bool,
}

impl SelectArgs {
    /// The selected cases (of one role, if given), or a usage error.
    fn select(&self, role: Option<Role>) -> Result<Selected, String> {
        let selection = qga_harness::case::Selection {
            cases: self.cases.clone(),
            ids: self.case_globs.clone(),
            tags: self.tags.clone(),
            levels: Vec::new(),
            role,
            shard: self.shard,
        };
        selection.select()
    }
}

impl AgentArgs {
    /// The session configuration, or a usage error message.
    pub fn session_config(&self) -> Result<SessionConfig, String> {
        self.session_config_with(Mode::Run)
    }

    /// The budgets of `mode` on this transport, with the user's flags over
    /// them.
    pub fn budgets(&self, mode: Mode) -> Budgets {
        let mut b = Budgets::defaults(self.transport, mode);
        let ms = Duration::from_millis;
        b.reply = self.reply_timeout_ms.map_or(b.reply, ms);
        b.resync = self.resync_budget_ms.map_or(b.resync, ms);
        b.send = self.send_timeout_ms.map_or(b.send, ms);
        b.startup = self.startup_timeout_ms.map_or(b.startup, ms);
        b.vm_boot = self.vm_boot_timeout_ms.map_or(b.vm_boot, ms);
        b
    }

    /// The session configuration with the budgets of `mode` (the fuzzer's
    /// are tighter: a failing schedule is run again at every step of
    /// shrinking, and every failure costs a timeout).
    pub fn session_config_with(&self, mode: Mode) -> Result<SessionConfig, String> {
        let template = match &self.agent {
            Some(t) => AgentTemplate::parse(t).map_err(|e| e.to_string())?,
            None => qga_harness::agent::template::reference(self.transport)?,
        };
        // Before looking for the program: the hint helps even when it is
        // not installed here.
        if let Some(problem) = qga_harness::agent::template::transport_problem(&template, self.transport) {
            return Err(problem);
        }
        if !program_exists(template.program()) {
            return Err(format!("agent program not found: {}", template.program()));
        }
        let mut config = SessionConfig::new(template, self.transport);
        config.set_budgets(self.budgets(mode));
        config.vm.accel = self.vm_accel;
        Ok(config)
    }

    pub fn transcript(&self) -> Transcript {
        Transcript::new(qga_harness::transcript::Caps { bytes: self.transcript_cap, entries: self.transcript_entries })
    }
}

fn program_exists(program: &str) -> bool {
    qga_harness::process::find_program(program, &[]).is_some()
}

/// Our stdout (or stderr) was closed by its reader (`qga-harness list |
/// head`): end the way a plain Unix tool does, killed by SIGPIPE, quietly,
/// after killing every agent (nothing else runs destructors on this path).
fn exit_on_broken_pipe() -> ! {
    qga_harness::process::kill_all();
    // SAFETY: plain libc calls; the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE);
}

/// True for the panic that `print!`/`println!` (and `eprint!`) raise when
/// the reader of that stream has gone: "failed printing to stdout: Broken
/// pipe (os error 32)".
fn is_broken_pipe_panic(message: &str) -> bool {
    (message.starts_with("failed printing to stdout") || message.starts_with("failed printing to stderr"))
        && (message.contains("Broken pipe") || message.contains(&format!("os error {}", libc::EPIPE)))
}

/// Writes to stdout or stderr do not check for a closed pipe (Rust ignores
/// SIGPIPE, so `print!` panics on EPIPE instead). SIGPIPE's default action
/// is not restored: it would also kill the harness when it writes to an
/// agent's socket that the agent closed. Instead, that one panic ends the
/// process quietly, from whatever command printed.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_panic(message) {
            exit_on_broken_pipe();
        }
        default(info);
    }));
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
        // The reference agent's stdout may be its channel: left as it was.
        return qga_fixtures::run(args);
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
        tokio::spawn(stop_on_signal());
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Client(args) => client_cmd(args).await,
            Cmd::Call(args) => call(args).await,
            Cmd::List(args) => list(args),
            Cmd::Bench(args) => benchcmd::run(args).await,
            Cmd::Fuzz(args) => fuzzcmd::run(args).await,
            Cmd::Replay(args) => replay(args).await,
            Cmd::Report(args) => report_cmd(args),
            Cmd::RefAgent { .. } => unreachable!(),
        }
    })
}

/// Ctrl-C or SIGTERM: kill every process group (agents, QEMU) and remove
/// every scratch directory (VM sockets and console, agent state), then
/// exit. Destructors do not run on `exit`, so this is the path that
/// guarantees nothing we started or made outlives us.
async fn stop_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let code = tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    qga_harness::process::kill_all();
    eprintln!("qga-harness: interrupted; all agents killed");
    std::process::exit(code);
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("qga-harness: {msg}");
    ExitCode::from(EXIT_USAGE)
}

async fn replay(args: ReplayArgs) -> ExitCode {
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

/// Merge run documents: one JUnit file and one Markdown summary per run,
/// and a Markdown matrix (cases as rows, runs as columns) over all of them.
fn report_cmd(args: ReportArgs) -> ExitCode {
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

fn list(args: ListArgs) -> ExitCode {
    use std::io::Write;
    let cases = match args.select.select(None) {
        Ok(s) => s.cases,
        Err(e) => return usage(e),
    };
    let mut out = std::io::stdout().lock();
    // A case that does not run everywhere says where it does.
    let only = |c: &Case| {
        let ts = c.applicable_transports();
        if ts.len() == TransportKind::ALL.len() {
            String::new()
        } else {
            format!("  [only {}]", ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
        }
    };
    let mut written = cases.iter().try_for_each(|c| writeln!(out, "{:<24} {:<6} {}{}", c.id, c.level, c.title, only(c)));
    written = written.and_then(|()| writeln!(out, "{} cases", cases.len())).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit_on_broken_pipe(),
        Err(e) => {
            eprintln!("qga-harness: cannot write the list: {e}");
            ExitCode::from(EXIT_HARNESS)
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
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

/// `client`: the client cases, with the client under test in front of the
/// harness and an agent behind it.
async fn client_cmd(args: ClientArgs) -> ExitCode {
    let client = match ClientTemplate::parse(&args.client) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if !program_exists(client.program()) {
        return usage(format!("client program not found: {}", client.program()));
    }
    if args.transport == TransportKind::Socketpair {
        return usage("a client under test is given a path: use --transport unix-listen or pty");
    }
    let agent_args = AgentArgs {
        agent: args.agent.clone(),
        transport: args.agent_transport,
        reply_timeout_ms: None,
        startup_timeout_ms: args.startup_timeout_ms,
        resync_budget_ms: None,
        send_timeout_ms: None,
        vm_accel: qga_harness::vm::AccelChoice::Auto,
        vm_boot_timeout_ms: None,
        transcript_cap: args.transcript_cap,
        transcript_entries: 100_000,
    };
    let mut agent = match agent_args.session_config_with(Mode::Client) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let mut budgets = agent.budgets;
    budgets.client_timeout = args.client_timeout_ms.map_or(budgets.client_timeout, Duration::from_millis);
    budgets.client_startup = args.client_startup_ms.map_or(budgets.client_startup, Duration::from_millis);
    agent.set_budgets(budgets);
    if args.agent.is_none() {
        // Recognisable replies: the reference agent's guest-info carries a
        // nonce per reply, so no two replies of the agent are alike.
        if let Ok(t) = agent.template.with_extra(&["--variant", "nonce"]) {
            agent.template = t;
        }
    }
    let Selected { cases, catalogue_ids } = match args.select.select(Some(Role::Client)) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let baseline = match load_baseline(&args.out, &catalogue_ids) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let cfg = ClientConfig { client, port: args.transport, agent };
    let eo = EngineOptions { seed: args.seed.unwrap_or_else(rand::random), ..EngineOptions::default() };
    let mut result = run_client_cases(cfg, &cases, agent_args.transcript(), &eo).await;
    result.shard = args.select.shard;
    finish(&result, &args.out, baseline.as_ref())
}

/// `call`: the reference client as a client under test.
async fn call(args: CallArgs) -> ExitCode {
    use qga_harness::transport::Duplex;
    let duplex = if args.pty { Duplex::open_tty(&args.path) } else { Duplex::connect_unix(&args.path).await };
    let duplex = match duplex {
        Ok(d) => d,
        Err(e) => {
            eprintln!("qga-harness call: cannot open {}: {e}", args.path.display());
            return ExitCode::from(EXIT_FAIL);
        }
    };
    let job: Vec<String> = args.job.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let (lines, ok) = qga_harness::client::program::call(duplex, &job, Duration::from_millis(args.timeout_ms)).await;
    for l in &lines {
        println!("{l}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}

fn load_baseline(out: &OutputArgs, all_ids: &[String]) -> Result<Option<Baseline>, String> {
    out.expect.as_deref().map(|path| Baseline::read(path, all_ids)).transpose()
}

/// Print, write and gate a run: the one exit policy of `run` and `client`.
fn finish(result: &RunResult, args: &OutputArgs, baseline: Option<&Baseline>) -> ExitCode {
    let comparison = baseline.map(|b| b.compare(&result.results, args.strict));
    print!("{}", report::render_terminal(result, comparison.as_ref(), args.strict, args.transcript));
    let written = (|| {
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
