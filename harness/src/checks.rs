//! The built-in checks: a first handful of requirements, run in order on one
//! session. Each yields a [`Verdict`] that says what was required, what was
//! expected, what happened, and which transcript entries show it.
//!
//! The full catalogue (cases as data files, graded outcomes) builds on the
//! same layers; these checks are the smoke test every agent must pass.

use crate::client::{execute, resync, ClientError, ClientOptions, Resynced};
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::Transcript;
use crate::wire::{scan, Reply, Scan, SENTINEL};
use qapi::qga;
use serde::Serialize;
use std::time::{Duration, Instant};

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The requirement holds.
    Pass,
    /// The agent violated the requirement.
    Fail,
    /// The check could not be run to a verdict (the harness failed, or an
    /// earlier failure left no working session).
    Error,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Error => "ERROR",
        })
    }
}

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub check: &'static str,
    pub requirement: &'static str,
    pub outcome: Outcome,
    /// What a conforming agent does (empty on pass).
    pub expected: String,
    /// What this one did (empty on pass).
    pub actual: String,
    /// Transcript entries `from..to` that show it.
    pub transcript: (u64, u64),
    #[serde(serialize_with = "ser_micros")]
    pub elapsed: Duration,
    /// The resync this check needed, if any.
    pub resync: Option<Resynced>,
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// The built-in checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Start,
    SyncDelimited,
    Sync,
    Ping,
    Info,
    StalePartialRequest,
    Restart,
}

impl Check {
    pub const ALL: [Check; 7] =
        [Check::Start, Check::SyncDelimited, Check::Sync, Check::Ping, Check::Info, Check::StalePartialRequest, Check::Restart];

    pub fn name(self) -> &'static str {
        match self {
            Check::Start => "start",
            Check::SyncDelimited => "sync-delimited",
            Check::Sync => "sync",
            Check::Ping => "ping",
            Check::Info => "info",
            Check::StalePartialRequest => "stale-partial-request",
            Check::Restart => "restart",
        }
    }

    pub fn requirement(self) -> &'static str {
        match self {
            Check::Start => "a started agent answers 0xFF + guest-sync-delimited within the start-up timeout",
            Check::SyncDelimited => "guest-sync-delimited {id} is answered with a raw 0xFF byte immediately followed by {\"return\": id}",
            Check::Sync => "guest-sync {id} is answered with {\"return\": id}, echoing the request id",
            Check::Ping => "guest-ping is answered with {\"return\": {}}, echoing the request id",
            Check::Info => "guest-info returns a version and lists guest-sync-delimited, guest-sync, guest-ping and guest-info",
            Check::StalePartialRequest => "after a stale partial request, 0xFF + guest-sync-delimited recovers the channel and the next command gets its own reply",
            Check::Restart => "after SIGKILL mid-conversation and a restart on the same channel, resync recovers and stale output is discarded",
        }
    }
}

/// The stale partial request a client that timed out may leave behind (the
/// shape protocol.md §2 saw wreck qemu-ga's next request).
pub const STALE_PARTIAL_REQUEST: &[u8] = br#"{"execute":"guest-sync","argu"#;

/// What [`run_checks`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub agent: String,
    pub transport: String,
    pub verdicts: Vec<Verdict>,
}

impl CheckReport {
    pub fn passed(&self) -> usize {
        self.verdicts.iter().filter(|v| v.outcome == Outcome::Pass).count()
    }

    pub fn failed(&self) -> usize {
        self.verdicts.len() - self.passed()
    }

    pub fn all_passed(&self) -> bool {
        self.failed() == 0
    }
}

struct Failure {
    expected: String,
    actual: String,
    outcome: Outcome,
}

fn fail(expected: impl Into<String>, actual: impl Into<String>) -> Failure {
    Failure { expected: expected.into(), actual: actual.into(), outcome: Outcome::Fail }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        fail("a reply carrying our request id", e.to_string())
    }
}

impl From<crate::client::ResyncError> for Failure {
    fn from(e: crate::client::ResyncError) -> Failure {
        fail("resync through guest-sync-delimited succeeds within its budget", e.to_string())
    }
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Failure {
        let outcome = match e {
            SessionError::Spawn(_) | SessionError::Transport { .. } | SessionError::NeedsPath => Outcome::Error,
            _ => Outcome::Fail,
        };
        Failure { expected: "the agent starts and answers a sync".into(), actual: e.to_string(), outcome }
    }
}

type CheckResult = Result<Option<Resynced>, Failure>;

