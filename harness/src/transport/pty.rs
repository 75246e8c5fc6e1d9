//! A pseudo-terminal as a serial port.
//!
//! The harness keeps the master: it is the host side of the port and stays
//! open across agent restarts, so bytes left in it by a killed agent are
//! still there for the next conversation, as on a real virtio-serial or
//! isa-serial channel.
//!
//! The harness also keeps one slave fd open for the whole session. Linux
//! resets a pty's termios when the last slave fd closes, so without it the
//! raw mode set here would be lost at every agent restart and an agent that
//! leaves termios alone (qemu-ga's virtio-serial method, protocol.md §4)
//! would see echo, `\r\n` translation and line editing. It also keeps the
//! master from reading EIO between agents.

use super::Duplex;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Pty {
    master: Option<OwnedFd>,
    slave: OwnedFd,
    slave_path: PathBuf,
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

impl Pty {
    /// Open a pty pair in raw mode.
    pub fn open() -> io::Result<Pty> {
        let pair = nix::pty::openpty(None, None)?;
        // Neither fd may leak into agents except as their stdin/stdout.
        set_cloexec(&pair.master)?;
        set_cloexec(&pair.slave)?;
        let mut t = tcgetattr(&pair.slave)?;
        cfmakeraw(&mut t);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &t)?;
        let flags = OFlag::from_bits_truncate(fcntl(pair.master.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(pair.master.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let slave_path = nix::unistd::ttyname(&pair.slave)?;
        Ok(Pty { master: Some(pair.master), slave: pair.slave, slave_path })
    }

    /// The slave's path (`/dev/pts/N`), for agents that open a tty themselves.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The slave fd, for agents that serve on stdin/stdout.
    pub fn slave_fd(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    /// The master, for the client-mode proxy's port (which opens its own pty).
    pub fn take_master_for_proxy(&mut self) -> io::Result<Duplex> {
        self.take_master()
    }

    pub(super) fn take_master(&mut self) -> io::Result<Duplex> {
        let master = self.master.take().ok_or_else(|| io::Error::other("pty master already taken"))?;
        Duplex::pty(master)
    }
}
