//! The agent as a peer: whatever runs the agent, the session can start it,
//! stop it (with a signal) and ask whether it is alive.
//!
//! - [`Peer::Local`]: a process on this host ([`AgentProcess`]).
//! - [`Peer::Guest`]: an agent inside a VM, behind the guest init's control
//!   port; stopping it leaves the VM (and so the channel) up.

use super::AgentProcess;
use crate::vm::GuestVm;
use std::time::Duration;

#[derive(Debug)]
pub enum Peer {
    Local(AgentProcess),
    Guest(Box<GuestVm>),
}

impl Peer {
    /// How the agent ended, if it has (non-blocking). For a guest agent,
    /// the end of the VM counts too.
    pub fn exit_status(&mut self) -> Option<&str> {
        match self {
            Peer::Local(p) => p.exit_status(),
            Peer::Guest(vm) => vm.exit_status(),
        }
    }

    /// The process group on this host that holds the agent: the agent's own
    /// (its pid), or, for a guest agent, QEMU's.
    pub fn pid(&self) -> i32 {
        match self {
            Peer::Local(p) => p.pid(),
            Peer::Guest(vm) => vm.qemu_pid(),
        }
    }

    /// SIGKILL the agent (its process group) and wait, bounded, for its end.
    pub async fn kill(&mut self) {
        match self {
            Peer::Local(p) => p.kill().await,
            Peer::Guest(vm) => vm.stop(None).await,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        match self {
            Peer::Local(p) => p.terminate(grace).await,
            Peer::Guest(vm) => vm.stop(Some(grace)).await,
        }
    }
}
