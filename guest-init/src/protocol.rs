//! The control protocol between the harness and the guest's init, one line
//! per message, over a virtio-serial port of its own (never the agent's).
//!
//! Host to guest:
//! - `start STATEDIR ARG...` (every word hex-encoded): start the agent with
//!   this argv in a fresh, empty STATEDIR; answered `started PID`.
//! - `kill` / `term`: SIGKILL / SIGTERM the agent's process group, whether
//!   or not its leader still lives (a daemonising agent leaves children in
//!   it); answered `ok`, then the agent's `exit` event once it is reaped.
//! - `status`: answered `running PID`, `exited PID HOW N` or `none`.
//! - `poweroff`: kill the agent and power the guest off.
//!
//! Guest to host, every line stamped `@T ` first: T is the init's monotonic
//! clock, in microseconds since it started, when the line was made. The
//! host reads its lines when it polls, which can be long after; the stamp
//! says when an agent's stderr or exit happened (the host converts it with
//! the offset it measures at `hello`, read while it waits for nothing else).
//! - `hello AGENT_PATH UPTIME_MS` once, when the agent's port exists (the
//!   guest kernel's uptime then, for the boot time's breakdown);
//! - `exit PID code N` / `exit PID signal N` when the agent is reaped;
//! - `stderr PID HEX`: a piece of the agent's stderr (capped per instance);
//! - `ok`, `started PID`, `running PID`, `exited PID HOW N`, `none`: replies;
//! - `error HEX`: a command failed (the reason, hex-encoded).
//!
//! Hex keeps every word free of spaces and newlines whatever bytes an argv
//! or an agent's stderr holds, with no escaping rules to get wrong.

/// The control port's name (`-device virtserialport,name=...`).
pub const CONTROL_PORT: &str = "org.qga-harness.control.0";

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// `line` stamped with `us`, the guest's clock when it was made.
pub fn stamped(us: u64, line: &str) -> String {
    format!("@{us} {line}")
}

/// A guest line's stamp (None when it has none) and the rest of the line.
// The host's half: the init compiles this file too, and never reads a stamp.
#[allow(dead_code)]
pub fn unstamp(line: &str) -> (Option<u64>, &str) {
    let Some(rest) = line.strip_prefix('@') else { return (None, line) };
    let (t, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    match t.parse() {
        Ok(t) => (Some(t), rest),
        Err(_) => (None, line),
    }
}

/// A command from the host.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Start { statedir: String, argv: Vec<String> },
    Kill,
    Term,
    Status,
    Poweroff,
}

pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_ascii_whitespace();
    let word = |w: &str| unhex(w).and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| format!("not a hex word: {w}"));
    match words.next() {
        Some("start") => {
            let statedir = word(words.next().ok_or("start needs a state directory")?)?;
            let argv = words.map(word).collect::<Result<Vec<_>, _>>()?;
            if argv.is_empty() {
                return Err("start needs a program".into());
            }
            Ok(Command::Start { statedir, argv })
        }
        Some("kill") => Ok(Command::Kill),
        Some("term") => Ok(Command::Term),
        Some("status") => Ok(Command::Status),
        Some("poweroff") => Ok(Command::Poweroff),
        Some(other) => Err(format!("unknown command {other}")),
        None => Err("empty line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_any_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&all)).unwrap(), all);
        assert_eq!(unhex("f"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn start_carries_argv_with_spaces() {
        let line = format!("start {} {} {}", hex(b"/run/s1"), hex(b"/usr/sbin/qemu-ga"), hex(b"a b\n"));
        assert_eq!(
            parse(&line),
            Ok(Command::Start { statedir: "/run/s1".into(), argv: vec!["/usr/sbin/qemu-ga".into(), "a b\n".into()] })
        );
        assert!(parse("start").is_err());
        assert!(parse(&format!("start {}", hex(b"/s"))).is_err());
        assert_eq!(parse("kill"), Ok(Command::Kill));
        assert!(parse("reboot").is_err());
    }

    #[test]
    fn stamps_round_trip_and_unstamped_lines_pass() {
        assert_eq!(unstamp(&stamped(1234, "exit 7 code 0")), (Some(1234), "exit 7 code 0"));
        assert_eq!(unstamp("exit 7 code 0"), (None, "exit 7 code 0"));
        assert_eq!(unstamp("@x exit"), (None, "@x exit"));
    }
}
