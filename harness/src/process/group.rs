//! One process group the harness started (an agent, QEMU, a client under
//! test): spawned in its own process group, killed and reaped on every path
//! out (explicit kill, drop, panic unwinding, Ctrl-C through
//! [`super::kill_all`]).
//!
//! Why a process group: agents fork (qemu-ga runs helpers; a shell wrapper
//! forks the real agent), and killing only the pid we spawned would leave
//! the rest running. Why a child subreaper: a grandchild whose parent died
//! is reparented to us instead of to PID 1, which in a container may never
//! reap it; so `waitpid(-pgid)` reaps the whole group and the count of live
//! processes in it really goes to zero.
//!
//! Known limit: a descendant that leaves the group (setsid, setpgid) escapes
//! the group kill. Parent-death signal covers only the direct child, if the
//! harness itself is SIGKILLed.

use crate::transcript::{Event, StderrSource, Transcript};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};
use super::{live, ScratchDir};
use tempfile::TempDir;

/// Agent stderr kept per process; the rest is read (so the agent never
/// blocks on it) and dropped.
const STDERR_CAP: usize = 64 * 1024;
/// How often to poll for exit while waiting for a group to die. Reaping is
/// polled, not signal-driven, so that it works the same from async code, from
/// Drop and from a Ctrl-C handler.
pub(super) const REAP_POLL: Duration = Duration::from_micros(100);
/// Upper bound on waiting for SIGKILLed processes to be reaped. SIGKILL
/// cannot be caught; this only guards against a process stuck in the kernel.
pub(super) const KILL_REAP_BOUND: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("agent program not found: {0}")]
    NotFound(String),
    #[error("cannot start agent {program}: {source}")]
    Io { program: String, source: std::io::Error },
}

/// Where a spawned process's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrTo {
    /// Into the transcript, as `Stderr` events of this source (up to a cap).
    Transcript(StderrSource),
    /// /dev/null: for measurements that must not pay for a reader thread.
    Null,
}

/// A running (or exited, not yet dropped) process group, led by the
/// process the harness spawned.
#[derive(Debug)]
pub struct ProcessGroup {
    pid: Pid,
    argv: Vec<String>,
    transcript: Transcript,
    /// The leader's exit, once reaped.
    status: Option<String>,
    /// True once no process of the group is left to kill or reap.
    group_gone: bool,
    /// Removed after the group is dead (declared last: dropped last).
    _statedir: Option<ScratchDir>,
}

impl ProcessGroup {
    /// Start `argv[0]` with `argv[1..]` in a new process group. `stdio`, when
    /// given, becomes its stdin and stdout; stderr is captured into the
    /// transcript.
    pub fn spawn(
        argv: Vec<String>,
        stdio: Option<BorrowedFd<'_>>,
        statedir: Option<TempDir>,
        transcript: Transcript,
    ) -> Result<ProcessGroup, SpawnError> {
        ProcessGroup::spawn_with(argv, stdio, statedir, transcript, StderrTo::Transcript(StderrSource::Agent))
    }

    /// [`ProcessGroup::spawn`], choosing where stderr goes. The parent-death
    /// signal is tied to the calling thread: call it from a thread that
    /// outlives the agent (the runtime's, or a blocking task that drops the
    /// agent before it returns).
    pub fn spawn_with(
        argv: Vec<String>,
        stdio: Option<BorrowedFd<'_>>,
        statedir: Option<TempDir>,
        transcript: Transcript,
        stderr: StderrTo,
    ) -> Result<ProcessGroup, SpawnError> {
        ProcessGroup::spawn_inner(argv, stdio, statedir, transcript, stderr, false).map(|(p, _)| p)
    }

    /// A client under test (client mode): the same process-group handling
    /// as an agent, with stdin from /dev/null and stdout piped back to the
    /// harness, which reads the client's report from it.
    pub fn spawn_reporting(
        argv: Vec<String>,
        statedir: Option<TempDir>,
        transcript: Transcript,
    ) -> Result<(ProcessGroup, std::process::ChildStdout), SpawnError> {
        let (p, out) = ProcessGroup::spawn_inner(argv, None, statedir, transcript, StderrTo::Transcript(StderrSource::Client), true)?;
        Ok((p, out.expect("stdout was piped")))
    }

