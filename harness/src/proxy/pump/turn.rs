//! The pump's event loop: one turn waits for whichever comes first (client
//! bytes, agent bytes, a client connecting, a line of the client's report,
//! a timer) and hands it on.

use super::{Pump, MAX_BUFFERED, OUTBOX_RETRY, PARTIAL_FLUSH};
use crate::connection::{Connection, Fill};
use crate::proxy::contract;
use crate::transcript::Event;
use std::time::Duration;
use tokio::time::Instant;

/// What one turn of the pump did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Bytes moved (see the logs).
    Moved,
    ClientConnected,
    ClientLeft,
    /// The deadline passed (or a timer fired) with nothing else to do.
    Idle,
}

impl Pump {
    /// One turn: wait (until `until` at most) for bytes from either side, a
    /// client connection or a timer, and handle it. `lines` is the client's
    /// report, read in the same wait so that its arrival is ordered against
    /// the bytes.
    pub async fn turn(&mut self, until: Instant, run: &mut contract::ClientRun, lines: &mut Vec<contract::ReportLine>) -> Turn {
        if self.gated {
            self.gated = false;
            self.from_agent().await;
        }
        // Timers first when due: a side that always has data must not
        // starve a held reply's release or a partial reply's flush.
        self.release_held().await;
        if self.partial_since.is_some_and(|s| Instant::now() >= s + PARTIAL_FLUSH) {
            self.flush_partial().await;
        }
        self.outbox.flush(&mut self.client).await;
        // A client link that ended (seen while writing or polling) is no
        // client: the next one can be accepted.
        if self.client.as_ref().is_some_and(Connection::is_closed) {
            self.client = None;
            self.transcript.event(Event::Note { text: "the client under test disconnected".into() });
            return Turn::ClientLeft;
        }
        let mut wake = until;
        if let Some(release) = self.held.next_release() {
            wake = wake.min(release);
        }
        if self.client.is_some() && !self.outbox.is_empty() {
            wake = wake.min(Instant::now() + OUTBOX_RETRY);
        }
        if let Some(since) = self.partial_since {
            wake = wake.min(since + PARTIAL_FLUSH);
        }
        enum Got {
            Client(std::io::Result<Fill>),
            Agent(std::io::Result<Fill>),
            Accept(std::io::Result<Connection>),
            Line(Option<(Instant, String)>),
            Wake,
        }
        let far = Instant::now() + Duration::from_secs(3600);
        let got = {
            let client_open = self.client.as_ref().is_some_and(|c| !c.is_closed());
            let no_client = self.client.is_none();
            let client = self.client.as_mut();
            let agent_gone = self.agent_closed;
            let agent = self.agent.conn().ok().filter(|c| !c.is_closed() && !agent_gone);
            let agent_open = agent.is_some();
            let port = &self.port;
            let transcript = &self.transcript;
            tokio::select! {
                biased;
                l = run.next_line() => Got::Line(l),
                r = async move { client.expect("guarded").fill(far).await }, if client_open => Got::Client(r),
                r = async move { agent.expect("guarded").fill(far).await }, if agent_open => Got::Agent(r),
                r = port.accept(transcript, MAX_BUFFERED), if no_client => Got::Accept(r),
                _ = tokio::time::sleep_until(wake) => Got::Wake,
            }
        };
        match got {
            Got::Line(Some((at, text))) => {
                // What the client wrote before it printed this line is
                // already in the socket: log it first, so the line is
                // ordered after the request it reports on.
                if let Some(conn) = self.client.as_mut() {
                    if conn.poll_input().is_ok() && !conn.buffered().is_empty() {
                        self.from_client().await;
                    }
                }
                let seq = self.transcript.event(contract::note_for(&text));
                lines.push(contract::ReportLine { at, seq, text });
                Turn::Moved
            }
            Got::Line(None) => Turn::Moved,
            Got::Client(Ok(Fill::Closed)) | Got::Client(Err(_)) => {
                self.client = None;
                self.transcript.event(Event::Note { text: "the client under test disconnected".into() });
                Turn::ClientLeft
            }
            Got::Client(Ok(_)) => {
                self.from_client().await;
                Turn::Moved
            }
            Got::Agent(Ok(Fill::Closed)) | Got::Agent(Err(_)) => {
                self.agent_closed = true;
                self.flush_partial().await;
                Turn::Moved
            }
            Got::Agent(Ok(_)) => {
                self.from_agent().await;
                Turn::Moved
            }
            Got::Accept(Ok(conn)) => {
                self.client = Some(conn);
                if !self.outbox.is_empty() {
                    self.transcript.event(Event::Note { text: format!("{} byte(s) left for the next client go to this one", self.outbox.len()) });
                    self.outbox.flush(&mut self.client).await;
                }
                Turn::ClientConnected
            }
            Got::Accept(Err(e)) => {
                self.transcript.event(Event::Note { text: format!("accept failed: {e}") });
                Turn::Idle
            }
            Got::Wake => {
                self.release_held().await;
                if self.partial_since.is_some_and(|s| Instant::now() >= s + PARTIAL_FLUSH) {
                    self.flush_partial().await;
                }
                Turn::Idle
            }
        }
    }
}
