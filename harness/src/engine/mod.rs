//! The case engine: runs catalogue cases against one agent on one channel
//! and grades each one.
//!
//! For each case: check it applies (transport, commands the agent offers per
//! guest-info), run its steps, stop at the first unmet expectation, and then
//! always measure recovery: the reference client must resync and the next
//! commands (ping, sync, info, each with fresh ids) must get exactly their
//! own replies. An agent that died or wedged is restarted for the next case.
//!
//! - [`run`]: a whole run: start the agent, run every case, renew between.
//! - [`runner`]: one started agent running cases one at a time; the run,
//!   the fuzzer and the libtest target all go through it.
//! - [`case`]: one case's lifecycle: applies? steps, recovery, outcome.
//! - [`steps`]: the step interpreter, one file per step family.
//! - [`expect`]: whether one reply meets an expectation (pure, unit-tested).
//! - [`recover`]: the recovery after every case, and its grade.
//! - [`grading`]: what the start-up profile changes: relaxed checks,
//!   blocked cases, budgets paced to the agent.
//! - [`request`]: send steps to bytes (through the qapi types).
//! - [`client_case`]: client mode, where a client under test is graded
//!   (its own step interpreter in `client_case/steps.rs`).
//!
//! The results it produces are [`crate::verdict`]'s. Commands never sent
//! are refused below, where bytes are written ([`crate::wire::denylist`]).

pub mod case;
pub mod client_case;
pub mod expect;
pub mod grading;
pub mod recover;
pub mod request;
pub mod run;
pub mod runner;
pub mod steps;

pub use case::run_case;
pub use grading::{needed_capabilities, Grading};
pub use run::{run_cases, startup_finding, EngineOptions};
pub use runner::{AgentRunner, Ran};
