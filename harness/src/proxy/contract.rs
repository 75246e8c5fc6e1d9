//! The client contract: how a client under test is started and how it
//! reports what it got. Autobahn's fuzzingserver left this implicit and it
//! became its most-asked question, so here it is in one place (and in
//! README.md and cases/README.md):
//!
//! - **Start.** The client template is split into argv like an agent
//!   template (never through a shell), with `{path}` (the unix socket or
//!   pty slave to talk to), `{timeout_ms}` (how long it should wait for
//!   one reply before giving up or retrying) and `{job}` (the commands to
//!   run, comma-separated) filled in. Its stdin is /dev/null; it runs in its
//!   own process group, which the harness kills when the case ends.
//! - **Job.** Sync the way the client always does, then run each command
//!   of the job in order, with no arguments. When the case's fault is on
//!   the job's last command the harness appends one more: whether the
//!   client is back in step shows on the command after the fault.
//! - **Report.** One JSON object per line on stdout per command, in job
//!   order: `{"command": NAME, "return": VALUE}` with the value exactly as
//!   the client would hand it to its caller, or `{"command": NAME, "error":
//!   ANY}` when the client gave up on it (its own timeout, a disconnect, an
//!   error reply). Other stdout lines are not allowed; stderr is free.
//! - **Go on after an error** (version 2). After an error the client reports
//!   it and goes on with the next command, as its caller would call it
//!   again: every job command gets a line. A report that ends in an error
//!   with commands left unreported is version 1 output, graded invalid with
//!   a message that says so ([`crate::proxy::grade`]).
//! - **Exit.** Exit 0 when every command returned, non-zero otherwise.

use crate::process::ProcessGroup;
use crate::agent::SpawnError;
use crate::transcript::{escape_bytes, Event, Transcript};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Report lines kept per client run; the rest are counted and dropped.
const MAX_LINES: usize = 256;
/// Longest report line kept (a client echoing a flood must not exhaust us).
const MAX_LINE: usize = 256 * 1024;

/// A parsed client command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTemplate {
    words: Vec<String>,
}

const PLACEHOLDERS: [&str; 3] = ["{path}", "{timeout_ms}", "{job}"];

impl ClientTemplate {
    pub fn parse(template: &str) -> Result<ClientTemplate, String> {
        let words = shell_words::split(template).map_err(|e| format!("client template does not split into words: {e}"))?;
        if words.is_empty() {
            return Err("client template is empty".into());
        }
        for w in &words {
            let mut rest = w.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else { break };
                let p = &rest[open..open + close + 1];
                // Only `{word}` is a placeholder: braces in code a template
                // carries (an inline script) are left alone.
                let word = &p[1..p.len() - 1];
                let looks_like_one = !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if looks_like_one && !PLACEHOLDERS.contains(&p) {
                    return Err(format!("unknown placeholder {p} in client template (known: {{path}}, {{timeout_ms}}, {{job}})"));
                }
                rest = &rest[open + close + 1..];
            }
        }
        if !words.iter().any(|w| w.contains("{path}")) {
            return Err("the client template needs {path}: the client must be told where the agent is".into());
        }
        Ok(ClientTemplate { words })
    }

    /// The argv for one client run.
    pub fn expand(&self, path: &Path, timeout: Duration, job: &[String]) -> Vec<String> {
        let path = path.to_string_lossy();
        let timeout = timeout.as_millis().to_string();
        let job = job.join(",");
        self.words.iter().map(|w| w.replace("{path}", &path).replace("{timeout_ms}", &timeout).replace("{job}", &job)).collect()
    }

    pub fn program(&self) -> &str {
        &self.words[0]
    }
}

impl std::fmt::Display for ClientTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shell_words::join(&self.words))
    }
}

/// One line of a client's report, as it came, with when it came.
#[derive(Debug, Clone)]
pub struct ReportLine {
    pub at: Instant,
    /// Transcript entry recording it (a note), for ordering against bytes.
    pub seq: u64,
    pub text: String,
}

/// What a report line says, once checked against the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Reported {
    Return { command: String, value: Value },
    Error { command: String, error: Value },
}

impl Reported {
    pub fn command(&self) -> &str {
        match self {
            Reported::Return { command, .. } | Reported::Error { command, .. } => command,
        }
    }
}

/// Parse one report line, or say how it breaks the contract.
pub fn parse_line(text: &str) -> Result<Reported, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not a JSON object ({e})"))?;
    let Value::Object(mut m) = v else { return Err("not a JSON object".into()) };
    let command = match m.remove("command") {
        Some(Value::String(c)) => c,
        _ => return Err("no string member \"command\"".into()),
    };
    match (m.remove("return"), m.remove("error")) {
        (Some(value), None) => Ok(Reported::Return { command, value }),
        (None, Some(error)) => Ok(Reported::Error { command, error }),
        _ => Err("exactly one of \"return\" and \"error\" is required".into()),
    }
}

