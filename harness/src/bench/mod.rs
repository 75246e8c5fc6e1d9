//! What the harness costs, measured against a floor taken in the same run
//! (`qga-harness bench`; `fuzz` uses the start-up floor too).
//!
//! - [`local`]: round trip: guest-ping through the harness (connection,
//!   transcript, framer, id check) vs. the same bytes written and read with
//!   plain syscalls on the same fd (the floor); resync latency: 0xFF +
//!   guest-sync-delimited until our reply; start-up: a fresh session
//!   (channel, spawn, connect, first answered sync) vs. a minimal client
//!   doing the same with blocking syscalls (in a blocking task, so the
//!   runtime and Ctrl-C keep running; the agent is spawned, killed and
//!   reaped by the agent process module, as always);
//! - [`vm`]: the same questions over the VM transports, against a raw
//!   client on its own QEMU;
//! - [`client`]: client mode's per-case cost, against a client that exits
//!   at once;
//! - [`raw`]: the floors themselves; [`stats`]: percentiles and the report
//!   line.

pub mod client;
pub mod local;
pub mod raw;
pub mod stats;
pub mod vm;

use crate::session::SessionConfig;

/// What to measure, and how many times.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Round trips and resyncs measured per figure (vm-*: pings, at most 500).
    pub iterations: usize,
    /// Agent start-ups measured (vm-*: boots, at most 5, and twice as many
    /// control-port restarts, at most 40).
    pub spawns: usize,
    /// Measure client mode instead: this client template runs a fault-free
    /// client case, against a floor client that exits at once (`true`).
    pub client: Option<String>,
    /// With `client`: the client case measured (a fault-free one).
    pub client_case: String,
}

/// The figures of one benchmark, printed as its report.
#[derive(Debug, Clone)]
pub enum Figures {
    Local(local::LocalFigures),
    Vm(vm::VmFigures),
    Client(client::ClientFigures),
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figures::Local(x) => x.fmt(f),
            Figures::Vm(x) => x.fmt(f),
            Figures::Client(x) => x.fmt(f),
        }
    }
}

/// Measure the agent `config` runs, the way its transport (and `opts`)
/// calls for.
pub async fn measure(config: SessionConfig, opts: &BenchOptions) -> Result<Figures, String> {
    match (&opts.client, config.transport.vm()) {
        (Some(t), _) => client::measure(config, t, &opts.client_case, opts.spawns).await.map(Figures::Client),
        (None, Some(kind)) => vm::measure(config, kind, opts.iterations, opts.spawns).await.map(Figures::Vm),
        (None, None) => local::measure(config, opts.iterations, opts.spawns).await.map(Figures::Local),
    }
}
