//! `bench --transport vm-virtio|vm-isa`: what the VM path
//! costs, each figure against a raw client measured in the same run on the
//! same kind of socket.
//!
//! - boot to first sync: the harness (QEMU spawn, chardev connections, the
//!   init's hello, agent start through the control port, resync) vs. a raw
//!   client doing the same with blocking syscalls on its own QEMU;
//! - control-port restart to first sync: kill and start through the control
//!   port, then resync, vs. the raw client's kill/start lines and sync loop;
//! - ping round trip through QEMU's chardev socket: the harness's execute
//!   vs. plain write/read on the same fd.
//!
//! Goals (issue 12): boot ≤ 3 s under TCG, restart ≤ 150 ms.

use super::raw::raw_round_trip;
use super::stats::{line, stats, us, Stats};
use crate::process::{ProcessGroup, StderrTo};
use crate::client::{diagnose::Profile, execute};
use crate::session::{Session, SessionConfig};
use crate::transcript::Transcript;
use crate::vm::protocol::hex;
use crate::vm::{machine::qemu_argv, Accel, VmKind};
use crate::wire::Request;
use qapi::qga;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const BOOT_GOAL: Duration = Duration::from_secs(3);
const RESTART_GOAL: Duration = Duration::from_millis(150);

/// What one VM measurement found.
#[derive(Debug, Clone)]
pub struct VmFigures {
    /// Accelerator, guest image and kernel, as one line.
    pub machine: String,
    pub boots: usize,
    pub restarts: usize,
    pub pings: usize,
    pub boot_h: Stats,
    pub boot_r: Stats,
    pub restart_h: Stats,
    pub restart_r: Stats,
    pub ping_h: Stats,
    pub ping_r: Stats,
}

/// Boots (at most 5), control-port restarts (twice the spawns, at most 40)
/// and pings (at most 500), each way.
pub async fn measure(config: SessionConfig, kind: VmKind, iterations: usize, spawns: usize) -> Result<VmFigures, String> {
    let boots = spawns.clamp(1, 5);
    let restarts = (spawns * 2).clamp(3, 40);
    let pings = iterations.clamp(10, 500);
    let program = crate::vm::agent_binary(config.template.program()).ok_or("agent program not found")?;
    let prepared = crate::vm::prepare(&program, &config.vm).map_err(|e| e.to_string())?;
    let quiet = || Transcript::new(crate::transcript::Caps { bytes: 0, entries: 0 });
    // The first boot settles the accelerator (a KVM probe, once per host
    // boot) and warms the page cache; it is not counted.
    let (warm, _) = Session::start(config.clone(), quiet()).await.map_err(|e| e.to_string())?;
    let accel = warm.vm().map(|v| v.accel).ok_or("not a VM session")?;
    warm.shutdown().await;
    let machine = format!("accelerator: {accel}; guest image {} ({} KiB); kernel {}", prepared.image.key, prepared.image.bytes / 1024, prepared.kernel.release);
    let profile = Profile::reference();
    let (mut boot_h, mut boot_r) = (Vec::new(), Vec::new());
    for _ in 0..boots {
        let t = Instant::now();
        let s = Session::start_known(config.clone(), quiet(), &profile).await.map_err(|e| e.to_string())?;
        boot_h.push(t.elapsed());
        s.shutdown().await;
        let floor = RawVm::launch(kind, accel, &prepared, &guest_argv(&config, &program)).await?;
        boot_r.push(floor.boot);
        drop(floor);
    }

    let mut session = Session::start_known(config.clone(), quiet(), &profile).await.map_err(|e| e.to_string())?;
    let mut raw = RawVm::launch(kind, accel, &prepared, &guest_argv(&config, &program)).await?;
    let (mut restart_h, mut restart_r) = (Vec::new(), Vec::new());
    for _ in 0..restarts {
        let t = Instant::now();
        session.restart().await.map_err(|e| e.to_string())?;
        restart_h.push(t.elapsed());
        restart_r.push(raw.restart()?);
    }
    let opts = session.client().clone();
    let conn = session.conn().map_err(|e| e.to_string())?;
    let ping = Request::new(qga::guest_ping {}, Some(1)).to_wire();
    let (mut ping_h, mut ping_r) = (Vec::new(), Vec::new());
    for _ in 0..pings {
        let t = Instant::now();
        raw_round_trip(conn.raw_fd(), &ping)?;
        ping_r.push(t.elapsed());
        let t = Instant::now();
        execute(conn, qga::guest_ping {}, &opts).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        ping_h.push(t.elapsed());
    }
    session.shutdown().await;
    drop(raw);

    Ok(VmFigures {
        machine,
        boots,
        restarts,
        pings,
        boot_h: stats(boot_h),
        boot_r: stats(boot_r),
        restart_h: stats(restart_h),
        restart_r: stats(restart_r),
        ping_h: stats(ping_h),
        ping_r: stats(ping_r),
    })
}

impl std::fmt::Display for VmFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let VmFigures { machine, boots, restarts, pings, boot_h, boot_r, restart_h, restart_r, ping_h, ping_r } = self;
        writeln!(f, "{machine}")?;
        writeln!(f, "boots: {boots}, restarts: {restarts}, pings: {pings}")?;
        writeln!(f, "{}", line("boot to first sync, raw client", boot_r))?;
        writeln!(f, "{}", line("boot to first sync, harness", boot_h))?;
        writeln!(f, "  harness / raw: p50 {:.2}x; goal ≤ {BOOT_GOAL:?} under TCG: {}", us(boot_h.p50) / us(boot_r.p50), verdict(boot_h.p50, BOOT_GOAL))?;
        writeln!(f, "{}", line("control-port restart to first sync, raw client", restart_r))?;
        writeln!(f, "{}", line("control-port restart to first sync, harness", restart_h))?;
        writeln!(f, "  harness / raw: p50 {:.2}x; goal ≤ {RESTART_GOAL:?}: {}", us(restart_h.p50) / us(restart_r.p50), verdict(restart_h.p50, RESTART_GOAL))?;
        writeln!(f, "{}", line("ping round trip, raw syscalls", ping_r))?;
        writeln!(f, "{}", line("ping round trip, harness", ping_h))?;
        writeln!(f, "  harness / raw: p50 {:.2}x", us(ping_h.p50) / us(ping_r.p50))
    }
}

