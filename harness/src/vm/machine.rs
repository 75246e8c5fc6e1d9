//! One virtual machine: QEMU, the guest init behind its control port, and
//! the agent instance the init is running.
//!
//! QEMU is the process that must stay up: it is spawned like an agent (its
//! own process group, killed and reaped on every path out, Ctrl-C included)
//! and the agent inside restarts through the control port, never through a
//! reboot, so the chardev socket the harness holds stays the same channel.

use super::console::Console;
use super::control::{Control, Message, CONTROL_PORT};
use super::{Accel, VmError, VmKind, VmOptions};
use crate::process::{ProcessGroup, ScratchDir};
use crate::transcript::{Event, Transcript};
use crate::transport::Duplex;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// How long the init may take to answer start, or to report an exit after
/// a kill. Generous: a TCG guest on a loaded host is slow, and both are
/// normally a few milliseconds.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_RETRY: Duration = Duration::from_millis(2);
/// The guest console's tail kept in the transcript.
const CONSOLE_TAIL: usize = 16 * 1024;

/// The console's tail into the transcript; what a message can say of it.
fn note_console(transcript: &Transcript, console: &Console) -> &'static str {
    let text = console.tail(CONSOLE_TAIL);
    if text.trim().is_empty() {
        return "the guest console was empty";
    }
    transcript.event(Event::Note { text: format!("guest console (last {} KiB at most):\n{text}", CONSOLE_TAIL / 1024) });
    "the guest console is in the transcript"
}

/// The agent's name for its virtio port (what qemu-ga looks for by default).
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

#[derive(Debug)]
pub struct GuestVm {
    qemu: ProcessGroup,
    control: Control,
    transcript: Transcript,
    /// The agent's port inside the guest (`{path}`).
    pub agent_path: String,
    pub accel: Accel,
    /// Why this accelerator (set by [`super::boot`]).
    pub accel_reason: String,
    /// From QEMU's spawn to the init's hello (the agent's port is there).
    pub boot_time: Duration,
    console: Console,
    /// The current agent instance in the guest.
    pid: Option<i32>,
    status: Option<String>,
    instances: u32,
    _dir: ScratchDir,
}

