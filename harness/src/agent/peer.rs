//! The agent as a peer: whatever runs it, the session can start it on a
//! [`Link`], stop it (with a signal), restart it and ask whether it is alive.
//!
//! - on this host: a process group ([`ProcessGroup`]) given the link's path
//!   or its stdio;
//! - in a guest: an agent behind the guest init's control port. The first
//!   start boots the VM (kernel and image prepared once, then reused) and
//!   attaches QEMU's chardev socket to the link; later starts restart the
//!   agent in the same guest, so the channel and whatever it holds stays.
//!   Stopping the agent leaves the VM (and so the channel) up.
//!
//! Every branch on where the agent runs is here; the session above only
//! composes a link and a peer.

use super::AgentTemplate;
use crate::link::{Link, LinkError};
use crate::process::{ProcessGroup, SpawnError};
use crate::transcript::{Event, Transcript};
use crate::transport::{TransportKind, VmKind};
use crate::vm::{GuestVm, Prepared, VmError, VmOptions, VmRunInfo};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// What an agent ran on ended under it (not the agent itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGone {
    /// The host, as a report names it ("the VM").
    pub host: &'static str,
    /// How it ended ("the VM exited (signal 9)").
    pub how: String,
}

impl HostGone {
    /// What a case expects of its host.
    pub fn expected(&self) -> String {
        format!("{} stays up for the whole case", self.host)
    }

    /// What happened, with what the case saw before it (`earlier`, if anything).
    pub fn actual(&self, earlier: Option<&str>) -> String {
        let earlier = earlier.map(|e| format!(" (the case saw: {e})")).unwrap_or_default();
        format!("{} during the case{earlier}", self.how)
    }
}

/// What runs the current agent instance.
#[derive(Debug)]
enum Instance {
    Local(ProcessGroup),
    /// The VM outlives the agent instances inside it.
    Guest(Box<GuestVm>),
}

/// The agent, started from its template, and its current instance.
#[derive(Debug)]
pub struct Peer {
    template: AgentTemplate,
    vm_options: VmOptions,
    transcript: Transcript,
    instance: Option<Instance>,
    instances: u32,
    /// For a guest: the kernel and image, prepared at the first boot and
    /// reused by every later one (a fresh channel is a new VM).
    prepared: Option<Prepared>,
    /// The measured restart, when it was worth measuring ([`Peer::restart_is_slow`]).
    restart_time: Option<Duration>,
}

impl Peer {
    pub fn new(template: AgentTemplate, vm_options: VmOptions, transcript: Transcript) -> Peer {
        Peer { template, vm_options, transcript, instance: None, instances: 0, prepared: None, restart_time: None }
    }

    /// Start a new agent instance on `link` (connecting, for a listening
    /// agent, within `startup`). Does not wait for it to answer.
    pub async fn start(&mut self, link: &mut Link, startup: Duration) -> Result<(), PeerError> {
        if let Some(kind) = link.kind().vm() {
            return self.start_guest(kind, link).await;
        }
        self.discard().await;
        if self.instances > 0 {
            self.transcript.event(Event::Restart);
        }
        self.instances += 1;
        let kind = link.kind();
        // Registered for cleanup on a signal by the process group that owns it.
        let statedir = tempfile::Builder::new()
            .prefix("qga-harness-state-")
            .tempdir()
            .map_err(|source| LinkError::Transport { kind, source })?;
        let uses_path = self.template.uses_path();
        let argv = self.template.expand(link.agent_path().filter(|_| uses_path), statedir.path());
        let stdio = if uses_path { None } else { link.agent_stdio() };
        let agent = ProcessGroup::spawn(argv, stdio, Some(statedir), self.transcript.clone())?;
        self.instance = Some(Instance::Local(agent));
        if !link.is_persistent() {
            link.disconnect();
            link.connect(startup, &mut || self.exit_status().map(str::to_owned)).await?;
        }
        Ok(())
    }

