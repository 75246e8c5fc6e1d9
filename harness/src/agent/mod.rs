//! The agent-process layer: how an agent is named ([`template`]) and how its
//! process lives and dies ([`process`]). This module owns every pid; nothing
//! else in the harness calls kill or wait.

pub mod process;
pub mod template;

pub use process::{AgentProcess, SpawnError};
pub use template::{AgentTemplate, TemplateError};
