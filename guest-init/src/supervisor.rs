//! The agent under the init: one instance at a time, in its own process
//! group, its stderr and exit reported on the control port.

use crate::protocol::{hex, stamped, Command};
use std::fs::File;
use std::io::{Read, Write};
use std::os::raw::c_int;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

/// Agent stderr forwarded per instance; beyond it, read and dropped.
const STDERR_CAP: usize = 64 * 1024;

#[derive(Default)]
struct State {
    /// The current instance and, once reaped, how it ended.
    pid: Option<i32>,
    exited: Option<String>,
}

#[derive(Clone)]
pub struct Supervisor {
    out: Arc<Mutex<File>>,
    /// The origin of the stamps on every line sent.
    start: Instant,
    state: Arc<Mutex<State>>,
}

impl Supervisor {
    pub fn new(control: File) -> Supervisor {
        let sup = Supervisor { out: Arc::new(Mutex::new(control)), start: Instant::now(), state: Arc::default() };
        let reaper = sup.clone();
        std::thread::spawn(move || reaper.reap());
        sup
    }

    /// One line to the host, stamped now. Writes are whole lines under the
    /// lock, so events from the reaper and stderr threads never interleave.
    pub fn send(&self, line: &str) {
        let line = stamped(self.start.elapsed().as_micros() as u64, line);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(format!("{line}\n").as_bytes());
    }

    pub fn handle(&self, cmd: Command) {
        match cmd {
            Command::Start { statedir, argv } => match self.start(&statedir, &argv) {
                Ok(pid) => self.send(&format!("started {pid}")),
                Err(e) => self.send(&format!("error {}", hex(e.as_bytes()))),
            },
            Command::Kill => {
                self.kill(9);
                self.send("ok");
            }
            Command::Term => {
                self.kill(15);
                self.send("ok");
            }
            Command::Status => {
                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let line = match (st.pid, &st.exited) {
                    (None, _) => "none".to_owned(),
                    (Some(pid), None) => format!("running {pid}"),
                    (Some(pid), Some(how)) => format!("exited {pid} {how}"),
                };
                drop(st);
                self.send(&line);
            }
            Command::Poweroff => unreachable!("main handles poweroff"),
        }
    }

    fn start(&self, statedir: &str, argv: &[String]) -> Result<i32, String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pid.is_some() && st.exited.is_none() {
            return Err("an agent is already running".into());
        }
        if let Some(old) = st.pid {
            // What the last instance left in its group (a daemon's children).
            // SAFETY: kill(2) on a process group we created.
            unsafe { kill(-old, 9) };
        }
        // A fresh, empty state directory per instance, as on the host.
        let _ = std::fs::remove_dir_all(statedir);
        std::fs::create_dir_all(statedir).map_err(|e| format!("create {statedir}: {e}"))?;
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
        let pid = child.id() as i32;
        st.pid = Some(pid);
        st.exited = None;
        if let Some(err) = child.stderr.take() {
            let sup = self.clone();
            std::thread::spawn(move || sup.forward_stderr(pid, err));
        }
        // Reaped by the reaper thread (waitpid(-1)), never through `child`.
        drop(child);
        Ok(pid)
    }

    /// Signal the current instance's process group, whether or not its
    /// leader still lives: a daemonising agent's leader exits at once and
    /// leaves its children in the group.
    pub fn kill(&self, sig: c_int) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = st.pid {
            // SAFETY: kill(2) on a process group we created.
            unsafe { kill(-pid, sig) };
        }
    }

    fn forward_stderr(&self, pid: i32, mut err: std::process::ChildStderr) {
        let mut sent = 0;
        let mut buf = [0u8; 4096];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) if sent < STDERR_CAP => {
                    let take = n.min(STDERR_CAP - sent);
                    sent += take;
                    self.send(&format!("stderr {pid} {}", hex(&buf[..take])));
                    if sent == STDERR_CAP {
                        self.send(&format!("stderr {pid} {}", hex(b"\n[qga-guest-init: stderr cap reached; the rest is dropped]\n")));
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// PID 1 reaps every orphan; the agent's own exit is reported.
    fn reap(&self) {
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { waitpid(-1, &mut status, 0) };
            if pid <= 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let how = if status & 0x7f == 0 { format!("code {}", (status >> 8) & 0xff) } else { format!("signal {}", status & 0x7f) };
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.pid == Some(pid) {
                st.exited = Some(how.clone());
                drop(st);
                self.send(&format!("exit {pid} {how}"));
            }
        }
    }
}
