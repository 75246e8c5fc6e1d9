//! The agent-process layer: how an agent is named ([`template`]) and how its
//! process lives and dies ([`process`]), and the agent as a peer the session
//! starts and stops, on this host or in a VM ([`peer`]). This module owns every pid; nothing
//! else in the harness calls kill or wait.

pub mod peer;
pub mod process;
pub mod template;

pub use peer::Peer;
pub use process::{AgentProcess, SpawnError};
pub use template::{AgentTemplate, TemplateError};
