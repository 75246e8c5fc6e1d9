//! `qga-harness fuzz`: the command-line face of [`qga_harness::fuzz`]:
//! options, a progress bar on a terminal (plain lines elsewhere), and the
//! summary.

use crate::AgentArgs;
use clap::Args;
use qga_harness::bench::stats::us;
use qga_harness::fuzz::{self, FaultKind, FuzzConfig, ScheduleParams};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct FuzzArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Schedules to generate.
    #[arg(long = "cases", default_value_t = 2000)]
    schedules: u32,
    /// Seed; the same seed and --jobs give the same schedules. Default: random (printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Parallel agents, each on its own channel. Default: number of cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run each schedule this many times; it fails if any run fails.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Cap on bytes written without reading in between.
    #[arg(long)]
    max_burst: Option<usize>,
    /// At most this many faults per schedule.
    #[arg(long, default_value_t = 6)]
    max_faults: usize,
    /// Kill and restart the agent in every schedule.
    #[arg(long)]
    restart_every: bool,
    /// Never kill or restart the agent.
    #[arg(long, conflicts_with = "restart_every")]
    no_restart: bool,
    /// Never disconnect the client mid-conversation (reconnect faults).
    #[arg(long)]
    no_reconnect: bool,
    /// Where replay files go.
    #[arg(long, default_value = "reports/fuzz")]
    out: std::path::PathBuf,
    /// Time allowed for shrinking each failure, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    shrink_time_ms: u64,
    /// Also write the summary as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Agent start-ups to measure for the floor (spawn to first answered
    /// sync, minimal client), before fuzzing; 0 skips it.
    #[arg(long, default_value_t = 10)]
    floor_spawns: usize,
    /// Only shard K of N of the campaign: this machine's jobs take schedule
    /// streams no other shard of the same --seed takes.
    #[arg(long)]
    shard: Option<qga_harness::case::shard::Shard>,
    /// Fuzz a client instead: this client template (as `client --client`)
    /// runs against the agent through the proxy, under random schedules of
    /// agent-side faults. `--transport` is then the agent's channel.
    #[arg(long)]
    client: Option<String>,
    /// With --client: the port the client is given.
    #[arg(long, value_enum, default_value_t = qga_harness::transport::TransportKind::UnixListen)]
    client_transport: qga_harness::transport::TransportKind,
    /// With --client: `{timeout_ms}`.
    #[arg(long, default_value_t = 200)]
    client_timeout_ms: u64,
    /// With --client: time allowed for the client program to start.
    #[arg(long, default_value_t = 2000)]
    client_startup_ms: u64,
}

