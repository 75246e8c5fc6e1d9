//! The command line as clap structs: every subcommand, flag, default and
//! help text. Nothing here does anything; `cli::*` maps these onto the
//! library.

use crate::benchcmd;
use crate::fuzzcmd;
use clap::{Args, Parser, Subcommand};
use qga_harness::transport::TransportKind;

#[derive(Parser)]
#[command(name = "qga-harness", version, about = "Conformance harness for QEMU Guest Agent implementations")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or with --out write one per command
    /// into a directory (qga-harness.1, qga-harness-run.1, ...).
    Man {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
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
    pub(crate) agent: Option<String>,
    /// Channel between harness and agent.
    #[arg(long, value_enum, default_value_t = TransportKind::Pty)]
    pub(crate) transport: TransportKind,
    /// Wait for one reply, in milliseconds [default: 250; fuzz: 50].
    #[arg(long)]
    pub(crate) reply_timeout_ms: Option<u64>,
    /// Wait from spawn to the first answered sync, in milliseconds.
    /// [default: 2000]
    #[arg(long)]
    pub(crate) startup_timeout_ms: Option<u64>,
    /// Total budget for one resync, in milliseconds [default: 1000; fuzz: 250;
    /// vm-*: 4000].
    #[arg(long)]
    pub(crate) resync_budget_ms: Option<u64>,
    /// How long one write may block (an agent that does not read), in
    /// milliseconds [default: 250; vm-*: 5000, since an emulated ISA serial
    /// port takes in about 113 KiB/s].
    #[arg(long)]
    pub(crate) send_timeout_ms: Option<u64>,
    /// Channel bytes kept in the transcript.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) transcript_cap: usize,
    /// Transcript entries kept per case (reads, writes and events; an
    /// emulated serial port delivers a byte or two per read, so its
    /// transcripts have many small entries).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) transcript_entries: usize,
    /// vm-*: the accelerator (auto: KVM when /dev/kvm boots a guest, probed
    /// once per host boot; else TCG).
    #[arg(long, value_enum, default_value_t = qga_harness::vm::AccelChoice::Auto)]
    pub(crate) vm_accel: qga_harness::vm::AccelChoice,
    /// vm-*: from QEMU's start to the guest init's hello, in milliseconds
    /// [default: 30000].
    #[arg(long)]
    pub(crate) vm_boot_timeout_ms: Option<u64>,
}

/// Which cases.
#[derive(Args, Clone)]
pub struct SelectArgs {
    /// Case files: a directory of *.toml or one file. Default: the catalogue
    /// built into this binary (the repository's cases/).
    #[arg(long)]
    pub(crate) cases: Option<std::path::PathBuf>,
    /// Select cases whose id matches this glob (e.g. 'restart/*'); repeatable.
    #[arg(long = "case")]
    pub(crate) case_globs: Vec<String>,
    /// Select cases with this tag; repeatable.
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Only shard K of N (e.g. 2/4) of the selection: a fixed partition by
    /// case id, so N machines run one run between them (`report` merges
    /// their JSON back into one).
    #[arg(long)]
    pub(crate) shard: Option<qga_harness::case::shard::Shard>,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The case file.
    pub(crate) file: std::path::PathBuf,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// Run it this many times (for intermittent failures).
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: u32,
    /// Seed of the ids (a fuzz replay file names the one the fuzzer used).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Treat NON-STRICT as failing.
    #[arg(long)]
    pub(crate) strict: bool,
    /// For client cases (a `fuzz --client` replay file): the client under
    /// test; `--transport` is then the agent's channel.
    #[arg(long)]
    pub(crate) client: Option<String>,
    /// With --client: the port the client is given.
    #[arg(long, value_enum, default_value_t = TransportKind::UnixListen)]
    pub(crate) client_transport: TransportKind,
    /// With --client: `{timeout_ms}`.
    #[arg(long, default_value_t = 1000)]
    pub(crate) client_timeout_ms: u64,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) select: SelectArgs,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// Seed of every random id the run sends (default: random, printed and
    /// recorded in the JSON): the same seed sends the same requests.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Treat NON-STRICT (a SHOULD violated) as failing.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Baseline of known outcomes; the run fails only on regressions.
    #[arg(long)]
    pub(crate) expect: Option<std::path::PathBuf>,
    /// Write the run (verdicts, transcripts) as JSON.
    #[arg(long)]
    pub(crate) json: Option<std::path::PathBuf>,
    /// Write a baseline that expects this run's outcomes.
    #[arg(long)]
    pub(crate) write_baseline: Option<std::path::PathBuf>,
    /// Print the transcript of every case that did not pass, not only failures.
    #[arg(long)]
    pub(crate) transcript: bool,
    /// Write every report format into this directory: run.json,
    /// junit.xml, summary.md, html/ (index.html and a page per case).
    #[arg(long)]
    pub(crate) report_dir: Option<std::path::PathBuf>,
    /// Which cases keep their wire transcript in --json and --report-dir:
    /// `all`, or `failing` (cases that PASSed or did not apply keep their
    /// verdict and figures, not their bytes: for committed reports, with
    /// the full documents kept as CI artefacts).
    #[arg(long, value_enum, default_value_t = Transcripts::All)]
    pub(crate) transcripts: Transcripts,
}

