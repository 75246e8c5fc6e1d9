//! The subcommands: each maps its flags onto the library and prints what
//! it did. The flags themselves are in [`args`].

pub mod args;
mod client;
mod config;
pub mod docs;
mod list;
mod replay;
mod report;
mod run;

pub use client::{call, client_cmd};
pub use list::list;
pub use replay::replay;
pub use report::report_cmd;
pub use run::run;

use crate::EXIT_USAGE;
use std::process::ExitCode;

/// A usage or configuration error: said on stderr, exit code 3.
pub(crate) fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("qga-harness: {msg}");
    ExitCode::from(EXIT_USAGE)
}
