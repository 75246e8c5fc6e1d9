//! The client-mode step interpreter: a client case's steps, run while the
//! pump forwards between the client under test and the agent. `await`
//! waits for the client's requests, `reply` queues a fault on the agent's
//! answers, and the rest (inject, garbage, send, kill, restart, pause,
//! repeat) act on the agent's side of the channel.

use crate::case::step::Step;
use crate::case::Case;
use crate::proxy::contract::{ClientRun, ReportLine};
use crate::proxy::pump::{PlacedFault, Writer};
use crate::proxy::Pump;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// How often the pump looks up from its wait to see whether the client
/// has exited (a client that forks can keep its stdout open after exit).
const EXIT_TICK: Duration = Duration::from_millis(5);
/// After the client's stdout closes, how long its exit may take to show.
const EXIT_TICK_CLOSED: Duration = Duration::from_micros(500);

/// How a step program ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Reached,
    ClientDone,
    Deadline,
}

/// State while a client case runs: the pump, the client once started, its
/// report lines so far, and what `inject` expands placeholders with.
pub(super) struct Ctx<'a> {
    pub(super) pump: Pump,
    pub(super) run: Option<ClientRun>,
    pub(super) lines: Vec<ReportLine>,
    pub(super) deadline: Instant,
    /// `$id`: the id of the request last awaited.
    last_id: Value,
    /// Index in the pump's requests of the request last awaited: the one
    /// whose reply a `reply` fault acts on.
    last_awaited: Option<usize>,
    /// `$previous-id`: the client's last sync id in the case before.
    previous_id: Option<Value>,
    /// The client synced with plain guest-sync in the case before: until
    /// it syncs in this one, `$sync-mark` mirrors that.
    plain_sync_before: bool,
    rng: rand::rngs::StdRng,
    exited_at: Option<Instant>,
    case: &'a Case,
}

