//! From kernel hand-over to a known agent port: file systems, console,
//! modules, ports.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::raw::{c_char, c_int, c_long, c_ulong, c_void};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

extern "C" {
    fn mount(src: *const c_char, target: *const c_char, fstype: *const c_char, flags: c_ulong, data: *const c_void) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
    fn reboot(cmd: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn sync();
}

const SYS_FINIT_MODULE: c_long = 313;
const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
/// How long the ports may take to appear after the modules load.
const PORT_WAIT: Duration = Duration::from_secs(20);
/// The module list the image builder writes, in load order.
const MODULE_LIST: &str = "/lib/modules/load-order";

/// Make /dev/console our stdin, stdout and stderr (the initramfs has no
/// /dev/console node, so the kernel could not open it for us).
pub fn console() {
    let _ = std::fs::create_dir_all("/dev");
    mount_fs("devtmpfs", "/dev", "devtmpfs");
    if let Ok(c) = OpenOptions::new().read(true).write(true).open("/dev/console") {
        for fd in 0..3 {
            // SAFETY: dup2 on an fd we own onto the standard fds.
            unsafe { dup2(c.as_raw_fd(), fd) };
        }
    }
}

fn mount_fs(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (CString::new(src).unwrap(), CString::new(target).unwrap(), CString::new(fstype).unwrap());
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        eprintln!("qga-guest-init: mount {fstype} on {target}: {}", std::io::Error::last_os_error());
    }
}

/// Mount, load modules, open the control port and find the agent's port.
pub fn boot() -> Result<(File, String), String> {
    mount_fs("proc", "/proc", "proc");
    mount_fs("sysfs", "/sys", "sysfs");
    // No tmpfs over /run or /tmp: the initramfs is already a RAM file
    // system, and the agent may live under either (a binary built in /tmp
    // goes into the image at its host path).
    let _ = std::fs::create_dir_all("/run");
    let _ = std::fs::create_dir_all("/tmp");
    load_modules()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let arg = |key: &str| cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_owned);
    let port_kind = arg("qga.port=").unwrap_or_else(|| "virtio".into());
    let agent_name = arg("qga.name=").unwrap_or_else(|| "org.qemu.guest_agent.0".into());
    let control = wait_for(|| virtio_port(crate::protocol::CONTROL_PORT))?;
    let agent_path = match port_kind.as_str() {
        "virtio" => wait_for(|| virtio_port(&agent_name))?,
        "isa" => PathBuf::from("/dev/ttyS1"),
        other => return Err(format!("unknown qga.port={other}")),
    };
    let control = OpenOptions::new().read(true).write(true).open(&control).map_err(|e| format!("open {}: {e}", control.display()))?;
    Ok((control, agent_path.display().to_string()))
}

/// Load the modules the image builder listed, in its order (it resolved
/// their dependencies from each module's `depends=`).
fn load_modules() -> Result<(), String> {
    let Ok(list) = std::fs::read_to_string(MODULE_LIST) else { return Ok(()) };
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules").join(name);
        let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let empty = CString::new("").unwrap();
        // SAFETY: finit_module(fd, params, flags) with a valid fd and string.
        let rc = unsafe { syscall(SYS_FINIT_MODULE, f.as_raw_fd() as c_long, empty.as_ptr(), 0 as c_long) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // Built in, or already loaded as another's dependency.
            if e.raw_os_error() != Some(17) {
                return Err(format!("load {name}: {e}"));
            }
        }
    }
    Ok(())
}

/// The /dev node of the virtio port named `name`, once it exists.
fn virtio_port(name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let n = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            let dev = Path::new("/dev").join(entry.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}

fn wait_for(mut found: impl FnMut() -> Option<PathBuf>) -> Result<PathBuf, String> {
    let start = Instant::now();
    loop {
        if let Some(p) = found() {
            return Ok(p);
        }
        if start.elapsed() > PORT_WAIT {
            let ports = std::fs::read_dir("/sys/class/virtio-ports")
                .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|e| e.to_string());
            return Err(format!("a virtio port did not appear within {PORT_WAIT:?} (ports: {ports})"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Milliseconds since the guest kernel started.
pub fn uptime_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    s.split_ascii_whitespace().next().and_then(|w| w.parse::<f64>().ok()).map_or(0, |secs| (secs * 1000.0) as u64)
}

pub fn poweroff() -> ! {
    // SAFETY: plain syscalls; PID 1 ends the machine here.
    unsafe {
        sync();
        reboot(RB_POWER_OFF);
    }
    // Only if the kernel refused: PID 1 exiting panics it, and the harness
    // runs QEMU with -no-reboot and panic=-1, so QEMU exits either way.
    std::process::exit(1)
}