/// Run every built-in check against one agent on one channel, in order.
/// After a failure the session is resynced before the next check; if that
/// fails too, the rest are reported as errors rather than run blind.
pub async fn run_checks(config: SessionConfig, transcript: Transcript) -> CheckReport {
    let mut report = CheckReport {
        agent: config.template.to_string(),
        transport: config.transport.to_string(),
        verdicts: Vec::new(),
    };
    let began = Instant::now();
    let from = transcript.mark();
    let opts = config.client.clone();
    let start = Session::start(config, transcript.clone()).await;
    let (mut session, ready) = match start {
        Ok(s) => s,
        Err(e) => {
            let f = Failure::from(e);
            report.verdicts.push(verdict(Check::Start, Err(f), from, &transcript, began.elapsed()));
            for check in &Check::ALL[1..] {
                report.verdicts.push(not_run(*check, "the agent never became ready", &transcript));
            }
            return report;
        }
    };
    report.verdicts.push(verdict(Check::Start, Ok(Some(ready)), from, &transcript, began.elapsed()));
    let mut in_step = true;
    for check in &Check::ALL[1..] {
        if !in_step {
            if let Err(e) = resync(session.conn().expect("session has a connection"), &opts.resync, &opts).await {
                report.verdicts.push(not_run(*check, &format!("the channel could not be resynced: {e}"), &transcript));
                continue;
            }
        }
        let from = transcript.mark();
        let began = Instant::now();
        let result = run_one(*check, &mut session, &opts).await;
        in_step = result.is_ok();
        report.verdicts.push(verdict(*check, result, from, &transcript, began.elapsed()));
    }
    session.shutdown().await;
    report
}

fn verdict(check: Check, result: CheckResult, from: u64, transcript: &Transcript, elapsed: Duration) -> Verdict {
    let to = transcript.mark();
    let (outcome, expected, actual, resync) = match result {
        Ok(r) => (Outcome::Pass, String::new(), String::new(), r),
        Err(f) => (f.outcome, f.expected, f.actual, None),
    };
    Verdict { check: check.name(), requirement: check.requirement(), outcome, expected, actual, transcript: (from, to), elapsed, resync }
}

fn not_run(check: Check, why: &str, transcript: &Transcript) -> Verdict {
    let at = transcript.mark();
    Verdict {
        check: check.name(),
        requirement: check.requirement(),
        outcome: Outcome::Error,
        expected: "the check runs".into(),
        actual: format!("not run: {why}"),
        transcript: (at, at),
        elapsed: Duration::ZERO,
        resync: None,
    }
}

async fn run_one(check: Check, session: &mut Session, opts: &ClientOptions) -> CheckResult {
    match check {
        Check::Start => unreachable!("start is run by run_checks"),
        Check::SyncDelimited => sync_delimited(session, opts).await,
        Check::Sync => {
            let id = crate::client::fresh_sync_id();
            match execute(session.conn()?, qga::guest_sync { id }, opts).await? {
                Ok(got) if got == id => Ok(None),
                Ok(got) => Err(fail(format!("{{\"return\": {id}}}"), format!("{{\"return\": {got}}}"))),
                Err(e) => Err(fail(format!("{{\"return\": {id}}}"), format!("error reply {e}"))),
            }
        }
        Check::Ping => ping(session, opts).await.map(|()| None),
        Check::Info => info(session, opts).await.map(|()| None),
        Check::StalePartialRequest => {
            let conn = session.conn()?;
            let deadline = tokio::time::Instant::now() + opts.send_timeout;
            conn.transcript().event(crate::transcript::Event::Fault { detail: "stale partial request left in the channel".into() });
            conn.send(STALE_PARTIAL_REQUEST, deadline).await.map_err(ClientError::from)?;
            let r = resync(conn, &opts.resync, opts).await?;
            ping(session, opts).await?;
            Ok(Some(r))
        }
        Check::Restart => {
            // Leave replies unread in the channel, then kill: on a pty they
            // stay there for the next agent's client to get past. Waiting for
            // the first reply byte (not a sleep) shows the agent has begun
            // answering; whatever it wrote is now stale.
            let conn = session.conn()?;
            let mut burst = Vec::new();
            for _ in 0..3 {
                burst.extend_from_slice(&crate::wire::Request::new(qga::guest_ping {}, Some(crate::client::fresh_request_id())).to_wire());
            }
            conn.send(&burst, tokio::time::Instant::now() + opts.send_timeout).await.map_err(ClientError::from)?;
            conn.fill(tokio::time::Instant::now() + opts.reply_timeout).await.map_err(ClientError::from)?;
            let persistent = session.transport_kind() != crate::transport::TransportKind::UnixListen;
            let stale = if persistent { session.conn()?.buffered().len() } else { 0 };
            session.kill_agent().await;
            session.start_agent().await?;
            let r = session.wait_ready().await?;
            if (r.bytes_discarded as usize) < stale {
                return Err(fail(
                    format!("at least the {stale} stale bytes left by the killed agent discarded"),
                    format!("{} bytes discarded", r.bytes_discarded),
                ));
            }
            ping(session, opts).await?;
            Ok(Some(r))
        }
    }
}

