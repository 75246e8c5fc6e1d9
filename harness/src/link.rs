//! The link: the byte channel between the harness and a peer, and the
//! connection the harness holds on it.
//!
//! Whatever the peer (a local process, an agent in a guest), the channel is
//! one of four things: a pty master, a socketpair end, a unix socket the
//! agent listens on, or QEMU's chardev socket. The link opens it, hands out
//! the agent's end (a path or stdio), holds the harness's [`Connection`]
//! with the deny-list installed, and reconnects where the channel allows.
//!
//! Why a layer of its own, between connection and agent: it is what the
//! agent is started *on* and what outlives it (a pty, a chardev socket), so
//! the peer takes it as an argument; and the session, above both, only
//! composes them. Reconnecting is the channel's business, not the peer's:
//! a unix socket needs the agent to accept again, a chardev socket is
//! QEMU's and is always there, a pty or socketpair has nothing to redo.

use crate::connection::{Connection, SendGuard};
use crate::transcript::{Event, Transcript};
use crate::transport::{Duplex, Transport, TransportKind};
use crate::wire::denylist::DenyList;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// How often to retry connect() while a unix-listen agent starts.
const CONNECT_RETRY: Duration = Duration::from_micros(200);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open the {kind} channel: {source}")]
    Transport { kind: TransportKind, source: io::Error },
    #[error("the agent did not accept a connection on {path} within {waited:?} (last error: {last_error})")]
    Connect { path: String, waited: Duration, last_error: String },
    /// The peer ended while the link waited for it to accept.
    #[error("the agent exited ({status}) before accepting a connection")]
    PeerExited { status: String },
}

/// One channel to a peer and the harness's connection on it.
#[derive(Debug)]
pub struct Link {
    transport: Transport,
    /// QEMU's chardev socket, once a guest holds the channel: reconnecting
    /// is connecting to it again.
    chardev: Option<PathBuf>,
    conn: Option<Connection>,
    /// The guard of every connection the link opens: one stream across
    /// reconnects, since an agent may keep its parser state for the next client.
    deny: DenyList,
    transcript: Transcript,
    max_buffered: usize,
}

impl Link {
    /// Open a channel of `kind`, with a connection already attached where
    /// the harness's end exists before any agent (pty, socketpair).
    pub fn open(kind: TransportKind, transcript: Transcript, max_buffered: usize) -> Result<Link, LinkError> {
        let transport = Transport::open(kind).map_err(|source| LinkError::Transport { kind, source })?;
        let mut link = Link { transport, chardev: None, conn: None, deny: DenyList::new(), transcript, max_buffered };
        link.attach_persistent()?;
        Ok(link)
    }

    /// Replace the channel with a fresh one of the same kind: whatever the
    /// old one held (a half-written burst, a backlog) stays behind.
    pub fn renew(&mut self) -> Result<(), LinkError> {
        self.conn = None;
        self.chardev = None;
        let kind = self.kind();
        self.transport = Transport::open(kind).map_err(|source| LinkError::Transport { kind, source })?;
        self.transcript.event(Event::Note { text: format!("a fresh {kind} channel") });
        self.deny = DenyList::new();
        self.attach_persistent()
    }

    fn attach_persistent(&mut self) -> Result<(), LinkError> {
        let kind = self.kind();
        let duplex = self.transport.take_duplex().map_err(|source| LinkError::Transport { kind, source })?;
        self.conn = duplex.map(|d| self.new_connection(d));
        Ok(())
    }

    /// Every connection the link makes is made here, with the deny-list
    /// installed: nothing the harness writes on it, from a case, the fuzzer
    /// or a forwarding client, can spell a denied command.
    fn new_connection(&self, duplex: Duplex) -> Connection {
        let mut conn = Connection::new(duplex, self.transcript.clone(), self.max_buffered);
        conn.set_guard(Box::new(self.deny.clone()));
        conn
    }

    pub fn kind(&self) -> TransportKind {
        self.transport.kind()
    }

    /// The path the agent opens or listens on (`{path}`), where there is one.
    pub fn agent_path(&self) -> Option<&Path> {
        self.transport.agent_path()
    }

    /// The fd the agent gets as stdin and stdout, when it is given no path.
    pub fn agent_stdio(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.transport.agent_stdio()
    }

    /// True when the harness's end outlives each agent instance.
    pub fn is_persistent(&self) -> bool {
        self.transport.is_persistent()
    }

    /// The connection, while there is one.
    pub fn conn(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut()
    }

    /// True when there is no connection or the peer closed it.
    pub fn is_closed(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.is_closed())
    }

    /// Drop the connection (a new agent instance needs a new one).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// A guest's channel: the harness's end of QEMU's chardev socket at
    /// `path`, connected before the guest ran.
    pub fn attach_chardev(&mut self, duplex: Duplex, path: PathBuf) {
        self.conn = Some(self.new_connection(duplex));
        self.chardev = Some(path);
    }

    /// Connect to an agent that listens, retrying (bounded by `within`)
    /// while it starts; `ended` says whether the peer has died meanwhile.
    pub async fn connect(&mut self, within: Duration, ended: &mut dyn FnMut() -> Option<String>) -> Result<(), LinkError> {
        let start = Instant::now();
        let deadline = start + within;
        let path = self.agent_path().map(|p| p.display().to_string()).unwrap_or_default();
        loop {
            match self.transport.connect().await {
                Ok(duplex) => {
                    self.transcript.event(Event::Connect { detail: format!("{path} after {:?}", start.elapsed()) });
                    self.conn = Some(self.new_connection(duplex));
                    return Ok(());
                }
                Err(e) => {
                    if let Some(status) = ended() {
                        return Err(LinkError::PeerExited { status });
                    }
                    if Instant::now() >= deadline {
                        self.transcript.event(Event::Timeout { waiting_for: format!("connect to {path}") });
                        return Err(LinkError::Connect { path, waited: start.elapsed(), last_error: e.to_string() });
                    }
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
            }
        }
    }

    /// Close the connection and open a new one to the same agent
    /// (unix-listen, or QEMU's chardev socket for a guest): a new client on
    /// a channel whose agent keeps its parser state. On a pty or socketpair
    /// there is nothing to reconnect.
    pub async fn reconnect(&mut self, within: Duration, ended: &mut dyn FnMut() -> Option<String>) -> Result<(), LinkError> {
        if let Some(path) = self.chardev.clone() {
            self.conn = None;
            self.transcript.event(Event::Note { text: "client disconnected".into() });
            let s = tokio::net::UnixStream::connect(&path).await.map_err(|e| LinkError::Connect {
                path: path.display().to_string(),
                waited: Duration::ZERO,
                last_error: e.to_string(),
            })?;
            self.transcript.event(Event::Connect { detail: format!("{} (QEMU chardev)", path.display()) });
            self.conn = Some(self.new_connection(Duplex::socket(s)));
            return Ok(());
        }
        if self.is_persistent() {
            return Ok(());
        }
        self.conn = None;
        self.transcript.event(Event::Note { text: "client disconnected".into() });
        self.connect(within, ended).await
    }
}

/// The deny-list guards every write on a link's connection: the connection
/// asks before it writes and reports what it wrote, so a denied command
/// split across writes is still caught.
impl SendGuard for DenyList {
    fn admit(&self, bytes: &[u8]) -> Result<(), String> {
        match self.check(bytes) {
            Some(name) => Err(name),
            None => Ok(()),
        }
    }

    fn sent(&mut self, bytes: &[u8]) {
        self.record(bytes);
    }
}
