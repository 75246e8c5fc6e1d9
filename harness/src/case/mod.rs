//! The catalogue: conformance cases as data.
//!
//! - [`step`]: the step vocabulary, one type shared by case files and the
//!   fuzzer.
//! - [`bytes`]: byte strings in case files (`\xFF` escapes).
//! - [`pattern`]: reply shapes with placeholders.
//! - [`load`]: reading and validating case files, with errors that name the
//!   file, line and field.
//! - [`selection`]: which cases a run runs (ids, tags, levels, role, shard).
//! - [`schema_section`]: the cases generated from the QGA schema.

pub mod bytes;
pub mod load;
pub mod pattern;
pub mod selection;
pub mod schema_section;
pub mod shard;
pub mod step;

use crate::transport::{ChannelCapability, TransportKind};
use serde::{Deserialize, Serialize};
pub use selection::{Selected, Selection};
pub use step::Step;

/// How strongly a case's requirement binds (RFC 2119 words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Level {
    /// Violating it breaks clients: FAIL.
    MUST,
    /// Violating it is allowed but worse: NON-STRICT.
    SHOULD,
    /// Not a requirement; what the agent does is worth knowing: INFO.
    INFO,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One conformance case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// `section/N`: stable forever, never reused.
    pub id: String,
    pub title: String,
    pub level: Level,
    /// The requirement, in one sentence.
    pub requirement: String,
    /// Where the requirement comes from: a quote or paraphrase, with the path.
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Commands the agent must offer (per guest-info) for the case to apply;
    /// otherwise the case is UNSUPPORTED.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Start a new agent instance before the case.
    #[serde(default)]
    pub fresh_agent: bool,
    /// What the case needs of the channel (a persistent channel, a
    /// reconnect, a local process), rather than transport names: it applies
    /// wherever these hold, VM transports included. Elsewhere UNSUPPORTED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel: Vec<ChannelCapability>,
    /// Transports the case applies to (empty: all), for case files that
    /// must name them. Elsewhere UNSUPPORTED. The catalogue uses `channel`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<TransportKind>,
    /// Budget for the whole case, in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Who the case grades: the agent (default), or a client under test
    /// (client mode: the harness is a proxy between the client and an
    /// agent, and the steps are faults on the agent's side).
    #[serde(default, skip_serializing_if = "Role::is_agent")]
    pub role: Role,
    /// Client mode: the commands the client is asked to run, in order
    /// (`{job}`; default [`DEFAULT_JOB`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job: Vec<String>,
    /// Client mode: what a correct client achieves despite the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Client mode: habits of the client's own bytes that fail the case
    /// (at its level) when seen in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    pub steps: Vec<Step>,
}

impl Case {
    /// Whether the case can run over `transport`: it has every channel
    /// capability the case needs, and is among its named transports, if any.
    pub fn applies_to(&self, transport: TransportKind) -> bool {
        self.channel.iter().all(|c| transport.has(*c)) && (self.transports.is_empty() || self.transports.contains(&transport))
    }

    /// The transports the case applies to, for reports.
    pub fn applicable_transports(&self) -> Vec<TransportKind> {
        TransportKind::ALL.into_iter().filter(|t| self.applies_to(*t)).collect()
    }

    /// Why the case does not apply to `transport`, in words.
    pub fn not_applicable(&self, transport: TransportKind) -> Option<String> {
        if self.applies_to(transport) {
            return None;
        }
        let names: Vec<String> = self.applicable_transports().iter().map(|t| t.to_string()).collect();
        let caps: Vec<String> = self.channel.iter().filter(|c| !transport.has(**c)).map(|c| c.describe().to_owned()).collect();
        let why = if caps.is_empty() { String::new() } else { format!(": it needs {}", caps.join(" and ")) };
        Some(format!("the case does not apply to {transport}{why}; it applies to {}", names.join(", ")))
    }
}

/// The commands a client under test runs when a case names none.
pub const DEFAULT_JOB: [&str; 3] = ["guest-ping", "guest-get-time", "guest-info"];