async fn ping(session: &mut Session, opts: &ClientOptions) -> Result<(), Failure> {
    match execute(session.conn()?, qga::guest_ping {}, opts).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(fail("{\"return\": {}}", format!("error reply {e}"))),
    }
}

async fn info(session: &mut Session, opts: &ClientOptions) -> Result<(), Failure> {
    let info = match execute(session.conn()?, qga::guest_info {}, opts).await? {
        Ok(info) => info,
        Err(e) => return Err(fail("a GuestAgentInfo", format!("error reply {e}"))),
    };
    if info.version.is_empty() {
        return Err(fail("a non-empty version", "\"version\": \"\""));
    }
    let missing: Vec<&str> = ["guest-sync-delimited", "guest-sync", "guest-ping", "guest-info"]
        .into_iter()
        .filter(|name| !info.supported_commands.iter().any(|c| c.name == *name && c.enabled))
        .collect();
    if !missing.is_empty() {
        return Err(fail("the sync, ping and info commands listed as enabled", format!("missing or disabled: {}", missing.join(", "))));
    }
    Ok(())
}

/// Resync, then prove on the transcript that the accepted reply was
/// delimited by a raw 0xFF byte right before its opening brace.
async fn sync_delimited(session: &mut Session, opts: &ClientOptions) -> CheckResult {
    let conn = session.conn()?;
    let from = conn.transcript().mark();
    let r = resync(conn, &opts.resync, opts).await?;
    let received = conn.transcript().received_since(from);
    if delimited_reply_at(&received, r.id).is_some() {
        Ok(Some(r))
    } else {
        Err(fail(
            format!("0xFF immediately followed by {{\"return\": {}}}", r.id),
            format!("received {}", crate::transcript::escape_bytes(&received)),
        ))
    }
}

/// Offset of a raw sentinel that is immediately followed (no whitespace) by
/// a reply returning `id`.
pub fn delimited_reply_at(received: &[u8], id: i64) -> Option<usize> {
    received.iter().enumerate().filter(|(_, &b)| b == SENTINEL).map(|(i, _)| i).find(|&i| {
        matches!(scan(&received[i + 1..]), Scan::Value { start: 0, end }
            if Reply::parse(&received[i + 1..i + 1 + end]).is_ok_and(|r| r.returns_int(id)))
    })
}

/// Render a report for a terminal: one line per check, details for each
/// failure (requirement, expected, actual, transcript), and a summary line.
pub fn render(report: &CheckReport, transcript: &Transcript, show_transcript: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for v in &report.verdicts {
        let _ = writeln!(out, "{:<5} {:<22} {:>9.3}ms  {}", v.outcome.to_string(), v.check, v.elapsed.as_secs_f64() * 1e3, v.requirement);
        if let Some(r) = &v.resync {
            let _ = writeln!(
                out,
                "      resync: {} attempt(s), {} byte(s) discarded, {} stale repl{} ignored, {:.3}ms",
                r.attempts,
                r.bytes_discarded,
                r.replies_ignored,
                if r.replies_ignored == 1 { "y" } else { "ies" },
                r.elapsed.as_secs_f64() * 1e3
            );
        }
        if v.outcome != Outcome::Pass {
            let _ = writeln!(out, "      expected: {}", v.expected);
            let _ = writeln!(out, "      actual:   {}", v.actual);
            let (from, to) = v.transcript;
            let _ = writeln!(out, "      transcript #{from}..#{to}:");
            for line in transcript.render(from, Some(to)).lines().take(40) {
                let _ = writeln!(out, "        {line}");
            }
        }
    }
    if show_transcript {
        let _ = writeln!(out, "\nfull transcript:\n{}", transcript.render(0, None));
    }
    let _ = writeln!(out, "{} passed, {} failed", report.passed(), report.failed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_reply_must_touch_the_sentinel() {
        assert_eq!(delimited_reply_at(b"{\"error\": {}}\n\xff{\"return\": 5}\n", 5), Some(14));
        assert_eq!(delimited_reply_at(b"\xff {\"return\": 5}\n", 5), None);
        assert_eq!(delimited_reply_at(b"\xff{\"return\": 6}\n", 5), None);
        assert_eq!(delimited_reply_at(b"\xc3\xbf{\"return\": 5}\n", 5), None);
        assert_eq!(delimited_reply_at(b"{\"return\": 5}\xff\n", 5), None);
    }
}