/// A running client under test, and the lines it has reported so far.
#[derive(Debug)]
pub struct ClientRun {
    pub process: ProcessGroup,
    lines_rx: mpsc::UnboundedReceiver<(Instant, String)>,
    /// True once its stdout reached end of file (it exited, or closed it).
    pub stdout_closed: bool,
}

impl ClientRun {
    /// Start the client. Its report is read on a thread (bounded) and
    /// handed over line by line through [`ClientRun::next_line`].
    pub fn start(argv: Vec<String>, transcript: Transcript) -> Result<ClientRun, SpawnError> {
        let (process, stdout) = ProcessGroup::spawn_reporting(argv, None, transcript.clone())?;
        let (tx, lines_rx) = mpsc::unbounded_channel();
        let pid = process.pid();
        let _ = std::thread::Builder::new().name(format!("client-report-{pid}")).spawn(move || read_report(stdout, tx, transcript));
        Ok(ClientRun { process, lines_rx, stdout_closed: false })
    }

    /// The next report line, or None at end of file. Cancel-safe.
    pub async fn next_line(&mut self) -> Option<(Instant, String)> {
        if self.stdout_closed {
            return std::future::pending().await;
        }
        let line = self.lines_rx.recv().await;
        if line.is_none() {
            self.stdout_closed = true;
        }
        line
    }
}

/// Read the client's stdout to its end: lines (cut at [`MAX_LINE`]), at
/// most [`MAX_LINES`] of them; whatever is beyond is read and dropped so
/// the client never blocks on a full pipe.
fn read_report(stdout: std::process::ChildStdout, tx: mpsc::UnboundedSender<(Instant, String)>, transcript: Transcript) {
    let mut r = BufReader::new(stdout);
    let mut kept = 0;
    loop {
        let mut line = Vec::new();
        match (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() == MAX_LINE && !line.ends_with(b"\n") {
            // Skip the rest of an over-long line, a buffer at a time: memory
            // stays bounded however long it is.
            loop {
                let (done, used) = match r.fill_buf() {
                    Ok([]) | Err(_) => (true, 0),
                    Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                        Some(i) => (true, i + 1),
                        None => (false, buf.len()),
                    },
                };
                r.consume(used);
                if done {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
        if text.trim().is_empty() {
            continue;
        }
        kept += 1;
        if kept > MAX_LINES {
            continue;
        }
        if kept == MAX_LINES {
            transcript.event(Event::Note { text: format!("the client's report reached {MAX_LINES} lines; later ones are dropped") });
        }
        if tx.send((Instant::now(), text)).is_err() {
            break;
        }
    }
    let _ = std::io::copy(&mut r, &mut std::io::sink());
}

/// The client's report line as a transcript note (escaped).
pub fn note_for(text: &str) -> Event {
    Event::Note { text: format!("client reported: {}", escape_bytes(text.as_bytes())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_a_path_and_know_their_placeholders() {
        assert!(ClientTemplate::parse("c --socket {path} -t {timeout_ms} --job {job}").is_ok());
        assert!(ClientTemplate::parse("c").unwrap_err().contains("{path}"));
        assert!(ClientTemplate::parse("c {path} {nope}").unwrap_err().contains("{nope}"));
        assert!(ClientTemplate::parse(r#"python3 -c 'print({"a": 1})' {path}"#).is_ok());
        let t = ClientTemplate::parse("c --socket={path} {timeout_ms} {job}").unwrap();
        let argv = t.expand(Path::new("/tmp/s"), Duration::from_millis(250), &["guest-ping".into(), "guest-info".into()]);
        assert_eq!(argv, ["c", "--socket=/tmp/s", "250", "guest-ping,guest-info"]);
    }

    #[test]
    fn report_lines_follow_the_contract() {
        assert_eq!(
            parse_line(r#"{"command": "guest-ping", "return": {}}"#),
            Ok(Reported::Return { command: "guest-ping".into(), value: serde_json::json!({}) })
        );
        assert!(matches!(parse_line(r#"{"command": "guest-ping", "error": "timeout"}"#), Ok(Reported::Error { .. })));
        assert!(parse_line(r#"{"command": "guest-ping"}"#).unwrap_err().contains("exactly one"));
        assert!(parse_line(r#"{"command": "guest-ping", "return": 1, "error": 2}"#).is_err());
        assert!(parse_line("pong").is_err());
        assert!(parse_line(r#"{"return": 1}"#).unwrap_err().contains("command"));
    }
}
