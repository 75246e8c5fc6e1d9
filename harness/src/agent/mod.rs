//! The agent layer: how an agent is named ([`template`]), and the agent as
//! a peer the session starts, stops and restarts, on this host or in a VM
//! ([`peer`]). Its processes are [`crate::process`]'s.

pub mod peer;
pub mod template;

pub use crate::process::SpawnError;
pub use peer::{HostGone, Peer, PeerError};
pub use template::{AgentTemplate, TemplateError};
