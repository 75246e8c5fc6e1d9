//! The real channel: the agent runs inside a QEMU virtual machine and the
//! harness reaches it through QEMU's chardev socket, over virtio-serial or
//! the second ISA serial port, exactly as libvirt and Proxmox do.
//!
//! In the terms of the session: the guest agent is a peer behind a control
//! port (restarted without a reboot), QEMU is a process that must stay up,
//! and the chardev socket is a link that survives the agent's restarts.
//!
//! - [`kernel`]: Debian's cloud kernel, located or fetched, and its modules.
//! - [`image`]: the initramfs (static init, agent, its libraries, modules),
//!   cached by content.
//! - [`console`]: the guest console's tail, bounded.
//! - [`control`]: the host's end of the init's control port ([`protocol`]:
//!   its grammar, shared with the init).
//! - [`machine`]: QEMU and the agent instance inside it.

pub mod console;
pub mod control;
pub mod image;
/// The control protocol's grammar and encoding, shared with the guest init
/// (one source file, compiled into both: the init is built on its own,
/// static, with no crates).
#[path = "../../../guest-init/src/protocol.rs"]
pub mod protocol;
pub mod kernel;
pub mod machine;

pub use crate::transport::VmKind;
pub use machine::GuestVm;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        })
    }
}

/// The user's choice of accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when /dev/kvm boots a guest (probed once per host boot), else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Kernel(String),
    #[error("cannot build the guest image: {0}")]
    Image(String),
    /// The host could not set the VM up (its directory, QEMU's spawn, a socket).
    #[error("the VM did not boot: {0}")]
    Setup(String),
    #[error("the VM did not boot: QEMU exited ({status}) before opening {}", path.display())]
    QemuExitedEarly { status: String, path: PathBuf },
    #[error("the VM did not boot: QEMU did not open {} in time: {error}", path.display())]
    SocketTimeout { path: PathBuf, error: String },
    /// `console`: what the message can say of the guest console.
    #[error("the VM did not boot: QEMU exited ({status}) before the guest was up; {console}")]
    QemuExited { status: String, console: &'static str },
    #[error("the VM did not boot: the guest did not come up within {budget:?} ({accel}); {console}")]
    NoHello { budget: Duration, accel: Accel, console: &'static str },
    #[error("the guest init: control port: {0}")]
    ControlPort(std::io::Error),
    #[error("the guest init: the guest's control port closed (the VM is gone)")]
    ControlClosed,
    #[error("the guest init: the guest init did not answer start within {0:?}")]
    NoAnswer(Duration),
    /// The init's own refusal (it could not start the agent), in its words.
    #[error("the guest init: {0}")]
    Agent(String),
}

impl VmError {
    /// The message without its pointer to the guest console, for a verdict
    /// that outlives the transcript holding the console (the KVM probe's).
    pub fn without_console(&self) -> String {
        match self {
            VmError::QemuExited { status, .. } => format!("the VM did not boot: QEMU exited ({status}) before the guest was up"),
            VmError::NoHello { budget, accel, .. } => format!("the VM did not boot: the guest did not come up within {budget:?} ({accel})"),
            other => other.to_string(),
        }
    }
}

/// What a run over a VM transport records about the machine, so a report
/// says where its findings were made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VmRunInfo {
    /// The device carrying the agent's channel: `virtio-serial` or `isa-serial`.
    pub device: String,
    pub accel: Accel,
    /// Why that accelerator (asked for, the KVM probe's verdict).
    pub accel_reason: String,
    /// QEMU's spawn to the guest init's hello, ms.
    pub boot_ms: u64,
    /// A control-port restart (kill, start, first answered sync), ms: added
    /// to the resync budget.
    #[serde(default)]
    pub restart_ms: u64,
    pub kernel: String,
    /// The guest image's content key.
    pub image: String,
}

/// VM settings that are not per case.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub accel: AccelChoice,
    /// From QEMU's start to the guest's hello.
    pub boot_timeout: Duration,
    pub memory_mb: u32,
    /// The QEMU binary.
    pub qemu: String,
    /// Where kernels, images and the KVM probe's verdict are kept.
    pub cache: PathBuf,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            accel: AccelChoice::Auto,
            boot_timeout: Duration::from_secs(30),
            memory_mb: 256,
            qemu: "qemu-system-x86_64".into(),
            cache: default_cache(),
        }
    }
}

/// `$QGA_HARNESS_CACHE`, else `$XDG_CACHE_HOME/qga-harness`, else
/// `~/.cache/qga-harness`, else a directory under the system's temp dir.
pub fn default_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("QGA_HARNESS_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("qga-harness");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/qga-harness");
    }
    std::env::temp_dir().join("qga-harness-cache")
}

