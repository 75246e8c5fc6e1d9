//! The client-facing port: where the client under test reaches the
//! "agent" (the harness, in front of the real one).
//!
//! - `unix-listen`: the harness listens on a unix socket, as QEMU's chardev
//!   socket (`server=on`) serves libvirt and Proxmox. One client at a time;
//!   a later one is accepted when the current one leaves.
//! - `pty`: a pseudo-terminal whose slave the client opens, as a client of a
//!   serial port does. The harness keeps the master and one slave fd, so the
//!   port stays raw and open across clients.
//!
//! Either way the port has serial-line semantics: the channel outlives
//! client connections, and bytes not yet delivered when a client leaves go
//! to the next one (the proxy keeps them while nobody is connected).

use crate::connection::Connection;
use crate::transcript::{Event, Transcript};
use crate::transport::{pty::Pty, Duplex, TransportKind};
use std::io;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use tokio::net::UnixListener;

/// The channel end the client under test is given as `{path}`.
#[derive(Debug)]
pub enum ClientPort {
    UnixListen { _dir: TempDir, path: PathBuf, listener: UnixListener },
    Pty { pty: Pty },
}

impl ClientPort {
    /// Open a port of `kind` (pty or unix-listen).
    pub fn open(kind: TransportKind) -> io::Result<ClientPort> {
        match kind {
            TransportKind::UnixListen => {
                let dir = tempfile::Builder::new().prefix("qga-harness-client-").tempdir()?;
                let path = dir.path().join("qga.sock");
                let listener = UnixListener::bind(&path)?;
                Ok(ClientPort::UnixListen { _dir: dir, path, listener })
            }
            TransportKind::Pty => Ok(ClientPort::Pty { pty: Pty::open()? }),
            TransportKind::Socketpair | TransportKind::VmVirtio | TransportKind::VmIsa => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a client under test is given a path: use --transport unix-listen or pty (the agent behind may run in a VM: --agent-transport vm-virtio)",
            )),
        }
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            ClientPort::UnixListen { .. } => TransportKind::UnixListen,
            ClientPort::Pty { .. } => TransportKind::Pty,
        }
    }

    /// `{path}` for the client.
    pub fn path(&self) -> &Path {
        match self {
            ClientPort::UnixListen { path, .. } => path,
            ClientPort::Pty { pty } => pty.slave_path(),
        }
    }

    /// The pty's master as the proxy's client link (taken once). None for
    /// unix-listen, whose links come from [`ClientPort::accept`].
    pub fn take_link(&mut self, transcript: &Transcript, max_buffered: usize) -> io::Result<Option<Connection>> {
        match self {
            ClientPort::Pty { pty } => {
                let master: Duplex = pty.take_master_for_proxy()?;
                Ok(Some(Connection::client_link(master, transcript.clone(), max_buffered)))
            }
            ClientPort::UnixListen { .. } => Ok(None),
        }
    }

    /// Wait for the next client connection (unix-listen). Never resolves on
    /// a pty, which has no connections.
    pub async fn accept(&self, transcript: &Transcript, max_buffered: usize) -> io::Result<Connection> {
        match self {
            ClientPort::UnixListen { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                transcript.event(Event::Connect { detail: "the client under test connected".into() });
                Ok(Connection::client_link(Duplex::socket(stream), transcript.clone(), max_buffered))
            }
            ClientPort::Pty { .. } => std::future::pending().await,
        }
    }
}
