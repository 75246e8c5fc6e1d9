//! `qga-harness bench`: what the harness costs, measured against a floor
//! taken in the same run.
//!
//! - round trip: guest-ping through the harness (connection, transcript,
//!   framer, id check) vs. the same bytes written and read with plain
//!   syscalls on the same fd (the floor);
//! - resync latency: 0xFF + guest-sync-delimited until our reply;
//! - start-up: a fresh session (channel, spawn, connect, first answered
//!   sync) vs. a minimal client doing the same with blocking syscalls (in a
//!   blocking task, so the runtime and Ctrl-C keep running; the agent is
//!   spawned, killed and reaped by the agent process module, as always).

use crate::AgentArgs;
use clap::Args;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use qapi::qga;
use qga_harness::process::{ProcessGroup as AgentProcess, StderrTo};
use qga_harness::client::{execute, resync};
use qga_harness::session::{Session, SessionConfig};
use qga_harness::transcript::Transcript;
use qga_harness::transport::Transport;
use qga_harness::wire::Request;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

/// `bench --client`: per-case cost of client mode. Three figures from one
/// run: a client that exits at once, spawned with plain std::process (the
/// floor); the same client through a whole client case (the floor plus the
/// harness's per-case work: port, proxy, report reading, reaping); and the
/// client under test through the same case.
async fn measure_client(config: SessionConfig, template: &str, args: &BenchArgs) -> Result<(), String> {
    use qga_harness::engine::client_case::{run_client_case, ClientConfig};
    use qga_harness::proxy::ClientTemplate;
    let cases = qga_harness::case::load::embedded().map_err(|e| e.to_string())?;
    let case = cases.iter().find(|c| c.id == args.client_case).ok_or_else(|| format!("no case {}", args.client_case))?;
    let n = args.spawns.max(3);
    let floor_bin = ["/usr/bin/true", "/bin/true"].into_iter().find(|p| std::path::Path::new(p).is_file()).ok_or("no `true` program")?;
    let mut spawn = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        std::process::Command::new(floor_bin).status().map_err(|e| e.to_string())?;
        spawn.push(t.elapsed());
    }
    let transcript = Transcript::new(qga_harness::transcript::Caps { bytes: 1 << 20, entries: 100_000 });
    let (mut session, _) = Session::start(config.clone(), transcript).await.map_err(|e| e.to_string())?;
    let eo = qga_harness::engine::EngineOptions { keep_transcripts: false, seed: 1, ..Default::default() };
    let per_case = |t: &str| -> Result<ClientConfig, String> {
        let mut agent = config.clone();
        agent.set_budgets(qga_harness::budget::Budgets { client_startup: Duration::from_millis(5000), ..agent.budgets });
        Ok(ClientConfig { client: ClientTemplate::parse(t)?, port: qga_harness::transport::TransportKind::UnixListen, agent })
    };
    let floor_cfg = per_case(&format!("{floor_bin} {{path}}"))?;
    let client_cfg = per_case(template)?;
    let mut floor_case = Vec::new();
    let mut client_case = Vec::new();
    for _ in 0..n {
        for (cfg, out) in [(&floor_cfg, &mut floor_case), (&client_cfg, &mut client_case)] {
            let (r, back) = run_client_case(session, case, cfg, None, &[], &eo).await;
            session = back;
            session.transcript().reset();
            let _ = session.wait_ready().await;
            out.push(r.elapsed);
        }
    }
    session.shutdown().await;
    let (spawn, floor_case, client_case) = (stats(spawn), stats(floor_case), stats(client_case));
    println!("client: {template}\ncase: {}, {n} runs of each, interleaved", case.id);
    line("floor client spawn+exit (plain)", &spawn);
    line("floor client through the case", &floor_case);
    line("client under test through the case", &client_case);
    let overhead = floor_case.p50.saturating_sub(spawn.p50);
    println!(
        "harness per-case overhead beyond the floor: {:.2} ms at p50 ({:.1}x the floor's spawn; goal <= 5 ms)",
        overhead.as_secs_f64() * 1e3,
        us(floor_case.p50) / us(spawn.p50).max(1e-9)
    );
    println!("client under test: {:.2} ms per case at p50, {:.2} ms of it beyond the floor case", us(client_case.p50) / 1e3, us(client_case.p50.saturating_sub(floor_case.p50)) / 1e3);
    Ok(())
}

pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

pub fn stats(mut xs: Vec<Duration>) -> Stats {
    xs.sort_unstable();
    let n = xs.len().max(1);
    let at = |q: f64| xs.get(((xs.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    Stats { p50: at(0.5), p99: at(0.99), mean: xs.iter().sum::<Duration>() / n as u32 }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn line(name: &str, s: &Stats) {
    println!("{name:<34} p50 {:>9.1} µs   p99 {:>9.1} µs   mean {:>9.1} µs", us(s.p50), us(s.p99), us(s.mean));
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
    let result = match (&args.client, config.transport.vm()) {
        (Some(t), _) => measure_client(config, t, &args).await,
        (None, Some(kind)) => crate::bench_vm::measure(config, kind, &args).await,
        (None, None) => measure(config, &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qga-harness bench: {e}");
            ExitCode::from(crate::EXIT_HARNESS)
        }
    }
}

async fn measure(config: SessionConfig, args: &BenchArgs) -> Result<(), String> {
    let opts = config.client.clone();
    // A transcript that keeps nothing: the benchmark measures the recorder's
    // bookkeeping, not the growth of a log of thousands of round trips.
    let transcript = Transcript::new(qga_harness::transcript::Caps { bytes: 0, entries: 0 });
    let (mut session, _) = Session::start(config.clone(), transcript).await.map_err(|e| e.to_string())?;
    let conn = session.conn().map_err(|e| e.to_string())?;

    // Interleave floor and harness samples so drift affects both alike.
    let ping = Request::new(qga::guest_ping {}, Some(1)).to_wire();
    let mut raw = Vec::with_capacity(args.iterations);
    let mut harness = Vec::with_capacity(args.iterations);
    for i in 0..args.iterations * 2 {
        if i % 2 == 0 {
            let t = Instant::now();
            raw_round_trip(conn.raw_fd(), &ping).map_err(|e| format!("raw round trip: {e}"))?;
            raw.push(t.elapsed());
        } else {
            let t = Instant::now();
            execute(conn, qga::guest_ping {}, &opts).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            harness.push(t.elapsed());
        }
    }
    let mut resyncs = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let t = Instant::now();
        resync(conn, &opts.resync, &opts).await.map_err(|e| e.to_string())?;
        resyncs.push(t.elapsed());
    }
    session.shutdown().await;

    let mut starts = Vec::with_capacity(args.spawns);
    let mut floors = Vec::with_capacity(args.spawns);
    for _ in 0..args.spawns {
        let t = Instant::now();
        let (s, _) = Session::start(config.clone(), Transcript::default()).await.map_err(|e| e.to_string())?;
        starts.push(t.elapsed());
        s.shutdown().await;
        floors.push(startup_floor(&config).await?);
    }

    let (raw, harness, resyncs, starts, floors) = (stats(raw), stats(harness), stats(resyncs), stats(starts), stats(floors));
    line("ping round trip, raw syscalls", &raw);
    line("ping round trip, harness", &harness);
    println!("  harness / raw: p50 {:.2}x, mean {:.2}x", us(harness.p50) / us(raw.p50), us(harness.mean) / us(raw.mean));
    line("resync (0xFF + sync-delimited)", &resyncs);
    line("start-up to first sync, raw", &floors);
    line("start-up to first sync, harness", &starts);
    println!(
        "  harness - raw: p50 {:+.1} µs, mean {:+.1} µs",
        us(starts.p50) - us(floors.p50),
        us(starts.mean) - us(floors.mean)
    );
    Ok(())
}

fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Err("timed out".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Write `request`, read until the reply's newline: the least any client
/// can do. The fd is non-blocking, so wait with poll(2) between reads.
pub fn raw_round_trip(fd: RawFd, request: &[u8]) -> Result<(), String> {
    // SAFETY: the fd is owned by the session's connection, alive for this call.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut off = 0;
    while off < request.len() {
        match nix::unistd::write(bfd, &request[off..]) {
            Ok(n) => off += n,
            Err(nix::errno::Errno::EAGAIN) => std::thread::yield_now(),
            Err(e) => return Err(e.to_string()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) if buf[..n].contains(&b'\n') => return Ok(()),
            Ok(0) => return Err("closed".into()),
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EIO) => wait_readable(bfd, deadline)?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Start-up floor, off the runtime thread: [`raw_startup`] in a blocking
/// task, so that timers and Ctrl-C keep running while it waits (Ctrl-C's
/// handler kills the agent's group through the process registry).
pub async fn startup_floor(config: &SessionConfig) -> Result<Duration, String> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || raw_startup(&config)).await.map_err(|e| format!("start-up measurement: {e}"))?
}

/// Spawn the agent and run a blocking sync loop, no harness layers: the
/// floor for start-up time on this transport, from spawn to the first
/// answered sync. The agent is an [`AgentProcess`] like any other (own
/// process group, parent-death signal, registered for Ctrl-C, group killed
/// and reaped when it is dropped here), with stderr to /dev/null and a
/// transcript that keeps nothing, so that the floor pays for neither.
///
/// This blocks the calling thread until the agent answers or the start-up
/// timeout passes: from async code use [`startup_floor`]. The agent's
/// parent-death signal is tied to the calling thread, which outlives it.
pub fn raw_startup(config: &SessionConfig) -> Result<Duration, String> {
    let statedir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut transport = Transport::open(config.transport).map_err(|e| e.to_string())?;
    let uses_path = config.template.uses_path();
    let argv = config.template.expand(transport.agent_path().filter(|_| uses_path), statedir.path());
    let duplex = transport.take_duplex().map_err(|e| e.to_string())?;
    let stdio = if uses_path { None } else { Some(transport.agent_stdio().ok_or("no stdio")?) };
    let sync = qga_harness::client::resync::sync_request_bytes(1);
    let quiet = Transcript::new(qga_harness::transcript::Caps { bytes: 0, entries: 0 });
    let t = Instant::now();
    let agent = AgentProcess::spawn_with(argv, stdio, Some(statedir), quiet, StderrTo::Null).map_err(|e| e.to_string())?;
    let deadline = t + config.budgets.startup;
    let result = (|| {
        let stream;
        let fd: RawFd = match &duplex {
            Some(d) => d.as_raw_fd(),
            None => loop {
                match std::os::unix::net::UnixStream::connect(transport.agent_path().unwrap()) {
                    Ok(s) => {
                        s.set_nonblocking(true).map_err(|e| e.to_string())?;
                        stream = s;
                        break std::os::fd::AsRawFd::as_raw_fd(&stream);
                    }
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(100)),
                    Err(e) => return Err(e.to_string()),
                }
            },
        };
        // Resend every millisecond: an isa-serial agent flushes what came
        // before it opened the tty.
        loop {
            if Instant::now() > deadline {
                return Err("no reply".to_string());
            }
            // SAFETY: fd is alive for this closure.
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = nix::unistd::write(bfd, &sync);
            let attempt = Instant::now() + Duration::from_millis(1);
            let mut buf = [0u8; 4096];
            while Instant::now() < attempt {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(n) if n > 0 && buf[..n].contains(&b'\n') && buf[..n].windows(8).any(|w| w == b"\"return\"") => {
                        return Ok(t.elapsed())
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = wait_readable(bfd.as_fd(), attempt);
                    }
                }
            }
        }
    })();
    // SIGKILL to the group, reaped, statedir removed; then the channel.
    drop(agent);
    drop(duplex);
    drop(transport);
    result
}
