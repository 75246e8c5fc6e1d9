//! A session: one channel, and the agent instances that come and go on it.
//!
//! The session composes the lower layers: a [`Link`] (the channel and the
//! connection on it), a [`Peer`] (the agent, started on the link, local or
//! in a guest) and the client's options. It waits until the agent answers a
//! sync, restarts the agent on the *same* channel (the situation the
//! protocol's resync exists for), and renews the channel when a case left
//! it unusable. Where the agent runs is the peer's business and how the
//! channel reconnects is the link's: nothing here branches on either.
//! Everything it does goes into the transcript.

use crate::budget::{Budgets, Mode};
use crate::agent::{AgentTemplate, HostGone, Peer, PeerError, SpawnError};
use crate::client::{diagnose, resync, ClientOptions, Profile, ResyncError, ResyncPolicy, Resynced};
use crate::connection::Connection;
use crate::link::{Link, LinkError};
use crate::transcript::{Event, Transcript};
use crate::transport::TransportKind;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// Each readiness round; between rounds the session checks that the agent is
/// still alive, so an agent that dies during start-up is reported at once.
const READY_ROUND: Duration = Duration::from_millis(100);

/// Everything needed to run one agent on one channel.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub template: AgentTemplate,
    pub transport: TransportKind,
    /// The client's options; its waits come from `budgets`.
    pub client: ClientOptions,
    /// Every time limit: the client's waits, the agent's start (only a
    /// broken agent gets near it: qemu-ga answers within 1.5–2.5 ms of
    /// spawn), SIGTERM's grace, a VM's boot. Set with
    /// [`SessionConfig::set_budgets`], which hands them on.
    pub budgets: Budgets,
    /// Unconsumed input the connection may hold.
    pub max_buffered: usize,
    /// For the VM transports: kernel, cache, accelerator, boot budget.
    pub vm: crate::vm::VmOptions,
}

impl SessionConfig {
    pub fn new(template: AgentTemplate, transport: TransportKind) -> SessionConfig {
        let mut config = SessionConfig {
            template,
            transport,
            client: ClientOptions::default(),
            budgets: Budgets::defaults(transport, Mode::Run),
            max_buffered: 1 << 20,
            vm: crate::vm::VmOptions::default(),
        };
        config.set_budgets(config.budgets);
        config
    }

    /// Use `budgets` for everything this session waits for.
    pub fn set_budgets(&mut self, budgets: Budgets) {
        self.budgets = budgets;
        self.client.set_budgets(&budgets);
        self.vm.boot_timeout = budgets.vm_boot;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("cannot open the {kind} channel: {source}")]
    Transport { kind: TransportKind, source: io::Error },
    #[error("unix-listen needs {{path}} in the agent template: the agent must be told where to listen")]
    NeedsPath,
    #[error("the agent exited ({status}) before {stage}")]
    AgentExited { status: String, stage: &'static str },
    #[error("the agent did not accept a connection on {path} within {waited:?} (last error: {last_error})")]
    Connect { path: String, waited: Duration, last_error: String },
    #[error("the agent did not answer a sync within {waited:?} of starting ({detail})")]
    NotReady { waited: Duration, detail: String },
    #[error("no agent is running")]
    NoAgent,
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
}

/// The link's errors keep the words they had when the session made them:
/// callers match on these variants.
impl From<LinkError> for SessionError {
    fn from(e: LinkError) -> SessionError {
        match e {
            LinkError::Transport { kind, source } => SessionError::Transport { kind, source },
            LinkError::Connect { path, waited, last_error } => SessionError::Connect { path, waited, last_error },
            LinkError::PeerExited { status } => SessionError::AgentExited { status, stage: "accepting a connection" },
        }
    }
}

impl From<PeerError> for SessionError {
    fn from(e: PeerError) -> SessionError {
        match e {
            PeerError::Spawn(e) => SessionError::Spawn(e),
            PeerError::Link(e) => e.into(),
            PeerError::Vm(e) => SessionError::Vm(e),
        }
    }
}

/// One channel and its current agent.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    transcript: Transcript,
    link: Link,
    peer: Peer,
}

impl Session {
    /// Open the channel, start the agent and probe it until it answers a
    /// sync in some mode ([`diagnose`]): the profile says which, and what is
    /// wrong with the reference way. The session's client is set up from it,
    /// so restarts and resyncs use what works. The transcript is the
    /// caller's, so it survives a failed start.
    pub async fn start(config: SessionConfig, transcript: Transcript) -> Result<(Session, Profile), SessionError> {
        let mut session = Session::launch(config, transcript, None).await?;
        let profile = session.probe().await?;
        profile.apply(&mut session.config.client);
        if session.peer.restart_is_slow() {
            // A restart, measured: cases that restart the agent resync
            // within the budget plus three of these.
            let t = Instant::now();
            session.restart().await?;
            let restart = t.elapsed();
            session.config.budgets.resync += restart * 3;
            session.config.client.resync.budget = session.config.budgets.resync;
            session.peer.set_restart_time(restart);
            session.transcript.event(Event::Note { text: format!("control-port restart to first sync: {restart:?}; resync budget now {:?}", session.config.client.resync.budget) });
        }
        Ok((session, profile))
    }