/// `fuzz --client`: the client campaign.
async fn run_client(args: FuzzArgs, template: String) -> ExitCode {
    use qga_harness::engine::client_case::ClientConfig;
    use qga_harness::fuzz::client::{fuzz_clients, ClientFuzzConfig};
    let client = match qga_harness::proxy::ClientTemplate::parse(&template) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qga-harness: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let agent = match args.agent.session_config() {
        Ok(mut c) => {
            let b = qga_harness::budget::Budgets {
                client_timeout: Duration::from_millis(args.client_timeout_ms),
                client_startup: Duration::from_millis(args.client_startup_ms),
                ..c.budgets
            };
            c.set_budgets(b);
            c
        }
        Err(e) => {
            eprintln!("qga-harness: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    if args.schedules == 0 || args.max_faults == 0 || args.client_transport == qga_harness::transport::TransportKind::Socketpair {
        eprintln!("qga-harness: --cases and --max-faults must be at least 1, and a client port is unix-listen or pty");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let command_line = format!(
        "qga-harness fuzz --client {} --client-transport {} --client-timeout-ms {} --agent {} --transport {} --cases {} --seed {seed} --jobs {jobs} --max-faults {}",
        shell_words::quote(&client.to_string()),
        args.client_transport,
        args.client_timeout_ms,
        shell_words::quote(&agent.template.to_string()),
        agent.transport,
        args.schedules,
        args.max_faults
    );
    let command_line = match args.shard {
        Some(sh) => format!("{command_line} --shard {sh}"),
        None => command_line,
    };
    println!("{command_line}");
    let probed = probe_first(agent.clone(), " of the agent behind the harness").await;
    let cfg = ClientFuzzConfig {
        client: ClientConfig { client, port: args.client_transport, agent },
        schedules: args.schedules,
        seed,
        jobs,
        shard: args.shard,
        max_faults: args.max_faults,
        out_dir: args.out.clone(),
        shrink_time: Duration::from_millis(args.shrink_time_ms),
        command_line,
    };
    let progress = Arc::new(fuzz::Progress::default());
    let (p2, cfg2) = (progress.clone(), cfg.clone());
    let mut work = tokio::task::spawn_blocking(move || fuzz_clients(&cfg2, &p2));
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let report = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => eprintln!(
                "fuzz --client: {} schedules, {:.1}/s, {} failure(s)",
                progress.schedules.load(Ordering::Relaxed),
                progress.schedules.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64().max(1e-9),
                progress.failures.load(Ordering::Relaxed)
            ),
        }
    };
    let mut report = match report {
        Ok(r) => r,
        Err(e) => return campaign_error(e),
    };
    fuzz::probe::merge(&mut report.probe, &probed);
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!("schedules: {} ({} runs with shrinking) in {:.2} s: {:.1} schedules/s", report.schedules, report.runs, secs, report.schedules as f64 / secs);
    let cost = fuzz::Cost::of(&report, jobs, None);
    println!("{cost}");
    for e in &report.errors {
        println!("harness error: {e}");
    }
    for f in &report.failures {
        println!("FAILURE (job {}): {}\n  shrunk to {} steps; replay: qga-harness replay {} --client {}", f.job, f.reason, f.steps, f.replay.display(), shell_words::quote(&template));
    }
    let doc = serde_json::json!({ "seed": seed, "jobs": jobs, "client": template, "cost": cost, "report": report });
    finish(&report, args.json.as_deref(), doc)
}

/// The start-up probe, once before the campaign, printed at its top (the
/// campaign's jobs probe their own agents too): what it found.
async fn probe_first(config: qga_harness::session::SessionConfig, whose: &str) -> Vec<qga_harness::client::ProbeFinding> {
    match fuzz::probe::probe(config).await {
        Ok(p) => {
            println!("start-up probe{whose}:");
            for line in qga_harness::report::profile_lines(&p) {
                println!("  {}", qga_harness::report::sanitize(&line));
            }
            p.findings
        }
        Err(e) => {
            println!("start-up probe{whose}: the agent did not start: {}", qga_harness::report::sanitize(&e));
            Vec::new()
        }
    }
}

/// The probe's findings, the closing line, the JSON summary and the exit
/// code of a campaign. A probe finding fails the campaign as a failing
/// schedule does: the client adapted to the defect, which must not hide it.
fn finish(report: &fuzz::FuzzReport, json: Option<&std::path::Path>, doc: serde_json::Value) -> ExitCode {
    if !report.probe.is_empty() {
        println!("the start-up probe found {} defect(s); the client was adapted to them, and they fail the campaign:", report.probe.len());
        for f in &report.probe {
            println!("  {} — {}: {}", f.kind.code(), f.kind.summary(), qga_harness::report::sanitize(&f.detail));
        }
    }
    let codes: Vec<String> = report.probe.iter().map(|f| f.kind.code()).collect();
    let probed = if codes.is_empty() { String::new() } else { format!(", and {} start-up probe finding(s): {}", codes.len(), codes.join(", ")) };
    println!("{} failure(s) found in {} schedules{probed}", report.failures.len(), report.schedules);
    if let Some(path) = json {
        if let Err(e) = qga_harness::report::write_atomic(path, &serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            eprintln!("qga-harness: cannot write {}: {e}", path.display());
            return ExitCode::from(crate::EXIT_HARNESS);
        }
    }
    if !report.errors.is_empty() {
        ExitCode::from(crate::EXIT_HARNESS)
    } else if !report.failures.is_empty() || !report.probe.is_empty() {
        ExitCode::from(crate::EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    }
}

pub async fn run(args: FuzzArgs) -> ExitCode {
    if let Some(template) = args.client.clone() {
        return run_client(args, template).await;
    }
    let session = match args.agent.session_config_with(qga_harness::budget::Mode::Fuzz) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qga-harness: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    if args.schedules == 0 || args.repeat == 0 || args.max_faults == 0 {
        eprintln!("qga-harness: --cases, --repeat and --max-faults must be at least 1");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let budgets = session.budgets.flags();
    let mut command_line = format!(
        "qga-harness fuzz --agent {} --transport {} --cases {} --seed {seed} --jobs {jobs} --repeat {} --max-faults {} {budgets}",
        shell_words::quote(&session.template.to_string()),
        session.transport,
        args.schedules,
        args.repeat,
        args.max_faults
    );
    if let Some(b) = args.max_burst {
        command_line.push_str(&format!(" --max-burst {b}"));
    }
    if args.restart_every {
        command_line.push_str(" --restart-every");
    }
    if args.no_restart {
        command_line.push_str(" --no-restart");
    }
    if args.no_reconnect {
        command_line.push_str(" --no-reconnect");
    }
    if let Some(sh) = args.shard {
        command_line.push_str(&format!(" --shard {sh}"));
    }
    println!("{command_line}");
    let probed = probe_first(session.clone(), "").await;

    // Off the runtime thread: Ctrl-C and timers keep running meanwhile.
    let floor = {
        let (config, spawns) = (session.clone(), args.floor_spawns);
        tokio::task::spawn_blocking(move || fuzz::cost::floor(&config, spawns)).await.ok().flatten()
    };

    let cfg = FuzzConfig {
        session,
        schedules: args.schedules,
        seed,
        jobs,
        shard: args.shard,
        repeat: args.repeat,
        params: ScheduleParams {
            max_faults: args.max_faults,
            max_burst: args.max_burst,
            restart_every: args.restart_every,
            allow_restart: !args.no_restart,
            allow_reconnect: !args.no_reconnect,
        },
        out_dir: args.out.clone(),
        shrink_time: Duration::from_millis(args.shrink_time_ms),
        command_line,
    };
    let progress = Arc::new(fuzz::Progress::default());
    let (p2, cfg2) = (progress.clone(), cfg.clone());
    let began = Instant::now();
    let mut work = tokio::task::spawn_blocking(move || fuzz::fuzz(&cfg2, &p2));

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(u64::from(args.schedules));
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} schedules, {per_sec}, {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut tick = tokio::time::interval(if bar.is_some() { Duration::from_millis(100) } else { Duration::from_secs(2) });
    let report = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let done = progress.schedules.load(Ordering::Relaxed);
                let failures = progress.failures.load(Ordering::Relaxed);
                match &bar {
                    Some(b) => {
                        b.set_position(done.min(u64::from(args.schedules)));
                        b.set_message(format!("{failures} failure(s)"));
                    }
                    None => eprintln!(
                        "fuzz: {done} schedules, {:.0}/s, {failures} failure(s)",
                        done as f64 / began.elapsed().as_secs_f64().max(1e-9)
                    ),
                }
            }
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut report = match report {
        Ok(r) => r,
        Err(e) => return campaign_error(e),
    };
    fuzz::probe::merge(&mut report.probe, &probed);

    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "schedules: {} ({} runs with repeats and shrinking) in {:.2} s: {:.0} schedules/min, {:.0} runs/min",
        report.schedules,
        report.runs,
        secs,
        report.schedules as f64 * 60.0 / secs,
        report.runs as f64 * 60.0 / secs
    );
    let faults: Vec<String> = FaultKind::ALL
        .iter()
        .map(|k| format!("{} {}", serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(), report.faults.get(k).copied().unwrap_or(0)))
        .collect();
    println!("faults applied: {}", faults.join(", "));
    if let (Some(p50), Some(p99), Some(max)) = (report.resync_percentile(0.5), report.resync_percentile(0.99), report.resync_percentile(1.0)) {
        println!("recovery resync: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; bytes discarded {}", us(p50), us(p99), us(max), report.bytes_discarded);
    }
    let cost = fuzz::Cost::of(&report, jobs, floor);
    println!("{cost}");
    for e in &report.errors {
        println!("harness error: {e}");
    }
    for f in &report.failures {
        if f.replay.as_os_str().is_empty() {
            println!("FAILURE (job {}): {}", f.job, f.reason);
        } else {
            println!("FAILURE (job {}): {}\n  shrunk to {} steps; replay: qga-harness replay {} --repeat {}", f.job, f.reason, f.steps, f.replay.display(), args.repeat);
        }
    }
    let doc = serde_json::json!({ "seed": seed, "jobs": jobs, "cost": cost, "report": report });
    finish(&report, args.json.as_deref(), doc)
}

/// A campaign the harness could not run (not a finding about the agent).
fn campaign_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("qga-harness fuzz: {e}");
    ExitCode::from(crate::EXIT_HARNESS)
}
