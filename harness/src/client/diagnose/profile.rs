//! What the probe finds out: the capabilities a client relies on, each
//! defect found ([`ProbeFinding`]), and the agent's [`Profile`], which sets
//! the client up the way this agent needs and goes into the run JSON.

use super::Pace;
use crate::client::{ClientOptions, IdWidth, ReplyMatch, SyncMode};
use crate::finding::FailureKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn double53() -> IdWidth {
    IdWidth::Double53
}

/// A capability every client relies on, which the probe may find missing.
/// Cases that need one the agent lacks are BLOCKED; cases tagged with it
/// (cases/README.md) test it and still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// guest-sync-delimited answered with one raw 0xFF right before the reply.
    Sentinel,
    /// The agent survives the client's 0xFF (and resets its lexer on it).
    Flush,
    /// Ids come back as sent, over the whole i64 range.
    ExactIds,
    /// Replies echo the request's id.
    IdEcho,
    /// guest-sync (libvirt's sync) is answered with its id.
    GuestSync,
    /// Error replies carry a QAPI error class.
    ErrorClass,
    /// Replies that are not delimited carry no raw 0xFF.
    CleanReplies,
    /// One reply per request, not two.
    OneReply,
    /// guest-ping returns `{}`.
    EmptyPing,
}

impl Capability {
    /// The catalogue tag of the cases that test this capability.
    pub fn tag(self) -> &'static str {
        match self {
            Capability::Sentinel => "sentinel",
            Capability::Flush => "flush",
            Capability::ExactIds => "id-range",
            Capability::IdEcho => "id-echo",
            Capability::GuestSync => "sync",
            Capability::ErrorClass => "errors",
            Capability::CleanReplies => "sentinel",
            Capability::OneReply => "one-reply",
            Capability::EmptyPing => "info",
        }
    }

    /// Whether cases that need it (and do not test it) cannot run without it.
    /// The others run with the client adapted (narrower ids, replies
    /// matched by order).
    pub fn blocks(self) -> bool {
        matches!(self, Capability::Sentinel | Capability::Flush | Capability::GuestSync)
    }
}

/// One defect the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFinding {
    pub kind: FailureKind,
    pub capability: Capability,
    /// What came, escaped.
    pub detail: String,
    /// Transcript entries that show it.
    pub transcript: (u64, u64),
}

/// What the probe found out about an agent. Goes into the run JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The sync the client uses with this agent.
    pub mode: SyncMode,
    /// The widest sync ids that held at every magnitude tried.
    pub id_width: IdWidth,
    /// The widest request ids (the `id` member) that held at every
    /// magnitude tried.
    #[serde(default = "double53")]
    pub request_id_width: IdWidth,
    /// How replies are matched to requests, for commands not in
    /// `matching_by_command`.
    pub matching: ReplyMatch,
    /// Per command kind probed, where it differs from `matching`.
    #[serde(default)]
    pub matching_by_command: BTreeMap<String, ReplyMatch>,
    pub string_ids: bool,
    pub findings: Vec<ProbeFinding>,
    /// guest-info's version.
    pub version: Option<String>,
    /// Enabled commands per guest-info (None: guest-info gave none).
    pub supported_commands: Option<Vec<String>>,
    pub pace: Pace,
}

