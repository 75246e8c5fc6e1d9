//! What the harness has alive right now: process groups and scratch
//! directories, registered while they exist. A Ctrl-C or SIGTERM handler
//! exits without running destructors, so [`kill_all`] does their work from
//! this registry: it kills every group, then removes every directory (QEMU's
//! sockets and console, an agent's state directory).

use super::group::{KILL_REAP_BOUND, REAP_POLL};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

#[derive(Default)]
struct Live {
    groups: Vec<i32>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live { groups: Vec::new(), dirs: Vec::new() });

/// A poisoned lock still holds a good list: the handler must run anyway.
fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn add_group(pgid: i32) {
    live().groups.push(pgid);
}

pub(super) fn remove_group(pgid: i32) {
    live().groups.retain(|&g| g != pgid);
}

/// A temporary directory that is removed when dropped and, if the harness
/// is stopped by a signal first, by [`kill_all`].
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// A new directory in the system's temp dir, named `prefix` and a
    /// random suffix.
    pub fn new(prefix: &str) -> std::io::Result<ScratchDir> {
        Ok(ScratchDir::adopt(tempfile::Builder::new().prefix(prefix).tempdir()?))
    }

    /// Register a directory made elsewhere.
    pub fn adopt(dir: tempfile::TempDir) -> ScratchDir {
        live().dirs.push(dir.path().to_owned());
        ScratchDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let path = self.dir.path();
        live().dirs.retain(|d| d != path);
        // The TempDir field removes the directory after this.
    }
}

/// SIGKILL every live group, reap it, then remove every scratch directory.
/// For a Ctrl-C or SIGTERM handler that is about to exit the process
/// without running destructors.
pub fn kill_all() {
    let groups = live().groups.clone();
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    let deadline = Instant::now() + KILL_REAP_BOUND;
    for g in groups {
        while Instant::now() < deadline {
            match waitpid(Pid::from_raw(-g), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(REAP_POLL),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        remove_group(g);
    }
    // After the kill, so that no process is still writing into them.
    let dirs = std::mem::take(&mut live().dirs);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
