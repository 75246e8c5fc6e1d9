//! Client mode: the harness between a client under test and a real agent.
//!
//! Agent mode is one link and one peer; client mode composes the same
//! parts twice: the client's link ([`port`]) and peer (a process run by
//! the [`contract`]), the agent's link and peer (a [`crate::session::Session`]),
//! and the [`pump`] between them, which records every byte with its link
//! and origin and applies the case's faults. [`grade`] then decides, from
//! the client's report and the pump's logs, whether each result the client
//! reported was the reply to its own request. The case engine runs client
//! cases ([`crate::engine::client_case`]); verdicts and reports are shared.

pub mod contract;
pub mod grade;
pub mod port;
pub mod pump;

pub use contract::{ClientRun, ClientTemplate};
pub use port::ClientPort;
pub use pump::Pump;