impl Profile {
    /// The commands guest-info's return `info` lists as enabled (a missing
    /// `enabled` counts as enabled); None when it lists none.
    pub fn enabled_commands(info: &serde_json::Value) -> Option<Vec<String>> {
        info.get("supported_commands").and_then(|v| v.as_array()).map(|cmds| {
            cmds.iter()
                .filter(|c| c.get("enabled").and_then(|e| e.as_bool()).unwrap_or(true))
                .filter_map(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .collect()
        })
    }

    /// Whether the agent has `cap`.
    pub fn has(&self, cap: Capability) -> bool {
        !self.findings.iter().any(|f| f.capability == cap)
    }

    /// The profile of an agent that does everything the reference way.
    pub fn reference() -> Profile {
        Profile {
            mode: SyncMode::REFERENCE,
            id_width: IdWidth::Full64,
            request_id_width: IdWidth::Double53,
            matching: ReplyMatch::IdEcho,
            matching_by_command: BTreeMap::new(),
            string_ids: false,
            findings: Vec::new(),
            version: None,
            supported_commands: None,
            pace: Pace::default(),
        }
    }

    /// What the probe settled, one line each, for the head of a run's
    /// output and reports: how the client syncs, which ids it uses, how it
    /// matches replies, and the agent's pace.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!("sync: {}", self.mode.describe()),
            format!(
                "ids: sync {}, request {}{}",
                self.id_width.describe(),
                self.request_id_width.describe(),
                if self.string_ids { ", request ids as strings" } else { "" }
            ),
            format!("replies matched by: {}", self.describe_matching()),
            format!("pace factor {:.1} (ping {} us)", self.pace.factor, self.pace.rtt_us),
        ]
    }

    fn describe_matching(&self) -> String {
        let name = |m: ReplyMatch| match m {
            ReplyMatch::IdEcho => "id echo",
            ReplyMatch::Order => "order",
        };
        let mut s = name(self.matching).to_owned();
        let others: Vec<String> = self.matching_by_command.iter().filter(|(_, &m)| m != self.matching).map(|(c, &m)| format!("{c}: {}", name(m))).collect();
        if !others.is_empty() {
            s.push_str(&format!(" ({})", others.join(", ")));
        }
        s
    }

    /// Record a defect: a second sighting of the same defect (same code,
    /// same capability) adds its detail to the first finding, so that one
    /// defect is one finding however many probes show it.
    pub fn note(&mut self, finding: ProbeFinding) {
        match self.findings.iter_mut().find(|f| f.kind == finding.kind && f.capability == finding.capability) {
            Some(f) => {
                f.detail = format!("{}; {}", f.detail, finding.detail);
                f.transcript = (f.transcript.0.min(finding.transcript.0), f.transcript.1.max(finding.transcript.1));
            }
            None => self.findings.push(finding),
        }
    }

    /// Set the client up the way this agent needs.
    pub fn apply(&self, opts: &mut ClientOptions) {
        opts.mode = self.mode;
        opts.ids.width = self.id_width;
        opts.ids.request_width = self.request_id_width;
        opts.matching = self.matching;
        opts.matching_by_command = self.matching_by_command.clone();
        opts.string_ids = self.string_ids;
        opts.skip_stray_ff = !self.has(Capability::CleanReplies);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_both_id_widths_and_the_matching_per_command() {
        let mut p = Profile::reference();
        p.id_width = IdWidth::Below1e15;
        p.request_id_width = IdWidth::Int32;
        p.matching = ReplyMatch::Order;
        p.matching_by_command.insert("guest-sync".into(), ReplyMatch::IdEcho);
        let lines = p.describe();
        assert!(lines.iter().any(|l| l == "ids: sync ids below 10^15, request 32-bit ids"), "{lines:?}");
        assert!(lines.iter().any(|l| l == "replies matched by: order (guest-sync: id echo)"), "{lines:?}");
        let mut opts = ClientOptions::default();
        p.apply(&mut opts);
        assert_eq!((opts.ids.width, opts.ids.request_width), (IdWidth::Below1e15, IdWidth::Int32));
        assert_eq!((opts.matching_for("guest-ping"), opts.matching_for("guest-sync")), (ReplyMatch::Order, ReplyMatch::IdEcho));
    }

    #[test]
    fn one_defect_seen_twice_is_one_finding() {
        let mut p = Profile::reference();
        let f = |detail: &str, at: u64| ProbeFinding { kind: FailureKind::DuplicateReply, capability: Capability::OneReply, detail: detail.into(), transcript: (at, at + 1) };
        p.note(f("ping twice", 4));
        p.note(f("sync twice", 9));
        assert_eq!(p.findings.len(), 1);
        assert_eq!((p.findings[0].detail.as_str(), p.findings[0].transcript), ("ping twice; sync twice", (4, 10)));
        p.note(ProbeFinding { capability: Capability::IdEcho, ..f("other", 1) });
        assert_eq!(p.findings.len(), 2);
    }
}