fn verdict(p50: Duration, goal: Duration) -> &'static str {
    if p50 <= goal {
        "met"
    } else {
        "NOT met"
    }
}

/// The agent's argv inside the guest, as the session builds it.
fn guest_argv(config: &SessionConfig, program: &std::path::Path) -> Vec<String> {
    let mut argv = config.template.expand(Some(std::path::Path::new("{path}")), std::path::Path::new("/run/qga-raw"));
    argv[0] = program.display().to_string();
    argv
}

/// The raw client's own VM: QEMU spawned with the harness's command line,
/// driven with blocking reads and writes and nothing else of the harness.
struct RawVm {
    _qemu: ProcessGroup,
    qga: UnixStream,
    ctl: BufReader<UnixStream>,
    argv: Vec<String>,
    agent_path: String,
    boot: Duration,
    _dir: tempfile::TempDir,
}

impl RawVm {
    /// Boot from async code: QEMU is spawned on the calling (runtime)
    /// thread, whose life its parent-death signal is tied to (a blocking
    /// pool thread retires when idle, and would take QEMU with it); only the
    /// blocking client work runs in the pool.
    async fn launch(kind: VmKind, accel: Accel, p: &crate::vm::Prepared, argv: &[String]) -> Result<RawVm, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (qs, cs) = (dir.path().join("q.sock"), dir.path().join("c.sock"));
        let qemu_args = qemu_argv(kind, accel, &p.kernel.vmlinuz, &p.image.initramfs, &qs, &cs, 256);
        let quiet = Transcript::new(crate::transcript::Caps { bytes: 0, entries: 0 });
        let t = Instant::now();
        let qemu = ProcessGroup::spawn_with(qemu_args, None, None, quiet, StderrTo::Null).map_err(|e| e.to_string())?;
        let argv = argv.to_vec();
        tokio::task::spawn_blocking(move || RawVm::boot(qemu, dir, qs, cs, argv, t)).await.map_err(|e| e.to_string())?
    }

    fn boot(qemu: ProcessGroup, dir: tempfile::TempDir, qs: std::path::PathBuf, cs: std::path::PathBuf, argv: Vec<String>, t: Instant) -> Result<RawVm, String> {
        let connect = |p: &std::path::Path| loop {
            match UnixStream::connect(p) {
                Ok(s) => return Ok(s),
                Err(_) if t.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(e.to_string()),
            }
        };
        let ctl = connect(&cs)?;
        let qga = connect(&qs)?;
        ctl.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let mut ctl = BufReader::new(ctl);
        let mut hello = String::new();
        ctl.read_line(&mut hello).map_err(|e| format!("raw client, waiting for hello: {e}"))?;
        let agent_path = hello.split_whitespace().nth(1).ok_or("no hello from the guest")?.to_owned();
        let mut vm = RawVm { _qemu: qemu, qga, ctl, argv, agent_path, boot: Duration::ZERO, _dir: dir };
        vm.start()?;
        vm.sync_loop()?;
        vm.boot = t.elapsed();
        vm.drain()?;
        Ok(vm)
    }

    fn control_line(&mut self, want: &str) -> Result<String, String> {
        // Each read has the socket's timeout; the whole wait has this too,
        // however many other lines (agent stderr) the guest sends.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(format!("raw client: no {want} line from the guest within 30 s"));
            }
            let mut l = String::new();
            self.ctl.read_line(&mut l).map_err(|e| format!("raw client control port: {e}"))?;
            if l.is_empty() {
                return Err("control port closed".into());
            }
            if l.starts_with(want) {
                return Ok(l);
            }
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let mut line = format!("start {}", hex(b"/run/qga-raw"));
        for a in &self.argv {
            let a = a.replace("{path}", &self.agent_path);
            line.push(' ');
            line.push_str(&hex(a.as_bytes()));
        }
        line.push('\n');
        self.ctl.get_mut().write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        self.control_line("started").map(|_| ())
    }

    /// 0xFF + guest-sync-delimited every millisecond until a reply.
    fn sync_loop(&mut self) -> Result<(), String> {
        let sync = crate::client::resync::sync_request_bytes(1);
        self.qga.set_read_timeout(Some(Duration::from_millis(1))).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 8192];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            self.qga.write_all(&sync).map_err(|e| e.to_string())?;
            let attempt = Instant::now() + Duration::from_millis(1);
            while Instant::now() < attempt {
                if let Ok(n) = self.qga.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(11).any(|w| w == b"\"return\": 1") && seen.contains(&b'\n') {
                        return Ok(());
                    }
                }
            }
        }
        Err("raw client: no sync reply".into())
    }

    /// Take in what the earlier attempts still bring (not timed).
    fn drain(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 8192];
        self.qga.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| e.to_string())?;
        while matches!(self.qga.read(&mut buf), Ok(n) if n > 0) {}
        Ok(())
    }

    fn restart(&mut self) -> Result<Duration, String> {
        let t = Instant::now();
        self.ctl.get_mut().write_all(b"kill\n").map_err(|e| e.to_string())?;
        self.control_line("exit")?;
        self.start()?;
        self.sync_loop()?;
        let took = t.elapsed();
        self.drain()?;
        Ok(took)
    }
}
