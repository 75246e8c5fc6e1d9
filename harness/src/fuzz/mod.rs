//! Property-based fuzzing of resync: random fault schedules against an
//! agent, shrunk by proptest to a minimal schedule and written out as a
//! catalogue case file that `run` and `replay` re-execute.
//!
//! The property: after any schedule, the reference client resyncs through
//! guest-sync-delimited within its budget, and the next commands (an unknown
//! command, a sync with a fresh id, then the engine's recovery check: ping,
//! sync, info) each get exactly their own reply.
//!
//! - [`strategy`]: the schedule strategies (public, for users' own tests).
//! - [`campaign`]: parallel jobs, shrinking, replay files, the report:
//!   the skeleton both fuzzers share.
//! - [`runner`]: schedules against an agent, through the engine's runner.
//! - [`client`]: schedules around a client under test (`fuzz --client`).
//! - [`cost`]: schedules per minute and the ratio to the start-up floor.
//! - [`probe`]: the start-up probe's findings, which fail a campaign too.

pub mod campaign;
pub mod client;
pub mod cost;
pub mod probe;
pub mod runner;
pub mod strategy;

pub use cost::Cost;
pub use campaign::{FuzzReport, Progress};
pub use runner::{fuzz, FuzzConfig};
pub use strategy::{schedule, FaultKind, Schedule, ScheduleParams};