/// The QEMU command line for one guest.
pub fn qemu_argv(kind: VmKind, accel: Accel, kernel: &Path, initramfs: &Path, qga_sock: &Path, ctl_sock: &Path, memory_mb: u32) -> Vec<String> {
    let mut a: Vec<String> = vec!["qemu-system-x86_64".into(), "-nodefaults".into(), "-no-user-config".into(), "-display".into(), "none".into()];
    let s = |v: &mut Vec<String>, items: &[&str]| v.extend(items.iter().map(|x| x.to_string()));
    match accel {
        Accel::Kvm => s(&mut a, &["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => s(&mut a, &["-accel", "tcg"]),
    }
    s(&mut a, &["-m", &memory_mb.to_string(), "-smp", "1", "-no-reboot"]);
    a.push("-kernel".into());
    a.push(kernel.display().to_string());
    a.push("-initrd".into());
    a.push(initramfs.display().to_string());
    let port = match kind {
        VmKind::Virtio => "virtio",
        VmKind::Isa => "isa",
    };
    a.push("-append".into());
    a.push(format!("console=ttyS0 quiet loglevel=3 panic=-1 qga.port={port}"));
    // The console (ttyS0) is a socket beside the others, drained into a
    // bounded tail ([`Console`]) that goes into the transcript when the
    // guest fails or ends (QEMU writes it a character at a time, too
    // fine-grained to record as it comes). Nobody connected: QEMU drops it.
    let console = format!("socket,id=console,path={},server=on,wait=off", console_socket(qga_sock).display());
    s(&mut a, &["-chardev", &console, "-serial", "chardev:console"]);
    let qga = format!("socket,id=qga,path={},server=on,wait=off", qga_sock.display());
    let ctl = format!("socket,id=ctl,path={},server=on,wait=off", ctl_sock.display());
    s(&mut a, &["-chardev", &qga, "-chardev", &ctl, "-device", "virtio-serial-pci,id=vs"]);
    a.push("-device".into());
    a.push(format!("virtserialport,bus=vs.0,chardev=ctl,name={CONTROL_PORT}"));
    match kind {
        // As libvirt sets it up: a virtserialport named for the agent.
        VmKind::Virtio => {
            a.push("-device".into());
            a.push(format!("virtserialport,bus=vs.0,chardev=qga,name={AGENT_PORT}"));
        }
        // The second ISA serial port: /dev/ttyS1 in the guest.
        VmKind::Isa => s(&mut a, &["-serial", "chardev:qga"]),
    }
    a
}

/// The console's socket, beside the agent's.
fn console_socket(qga_sock: &Path) -> PathBuf {
    qga_sock.with_file_name("console.sock")
}

/// Connect to a QEMU chardev socket, retrying while QEMU starts.
async fn connect(path: &Path, qemu: &mut ProcessGroup, until: Instant) -> Result<std::os::unix::net::UnixStream, VmError> {
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Some(st) = qemu.exit_status() {
                    return Err(VmError::QemuExitedEarly { status: st.to_owned(), path: path.to_owned() });
                }
                if Instant::now() >= until {
                    return Err(VmError::SocketTimeout { path: path.to_owned(), error: e.to_string() });
                }
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    }
}

impl GuestVm {
    /// Start QEMU, connect to both chardev sockets and wait for the init's
    /// hello. Returns the machine and the harness's end of the agent's
    /// channel (connected before the guest boots, so nothing the agent
    /// writes is missed).
    pub async fn boot(
        kind: VmKind,
        accel: Accel,
        kernel: &Path,
        initramfs: &Path,
        opts: &VmOptions,
        transcript: Transcript,
        budget: Duration,
    ) -> Result<(GuestVm, Duplex), VmError> {
        let start = Instant::now();
        let until = start + budget;
        let dir = ScratchDir::new("qga-harness-vm-").map_err(|e| VmError::Setup(e.to_string()))?;
        let (qga_sock, ctl_sock) = (dir.path().join("qga.sock"), dir.path().join("control.sock"));
        // The initramfs is unpacked into RAM beside its own copy.
        let image_mb = std::fs::metadata(initramfs).map_or(0, |m| m.len() >> 20) as u32;
        let memory_mb = opts.memory_mb.max(128 + 3 * image_mb);
        let mut argv = qemu_argv(kind, accel, kernel, initramfs, &qga_sock, &ctl_sock, memory_mb);
        argv[0] = opts.qemu.clone();
        let mut qemu = ProcessGroup::spawn_with(argv, None, None, transcript.clone(), crate::process::StderrTo::Transcript(crate::transcript::StderrSource::Qemu)).map_err(|e| VmError::Setup(e.to_string()))?;
        // The console first: the guest's earliest words are there.
        let console = Console::drain(connect(&console_socket(&qga_sock), &mut qemu, until).await?);
        let ctl = connect(&ctl_sock, &mut qemu, until).await?;
        let qga = connect(&qga_sock, &mut qemu, until).await?;
        transcript.event(Event::Connect { detail: format!("QEMU chardev {} ({kind}, {accel})", qga_sock.display()) });
        let mut control = Control::new(ctl, transcript.clone()).map_err(|e| VmError::Setup(e.to_string()))?;
        let hello = loop {
            let left = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            let got = control
                .wait_for(left, |m| match m {
                    Message::Hello { agent_path, uptime_ms } => Some((agent_path.clone(), *uptime_ms)),
                    _ => None,
                })
                .await;
            if let Some(h) = got {
                break h;
            }
            if let Some(st) = qemu.exit_status() {
                let console = note_console(&transcript, &console);
                return Err(VmError::QemuExited { status: st.to_owned(), console });
            }
            if control.is_closed() || Instant::now() >= until {
                let console = note_console(&transcript, &console);
                return Err(VmError::NoHello { budget, accel, console });
            }
        };
        let boot_time = start.elapsed();
        transcript.event(Event::Note {
            text: format!("VM up in {boot_time:?} ({accel}, guest kernel uptime {} ms); agent port {}", hello.1, hello.0),
        });
        let qga = tokio::net::UnixStream::from_std({
            qga.set_nonblocking(true).map_err(|e| VmError::Setup(e.to_string()))?;
            qga
        })
        .map_err(|e| VmError::Setup(e.to_string()))?;
        let vm = GuestVm {
            qemu,
            control,
            transcript,
            agent_path: hello.0,
            accel,
            accel_reason: String::new(),
            boot_time,
            console,
            pid: None,
            status: None,
            instances: 0,
            _dir: dir,
        };
        Ok((vm, Duplex::socket(qga)))
    }

    /// QEMU's chardev socket for the agent, for a new client connection.
    pub fn agent_socket(&self) -> PathBuf {
        self._dir.path().join("qga.sock")
    }

    /// Start an agent instance in the guest with `argv` (already expanded;
    /// the state directory is the guest path the caller gave `{statedir}`).
    pub async fn start(&mut self, argv: &[String], statedir: &str) -> Result<i32, VmError> {
        self.instances += 1;
        let pid = self.control.start(statedir, argv, CONTROL_TIMEOUT).await?;
        self.transcript.event(Event::Spawn { pid, argv: argv.to_vec() });
        self.pid = Some(pid);
        self.status = None;
        Ok(pid)
    }

    /// A fresh state directory path for the next instance.
    pub fn next_statedir(&self) -> String {
        format!("/run/qga-state-{}", self.instances + 1)
    }

    /// True while QEMU runs and the guest init answers its control port.
    pub fn is_up(&mut self) -> bool {
        self.control.poll();
        self.qemu.exit_status().is_none() && !self.control.is_closed()
    }

    /// Whether the VM itself has ended (QEMU exited, or the guest's control
    /// port closed), and how: waits up to a second for QEMU to be reaped,
    /// so that what is reported is QEMU's exit, not its first symptom.
    ///
    /// `link_closed`: the agent's chardev socket closed, which QEMU never
    /// does while it runs (the guest agent's restarts do not reach it): a
    /// dying QEMU closes its sockets one at a time, and a loaded host can
    /// preempt it in between, so that alone is reason to wait.
    pub async fn gone(&mut self, link_closed: bool) -> Option<String> {
        self.control.poll();
        if !link_closed && self.qemu.exit_status().is_none() && !self.control.is_closed() {
            return None;
        }
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(st) = self.qemu.exit_status() {
                let _ = note_console(&self.transcript, &self.console);
                return Some(format!("the VM exited ({st})"));
            }
            if Instant::now() >= until {
                self.control.poll();
                return Some(if self.control.is_closed() {
                    "the guest's control port closed (QEMU still running)".into()
                } else {
                    "QEMU closed the agent's chardev socket (QEMU still running)".into()
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.control.poll();
        }
    }

    /// The current instance's exit status, or the VM's, if either ended.
    pub fn exit_status(&mut self) -> Option<&str> {
        if self.status.is_none() {
            if let Some(st) = self.qemu.exit_status() {
                let _ = note_console(&self.transcript, &self.console);
                self.status = Some(format!("the VM exited ({st})"));
            } else if let Some(pid) = self.pid {
                self.status = self.control.exit_of(pid);
            } else if self.control.is_closed() {
                self.status = Some("the guest's control port closed".into());
            }
        }
        self.status.as_deref()
    }

    /// Signal the agent in the guest and wait (bounded) for its exit. TERM
    /// escalates to KILL after `grace`.
    pub async fn stop(&mut self, term_first: Option<Duration>) {
        let Some(pid) = self.pid else { return };
        if self.exit_status().is_some() {
            // The leader is gone; what a daemonising agent left in its
            // group is not (the guest signals the group regardless).
            if self.is_up() {
                let _ = self.control.signal("kill", pid, CONTROL_TIMEOUT).await;
            }
            return;
        }
        if let Some(grace) = term_first {
            self.transcript.event(Event::Signal { pid, signal: "SIGTERM".into() });
            if let Some(st) = self.control.signal("term", pid, grace).await {
                self.status = Some(st);
                return;
            }
        }
        self.transcript.event(Event::Signal { pid, signal: "SIGKILL".into() });
        match self.control.signal("kill", pid, CONTROL_TIMEOUT).await {
            Some(st) => self.status = Some(st),
            None => {
                self.transcript.event(Event::Timeout { waiting_for: format!("the guest to report agent {pid}'s exit") });
            }
        }
    }

    /// QEMU's pid (its process group).
    pub fn qemu_pid(&self) -> i32 {
        self.qemu.pid()
    }

    /// Power the guest off and make sure QEMU is gone.
    pub async fn shutdown(mut self) {
        self.control.poweroff();
        self.qemu.kill().await;
    }
}