    /// A guest: boot it the first time (connecting to QEMU's chardev socket
    /// before the guest runs, so no byte is missed), then start the agent
    /// inside through the control port. Later starts stop the old instance
    /// and start a new one in the same guest.
    async fn start_guest(&mut self, kind: VmKind, link: &mut Link) -> Result<(), PeerError> {
        self.instances += 1;
        let up = match self.instance.as_mut() {
            Some(Instance::Guest(vm)) => vm.is_up(),
            _ => false,
        };
        if up {
            self.transcript.event(Event::Restart);
        } else if self.instance.is_some() {
            self.transcript.event(Event::Note { text: "the VM is gone: booting a new one (a new channel)".into() });
        }
        let vm = match self.instance.as_mut() {
            Some(Instance::Guest(vm)) if up => {
                vm.stop(None).await;
                vm
            }
            _ => {
                self.instance = None;
                let prepared = self.prepare().await?;
                let (vm, duplex) = crate::vm::boot(kind, &prepared, &self.vm_options, self.transcript.clone()).await?;
                link.attach_chardev(duplex, vm.agent_socket());
                match self.instance.insert(Instance::Guest(Box::new(vm))) {
                    Instance::Guest(vm) => vm,
                    Instance::Local(_) => unreachable!(),
                }
            }
        };
        let statedir = vm.next_statedir();
        let path = std::path::PathBuf::from(&vm.agent_path);
        let mut argv = self.template.expand(Some(&path), std::path::Path::new(&statedir));
        // The image holds the agent at its absolute host path.
        if let Some(abs) = crate::vm::agent_binary(&argv[0]) {
            argv[0] = abs.display().to_string();
        }
        vm.start(&argv, &statedir).await?;
        Ok(())
    }

    /// The kernel and image, prepared once per peer.
    async fn prepare(&mut self) -> Result<Prepared, PeerError> {
        if let Some(p) = &self.prepared {
            return Ok(p.clone());
        }
        let program = crate::vm::agent_binary(self.template.program()).ok_or_else(|| SpawnError::NotFound(self.template.program().to_owned()))?;
        // On a blocking thread: a kernel fetch or an image build takes
        // seconds, and the runtime's thread must stay free for Ctrl-C, whose
        // handler kills the tools and removes their directories.
        let opts = self.vm_options.clone();
        let p = tokio::task::spawn_blocking(move || crate::vm::prepare(&program, &opts))
            .await
            .map_err(|e| VmError::Setup(format!("preparing the guest: {e}")))??;
        self.transcript.event(Event::Note {
            text: format!(
                "guest image {} ({} KiB, {}); kernel {}",
                p.image.key,
                p.image.bytes / 1024,
                if p.image.built { "built" } else { "cached" },
                p.kernel.release
            ),
        });
        self.prepared = Some(p.clone());
        Ok(p)
    }

    /// True while an instance has been started (running or not).
    pub fn is_started(&self) -> bool {
        self.instance.is_some()
    }

    /// How the agent ended, if it has (non-blocking). For a guest agent,
    /// the end of the VM counts too. None when no instance was started.
    pub fn exit_status(&mut self) -> Option<&str> {
        match self.instance.as_mut()? {
            Instance::Local(p) => p.exit_status(),
            Instance::Guest(vm) => vm.exit_status(),
        }
    }

    /// The process group on this host that holds the agent: the agent's own
    /// (its pid), or, for a guest agent, QEMU's. 0 before any start.
    pub fn pid(&self) -> i32 {
        match &self.instance {
            Some(Instance::Local(p)) => p.pid(),
            Some(Instance::Guest(vm)) => vm.qemu_pid(),
            None => 0,
        }
    }