/// Client mode: a wire-level habit a case checks, from the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// A raw 0xFF before each sync request.
    FlushByte,
    /// guest-sync-delimited rather than guest-sync.
    DelimitedSync,
    /// Sync ids new per attempt, wider than 16 bits, not the pid.
    FreshIds,
    /// A sync before the next request after the client's own timeout.
    ResyncAfterTimeout,
    /// A newline after each request.
    Newline,
    /// A sync before the first command.
    Sync,
}

impl Check {
    /// What the check expects of the client, for a failure's `expected`.
    pub fn expectation(self) -> &'static str {
        match self {
            Check::FlushByte => "a raw 0xFF before each sync request",
            Check::DelimitedSync => "guest-sync-delimited, not guest-sync",
            Check::FreshIds => "sync ids new per attempt, wider than 16 bits, neither the pid nor built from it, nor a counter",
            Check::ResyncAfterTimeout => "a sync before the next request after the client's own timeout",
            Check::Newline => "a newline after each request",
            Check::Sync => "a sync before the first command",
        }
    }
}

/// The side of the protocol a case grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Agent,
    Client,
}

impl Role {
    pub fn is_agent(&self) -> bool {
        *self == Role::Agent
    }
}

/// Client mode: what the case asks of the client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Every job command gets its own reply (after the client's own retry
    /// if need be): the fault is one a correct agent on a real channel can
    /// produce, so a client must get through it.
    Recover,
    /// No wrong data: a clean error is as good as recovering. For faults
    /// that only a broken agent produces.
    Detect,
}

impl Case {
    /// The job a client under test runs in this case: the case's own (or
    /// [`DEFAULT_JOB`]), with one command appended when the fault is on
    /// its last command. Whether a client is back in sync after a fault
    /// shows only on the command after it (client contract, version 2).
    pub fn client_job(&self) -> Vec<String> {
        let mut job = self.named_job();
        if let Some(i) = self.faulted_command_in(&job) {
            if i + 1 == job.len() {
                let next = if job[i] == "guest-ping" { "guest-get-time" } else { "guest-ping" };
                job.push(next.to_owned());
            }
        }
        job
    }

    /// The index in the job of the command the case's fault is on: the
    /// command its first `await` names, or for `await = { request = "sync"
    /// }` (or `"command"`), the nth job command (a client syncs before its
    /// first command at least). None: the case has no `await`.
    pub fn faulted_command(&self) -> Option<usize> {
        self.faulted_command_in(&self.named_job())
    }

    /// The case's own job, or [`DEFAULT_JOB`], before any append.
    fn named_job(&self) -> Vec<String> {
        if self.job.is_empty() {
            DEFAULT_JOB.iter().map(|s| s.to_string()).collect()
        } else {
            self.job.clone()
        }
    }

    fn faulted_command_in(&self, job: &[String]) -> Option<usize> {
        let a = self.steps.iter().find_map(|s| match s {
            Step::Await(a) => Some(a),
            _ => None,
        })?;
        match a.request.as_str() {
            "sync" | "command" | "any" => Some((a.nth - 1).min(job.len().saturating_sub(1))),
            name => job.iter().enumerate().filter(|(_, c)| *c == name).nth(a.nth - 1).map(|(i, _)| i),
        }
    }

    /// Whether the case's fault costs a correct client its reply: a reply
    /// dropped, cut, held past the client's timeout or replaced, or the
    /// agent killed or restarted. Only there may the faulted command end
    /// in a clean error and the case still pass (`recovered-after-error`).
    pub fn fault_costs_a_reply(&self) -> bool {
        let mut costs = false;
        Step::visit(&self.steps, &mut |s| match s {
            Step::Reply(r) => costs |= r.drop || r.past_timeout || r.truncate.is_some() || r.restart || r.instead.is_some(),
            Step::Kill(_) | Step::Restart(_) => costs = true,
            _ => {}
        });
        costs
    }

    /// The section: the id up to its last `/`.
    pub fn section(&self) -> &str {
        self.id.rsplit_once('/').map_or(&self.id, |(s, _)| s)
    }
}

/// A case file: one section's cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The section every case id in the file starts with.
    pub section: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}