impl<'a> Ctx<'a> {
    /// Before the client starts: the pump, the case's deadline, the last
    /// sync id of the case before (`$previous-id`) and the seed of the
    /// case's own random ids.
    pub(super) fn new(pump: Pump, deadline: Instant, previous_id: Option<Value>, plain_sync_before: bool, seed: u64, case: &'a Case) -> Ctx<'a> {
        Ctx { pump, run: None, lines: Vec::new(), deadline, last_id: Value::Null, last_awaited: None, previous_id, plain_sync_before, rng: rand::rngs::StdRng::seed_from_u64(seed), exited_at: None, case }
    }

    /// Whether the client has finished: exited, and its report read.
    fn client_done(&mut self) -> bool {
        let Some(run) = self.run.as_mut() else { return false };
        if run.process.exit_status().is_none() {
            return false;
        }
        let exited = *self.exited_at.get_or_insert_with(Instant::now);
        // A client whose fork keeps stdout open: its report is what it
        // wrote before it exited, give or take the pipe.
        run.stdout_closed || exited.elapsed() > Duration::from_millis(50)
    }

    /// Pump until `cond` holds, the client is done, or `until`.
    pub(super) async fn pump_until(&mut self, until: Instant, cond: &dyn Fn(&Pump) -> bool) -> Flow {
        let until = until.min(self.deadline);
        loop {
            if cond(&self.pump) {
                return Flow::Reached;
            }
            if self.client_done() {
                return Flow::ClientDone;
            }
            let now = Instant::now();
            if now >= until {
                return if until >= self.deadline { Flow::Deadline } else { Flow::Reached };
            }
            match self.run.as_mut() {
                Some(run) => {
                    let tick = if run.stdout_closed { EXIT_TICK_CLOSED } else { EXIT_TICK };
                    self.pump.turn(until.min(now + tick), run, &mut self.lines).await;
                }
                None => {
                    // Before the client starts: nothing to wait for.
                    return Flow::Reached;
                }
            }
        }
    }

    /// Run steps in order; stops early when the client is done or time is up.
    pub(super) async fn steps(&mut self, steps: &[Step]) -> Flow {
        for step in steps {
            let flow = self.step(step).await;
            if flow != Flow::Reached {
                return flow;
            }
        }
        Flow::Reached
    }

    async fn step(&mut self, step: &Step) -> Flow {
        match step {
            Step::Await(a) => {
                let before = self.pump.client_requests().filter(|r| a.matches(&r.execute)).count();
                let want = before + a.nth;
                let a2 = a.clone();
                let flow = self.pump_until(self.deadline, &move |p: &Pump| p.client_requests().filter(|r| a2.matches(&r.execute)).count() >= want).await;
                if flow == Flow::Reached {
                    let found = self.pump.requests.iter().enumerate().filter(|(_, r)| r.writer == Writer::Client && a.matches(&r.execute)).nth(want - 1);
                    if let Some((i, r)) = found {
                        self.last_id = r.sync_id.clone().or_else(|| r.id.clone()).unwrap_or(Value::Null);
                        self.last_awaited = Some(i);
                    }
                }
                flow
            }
            Step::Reply(f) => {
                let before = f.before.as_ref().map(|b| self.expand_stale(&b.0));
                let instead = f.instead.as_ref().map(|b| self.expand_stale(&b.0));
                self.pump.push_fault(PlacedFault { fault: f.clone(), target: self.last_awaited, before, instead });
                Flow::Reached
            }
            Step::Inject(bytes) => {
                let expanded = self.expand_stale(&bytes.0);
                self.pump.inject(expanded).await;
                Flow::Reached
            }
            Step::Garbage(g) => {
                self.pump.inject(g.bytes(g.len)).await;
                Flow::Reached
            }
            Step::Send(s) => {
                let (bytes, _) = crate::engine::request::build(s, self.pump.agent.client());
                self.pump.harness_request(&bytes).await;
                Flow::Reached
            }
            Step::Kill(_) => {
                self.pump.kill_agent().await;
                Flow::Reached
            }
            Step::Restart(_) => {
                self.pump.restart_agent(true).await;
                Flow::Reached
            }
            Step::Pause(p) => {
                let until = Instant::now() + Duration::from_millis(p.ms);
                if self.run.is_none() {
                    tokio::time::sleep_until(until.min(self.deadline)).await;
                    return Flow::Reached;
                }
                self.pump_until(until, &|_| false).await
            }
            Step::Repeat(r) => {
                for _ in 0..r.times {
                    let flow = Box::pin(self.steps(&r.steps)).await;
                    if flow != Flow::Reached {
                        return flow;
                    }
                }
                Flow::Reached
            }
            // The loader keeps agent-mode steps out of client cases.
            other => {
                self.pump.invalid.get_or_insert(format!("an agent-mode step in a client case: {other:?}"));
                let _ = self.case;
                Flow::Reached
            }
        }
    }
}

impl Ctx<'_> {
    /// Stale bytes with their placeholders filled in.
    fn expand_stale(&mut self, bytes: &[u8]) -> Vec<u8> {
        let other: i64 = self.rng.gen_range(1 << 20..1 << 31);
        let previous = self.previous_id.clone().unwrap_or_else(|| Value::from(self.rng.gen_range(1i64 << 20..1 << 31)));
        // The client's own sync form: a stale sync reply comes the way its
        // own sync's reply comes (0xFF first only for guest-sync-delimited).
        // Cases about 0xFF write it outright.
        let plain = self.pump.client_requests().filter(|r| r.is_sync()).last().map_or(self.plain_sync_before, |r| r.execute == "guest-sync");
        let mark: &[u8] = if plain { b"" } else { b"\xff" };
        expand(bytes, &self.last_id, other, &previous, mark)
    }
}

/// `$id`, `$other-id`, `$previous-id` and `$sync-mark` (0xFF, or nothing
/// for a client that syncs with plain guest-sync) in injected bytes.
fn expand(bytes: &[u8], id: &Value, other: i64, previous: &Value, mark: &[u8]) -> Vec<u8> {
    let text_id = id.to_string();
    let text_previous = previous.to_string();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$sync-mark") {
            out.extend_from_slice(mark);
            i += "$sync-mark".len();
        } else if bytes[i..].starts_with(b"$previous-id") {
            out.extend_from_slice(text_previous.as_bytes());
            i += "$previous-id".len();
        } else if bytes[i..].starts_with(b"$other-id") {
            out.extend_from_slice(other.to_string().as_bytes());
            i += "$other-id".len();
        } else if bytes[i..].starts_with(b"$id") {
            out.extend_from_slice(text_id.as_bytes());
            i += "$id".len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_in_injected_bytes() {
        let p = json!(5);
        assert_eq!(expand(b"\xff{\"return\": $id}\n", &json!(42), 7, &p, b"\xff"), b"\xff{\"return\": 42}\n");
        assert_eq!(expand(b"{\"return\": $other-id}", &json!(42), 7, &p, b"\xff"), b"{\"return\": 7}");
        assert_eq!(expand(b"$ida $previous-id", &Value::Null, 7, &p, b"\xff"), b"nulla 5");
        // The client's own sync form.
        assert_eq!(expand(b"$sync-mark{\"return\": $id}", &json!(3), 7, &p, b"\xff"), b"\xff{\"return\": 3}");
        assert_eq!(expand(b"$sync-mark{\"return\": $id}", &json!(3), 7, &p, b""), b"{\"return\": 3}");
    }
}