    /// SIGKILL the agent (its process group) and wait, bounded, for its end.
    pub async fn kill(&mut self) {
        match self.instance.as_mut() {
            Some(Instance::Local(p)) => p.kill().await,
            Some(Instance::Guest(vm)) => vm.stop(None).await,
            None => {}
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        match self.instance.as_mut() {
            Some(Instance::Local(p)) => p.terminate(grace).await,
            Some(Instance::Guest(vm)) => vm.stop(Some(grace)).await,
            None => {}
        }
    }

    /// Kill the agent and start a new instance on the same link (for a
    /// guest, in the same VM while it is up).
    pub async fn restart(&mut self, link: &mut Link, startup: Duration) -> Result<(), PeerError> {
        self.kill().await;
        self.start(link, startup).await
    }

    /// Kill the agent and drop what ran it (a guest's VM too): the next
    /// start begins from nothing.
    pub async fn discard(&mut self) {
        self.kill().await;
        self.instance = None;
    }

    /// Stop the agent (SIGTERM, then SIGKILL) and power a guest off.
    pub async fn shutdown(mut self, grace: Duration) {
        self.terminate(grace).await;
        if let Some(Instance::Guest(vm)) = self.instance.take() {
            vm.shutdown().await;
        }
    }

    /// True when a restart costs enough to budget for: a guest's goes
    /// through its control port and the guest's scheduler.
    pub fn restart_is_slow(&self) -> bool {
        matches!(self.instance, Some(Instance::Guest(_)))
    }

    /// Record the measured restart, for [`Peer::vm_info`].
    pub fn set_restart_time(&mut self, d: Duration) {
        self.restart_time = Some(d);
    }

    /// The VM the agent runs in, for a guest.
    pub fn vm(&self) -> Option<&GuestVm> {
        match &self.instance {
            Some(Instance::Guest(vm)) => Some(vm),
            _ => None,
        }
    }

    /// Whether what the agent runs on ended under it (not the agent: a
    /// guest's VM killed, crashed, out of memory), and how. None for an
    /// agent on this host: its host is ours. `link_closed`: see [`GuestVm::gone`].
    pub async fn host_gone(&mut self, link_closed: bool) -> Option<HostGone> {
        match self.instance.as_mut() {
            Some(Instance::Guest(vm)) => vm.gone(link_closed).await.map(|how| HostGone { host: "the VM", how }),
            _ => None,
        }
    }

    /// True when the agent runs on an emulated CPU (a guest): how fast it
    /// answers a flood must be measured, it cannot be inferred from one
    /// short reply.
    pub fn is_emulated(&self) -> bool {
        matches!(self.instance, Some(Instance::Guest(_)))
    }

    /// What a report says about the VM (a guest only).
    pub fn vm_info(&self, transport: TransportKind) -> Option<VmRunInfo> {
        let vm = self.vm()?;
        let p = self.prepared.as_ref()?;
        Some(VmRunInfo {
            device: match transport {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_host_says_what_and_what_the_case_saw() {
        let g = HostGone { host: "the VM", how: "the VM exited (signal 9)".into() };
        assert_eq!(g.expected(), "the VM stays up for the whole case");
        assert_eq!(g.actual(None), "the VM exited (signal 9) during the case");
        assert_eq!(g.actual(Some("channel closed")), "the VM exited (signal 9) during the case (the case saw: channel closed)");
    }

    #[test]
    fn a_local_agent_is_not_emulated_and_its_host_stays() {
        // A running local instance (not just an empty peer): the questions
        // are answered for the agent that runs, over a closed link too.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let t = crate::agent::AgentTemplate::parse("sleep 5").unwrap();
        let transcript = Transcript::default();
        let _guard = rt.enter();
        let mut link = Link::open(crate::transport::TransportKind::Socketpair, transcript.clone(), 1 << 16).unwrap();
        let mut p = Peer::new(t, VmOptions::default(), transcript);
        rt.block_on(p.start(&mut link, Duration::from_secs(1))).unwrap();
        assert!(p.is_started());
        assert!(!p.is_emulated());
        assert_eq!(rt.block_on(p.host_gone(true)), None);
        rt.block_on(p.kill());
        // Even with the agent dead, its host (this machine) did not go.
        assert_eq!(rt.block_on(p.host_gone(true)), None);
    }
}
