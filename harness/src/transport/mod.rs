//! The transport layer: moves bytes between the harness and an agent, and
//! never looks inside them.
//!
//! Three channels, one interface: whatever the transport, the rest of the
//! harness gets a [`Duplex`] (a tokio byte stream it can read and write at
//! the same time) and the agent gets either a path (`{path}` in its command
//! template) or its stdin/stdout.
//!
//! - [`pty`]: a pseudo-terminal pair; the harness keeps the master, which is
//!   the host side of a serial port and outlives any one agent.
//! - [`socketpair`]: the agent's stdin/stdout is one end of a socketpair.
//! - [`unix`]: the agent listens on a unix socket; the harness connects.
//! - `vm-virtio`, `vm-isa`: the agent runs in a QEMU guest; the harness
//!   connects to QEMU's chardev socket for the guest's virtio-serial port or
//!   second ISA serial port ([`crate::vm`] boots the guest and owns that link).

pub mod pty;
pub mod socketpair;
pub mod unix;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Which kind of channel joins the harness and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Pty,
    Socketpair,
    UnixListen,
    VmVirtio,
    VmIsa,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Pty => "pty",
            TransportKind::Socketpair => "socketpair",
            TransportKind::UnixListen => "unix-listen",
            TransportKind::VmVirtio => "vm-virtio",
            TransportKind::VmIsa => "vm-isa",
        })
    }
}

impl TransportKind {
    pub const ALL: [TransportKind; 5] =
        [TransportKind::Pty, TransportKind::Socketpair, TransportKind::UnixListen, TransportKind::VmVirtio, TransportKind::VmIsa];

    /// The transports that run the agent on this host (no QEMU needed).
    pub const LOCAL: [TransportKind; 3] = [TransportKind::Pty, TransportKind::Socketpair, TransportKind::UnixListen];

    /// The VM device, for the transports that run the agent in a guest.
    pub fn vm(self) -> Option<VmKind> {
        match self {
            TransportKind::VmVirtio => Some(VmKind::Virtio),
            TransportKind::VmIsa => Some(VmKind::Isa),
            _ => None,
        }
    }

    /// What a channel of this kind can do, for cases that need it (see
    /// [`ChannelCapability`]).
    pub fn has(self, cap: ChannelCapability) -> bool {
        use ChannelCapability::*;
        use TransportKind::*;
        match cap {
            // The harness's end outlives the agent: bytes either side left
            // in the channel are there for the next agent.
            PersistentChannel => matches!(self, Pty | Socketpair | VmVirtio | VmIsa),
            // The harness can hang up and connect again while the agent
            // runs on (a listening socket, or QEMU's chardev socket).
            Reconnect => matches!(self, UnixListen | VmVirtio | VmIsa),
            // The agent runs on this host: signals and kill-after-N-bytes
            // land within microseconds of the harness's decision.
            LocalProcess => matches!(self, Pty | Socketpair | UnixListen),
        }
    }
}

/// Which emulated device carries the agent's channel, for the transports
/// that run the agent in a guest ([`crate::vm`] boots it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmKind {
    /// A virtserialport named org.qemu.guest_agent.0 on virtio-serial-pci.
    Virtio,
    /// The guest's /dev/ttyS1, an emulated 16550A.
    Isa,
}

impl fmt::Display for VmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmKind::Virtio => "virtio-serial",
            VmKind::Isa => "ISA serial",
        })
    }
}

/// What a case may need of the channel, instead of naming transports: a
/// case runs wherever its capabilities hold, so a new transport takes the
/// cases it can serve without editing the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelCapability {
    PersistentChannel,
    Reconnect,
    LocalProcess,
}

impl ChannelCapability {
    /// What it means, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            ChannelCapability::PersistentChannel => "a channel that outlives the agent (bytes left in it reach the next agent)",
            ChannelCapability::Reconnect => "a client that can hang up and connect again while the agent runs",
            ChannelCapability::LocalProcess => "an agent process on this host",
        }
    }

    /// The transports that have it, for reports.
    pub fn transports(self) -> Vec<TransportKind> {
        TransportKind::ALL.into_iter().filter(|t| t.has(self)).collect()
    }
}

/// How long to wait before reading a pty master again after EIO. EIO there
/// means no agent holds the slave open (between a kill and a restart); it is
/// not the end of the run, and epoll cannot tell us when an agent attaches.
const PTY_DETACHED_POLL: Duration = Duration::from_micros(500);

/// The harness's end of a channel: a non-blocking byte stream that can be
/// read and written concurrently through `&self`, so a writer can keep
/// draining input while its own write is blocked.
#[derive(Debug)]
pub struct Duplex {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Socket(UnixStream),
    Pty(AsyncFd<OwnedFd>),
}

impl Duplex {
    pub(crate) fn socket(s: UnixStream) -> Duplex {
        Duplex { inner: Inner::Socket(s) }
    }

    /// Connect to a unix socket at `path` (a client's end, e.g. the
    /// reference client program run as a client under test).
    pub async fn connect_unix(path: &Path) -> io::Result<Duplex> {
        Ok(Duplex::socket(UnixStream::connect(path).await?))
    }

