//! The guest's kernel: Debian's cloud kernel, unpacked (never installed).
//!
//! The cloud flavour is small and boots fast under TCG; it has the 8250
//! serial driver built in and `virtio_pci` and `virtio_console` as modules,
//! which the image builder takes from the same package. Found in this order:
//! an unpacked package named by `QGA_VM_KERNEL_DIR`, one unpacked earlier in
//! the cache, or `apt-get download` of the package the meta-package
//! `linux-image-cloud-amd64` points at, unpacked with `dpkg -x` into the cache.

use super::VmError;
use crate::process::{tool, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The meta-package that names the current cloud kernel.
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked kernel package: the image and its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE` of the package.
    pub modules: PathBuf,
}

impl Kernel {
    /// The kernel found under an unpacked package root (`boot/vmlinuz-*`
    /// beside `lib/modules/*`), if there is one.
    pub fn in_root(root: &Path) -> Option<Kernel> {
        let boot = std::fs::read_dir(root.join("boot")).ok()?;
        let mut images: Vec<PathBuf> = boot
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .collect();
        images.sort();
        let vmlinuz = images.pop()?;
        let release = vmlinuz.file_name()?.to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
        let modules = root.join("lib/modules").join(&release);
        modules.is_dir().then_some(Kernel { release, vmlinuz, modules })
    }
}

/// Locate the kernel, fetching and unpacking it into `cache` when needed.
pub fn locate_or_fetch(cache: &Path) -> Result<Kernel, VmError> {
    if let Some(dir) = std::env::var_os("QGA_VM_KERNEL_DIR") {
        let dir = PathBuf::from(dir);
        return Kernel::in_root(&dir).ok_or_else(|| {
            VmError::Kernel(format!("QGA_VM_KERNEL_DIR={} holds no boot/vmlinuz-* with its lib/modules", dir.display()))
        });
    }
    let root = cache.join("kernel");
    if let Some(k) = Kernel::in_root(&root) {
        return Ok(k);
    }
    fetch(cache, &root)?;
    Kernel::in_root(&root).ok_or_else(|| VmError::Kernel(format!("the unpacked {KERNEL_META_PACKAGE} package in {} has no kernel image", root.display())))
}

fn missing(why: String) -> VmError {
    VmError::Kernel(format!(
        "the VM transports need Debian's cloud kernel, package {KERNEL_META_PACKAGE} (fetched with apt-get download and unpacked, \
         not installed), or QGA_VM_KERNEL_DIR naming an unpacked kernel package: {why}"
    ))
}

/// `apt-get download` the package the meta-package depends on and unpack
/// it. Unpacked beside the target first and renamed into place, so two runs
/// fetching at once cannot see half a kernel.
fn fetch(cache: &Path, root: &Path) -> Result<(), VmError> {
    let out = tool::output(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))
        .map_err(|e| missing(format!("apt-cache: {e}")))?;
    let deps = String::from_utf8_lossy(&out.stdout);
    let package = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().to_owned())
        .filter(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| missing(format!("apt-cache depends {KERNEL_META_PACKAGE} named no kernel package (is apt's package list up to date?)")))?;
    // Removed on a signal too: a half-fetched kernel is no use to anyone.
    let work = tempfile::Builder::new()
        .prefix("kernel-fetch-")
        .tempdir_in(cache)
        .map(ScratchDir::adopt)
        .map_err(|e| missing(format!("cannot create a directory in {}: {e}", cache.display())))?;
    let dl = tool::output(
        Command::new("apt-get")
            // apt's own network timeouts bound the wait (no retries).
            .args(["download", "-q", "-o", "Acquire::http::Timeout=30", "-o", "Acquire::Retries=0", &package])
            .current_dir(work.path()),
    )
    .map_err(|e| missing(format!("apt-get: {e}")))?;
    let deb = std::fs::read_dir(work.path())
        .ok()
        .and_then(|rd| rd.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "deb")));
    let Some(deb) = deb else {
        return Err(missing(format!("apt-get download {package} failed: {}", String::from_utf8_lossy(&dl.stderr).trim())));
    };
    let unpacked = work.path().join("root");
    let st = tool::status(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked)).map_err(|e| missing(format!("dpkg -x: {e}")))?;
    if !st.success() {
        return Err(missing(format!("dpkg -x {} failed", deb.display())));
    }
    // Another run may have won the race; its copy is as good as ours.
    if std::fs::rename(&unpacked, root).is_err() && Kernel::in_root(root).is_none() {
        return Err(missing(format!("cannot move the unpacked kernel to {}", root.display())));
    }
    Ok(())
}

/// The modules the guest needs, dependencies first: each module's
/// `depends=` (from its .modinfo section) names what must be loaded before it.
pub fn module_load_order(modules_dir: &Path, roots: &[&str]) -> Result<Vec<PathBuf>, VmError> {
    let mut by_name = std::collections::HashMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                by_name.insert(name.replace('-', "_"), p);
            }
        }
    }
    let mut order: Vec<PathBuf> = Vec::new();
    fn visit(name: &str, by_name: &std::collections::HashMap<String, PathBuf>, order: &mut Vec<PathBuf>, depth: usize) -> Result<(), VmError> {
        let path = by_name.get(name).ok_or_else(|| VmError::Kernel(format!("module {name} is not in the kernel package (is it built in?)")))?;
        if order.contains(path) || depth > 32 {
            return Ok(());
        }
        let bytes = std::fs::read(path).map_err(|e| VmError::Kernel(format!("read {}: {e}", path.display())))?;
        for dep in module_depends(&bytes) {
            visit(&dep, by_name, order, depth + 1)?;
        }
        if !order.contains(path) {
            order.push(path.clone());
        }
        Ok(())
    }
    for root in roots {
        visit(root, &by_name, &mut order, 0)?;
    }
    Ok(order)
}

/// The `depends=a,b` entry of a module's .modinfo strings.
fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else { return Vec::new() };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(|s| s.replace('-', "_")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_is_read_from_modinfo() {
        let ko = b"junk\0name=virtio_console\0depends=virtio,virtio_ring\0vermagic=6.1\0";
        assert_eq!(module_depends(ko), ["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("virtio.ko"), b"\0depends=\0").unwrap();
        std::fs::write(k.join("virtio_ring.ko"), b"\0depends=virtio\0").unwrap();
        std::fs::write(k.join("virtio_console.ko"), b"\0depends=virtio,virtio_ring\0").unwrap();
        let order = module_load_order(d.path(), &["virtio_console"]).unwrap();
        let names: Vec<_> = order.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["virtio.ko", "virtio_ring.ko", "virtio_console.ko"]);
        assert!(module_load_order(d.path(), &["absent"]).is_err());
    }
}
