//! The process layer, at the bottom of everything that runs programs: it
//! owns every pid the harness starts (agents, QEMU, clients under test) and
//! every scratch directory they use. Nothing else in the harness calls kill
//! or wait.
//!
//! - [`group`]: one process group: spawn, signal, reap ([`ProcessGroup`]).
//! - [`live`]: what is alive right now, so a signal handler that exits
//!   without running destructors can still kill every group and remove
//!   every scratch directory ([`kill_all`]).
//! - [`signals`]: Ctrl-C, SIGTERM and a closed stdout end the harness
//!   through [`kill_all`] ([`signals::stop_on_signal`],
//!   [`signals::quiet_on_broken_pipe`]).
//! - [`tool`]: helper tools run to their end (ldd, apt-get), each in a
//!   group [`kill_all`] knows about.
//! - [`find_program`]: where a program name resolves, for the CLI's check
//!   and the VM image.
//!
//! nextest keeps its process handling in one place for the same reason: a
//! pid handled in two layers is a leak waiting for the path between them.

pub mod group;
pub mod live;
pub mod signals;
pub mod tool;

pub use group::{ProcessGroup, SpawnError, StderrTo};
pub use live::{kill_all, ScratchDir};

use std::path::PathBuf;

/// A program as an absolute path: as given when it names one, else found
/// on PATH and then in `extra` directories. One lookup for the CLI's check
/// and for the VM image, which holds the agent at this path.
pub fn find_program(program: &str, extra: &[&str]) -> Option<PathBuf> {
    if program.contains('/') {
        return std::path::absolute(program).ok().filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(extra.iter().map(PathBuf::from)).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Pids of processes in group `pgid` that are alive (not zombies), read from
/// /proc. Tests use it to prove that nothing leaked.
pub fn live_in_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // comm may contain spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[0] != "X" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}
