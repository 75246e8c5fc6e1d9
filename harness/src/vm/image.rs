//! The guest image: an initramfs (newc cpio) holding the static init, the
//! agent binary with the shared libraries it needs, and the virtio modules.
//!
//! The agent goes in at the absolute path it has on the host, so an agent
//! template means the same thing inside the guest as outside. Images are
//! cached, keyed by a hash of every file they hold (the agent's binary
//! first), so the second run of the same agent boots at once and a rebuilt
//! agent never runs from a stale image.

use super::kernel::{module_load_order, Kernel};
use super::VmError;
use crate::process::{tool, ScratchDir};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The init, built static by harness/build.rs from guest-init/.
pub static GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qga-guest-init"));

/// Modules for virtio-serial over PCI; their dependencies are added.
const MODULES: &[&str] = &["virtio_pci", "virtio_console"];

#[derive(Debug, Clone)]
pub struct GuestImage {
    pub initramfs: PathBuf,
    /// The image's key (hex), as named in its file.
    pub key: String,
    /// False when it came from the cache.
    pub built: bool,
    pub bytes: u64,
}

/// One file of the image: where it goes and what it holds.
struct Entry {
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// Build (or find in `cache`) the image for `agent`, an absolute path.
pub fn build(agent: &Path, kernel: &Kernel, cache: &Path) -> Result<GuestImage, VmError> {
    let err = |what: String| VmError::Image(what);
    let mut files = vec![Entry { path: "init".into(), mode: 0o100755, data: GUEST_INIT.to_vec() }];
    let real = std::fs::canonicalize(agent).map_err(|e| err(format!("agent binary {}: {e}", agent.display())))?;
    check_agent(agent, &real)?;
    files.push(Entry { path: rel(agent), mode: 0o100755, data: agent_bytes(&real)? });
    for lib in shared_libraries(&real)? {
        let data = std::fs::read(&lib).map_err(|e| err(format!("read {}: {e}", lib.display())))?;
        files.push(Entry { path: rel(&lib), mode: 0o100755, data });
    }
    let mut order = String::new();
    for (i, m) in module_load_order(&kernel.modules, MODULES)?.iter().enumerate() {
        let name = format!("{i:02}-{}", m.file_name().unwrap_or_default().to_string_lossy());
        order.push_str(&name);
        order.push('\n');
        let data = std::fs::read(m).map_err(|e| err(format!("read {}: {e}", m.display())))?;
        files.push(Entry { path: format!("lib/modules/{name}"), mode: 0o100644, data });
    }
    files.push(Entry { path: "lib/modules/load-order".into(), mode: 0o100644, data: order.into_bytes() });

    let mut hash = Sha256::new();
    hash.update(kernel.release.as_bytes());
    for f in &files {
        hash.update(f.path.as_bytes());
        hash.update((f.data.len() as u64).to_le_bytes());
        hash.update(&f.data);
    }
    let key: String = hash.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let dir = cache.join("images");
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    let initramfs = dir.join(format!("{key}.cpio"));
    if let Ok(meta) = std::fs::metadata(&initramfs) {
        // Used now: pruning goes by last use, not by build.
        if let Ok(f) = std::fs::File::options().append(true).open(&initramfs) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(GuestImage { initramfs, key, built: false, bytes: meta.len() });
    }
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| err(format!("create a file in {}: {e}", dir.display())))?;
    let bytes = write_cpio(tmp.as_file_mut(), &files).map_err(|e| err(format!("write the image: {e}")))?;
    // Renamed into place whole: a concurrent run sees no image or all of it.
    tmp.persist(&initramfs).map_err(|e| err(format!("save {}: {e}", initramfs.display())))?;
    prune(&dir, &initramfs);
    Ok(GuestImage { initramfs, key, built: true, bytes })
}

/// Above this size an agent binary is copied without its debug sections
/// (when binutils' objcopy is here): the guest loads the whole initramfs
/// into RAM, and a debug build of a Rust agent is over 100 MB.
const STRIP_ABOVE: u64 = 16 << 20;

/// The agent binary's bytes for the image: as it is, or without debug
/// sections when it is large.
fn agent_bytes(real: &Path) -> Result<Vec<u8>, VmError> {
    let size = std::fs::metadata(real).map_err(|e| VmError::Image(format!("{}: {e}", real.display())))?.len();
    if size > STRIP_ABOVE {
        if let Ok(dir) = ScratchDir::new("qga-harness-strip-") {
            let out = dir.path().join("agent");
            let ok = tool::status(Command::new("objcopy").arg("--strip-debug").arg(real).arg(&out)).is_ok_and(|s| s.success());
            if let (true, Ok(bytes)) = (ok, std::fs::read(&out)) {
                return Ok(bytes);
            }
        }
    }
    std::fs::read(real).map_err(|e| VmError::Image(format!("read {}: {e}", real.display())))
}