    /// Like [`Session::start`] for an agent whose profile is known (probed
    /// by an earlier process, say): open the channel, start the agent, wait
    /// until it answers a sync in the profile's mode. No probe.
    pub async fn start_known(config: SessionConfig, transcript: Transcript, profile: &Profile) -> Result<Session, SessionError> {
        let mut session = Session::launch(config, transcript, Some(profile)).await?;
        session.wait_ready().await?;
        Ok(session)
    }

    /// Open the channel and start the agent (with the client set up from
    /// `profile` first, when one is known).
    async fn launch(config: SessionConfig, transcript: Transcript, profile: Option<&Profile>) -> Result<Session, SessionError> {
        if config.transport == TransportKind::UnixListen && !config.template.uses_path() {
            return Err(SessionError::NeedsPath);
        }
        let link = Link::open(config.transport, transcript.clone(), config.max_buffered)?;
        let peer = Peer::new(config.template.clone(), config.vm.clone(), transcript.clone());
        let mut session = Session { config, transcript, link, peer };
        if let Some(p) = profile {
            p.apply(&mut session.config.client);
        }
        session.start_agent().await?;
        Ok(session)
    }

    /// The start-up probe; an agent that dies on the client's 0xFF is
    /// restarted once and probed without it.
    async fn probe(&mut self) -> Result<Profile, SessionError> {
        let start = Instant::now();
        let mark = self.transcript.mark();
        let budget = self.config.budgets.startup;
        let client = self.config.client.clone();
        let conn = self.link.conn().ok_or(SessionError::NoAgent)?;
        let peer = &mut self.peer;
        let mut gone = || !peer.is_started() || peer.exit_status().is_some();
        let failed = match diagnose::diagnose(conn, &client, budget, &mut gone).await {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        // Did it die on the 0xFF? Give a dying process a moment to be reaped.
        let Some(status) = self.wait_exit(Duration::from_millis(50)).await else {
            return Err(SessionError::NotReady { waited: start.elapsed(), detail: failed.detail });
        };
        self.transcript.event(Event::Note { text: format!("the agent exited ({status}) during the start-up probe: restarting it to probe without 0xFF") });
        let span = (mark, self.transcript.mark());
        // On a fresh channel: the old one still holds our later attempts,
        // 0xFF and all, which would kill the new agent too.
        self.fresh_channel().await?;
        let conn = self.link.conn().ok_or(SessionError::NoAgent)?;
        let peer = &mut self.peer;
        let mut gone = || !peer.is_started() || peer.exit_status().is_some();
        match diagnose::probe_without_ff(conn, &client, budget, span, &mut gone).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.check_alive("answering a sync")?;
                Err(SessionError::NotReady { waited: start.elapsed(), detail: format!("{}; {}", failed.detail, e.detail) })
            }
        }
    }

    /// The agent's exit status, if it exits within `grace`.
    async fn wait_exit(&mut self, grace: Duration) -> Option<String> {
        if !self.peer.is_started() {
            return None;
        }
        let until = Instant::now() + grace;
        loop {
            let status = self.peer.exit_status().map(str::to_owned);
            if status.is_some() || Instant::now() >= until {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Replace the channel and the agent: kill the agent, open a new
    /// channel (a new pty, socketpair or socket), start a new agent and
    /// resync. After a case that wedged or ran out of time, this keeps its
    /// leftovers (a half-written burst, a backlog) out of the next case.
    pub async fn renew(&mut self) -> Result<Resynced, SessionError> {
        self.fresh_channel().await?;
        self.wait_ready().await
    }

    /// Kill the agent, open a new channel and start a new agent on it.
    async fn fresh_channel(&mut self) -> Result<(), SessionError> {
        self.peer.discard().await;
        self.link.renew()?;
        self.start_agent().await
    }

    /// The session's client (set up from the start-up profile).
    pub fn client(&self) -> &ClientOptions {
        &self.config.client
    }

    pub fn client_mut(&mut self) -> &mut ClientOptions {
        &mut self.config.client
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    pub fn transport_kind(&self) -> TransportKind {
        self.link.kind()
    }

    /// The connection to the current agent.
    pub fn conn(&mut self) -> Result<&mut Connection, SessionError> {
        self.link.conn().ok_or(SessionError::NoAgent)
    }

    /// The agent, once an instance has been started.
    pub fn agent(&mut self) -> Option<&mut Peer> {
        self.peer.is_started().then_some(&mut self.peer)
    }

    /// What a report says about the VM (VM transports only).
    pub fn vm_info(&self) -> Option<crate::vm::VmRunInfo> {
        self.peer.vm_info(self.link.kind())
    }

    /// Whether what the agent runs on ended under it (not the agent: a
    /// guest's VM), and how. None for an agent on this host.
    pub async fn host_gone(&mut self) -> Option<HostGone> {
        self.peer.host_gone(self.link.is_closed()).await
    }

    /// True when the agent runs on an emulated CPU: how fast it answers a
    /// flood must be measured before the cases ([`Peer::is_emulated`]).
    pub fn is_emulated(&self) -> bool {
        self.peer.is_emulated()
    }

    /// The VM the agent runs in, for the VM transports.
    pub fn vm(&self) -> Option<&crate::vm::GuestVm> {
        self.peer.vm()
    }

    /// Start a new agent instance on the channel (connecting, for
    /// unix-listen). Does not wait for it to answer: see [`Session::wait_ready`].
    pub async fn start_agent(&mut self) -> Result<(), SessionError> {
        Ok(self.peer.start(&mut self.link, self.config.budgets.startup).await?)
    }

    fn check_alive(&mut self, stage: &'static str) -> Result<(), SessionError> {
        if !self.peer.is_started() {
            return Err(SessionError::NoAgent);
        }
        match self.peer.exit_status() {
            Some(status) => Err(SessionError::AgentExited { status: status.to_owned(), stage }),
            None => Ok(()),
        }
    }

    /// Resync until the agent answers, within the start-up timeout. Retries
    /// start at a millisecond: qemu-ga's isa-serial method flushes input that
    /// arrived before it opened the tty, so early syncs are simply lost.
    pub async fn wait_ready(&mut self) -> Result<Resynced, SessionError> {
        let start = Instant::now();
        let deadline = start + self.config.budgets.startup;
        let client = self.config.client.clone();
        // The first sync request of the whole start-up, not of its last round.
        let first = Some(self.transcript.mark());
        let mut attempts = 0;
        let mut discarded = 0;
        // The attempt timeout keeps growing across rounds.
        let mut attempt_timeout = Duration::from_millis(1);
        loop {
            let round = READY_ROUND.min(deadline.saturating_duration_since(Instant::now()));
            let policy = ResyncPolicy {
                first_attempt: attempt_timeout,
                // Grows to a reply timeout: an agent that writes slowly
                // (legal) must catch up with its backlog of earlier attempts.
                max_attempt: client.reply_timeout,
                budget: round,
                byte_budget: client.resync.byte_budget.saturating_sub(discarded),
            };
            let conn = self.link.conn().ok_or(SessionError::NoAgent)?;
            match resync(conn, &policy, &client).await {
                Ok(mut r) => {
                    // Report the whole start-up as one resync.
                    r.attempts += attempts;
                    r.bytes_discarded += discarded;
                    r.elapsed = start.elapsed();
                    r.first_seq = first.unwrap_or(r.first_seq);
                    return Ok(r);
                }
                Err(ResyncError::Timeout { attempts: a, bytes_discarded: d, .. }) => {
                    attempts += a;
                    discarded += d;
                    attempt_timeout = (attempt_timeout * 2u32.saturating_pow(a)).min(client.reply_timeout);
                }
                Err(ResyncError::Closed { .. }) => {
                    // A unix-listen agent closed our connection: it died, or
                    // it serves clients one at a time and dropped us.
                    self.check_alive("answering a sync")?;
                    return Err(SessionError::NotReady { waited: start.elapsed(), detail: "the agent closed the connection".into() });
                }
                Err(e) => {
                    self.check_alive("answering a sync")?;
                    return Err(SessionError::NotReady { waited: start.elapsed(), detail: e.to_string() });
                }
            }
            self.check_alive("answering a sync")?;
            if Instant::now() >= deadline {
                return Err(SessionError::NotReady {
                    waited: start.elapsed(),
                    detail: format!("{attempts} sync attempts, {discarded} bytes discarded"),
                });
            }
        }
    }

    /// Close the connection and open a new one to the same agent, where
    /// the channel allows it (see [`Link::reconnect`]).
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        let peer = &mut self.peer;
        Ok(self.link.reconnect(self.config.budgets.startup, &mut || peer.exit_status().map(str::to_owned)).await?)
    }

    /// SIGKILL the current agent (the channel stays open).
    pub async fn kill_agent(&mut self) {
        self.peer.kill().await;
    }

    /// SIGTERM the current agent, escalating to SIGKILL after the grace.
    pub async fn terminate_agent(&mut self) {
        self.peer.terminate(self.config.budgets.term_grace).await;
    }

    /// Kill the agent, start a new one on the same channel, and resync.
    pub async fn restart(&mut self) -> Result<Resynced, SessionError> {
        self.peer.restart(&mut self.link, self.config.budgets.startup).await?;
        self.wait_ready().await
    }

    /// Stop the agent (SIGTERM, then SIGKILL) and close the session.
    pub async fn shutdown(self) {
        self.peer.shutdown(self.config.budgets.term_grace).await;
    }
}