/// An agent program as an absolute path: as given when it names one, else
/// found on PATH (and in the sbin directories, where qemu-ga lives). The
/// image holds it at this path.
pub fn agent_binary(program: &str) -> Option<PathBuf> {
    crate::process::find_program(program, &["/usr/sbin", "/sbin"])
}

/// What a boot needs, prepared once per run: the kernel and the image.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kernel: kernel::Kernel,
    pub image: image::GuestImage,
}

/// Locate (or fetch) the kernel and build (or find) the image for `agent`.
pub fn prepare(agent: &Path, opts: &VmOptions) -> Result<Prepared, VmError> {
    std::fs::create_dir_all(&opts.cache).map_err(|e| VmError::Image(format!("cache {}: {e}", opts.cache.display())))?;
    let kernel = kernel::locate_or_fetch(&opts.cache)?;
    let image = image::build(agent, &kernel, &opts.cache)?;
    Ok(Prepared { kernel, image })
}

/// The KVM probe's verdict for this host boot, if one was recorded: KVM
/// that exists but does not boot a guest costs a timeout once, not per run.
fn recorded_accel(cache: &Path) -> Option<(Accel, String)> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let text = std::fs::read_to_string(cache.join("accel-probe")).ok()?;
    let mut lines = text.lines();
    if lines.next()? != boot_id.trim() {
        return None;
    }
    let accel = match lines.next()? {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        _ => return None,
    };
    Some((accel, lines.next().unwrap_or("").to_owned()))
}

fn record_accel(cache: &Path, accel: Accel, why: &str) {
    if let Ok(boot_id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let word = if accel == Accel::Kvm { "kvm" } else { "tcg" };
        let _ = std::fs::write(cache.join("accel-probe"), format!("{}\n{word}\n{why}\n", boot_id.trim()));
    }
}

/// How long a KVM boot may take before the probe gives up on KVM.
const KVM_PROBE_BUDGET: Duration = Duration::from_secs(8);

/// Boot a guest, choosing the accelerator: the user's, the recorded probe
/// verdict, or a probe (a KVM boot; TCG when it fails). The note says which
/// was used and why.
pub async fn boot(
    kind: VmKind,
    prepared: &Prepared,
    opts: &VmOptions,
    transcript: crate::transcript::Transcript,
) -> Result<(GuestVm, crate::transport::Duplex), VmError> {
    use crate::transcript::Event;
    let (k, i) = (&prepared.kernel.vmlinuz, &prepared.image.initramfs);
    let (accel, why) = match opts.accel {
        AccelChoice::Kvm => (Accel::Kvm, "asked for".to_owned()),
        AccelChoice::Tcg => (Accel::Tcg, "asked for".to_owned()),
        AccelChoice::Auto => match recorded_accel(&opts.cache) {
            Some(v) => v,
            None if !Path::new("/dev/kvm").exists() => (Accel::Tcg, "no /dev/kvm".to_owned()),
            None => {
                let budget = KVM_PROBE_BUDGET.min(opts.boot_timeout);
                let mark = transcript.mark();
                match GuestVm::boot(kind, Accel::Kvm, k, i, opts, transcript.clone(), budget).await {
                    Ok((mut vm, duplex)) => {
                        record_accel(&opts.cache, Accel::Kvm, "a KVM guest booted");
                        transcript.event(Event::Note { text: "KVM probe: a KVM guest booted; KVM is used".into() });
                        vm.accel_reason = "the KVM probe booted a guest".into();
                        return Ok((vm, duplex));
                    }
                    Err(e) => {
                        // QEMU's own words, when it said why (e.g. "failed
                        // to set MSR 0x10a"): the verdict is kept per host
                        // boot and shown in every report.
                        let said = transcript.entries(mark, None).iter().find_map(|en| match &en.record {
                            crate::transcript::Record::Event(Event::Stderr { source: crate::transcript::StderrSource::Qemu, text }) => {
                                text.lines().map(str::trim).find(|l| !l.is_empty()).map(|l| l.chars().take(200).collect::<String>())
                            }
                            _ => None,
                        });
                        let e = e.without_console();
                        let why = match said {
                            Some(said) => format!("/dev/kvm did not boot a guest ({e}; QEMU said: {said})"),
                            None => format!("/dev/kvm did not boot a guest ({e})"),
                        };
                        record_accel(&opts.cache, Accel::Tcg, &why);
                        (Accel::Tcg, why)
                    }
                }
            }
        },
    };
    transcript.event(Event::Note { text: format!("accelerator {accel}: {why}") });
    let (mut vm, duplex) = GuestVm::boot(kind, accel, k, i, opts, transcript, opts.boot_timeout).await?;
    vm.accel_reason = why;
    Ok((vm, duplex))
}