    fn spawn_inner(
        argv: Vec<String>,
        stdio: Option<BorrowedFd<'_>>,
        statedir: Option<TempDir>,
        transcript: Transcript,
        stderr: StderrTo,
        pipe_stdout: bool,
    ) -> Result<(ProcessGroup, Option<std::process::ChildStdout>), SpawnError> {
        static SUBREAPER: Once = Once::new();
        SUBREAPER.call_once(|| {
            // SAFETY: prctl with integer arguments has no memory effects.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        });
        let program = argv[0].clone();
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..]);
        let io_err = |source| SpawnError::Io { program: program.clone(), source };
        match stdio {
            Some(fd) => {
                cmd.stdin(Stdio::from(fd.try_clone_to_owned().map_err(io_err)?));
                cmd.stdout(Stdio::from(fd.try_clone_to_owned().map_err(io_err)?));
            }
            None => {
                cmd.stdin(Stdio::null());
                cmd.stdout(if pipe_stdout { Stdio::piped() } else { Stdio::null() });
            }
        }
        cmd.stderr(match stderr {
            StderrTo::Transcript(_) => Stdio::piped(),
            StderrTo::Null => Stdio::null(),
        });
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // If the harness dies without running any destructor, the
                // agent goes too. Tied to the spawning thread: spawn from a
                // thread that lives as long as the agent should.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound(program.clone()),
            _ => io_err(e),
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        live::add_group(pid.as_raw());
        transcript.event(Event::Spawn { pid: pid.as_raw(), argv: argv.clone() });
        if let (Some(stderr), StderrTo::Transcript(source)) = (child.stderr.take(), stderr) {
            let t = transcript.clone();
            // A plain thread: it blocks in read() until every process holding
            // the pipe is gone, which the group kill guarantees.
            let _ = std::thread::Builder::new()
                .name(format!("{}-stderr-{pid}", source.name()))
                .spawn(move || capture_stderr(stderr, t, source));
        }
        let stdout = child.stdout.take();
        // `child` is dropped without wait(): reaping is ours (waitpid below).
        drop(child);
        Ok((ProcessGroup { pid, argv, transcript, status: None, group_gone: false, _statedir: statedir.map(ScratchDir::adopt) }, stdout))
    }

    /// The agent's pid, which is also its process group id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The leader's exit status if it has exited (non-blocking).
    pub fn exit_status(&mut self) -> Option<&str> {
        if self.status.is_none() {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(ws) => self.record_exit(ws),
                Err(Errno::ECHILD) => self.status = Some("already reaped".into()),
                Err(_) => {}
            }
        }
        self.status.as_deref()
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    fn record_exit(&mut self, ws: WaitStatus) {
        let status = describe(ws);
        if let Some(pid) = ws.pid() {
            self.transcript.event(Event::Exit { pid: pid.as_raw(), status: status.clone() });
            if pid == self.pid {
                self.status = Some(status);
            }
        }
    }

    fn signal_group(&mut self, sig: Signal) {
        if self.group_gone {
            return;
        }
        self.transcript.event(Event::Signal { pid: self.pid.as_raw(), signal: sig.as_str().into() });
        if killpg(self.pid, sig) == Err(Errno::ESRCH) {
            // Nobody left in the group; reaping below will confirm.
        }
    }

    /// Reap whatever of the group has exited; true when nothing is left.
    fn reap_some(&mut self) -> bool {
        if self.group_gone {
            return true;
        }
        loop {
            match waitpid(Pid::from_raw(-self.pid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(ws) => self.record_exit(ws),
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // ECHILD: no child of ours is left in the group. Being
                    // the subreaper, that includes orphaned grandchildren.
                    self.group_gone = true;
                    live::remove_group(self.pid.as_raw());
                    return true;
                }
            }
        }
    }

    /// SIGKILL the whole group and reap it.
    pub async fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        self.wait_gone(KILL_REAP_BOUND).await;
    }

    /// SIGTERM the group; after `grace`, SIGKILL what is left. qemu-ga 7.2
    /// can miss a SIGTERM that arrives early in its start-up (protocol.md
    /// §4), so the escalation is not optional.
    pub async fn terminate(&mut self, grace: Duration) {
        self.signal_group(Signal::SIGTERM);
        if !self.wait_gone(grace).await {
            self.kill().await;
        }
    }

    /// Wait, bounded, for the whole group to be reaped.
    async fn wait_gone(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            if self.reap_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // A tokio sleep of REAP_POLL rounds up to the timer's millisecond,
            // and a killed agent is gone within tens of microseconds (the
            // fuzzer kills one in every schedule): poll on a blocking thread.
            // It only looks (WNOWAIT); reaping stays here, so a wait given up
            // half-way loses no exit status.
            let pgid = self.pid;
            let _ = tokio::task::spawn_blocking(move || wait_reapable(pgid, deadline)).await;
        }
    }

    fn kill_blocking(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let deadline = Instant::now() + KILL_REAP_BOUND;
        while !self.reap_some() && Instant::now() < deadline {
            std::thread::sleep(REAP_POLL);
        }
    }
}