/// `--transcripts`: which cases keep their wire transcript in the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transcripts {
    All,
    Failing,
}

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The client under test: a command template with `{path}` (the socket
    /// or pty to talk to), `{timeout_ms}` and `{job}` (comma-separated
    /// commands). See the client contract in README.md.
    #[arg(long)]
    pub(crate) client: String,
    /// The port the client is given: a unix socket the harness listens on,
    /// or a pty whose slave the client opens.
    #[arg(long, value_enum, default_value_t = TransportKind::UnixListen)]
    pub(crate) transport: TransportKind,
    /// The agent behind the harness (default: the in-tree reference agent).
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// The channel between the harness and that agent.
    #[arg(long, value_enum, default_value_t = TransportKind::Pty)]
    pub(crate) agent_transport: TransportKind,
    /// The client's timeout for one reply, passed as `{timeout_ms}`; cases
    /// that hold a reply past it wait this long [default: 1000].
    #[arg(long)]
    pub(crate) client_timeout_ms: Option<u64>,
    /// Time allowed for the client program to start, added to every case's
    /// budget (interpreters start slowly) [default: 2000].
    #[arg(long)]
    pub(crate) client_startup_ms: Option<u64>,
    /// Wait from the agent's spawn to its first answered sync, in
    /// milliseconds [default: 2000].
    #[arg(long)]
    pub(crate) startup_timeout_ms: Option<u64>,
    /// Seed of the harness's own ids and injected values.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Channel bytes kept in the transcript.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) transcript_cap: usize,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

#[derive(Args)]
pub(crate) struct CallArgs {
    /// The agent's socket (or, with --pty, its serial device).
    #[arg(long)]
    pub(crate) path: std::path::PathBuf,
    /// `path` is a serial device (a pty slave), not a unix socket.
    #[arg(long)]
    pub(crate) pty: bool,
    /// Wait for one reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) timeout_ms: u64,
    /// Commands to run, comma-separated.
    #[arg(long, default_value = "guest-ping,guest-get-time,guest-info")]
    pub(crate) job: String,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Run documents written by `run --json` or `run --report-dir`.
    #[arg(required = true)]
    pub(crate) runs: Vec<std::path::PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub(crate) out: std::path::PathBuf,
    /// Also write each merged run as JSON (run-N.json): shards of one run
    /// come out as one document.
    #[arg(long)]
    pub(crate) json: bool,
    /// Treat NON-STRICT as failing.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Link each matrix cell to the case page in the run's own report
    /// directory (the html/ beside its run.json, from `run --report-dir`)
    /// instead of writing a copy: a matrix over committed report
    /// directories stays one page.
    #[arg(long)]
    pub(crate) link_pages: bool,
}
