//! A session: one channel, and the agent instances that come and go on it.
//!
//! The session joins the lower layers: it opens the transport, spawns the
//! agent from its template (handing it `{path}` or its stdio), connects where
//! the transport needs it, and waits until the agent answers a sync. It
//! restarts the agent on the *same* channel, which is the situation the
//! protocol's resync exists for. Everything it does goes into the transcript.

use crate::budget::{Budgets, Mode};
use crate::agent::{AgentProcess, AgentTemplate, Peer, SpawnError};
use crate::client::{diagnose, resync, ClientOptions, Profile, ResyncError, ResyncPolicy, Resynced};
use crate::connection::Connection;
use crate::transcript::{Event, Transcript};
use crate::transport::{Transport, TransportKind};
use crate::wire::denylist::DenyList;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// How often to retry connect() while a unix-listen agent starts.
const CONNECT_RETRY: Duration = Duration::from_micros(200);
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

/// `conn` with the deny-list installed: nothing the harness writes on it,
/// from a case, the fuzzer or a forwarding client, can spell a denied command.
fn guarded(mut conn: Connection, deny: &DenyList) -> Connection {
    conn.set_guard(Box::new(deny.clone()));
    conn
}

/// One channel and its current agent.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    transcript: Transcript,
    transport: Transport,
    conn: Option<Connection>,
    agent: Option<Peer>,
    instances: u32,
    /// For the VM transports: the kernel and image, prepared at the first
    /// boot and reused by every later one (a fresh channel is a new VM).
    vm_prepared: Option<crate::vm::Prepared>,
    /// The measured control-port restart (VM transports, [`Session::start`]).
    restart_time: Option<Duration>,
    /// The guard of every connection the session opens: one stream across
    /// reconnects, since an agent may keep its parser state for the next client.
    deny: DenyList,
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
        if session.vm().is_some() {
            // A control-port restart, measured: cases that restart the
            // agent resync within the budget plus three of these.
            let t = Instant::now();
            session.restart().await?;
            let restart = t.elapsed();
            session.config.budgets.resync += restart * 3;
            session.config.client.resync.budget = session.config.budgets.resync;
            session.restart_time = Some(restart);
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
        let kind = config.transport;
        let transport = Transport::open(kind).map_err(|source| SessionError::Transport { kind, source })?;
        let deny = DenyList::new();
        let mut session = Session { config, transcript, transport, conn: None, agent: None, instances: 0, vm_prepared: None, restart_time: None, deny };
        if let Some(p) = profile {
            p.apply(&mut session.config.client);
        }
        session.open_connection()?;
        session.start_agent().await?;
        Ok(session)
    }

    /// Attach a connection to a persistent channel's harness end.
    fn open_connection(&mut self) -> Result<(), SessionError> {
        let kind = self.transport.kind();
        let duplex = self.transport.take_duplex().map_err(|source| SessionError::Transport { kind, source })?;
        self.conn = duplex.map(|d| self.new_connection(d));
        Ok(())
    }

    /// Every connection the session makes is made here, with the deny-list
    /// installed.
    fn new_connection(&self, duplex: crate::transport::Duplex) -> Connection {
        guarded(Connection::new(duplex, self.transcript.clone(), self.config.max_buffered), &self.deny)
    }

    /// The start-up probe; an agent that dies on the client's 0xFF is
    /// restarted once and probed without it.
    async fn probe(&mut self) -> Result<Profile, SessionError> {
        let start = Instant::now();
        let mark = self.transcript.mark();
        let budget = self.config.budgets.startup;
        let client = self.config.client.clone();
        let conn = self.conn.as_mut().ok_or(SessionError::NoAgent)?;
        let agent = &mut self.agent;
        let mut gone = || agent.as_mut().is_none_or(|a| a.exit_status().is_some());
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
        let conn = self.conn.as_mut().ok_or(SessionError::NoAgent)?;
        let agent = &mut self.agent;
        let mut gone = || agent.as_mut().is_none_or(|a| a.exit_status().is_some());
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
        let until = Instant::now() + grace;
        loop {
            let status = self.agent.as_mut()?.exit_status().map(str::to_owned);
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
        if let Some(mut old) = self.agent.take() {
            old.kill().await;
        }
        self.conn = None;
        let kind = self.transport.kind();
        self.transport = Transport::open(kind).map_err(|source| SessionError::Transport { kind, source })?;
        self.transcript.event(Event::Note { text: format!("a fresh {kind} channel") });
        self.deny = DenyList::new();
        self.open_connection()?;
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
        self.transport.kind()
    }

    /// The connection to the current agent.
    pub fn conn(&mut self) -> Result<&mut Connection, SessionError> {
        self.conn.as_mut().ok_or(SessionError::NoAgent)
    }

    pub fn agent(&mut self) -> Option<&mut Peer> {
        self.agent.as_mut()
    }

    /// What a report says about the VM (VM transports only).
    pub fn vm_info(&self) -> Option<crate::vm::VmRunInfo> {
        let vm = self.vm()?;
        let p = self.vm_prepared.as_ref()?;
        Some(crate::vm::VmRunInfo {
            device: match self.transport.kind() {
                TransportKind::VmIsa => "isa-serial".into(),
                _ => "virtio-serial".into(),
            },
            accel: vm.accel,
            accel_reason: vm.accel_reason.clone(),
            boot_ms: vm.boot_time.as_millis() as u64,
            restart_ms: self.restart_time.map_or(0, |d| d.as_millis() as u64),
            kernel: p.kernel.release.clone(),
            image: p.image.key.clone(),
        })
    }

    /// For the VM transports: whether the VM itself has ended, and how.
    pub async fn vm_gone(&mut self) -> Option<String> {
        let link_closed = self.conn.as_ref().is_none_or(|c| c.is_closed());
        match self.agent.as_mut() {
            Some(Peer::Guest(vm)) => vm.gone(link_closed).await,
            _ => None,
        }
    }

    /// The VM the agent runs in, for the VM transports.
    pub fn vm(&self) -> Option<&crate::vm::GuestVm> {
        match &self.agent {
            Some(Peer::Guest(vm)) => Some(vm),
            _ => None,
        }
    }

    /// Spawn a new agent instance on the channel (connecting, for
    /// unix-listen). Does not wait for it to answer: see [`Session::wait_ready`].
    pub async fn start_agent(&mut self) -> Result<(), SessionError> {
        if let Some(kind) = self.transport.kind().vm() {
            return self.start_guest_agent(kind).await;
        }
        if let Some(mut old) = self.agent.take() {
            old.kill().await;
        }
        if self.instances > 0 {
            self.transcript.event(Event::Restart);
        }
        self.instances += 1;
        let statedir = tempfile::Builder::new()
            .prefix("qga-harness-state-")
            .tempdir()
            .map_err(|source| SessionError::Transport { kind: self.transport.kind(), source })?;
        let uses_path = self.config.template.uses_path();
        let argv = self.config.template.expand(self.transport.agent_path().filter(|_| uses_path), statedir.path());
        let stdio = if uses_path { None } else { self.transport.agent_stdio() };
        let agent = AgentProcess::spawn(argv, stdio, Some(statedir), self.transcript.clone())?;
        self.agent = Some(Peer::Local(agent));
        if !self.transport.is_persistent() {
            self.conn = None;
            self.connect().await?;
        }
        Ok(())
    }

    /// The VM transports: boot the guest the first time (connecting to
    /// QEMU's chardev socket before the guest runs, so no byte is missed),
    /// then start the agent inside through the control port. Later starts
    /// stop the old instance and start a new one in the same guest: the
    /// channel, and whatever it holds, stays.
    async fn start_guest_agent(&mut self, kind: crate::vm::VmKind) -> Result<(), SessionError> {
        self.instances += 1;
        let up = match self.agent.as_mut() {
            Some(Peer::Guest(vm)) => vm.is_up(),
            _ => false,
        };
        if up {
            self.transcript.event(Event::Restart);
        } else if self.agent.is_some() {
            self.transcript.event(Event::Note { text: "the VM is gone: booting a new one (a new channel)".into() });
        }
        let vm = match self.agent.as_mut() {
            Some(Peer::Guest(vm)) if up => {
                vm.stop(None).await;
                vm
            }
            _ => {
                self.agent = None;
                let prepared = match &self.vm_prepared {
                    Some(p) => p.clone(),
                    None => {
                        let program = crate::vm::agent_binary(self.config.template.program())
                            .ok_or_else(|| SpawnError::NotFound(self.config.template.program().to_owned()))?;
                        let p = crate::vm::prepare(&program, &self.config.vm)?;
                        self.transcript.event(Event::Note {
                            text: format!(
                                "guest image {} ({} KiB, {}); kernel {}",
                                p.image.key,
                                p.image.bytes / 1024,
                                if p.image.built { "built" } else { "cached" },
                                p.kernel.release
                            ),
                        });
                        self.vm_prepared = Some(p.clone());
                        p
                    }
                };
                let (vm, duplex) = crate::vm::boot(kind, &prepared, &self.config.vm, self.transcript.clone()).await?;
                self.conn = Some(self.new_connection(duplex));
                self.agent = Some(Peer::Guest(Box::new(vm)));
                match self.agent.as_mut() {
                    Some(Peer::Guest(vm)) => vm,
                    _ => unreachable!(),
                }
            }
        };
        let statedir = vm.next_statedir();
        let path = std::path::PathBuf::from(&vm.agent_path);
        let mut argv = self.config.template.expand(Some(&path), std::path::Path::new(&statedir));
        // The image holds the agent at its absolute host path.
        if let Some(abs) = crate::vm::agent_binary(&argv[0]) {
            argv[0] = abs.display().to_string();
        }
        vm.start(&argv, &statedir).await?;
        Ok(())
    }

    /// Connect to a unix-listen agent, retrying (bounded) while it starts.
    async fn connect(&mut self) -> Result<(), SessionError> {
        let start = Instant::now();
        let deadline = start + self.config.budgets.startup;
        let path = self.transport.agent_path().map(|p| p.display().to_string()).unwrap_or_default();
        loop {
            match self.transport.connect().await {
                Ok(duplex) => {
                    self.transcript.event(Event::Connect { detail: format!("{path} after {:?}", start.elapsed()) });
                    self.conn = Some(self.new_connection(duplex));
                    return Ok(());
                }
                Err(e) => {
                    self.check_alive("accepting a connection")?;
                    if Instant::now() >= deadline {
                        self.transcript.event(Event::Timeout { waiting_for: format!("connect to {path}") });
                        return Err(SessionError::Connect { path, waited: start.elapsed(), last_error: e.to_string() });
                    }
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
            }
        }
    }

    fn check_alive(&mut self, stage: &'static str) -> Result<(), SessionError> {
        let agent = self.agent.as_mut().ok_or(SessionError::NoAgent)?;
        match agent.exit_status() {
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
            let conn = self.conn.as_mut().ok_or(SessionError::NoAgent)?;
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

    /// Close the connection and open a new one to the same agent
    /// (unix-listen, or QEMU's chardev socket for a VM): a new client on a
    /// channel whose agent keeps its parser state. On a pty or socketpair
    /// there is nothing to reconnect.
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        if let Some(vm) = self.vm() {
            let path = vm.agent_socket();
            self.conn = None;
            self.transcript.event(Event::Note { text: "client disconnected".into() });
            let s = tokio::net::UnixStream::connect(&path).await.map_err(|e| SessionError::Connect {
                path: path.display().to_string(),
                waited: Duration::ZERO,
                last_error: e.to_string(),
            })?;
            self.transcript.event(Event::Connect { detail: format!("{} (QEMU chardev)", path.display()) });
            self.conn = Some(self.new_connection(crate::transport::Duplex::socket(s)));
            return Ok(());
        }
        if self.transport.is_persistent() {
            return Ok(());
        }
        self.conn = None;
        self.transcript.event(Event::Note { text: "client disconnected".into() });
        self.connect().await
    }

    /// SIGKILL the current agent (the channel stays open).
    pub async fn kill_agent(&mut self) {
        if let Some(agent) = self.agent.as_mut() {
            agent.kill().await;
        }
    }

    /// SIGTERM the current agent, escalating to SIGKILL after the grace.
    pub async fn terminate_agent(&mut self) {
        let grace = self.config.budgets.term_grace;
        if let Some(agent) = self.agent.as_mut() {
            agent.terminate(grace).await;
        }
    }

    /// Kill the agent, start a new one on the same channel, and resync.
    pub async fn restart(&mut self) -> Result<Resynced, SessionError> {
        self.kill_agent().await;
        self.start_agent().await?;
        self.wait_ready().await
    }

    /// Stop the agent (SIGTERM, then SIGKILL) and close the session.
    pub async fn shutdown(mut self) {
        self.terminate_agent().await;
        if let Some(Peer::Guest(vm)) = self.agent.take() {
            vm.shutdown().await;
        }
    }
}