/// Block until a process of group `pgid` can be reaped, none is left, or
/// `deadline` passes; reaps nothing.
fn wait_reapable(pgid: Pid, deadline: Instant) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::PGid(pgid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            _ => return,
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(REAP_POLL);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.group_gone {
            self.kill_blocking();
        }
    }
}

fn describe(ws: WaitStatus) -> String {
    match ws {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("killed by {}{}", sig.as_str(), if core { " (core dumped)" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

fn capture_stderr(mut pipe: std::process::ChildStderr, transcript: Transcript, source: StderrSource) {
    let mut kept = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if kept < STDERR_CAP {
                    let take = n.min(STDERR_CAP - kept);
                    kept += take;
                    let mut text = String::from_utf8_lossy(&buf[..take]).into_owned();
                    if kept == STDERR_CAP {
                        text.push_str(&format!(" [{} stderr cap reached; the rest is dropped]", source.name()));
                    }
                    transcript.event(Event::Stderr { source, text });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::live_in_group;
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn kill_reaps_forked_children_too() {
        let t = Transcript::default();
        let mut p = ProcessGroup::spawn(sh("sleep 30 & sleep 30 & exec sleep 30"), None, None, t.clone()).unwrap();
        let pgid = p.pid();
        // Wait until the shell has forked its children.
        let deadline = Instant::now() + Duration::from_secs(2);
        while live_in_group(pgid).len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(live_in_group(pgid).len(), 3, "{}", t.render(0, None));
        p.kill().await;
        assert!(live_in_group(pgid).is_empty());
        assert!(p.exit_status().unwrap().contains("SIGKILL"));
    }

    #[tokio::test]
    async fn terminate_escalates_when_sigterm_is_ignored() {
        let t = Transcript::default();
        let mut p = ProcessGroup::spawn(sh("trap '' TERM; echo ready >&2; exec sleep 30"), None, None, t.clone()).unwrap();
        let pgid = p.pid();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !t.render(0, None).contains("agent stderr: ready") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = Instant::now();
        p.terminate(Duration::from_millis(50)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(live_in_group(pgid).is_empty());
        let log = t.render(0, None);
        assert!(log.contains("SIGTERM") && log.contains("SIGKILL"), "{log}");
    }

    #[test]
    fn drop_and_panic_leave_nothing_running() {
        let pgid = {
            let p = ProcessGroup::spawn(sh("sleep 30 & exec sleep 30"), None, None, Transcript::default()).unwrap();
            p.pid()
        };
        assert!(live_in_group(pgid).is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        let r = std::panic::catch_unwind(move || {
            let p = ProcessGroup::spawn(sh("sleep 30 & exec sleep 30"), None, None, Transcript::default()).unwrap();
            tx.send(p.pid()).unwrap();
            panic!("test panic with a live agent");
        });
        assert!(r.is_err());
        let pgid = rx.recv().unwrap();
        assert!(live_in_group(pgid).is_empty());
    }

    #[test]
    fn stderr_can_go_to_null() {
        let t = Transcript::default();
        let mut p = ProcessGroup::spawn_with(sh("echo noise >&2; exit 0"), None, None, t.clone(), StderrTo::Null).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while p.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.exit_status(), Some("exit status 0"));
        assert!(!t.render(0, None).contains("agent stderr"), "{}", t.render(0, None));
    }

    #[test]
    fn missing_program_is_not_found() {
        let e = ProcessGroup::spawn(vec!["/nonexistent/agent".into()], None, None, Transcript::default()).unwrap_err();
        assert!(matches!(e, SpawnError::NotFound(_)), "{e}");
    }

    #[test]
    fn statedir_is_removed_with_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let p = ProcessGroup::spawn(sh("exec sleep 30"), None, Some(dir), Transcript::default()).unwrap();
        assert!(path.exists());
        drop(p);
        assert!(!path.exists());
    }
}
