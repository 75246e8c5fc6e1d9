//! `list`: the selected cases, one line each.

use super::args::ListArgs;
use super::usage;
use crate::EXIT_HARNESS;
use qga_harness::case::Case;
use qga_harness::process::signals::exit_on_broken_pipe;
use qga_harness::transport::TransportKind;
use std::process::ExitCode;

pub fn list(args: ListArgs) -> ExitCode {
    use std::io::Write;
    let cases = match args.select.select(None) {
        Ok(s) => s.cases,
        Err(e) => return usage(e),
    };
    let mut out = std::io::stdout().lock();
    // A case that does not run everywhere says where it does.
    let only = |c: &Case| {
        let ts = c.applicable_transports();
        if ts.len() == TransportKind::ALL.len() {
            String::new()
        } else {
            format!("  [only {}]", ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
        }
    };
    let mut written = cases.iter().try_for_each(|c| writeln!(out, "{:<24} {:<6} {}{}", c.id, c.level, c.title, only(c)));
    written = written.and_then(|()| writeln!(out, "{} cases", cases.len())).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit_on_broken_pipe(),
        Err(e) => {
            eprintln!("qga-harness: cannot write the list: {e}");
            ExitCode::from(EXIT_HARNESS)
        }
    }
}
