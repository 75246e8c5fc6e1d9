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
}
