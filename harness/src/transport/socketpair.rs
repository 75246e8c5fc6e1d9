//! A socketpair: the agent's stdin and stdout are one end of it.
//!
//! The harness holds both ends for the whole session, so the agent's end can
//! be handed to each new agent instance after a restart: the channel outlives
//! the agent, as the mission's byte channels do. A consequence is that the
//! harness never reads end-of-stream here; a dead agent shows as silence.

use super::Duplex;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

#[derive(Debug)]
pub struct SocketPair {
    harness: Option<OwnedFd>,
    agent: OwnedFd,
}

impl SocketPair {
    pub fn open() -> io::Result<SocketPair> {
        // Close-on-exec on both: the agent's end reaches the agent only
        // through dup2 onto its stdin/stdout, which clears the flag there.
        // The agent's end stays blocking, as agents expect of stdio.
        let (harness, agent) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        Ok(SocketPair { harness: Some(harness), agent })
    }

    pub fn agent_fd(&self) -> BorrowedFd<'_> {
        self.agent.as_fd()
    }

    pub(super) fn take_harness_end(&mut self) -> io::Result<Duplex> {
        let fd = self.harness.take().ok_or_else(|| io::Error::other("socketpair end already taken"))?;
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)?;
        Ok(Duplex::socket(tokio::net::UnixStream::from_std(std)?))
    }
}