    /// Open a serial device (a pty slave) as a client does: read-write,
    /// not as the controlling terminal, in raw mode.
    pub fn open_tty(path: &Path) -> io::Result<Duplex> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        use std::os::fd::FromRawFd;
        let raw = open(path, OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())?;
        // SAFETY: `open` just returned this fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut t = tcgetattr(&fd)?;
        cfmakeraw(&mut t);
        tcsetattr(&fd, SetArg::TCSANOW, &t)?;
        Duplex::pty(fd)
    }

    /// Wrap a pty master; `fd` must already be non-blocking.
    pub(crate) fn pty(fd: OwnedFd) -> io::Result<Duplex> {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until it
        // deregisters and closes it; nothing else can replace or close it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)? };
        Ok(Duplex { inner: Inner::Pty(fd) })
    }

    /// Read some bytes. `Ok(0)` is end of stream (a socket peer closed); a pty
    /// never ends: while no agent is attached this keeps waiting.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Socket(s) => loop {
                s.readable().await?;
                match s.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Inner::Pty(fd) => loop {
                let mut guard = fd.readable().await?;
                match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)) {
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                        guard.clear_ready();
                        drop(guard);
                        tokio::time::sleep(PTY_DETACHED_POLL).await;
                    }
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            },
        }
    }

    /// Write some bytes; returns how many were taken.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Socket(s) => loop {
                s.writable().await?;
                match s.try_write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Inner::Pty(fd) => loop {
                let mut guard = fd.writable().await?;
                match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from)) {
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            },
        }
    }

    /// The underlying fd, for measurements that bypass the harness (the
    /// benchmark's raw floor). Reading or writing it directly bypasses the
    /// transcript.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match &self.inner {
            Inner::Socket(s) => s.as_raw_fd(),
            Inner::Pty(fd) => fd.get_ref().as_raw_fd(),
        }
    }

    /// Read whatever is available right now without waiting.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Socket(s) => s.try_read(buf),
            Inner::Pty(fd) => match nix::unistd::read(fd.get_ref().as_raw_fd(), buf) {
                Err(nix::errno::Errno::EIO) => Err(io::ErrorKind::WouldBlock.into()),
                r => r.map_err(io::Error::from),
            },
        }
    }
}

/// An open channel: the harness's side plus what the agent is given.
#[derive(Debug)]
pub enum Transport {
    Pty(pty::Pty),
    Socketpair(socketpair::SocketPair),
    UnixListen(unix::UnixListen),
    /// The agent's channel is QEMU's chardev socket, which exists once the
    /// guest boots: the peer attaches it to the link then.
    Vm(TransportKind),
}

impl Transport {
    /// Create a fresh channel of the given kind.
    pub fn open(kind: TransportKind) -> io::Result<Transport> {
        Ok(match kind {
            TransportKind::Pty => Transport::Pty(pty::Pty::open()?),
            TransportKind::Socketpair => Transport::Socketpair(socketpair::SocketPair::open()?),
            TransportKind::UnixListen => Transport::UnixListen(unix::UnixListen::new()?),
            TransportKind::VmVirtio | TransportKind::VmIsa => Transport::Vm(kind),
        })
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            Transport::Pty(_) => TransportKind::Pty,
            Transport::Socketpair(_) => TransportKind::Socketpair,
            Transport::UnixListen(_) => TransportKind::UnixListen,
            Transport::Vm(kind) => *kind,
        }
    }

    /// The path the agent opens or listens on (`{path}`), where there is one.
    pub fn agent_path(&self) -> Option<&Path> {
        match self {
            Transport::Pty(p) => Some(p.slave_path()),
            Transport::Socketpair(_) => None,
            Transport::UnixListen(u) => Some(u.path()),
            Transport::Vm(_) => None,
        }
    }

    /// The fd to give the agent as stdin and stdout when its template has no
    /// `{path}`. None for unix-listen, where the agent must be told a path.
    pub fn agent_stdio(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Transport::Pty(p) => Some(p.slave_fd()),
            Transport::Socketpair(s) => Some(s.agent_fd()),
            Transport::UnixListen(_) | Transport::Vm(_) => None,
        }
    }

    /// True when the harness's end survives agent restarts (pty,
    /// socketpair); false when each agent instance needs a new connection.
    pub fn is_persistent(&self) -> bool {
        self.kind().has(ChannelCapability::PersistentChannel)
    }

    /// The harness's end of a persistent channel. Taken once: the connection
    /// owns it from then on. None for unix-listen (use [`Transport::connect`]).
    pub fn take_duplex(&mut self) -> io::Result<Option<Duplex>> {
        match self {
            Transport::Pty(p) => p.take_master().map(Some),
            Transport::Socketpair(s) => s.take_harness_end().map(Some),
            Transport::UnixListen(_) | Transport::Vm(_) => Ok(None),
        }
    }

    /// One connection attempt (unix-listen only): fails at once with
    /// NotFound / ConnectionRefused while the agent is not yet listening.
    pub async fn connect(&self) -> io::Result<Duplex> {
        match self {
            Transport::UnixListen(u) => u.connect().await,
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "only unix-listen connects")),
        }
    }
}
