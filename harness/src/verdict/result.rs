//! The results a run produces: one per case, one per run, and why an agent
//! could not be run at all. Reports, baselines and the gate read these;
//! the engine and client mode write them.

use super::{Failure, Level, Outcome, Recovery};
use crate::case::Case;
use crate::transcript::Entry;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub section: String,
    pub title: String,
    pub level: Level,
    pub requirement: String,
    pub source: String,
    pub outcome: Outcome,
    /// Requirement, expected, actual and transcript span, for anything but PASS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub recovery: Recovery,
    #[serde(with = "super::micros")]
    pub elapsed: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<Entry>,
    /// Client mode: the client's grade and what it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::proxy::grade::ClientCaseDetail>,
}

/// Client mode: what was graded, and behind what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRunInfo {
    /// The agent behind the proxy.
    pub agent: String,
    pub agent_transport: String,
    /// `{timeout_ms}` given to the client.
    pub timeout_ms: u64,
    /// What the client's own bytes showed, over the whole run.
    pub habits: Vec<crate::proxy::grade::Habit>,
    /// Bits of the widest sync id seen (None: no numeric id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id_bits: Option<u32>,
}

impl RunResult {
    /// A run of `role` against `agent` (in client mode, the client's
    /// template) over `transport`, before anything ran.
    pub fn begin(role: crate::case::Role, agent: String, transport: String, seed: u64) -> RunResult {
        RunResult {
            role,
            client: None,
            shard: None,
            agent,
            transport,
            agent_version: None,
            supported_commands: None,
            seed,
            profile: None,
            startup_error: None,
            budgets: None,
            vm: None,
            elapsed: Duration::ZERO,
            results: Vec::new(),
        }
    }

    /// What the agent's start found out: its version, its commands, its
    /// profile, the machine it runs on.
    pub fn started(&mut self, profile: &crate::client::Profile, vm: Option<crate::vm::VmRunInfo>) {
        self.agent_version = profile.version.clone();
        self.supported_commands = profile.supported_commands.clone();
        self.profile = Some(profile.clone());
        self.vm = vm;
    }

    /// A short name for what was graded, for a matrix column: the agent's
    /// version, or for a client run its program and arguments (paths cut to
    /// their last part, placeholders left out).
    pub fn subject(&self) -> String {
        match (&self.client, &self.agent_version) {
            (Some(_), _) => {
                let words = shell_words::split(&self.agent).unwrap_or_else(|_| vec![self.agent.clone()]);
                let mut short: Vec<String> = Vec::new();
                for (i, w) in words.iter().enumerate() {
                    let next_is_placeholder = words.get(i + 1).is_some_and(|n| n.contains('{'));
                    if w.contains('{') || (w.starts_with('-') && next_is_placeholder) {
                        continue;
                    }
                    let base = w.rsplit('/').next().unwrap_or(w);
                    if i == 0 && base.starts_with("python") {
                        continue;
                    }
                    short.push(base.to_owned());
                }
                format!("client {}", short.join(" "))
            }
            (None, Some(v)) => v.clone(),
            (None, None) => self.agent.clone(),
        }
    }
}

/// Why the agent could not be run at all: one message, not one per case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupError {
    pub message: String,
    /// What the agent wrote on stderr (escaped), if anything.
    #[serde(default)]
    pub stderr: String,
    /// A likely cause, when one can be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether the harness could not even spawn it or open the channel
    /// (as opposed to an agent that started and never answered).
    pub harness: bool,
    /// The agent's defect that kept the run from going on (it started, then
    /// died, or answered nothing usable): the run's finding. None when the
    /// harness failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<super::FailureKind>,
    pub transcript: Vec<Entry>,
}

/// A whole run against one agent (or, in client mode, one client) on one
/// transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Who was graded. In client mode `agent` is the client's template and
    /// `client` says what agent stood behind the harness.
    #[serde(default, skip_serializing_if = "crate::case::Role::is_agent")]
    pub role: crate::case::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientRunInfo>,
    /// The shard of the catalogue this run covers (`--shard K/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::case::shard::Shard>,
    pub agent: String,
    pub transport: String,
    /// guest-info's version, if the agent answered it.
    pub agent_version: Option<String>,
    /// Enabled commands per guest-info.
    pub supported_commands: Option<Vec<String>>,
    /// The seed of every random id in the run (`--seed` reproduces it).
    #[serde(default)]
    pub seed: u64,
    /// What the start-up probe found: sync mode, defects, pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::client::Profile>,
    /// Set when the agent could not be run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_error: Option<StartupError>,
    /// The time limits the run was given (before the agent's pace scaled
    /// them; the pace is in `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<crate::budget::Budgets>,
    /// The machine, for runs over a VM transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<crate::vm::VmRunInfo>,
    #[serde(with = "super::micros")]
    pub elapsed: Duration,
    pub results: Vec<CaseResult>,
}

/// A bare result with `outcome`, for unit tests of what consumes results.
#[cfg(test)]
pub(crate) fn test_result(id: &str, outcome: Outcome) -> CaseResult {
    CaseResult {
        id: id.into(),
        section: "s".into(),
        title: String::new(),
        level: Level::MUST,
        requirement: String::new(),
        source: String::new(),
        outcome,
        failure: None,
        recovery: Recovery::not_run(),
        elapsed: Duration::ZERO,
        transcript: Vec::new(),
        client: None,
    }
}

/// The result of `case` before it runs: PASS, recovery not run, until the
/// engine (or client mode) says otherwise.
pub fn skeleton(case: &Case) -> CaseResult {
    CaseResult {
        id: case.id.clone(),
        section: case.section().to_owned(),
        title: case.title.clone(),
        level: case.level,
        requirement: case.requirement.clone(),
        source: case.source.clone(),
        outcome: Outcome::Pass,
        failure: None,
        recovery: Recovery::not_run(),
        elapsed: Duration::ZERO,
        transcript: Vec::new(),
        client: None,
    }
}

