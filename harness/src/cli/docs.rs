//! `completions` and `man`: the command line described for shells and for
//! man(1), generated from the same clap definitions the parser uses, so
//! they cannot drift from the flags.

use super::args::Cli;
use crate::EXIT_HARNESS;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// A completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "qga-harness", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// The manual page on stdout, or with `out` one page per command there.
pub fn man(out: Option<&Path>) -> ExitCode {
    let cmd = Cli::command();
    let written = match out {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf).and_then(|()| std::io::stdout().write_all(&buf))
        }
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qga-harness: cannot write the manual page: {e}");
            ExitCode::from(EXIT_HARNESS)
        }
    }
}
