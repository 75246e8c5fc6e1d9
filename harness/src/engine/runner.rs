//! One agent, started and profiled, running cases one at a time.
//!
//! Everything that must be the same wherever a case runs lives here: the
//! agent's start (the start-up probe, or a profile an earlier process
//! cached), an emulated agent's garbage measurement, the grading built from the
//! profile, budgets paced to the agent, each case's own id stream, and the
//! transcript reset after each case. `run_cases`, the fuzzer and the libtest
//! target all run cases through an [`AgentRunner`], so a case graded alone
//! grades as in the full run. What differs between them is only what they
//! do with a channel a case left unusable: see [`Ran::renew`].

use super::case::run_case;
use super::grading::Grading;
use super::run::EngineOptions;
use crate::case::step::GarbageKind;
use crate::case::Case;
use crate::client::{Ids, Profile};
use crate::session::{Session, SessionConfig, SessionError};
use crate::transcript::{Event, Transcript};
use crate::verdict::CaseResult;

/// A running agent and how its cases are graded.
#[derive(Debug)]
pub struct AgentRunner {
    session: Session,
    grading: Grading,
    /// The run's id stream, at the width the probe chose; each case gets a
    /// stream of its own from it ([`Ids::for_case`]).
    base_ids: Ids,
    eo: EngineOptions,
}

/// One case's result, and whether it left the channel unusable (a wedged
/// or timed-out agent, our own input half-written): the next case needs a
/// fresh channel ([`AgentRunner::renew`]) or at least a fresh agent
/// ([`AgentRunner::restart`]).
#[derive(Debug)]
pub struct Ran {
    pub result: CaseResult,
    pub renew: bool,
}

impl AgentRunner {
    /// Open the channel and start the agent, with every id drawn from
    /// `eo.seed`. With `known`, the profile an earlier start found is used
    /// as it is (no probe); otherwise the start-up probe profiles the agent.
    /// `cases` is the selection the run will run: a capability the agent
    /// lacks blocks cases in the name of the one among them that tests it.
    pub async fn start(mut config: SessionConfig, transcript: Transcript, cases: &[Case], eo: &EngineOptions, known: Option<&Profile>) -> Result<AgentRunner, SessionError> {
        config.client.ids = Ids::seeded(eo.seed);
        let (mut session, mut profile) = match known {
            Some(p) => (Session::start_known(config, transcript, p).await?, p.clone()),
            None => Session::start(config, transcript).await?,
        };
        if session.is_emulated() {
            measure_garbage_answer(&mut session, &mut profile).await;
        }
        let grading = Grading::new(profile, cases).with_budgets(session.config().budgets);
        session.client_mut().set_budgets(grading.budgets());
        let base_ids = session.client().ids.clone();
        Ok(AgentRunner { session, grading, base_ids, eo: eo.clone() })
    }

    /// What the start-up probe found (or the known profile), with an
    /// emulated agent's garbage measurement.
    pub fn profile(&self) -> &Profile {
        self.grading.profile()
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Run one case and grade it. Its ids come from its own stream, so they
    /// do not depend on what ran before; the transcript is reset afterwards
    /// (the result carries its own part), so memory stays bounded.
    pub async fn run(&mut self, case: &Case) -> Ran {
        self.session.client_mut().ids = self.base_ids.for_case(self.eo.seed, &case.id);
        let (result, renew) = run_case(&mut self.session, case, &self.grading, &self.eo).await;
        self.session.transcript().reset();
        Ran { result, renew }
    }

    /// A fresh channel and agent, so that one case's leftovers (a
    /// half-written burst, a backlog) cannot change another's outcome.
    pub async fn renew(&mut self) -> Result<(), SessionError> {
        let r = self.session.renew().await.map(|_| ());
        self.session.transcript().reset();
        r
    }

    /// A fresh agent on the same channel: whatever the last one left in the
    /// channel stays there (the fuzzer's stale bytes are part of the test).
    pub async fn restart(&mut self) -> Result<(), SessionError> {
        self.session.restart().await.map(|_| ())
    }

    /// SIGKILL the agent, no grace (a process that ends with its agent).
    pub async fn kill_agent(&mut self) {
        self.session.kill_agent().await;
    }

    pub async fn shutdown(self) {
        self.session.shutdown().await;
    }
}

/// Random bytes (all 256 values, as the garbage cases send) an emulated
/// agent answers before the cases, to measure how fast it writes error floods.
const GARBAGE_PROBE: usize = 1024;

/// An emulated agent (in a guest): how long it takes to answer [`GARBAGE_PROBE`]
/// random bytes, into the profile's pace; the garbage cases' cap follows it
/// (the grading's garbage cap). An emulated CPU writes error floods far more
/// slowly than its guest-info reply suggests.
async fn measure_garbage_answer(session: &mut Session, profile: &mut Profile) {
    let garbage = GarbageKind::Any.bytes(GARBAGE_PROBE, 0x9a4ba6e);
    let client = session.client().clone();
    let Ok(conn) = session.conn() else { return };
    if let Some(us) = crate::client::diagnose::measure_garbage_answer(conn, &client, &garbage).await {
        profile.pace.garbage_in = GARBAGE_PROBE as u64;
        profile.pace.garbage_us = us;
        conn.transcript().event(Event::Note { text: format!("{GARBAGE_PROBE} bytes of garbage answered in {us} µs") });
    }
}