/// What the image can hold as the agent: an ELF executable outside the
/// guest's pseudo file systems (the init mounts over /dev, /proc and /sys).
/// A script's interpreter, or the program a wrapper runs, would not be in
/// the image: say so rather than fail inside the guest.
fn check_agent(agent: &Path, real: &Path) -> Result<(), VmError> {
    for hidden in ["/dev/", "/proc/", "/sys/"] {
        if agent.starts_with(hidden) || real.starts_with(hidden) {
            return Err(VmError::Image(format!(
                "the agent {} lives under {hidden}, which the guest's init mounts over: put the binary elsewhere",
                agent.display()
            )));
        }
    }
    let mut head = [0u8; 4];
    let n = std::fs::File::open(real).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    if head[..n].starts_with(b"#!") {
        return Err(VmError::Image(format!(
            "{} is a script: the VM transports put the agent's ELF binary and the shared libraries it loads in the guest, \
             not an interpreter; give the binary itself in the template",
            agent.display()
        )));
    }
    if &head[..n] != b"\x7fELF" {
        return Err(VmError::Image(format!("{} is not an ELF executable", agent.display())));
    }
    if let Some(name) = agent.file_name().and_then(|n| n.to_str()).filter(|n| ["env", "sh", "bash", "sudo", "nice", "taskset", "timeout", "strace"].contains(n)) {
        return Err(VmError::Image(format!(
            "the template starts with {name}, a wrapper: only its binary would be in the guest, not the program it runs; \
             give the agent's binary first"
        )));
    }
    Ok(())
}

/// Images kept in the cache: every rebuilt agent makes a new one.
const KEEP_IMAGES: usize = 8;

/// Remove all but the newest [`KEEP_IMAGES`] images (never `keep`).
fn prune(dir: &Path, keep: &Path) {
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpio") && p != keep)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    images.sort();
    let excess = (images.len() + 1).saturating_sub(KEEP_IMAGES);
    // An image used within the hour may belong to a run still going (a
    // fresh channel boots from it again): never those.
    let recent = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (_, p) in images.into_iter().take(excess).filter(|(t, _)| *t < recent) {
        let _ = std::fs::remove_file(p);
    }
}

/// A path inside the image: the host path without its leading slash.
fn rel(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

/// The shared libraries `binary` loads, the dynamic loader included, as
/// ldd resolves them on this host. A static binary needs none.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = tool::output(Command::new("ldd").arg(binary)).map_err(|e| VmError::Image(format!("ldd: {e}")))?;
    // glibc's ldd says "not a dynamic executable" on stderr (exit 1) for a
    // classic static binary, "statically linked" on stdout for static-pie.
    if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not a dynamic executable") || line.contains("statically linked") {
            return Ok(Vec::new());
        }
        if line.contains("=> not found") {
            return Err(VmError::Image(format!("{} needs a library this host lacks: {line}", binary.display())));
        }
        // `libc.so.6 => /lib/.../libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if libs.is_empty() && !out.status.success() {
        return Err(VmError::Image(format!("ldd {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(libs)
}

/// Write a newc archive: every parent directory first, then the files.
fn write_cpio(out: &mut std::fs::File, files: &[Entry]) -> std::io::Result<u64> {
    let mut dirs: Vec<String> = ["dev", "proc", "sys", "run", "tmp"].iter().map(|s| s.to_string()).collect();
    for f in files {
        let mut p = Path::new(&f.path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut w = std::io::BufWriter::new(out);
    let mut ino = 1;
    let mut total = 0u64;
    for d in &dirs {
        ino += 1;
        let e = cpio::newc::Builder::new(d).ino(ino).mode(0o40755).nlink(2).write(&mut w, 0);
        e.finish()?;
    }
    for f in files {
        ino += 1;
        let mut e = cpio::newc::Builder::new(&f.path).ino(ino).mode(f.mode).nlink(1).write(&mut w, f.data.len() as u32);
        e.write_all(&f.data)?;
        e.finish()?;
        total += f.data.len() as u64;
    }
    cpio::newc::trailer(&mut w)?;
    w.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_init_is_a_static_executable() {
        assert_eq!(&GUEST_INIT[..4], b"\x7fELF");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("init");
        std::fs::write(&p, GUEST_INIT).unwrap();
        assert!(shared_libraries(&p).unwrap().is_empty(), "the guest init must not need shared libraries");
    }

    #[test]
    fn scripts_wrappers_and_hidden_paths_are_refused_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("agent.sh");
        std::fs::write(&script, "#!/bin/sh\nexec qemu-ga \"$@\"\n").unwrap();
        let e = check_agent(&script, &script).unwrap_err().to_string();
        assert!(e.contains("is a script"), "{e}");
        let env = Path::new("/usr/bin/env");
        let e = check_agent(env, env).unwrap_err().to_string();
        assert!(e.contains("a wrapper"), "{e}");
        let e = check_agent(Path::new("/dev/shm/agent"), Path::new("/dev/shm/agent")).unwrap_err().to_string();
        assert!(e.contains("mounts over"), "{e}");
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let ok = d.path().join("my-agent");
        std::fs::copy(&sh, &ok).unwrap();
        check_agent(&ok, &ok).unwrap();
    }

    #[test]
    fn a_dynamic_binary_brings_its_loader_and_libc() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libs:?}");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libs:?}");
    }
}
