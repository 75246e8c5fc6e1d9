//! The floors: what the least any client can do costs on the same channel,
//! with plain syscalls and none of the harness's layers.
//!
//! - a round trip: the request written and the reply read on the session's
//!   own fd;
//! - start-up: spawn to the first answered sync, with a blocking sync loop
//!   (the agent is still spawned, killed and reaped by the agent process
//!   module, as always).

use crate::process::{ProcessGroup, StderrTo};
use crate::session::SessionConfig;
use crate::transcript::Transcript;
use crate::transport::Transport;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

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

/// The median of `spawns` start-up floors ([`raw_startup`], blocking), or
/// None if none succeeded or none was asked for.
pub fn median_startup(config: &SessionConfig, spawns: usize) -> Option<Duration> {
    let mut v: Vec<Duration> = (0..spawns).filter_map(|_| raw_startup(config).ok()).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Spawn the agent and run a blocking sync loop, no harness layers: the
/// floor for start-up time on this transport, from spawn to the first
/// answered sync. The agent is an [`ProcessGroup`] like any other (own
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
    let sync = crate::client::resync::sync_request_bytes(1);
    let quiet = Transcript::new(crate::transcript::Caps { bytes: 0, entries: 0 });
    let t = Instant::now();
    let agent = ProcessGroup::spawn_with(argv, stdio, Some(statedir), quiet, StderrTo::Null).map_err(|e| e.to_string())?;
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
