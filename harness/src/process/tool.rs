//! Helper tools run to their end (ldd, objcopy, apt-cache, apt-get, dpkg):
//! like `Command::output` and `Command::status`, but each in a process
//! group of its own that [`super::kill_all`] knows about while it runs, so
//! that the process layer really holds every pid the harness starts.

use super::live;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// Run `cmd` to its end, capturing stdout and stderr (stdin is /dev/null).
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    run(cmd, Child::wait_with_output)
}

/// Run `cmd` to its end, its output going where ours goes.
pub fn status(cmd: &mut Command) -> io::Result<ExitStatus> {
    run(cmd, |mut c| c.wait())
}

fn run<T>(cmd: &mut Command, wait: impl FnOnce(Child) -> io::Result<T>) -> io::Result<T> {
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let pgid = child.id() as i32;
    live::add_group(pgid);
    let r = wait(child);
    // Whatever the tool left running in its group (a helper it forked) ends
    // with it: nothing the harness started outlives what it waited for.
    // The leader is reaped, so the group exists only while such a helper
    // does; otherwise this finds nothing (ESRCH).
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
    live::remove_group(pgid);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_read_like_std() {
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.status.code()), (&b"out\n"[..], &b"err\n"[..], Some(3)));
        assert!(status(&mut Command::new("true")).unwrap().success());
        assert_eq!(output(&mut Command::new("/nonexistent/tool")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_helper_the_tool_left_in_its_group_ends_with_it() {
        // The tool forks a sleeper that keeps its group and exits at once.
        let out = output(Command::new("sh").args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])).unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // Gone: killed (a zombie until init reaps it counts as ended).
        let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(), "the helper {pid} outlived the tool");
    }
}
