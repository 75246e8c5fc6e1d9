//! What a run found, in the shape every report format prints it: the
//! distinct findings ordered by the cases they cover, the secondary
//! findings apart, and the cases not run grouped by what is missing (the
//! closing count is [`super::Tally`]).

use crate::verdict::{CaseResult, FailureKind, Outcome, RunResult};
use serde::Serialize;

/// One distinct defect and the cases that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FailureKind,
    pub summary: &'static str,
    /// What the start-up probe saw, when it found it (or why the agent
    /// could not be run at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Failing cases with this as their primary finding, and their outcomes.
    pub cases: Vec<(String, Outcome)>,
    /// Cases BLOCKED because of it.
    pub blocked: Vec<String>,
}

impl Finding {
    /// The cases it covers: where it is the primary finding, and where it
    /// kept the case from running.
    pub fn covers(&self) -> usize {
        self.cases.len() + self.blocked.len()
    }
}

/// A defect seen as a secondary finding (besides a case's primary one):
/// listed apart, never counted as a primary.
#[derive(Debug, Clone, Serialize)]
pub struct AlsoSeen {
    pub kind: FailureKind,
    pub summary: &'static str,
    pub cases: Vec<String>,
}

impl AlsoSeen {
    /// `error-without-class in 9 cases (a/1, a/2, and 7 more)`.
    pub fn line(&self, max: usize) -> String {
        let n = self.cases.len();
        format!("{} in {n} {} ({})", self.kind.code(), plural(n, "case"), capped(self.cases.iter().cloned(), n, max))
    }
}

/// Cases not run for one reason: a command the agent does not offer, a
/// transport the case does not apply to, a capability a finding took away.
#[derive(Debug, Clone, PartialEq)]
pub struct NotRun {
    /// UNSUPPORTED or BLOCKED.
    pub outcome: Outcome,
    /// The finding that blocks them, for BLOCKED cases.
    pub by: Option<FailureKind>,
    /// Why, once for the group.
    pub why: String,
    pub cases: Vec<String>,
}

impl NotRun {
    /// `UNSUPPORTED 5 cases: why (a/1, a/2, ...)`, the case list capped at
    /// `max` ids.
    pub fn line(&self, max: usize) -> String {
        let n = self.cases.len();
        let by = self.by.map_or(String::new(), |k| format!(" by {}", k.code()));
        format!("{} {n} {}{by}: {} ({})", self.outcome, plural(n, "case"), self.why, capped(self.cases.iter().cloned(), n, max))
    }
}

/// A finding that blocks cases: its kind, its detail (which a BLOCKED
/// case's text carries, so the case can be traced back to it), and what a
/// group of cases it blocks says.
struct Blocker {
    kind: FailureKind,
    detail: String,
    why: String,
}

/// The start-up failure that was the agent's fault, then the probe's
/// findings.
fn blockers(run: &RunResult) -> Vec<Blocker> {
    let mut out = Vec::new();
    if let Some((e, kind)) = run.startup_error.as_ref().and_then(|e| e.finding.map(|k| (e, k))) {
        // The message is said once, at the head of the report.
        out.push(Blocker { kind, detail: e.message.clone(), why: "the agent could not be run".into() });
    }
    if let Some(p) = &run.profile {
        out.extend(p.findings.iter().map(|f| Blocker { kind: f.kind, detail: f.detail.clone(), why: f.detail.clone() }));
    }
    out
}

fn blocked_by(r: &CaseResult, detail: &str) -> bool {
    r.outcome == Outcome::Blocked && r.failure.as_ref().is_some_and(|x| x.actual.contains(detail))
}

/// The run's distinct findings: why the agent could not be run (when it
/// is the agent's fault), the start-up probe's findings, then each primary
/// failure kind, each with the cases that show it. A single defect is one
/// finding, however many cases it touches. Ordered by the cases each
/// covers, most first; ties keep that order (probe findings first, then
/// catalogue order). A cause outnumbers its symptoms because the cases it
/// explains count under it (an agent that exits on 0xFF: the flush cases
/// where it was gone count under the probe's finding).
pub fn findings(run: &RunResult, strict: bool) -> Vec<Finding> {
    let mut out: Vec<Finding> = blockers(run)
        .into_iter()
        .map(|b| {
            let blocked = run.results.iter().filter(|r| blocked_by(r, &b.detail)).map(|r| r.id.clone()).collect();
            Finding { kind: b.kind, summary: b.kind.summary(), probe: Some(b.detail), cases: Vec::new(), blocked }
        })
        .collect();
    for r in counted(run, strict) {
        let kind = r.failure.as_ref().map_or(FailureKind::Other, |f| f.kind);
        match out.iter_mut().find(|f| f.kind == kind) {
            Some(f) => f.cases.push((r.id.clone(), r.outcome)),
            None => out.push(Finding { kind, summary: kind.summary(), probe: None, cases: vec![(r.id.clone(), r.outcome)], blocked: Vec::new() }),
        }
    }
    // A stable sort: ties keep the order they were found in.
    out.sort_by_key(|f| std::cmp::Reverse(f.covers()));
    out
}

/// The cases whose failures findings count: failing ones (and NON-STRICT
/// ones, which a findings list names either way), BLOCKED ones aside.
fn counted(run: &RunResult, strict: bool) -> impl Iterator<Item = &CaseResult> {
    run.results.iter().filter(move |r| (r.outcome.is_failing(strict) || r.outcome == Outcome::NonStrict) && r.outcome != Outcome::Blocked)
}

/// The secondary findings of the counted cases, by kind, most cases first.
pub fn also_seen(run: &RunResult, strict: bool) -> Vec<AlsoSeen> {
    let mut out: Vec<AlsoSeen> = Vec::new();
    for r in counted(run, strict) {
        let Some(f) = &r.failure else { continue };
        for s in &f.secondary {
            match out.iter_mut().find(|a| a.kind == s.kind) {
                Some(a) if a.cases.last() != Some(&r.id) => a.cases.push(r.id.clone()),
                Some(_) => {}
                None => out.push(AlsoSeen { kind: s.kind, summary: s.kind.summary(), cases: vec![r.id.clone()] }),
            }
        }
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.cases.len()));
    out
}

/// UNSUPPORTED and BLOCKED cases, one group per missing command,
/// capability or finding: UNSUPPORTED first, then BLOCKED, the larger
/// groups first within each.
pub fn not_run(run: &RunResult) -> Vec<NotRun> {
    let blockers = blockers(run);
    let mut out: Vec<NotRun> = Vec::new();
    for r in run.results.iter().filter(|r| matches!(r.outcome, Outcome::Unsupported | Outcome::Blocked)) {
        let actual = r.failure.as_ref().map_or(String::new(), |f| f.actual.clone());
        let (by, why) = match blockers.iter().find(|b| blocked_by(r, &b.detail)) {
            Some(b) => (Some(b.kind), b.why.clone()),
            None => (None, actual),
        };
        match out.iter_mut().find(|g| g.outcome == r.outcome && g.by == by && g.why == why) {
            Some(g) => g.cases.push(r.id.clone()),
            None => out.push(NotRun { outcome: r.outcome, by, why, cases: vec![r.id.clone()] }),
        }
    }
    out.sort_by_key(|g| (g.outcome != Outcome::Unsupported, std::cmp::Reverse(g.cases.len())));
    out
}

/// The start-up probe's result, one line each: what it settled (sync,
/// ids, matching, pace: [`crate::client::Profile::describe`]), then each
/// defect it found. Empty when no probe ran.
pub fn probe_lines(run: &RunResult) -> Vec<String> {
    run.profile.as_ref().map_or(Vec::new(), profile_lines)
}

/// What a start-up probe found, one line each (see [`probe_lines`]).
pub fn profile_lines(p: &crate::client::Profile) -> Vec<String> {
    let mut out = p.describe();
    if p.findings.is_empty() {
        out.push("found no defect".into());
    }
    out.extend(p.findings.iter().map(|f| format!("found {} ({}): {}", f.kind.code(), f.kind.summary(), f.detail)));
    out
}

/// The count and case list of a finding, `9 cases: a/1 FAIL, ...; blocks 4`.
pub fn covered(f: &Finding, max: usize) -> String {
    let mut out = format!("{} {}", f.covers(), plural(f.covers(), "case"));
    if !f.cases.is_empty() {
        out.push_str(&format!(": {}", capped(f.cases.iter().map(|(id, o)| format!("{id} {o}")), f.cases.len(), max)));
    }
    if !f.blocked.is_empty() {
        out.push_str(&format!("{}{} BLOCKED", if f.cases.is_empty() { ": " } else { "; " }, f.blocked.len()));
    }
    out
}

/// `n` items, of which the first `max` are named: `a, b, and 7 more`.
fn capped(items: impl Iterator<Item = String>, n: usize, max: usize) -> String {
    let named: Vec<String> = items.take(max).collect();
    match n.saturating_sub(max) {
        0 => named.join(", "),
        more => format!("{}, and {more} more", named.join(", ")),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Failure, Secondary};

    fn failing(id: &str, outcome: Outcome, kind: FailureKind, actual: &str, secondary: &[FailureKind]) -> CaseResult {
        let mut r = crate::verdict::test_result(id, outcome);
        r.failure = Some(Failure {
            kind,
            stage: Default::default(),
            requirement: String::new(),
            expected: String::new(),
            actual: actual.into(),
            transcript: (0, 0),
            secondary: secondary.iter().map(|k| Secondary { kind: *k, detail: String::new() }).collect(),
        });
        r
    }

    fn run(results: Vec<CaseResult>) -> RunResult {
        let mut run = RunResult::begin(crate::case::Role::Agent, "a".into(), "pty".into(), 1);
        let mut p = crate::client::Profile::reference();
        p.findings.push(crate::client::diagnose::ProbeFinding {
            kind: FailureKind::DiesOnFlushByte,
            capability: crate::client::diagnose::Capability::Flush,
            detail: "exits on 0xFF".into(),
            transcript: (0, 0),
        });
        run.profile = Some(p);
        run.results = results;
        run
    }

    #[test]
    fn findings_are_ordered_by_cases_covered_and_secondaries_stand_apart() {
        use FailureKind::*;
        let r = run(vec![
            failing("a/1", Outcome::Fail, WrongReturn, "x", &[ErrorWithoutClass]),
            failing("a/2", Outcome::Fail, PipelinedRequestsRejected, "x", &[ErrorWithoutClass]),
            failing("a/3", Outcome::Fail, PipelinedRequestsRejected, "x", &[]),
            failing("a/4", Outcome::Fail, PipelinedRequestsRejected, "x", &[ErrorWithoutClass]),
            failing("a/5", Outcome::Blocked, Blocked, "BLOCKED by flush/1: exits on 0xFF", &[]),
            failing("a/6", Outcome::Blocked, Blocked, "BLOCKED by flush/1: exits on 0xFF", &[]),
            failing("a/7", Outcome::Unsupported, NotApplicable, "guest-info does not list guest-get-devices as enabled", &[]),
            failing("a/8", Outcome::Unsupported, NotApplicable, "guest-info does not list guest-get-devices as enabled", &[]),
            failing("a/9", Outcome::Unsupported, NotApplicable, "needs a unix socket", &[]),
            failing("a/10", Outcome::Fail, NoReply, "x", &[]),
            failing("a/11", Outcome::Fail, NoReply, "x", &[]),
            crate::verdict::test_result("a/12", Outcome::Info),
        ]);
        let f = findings(&r, false);
        let order: Vec<(String, usize)> = f.iter().map(|f| (f.kind.code(), f.covers())).collect();
        // Ties: the probe's finding before the catalogue's, then catalogue order.
        assert_eq!(
            order,
            [("pipelined-requests-rejected".to_string(), 3), ("dies-on-flush-byte".into(), 2), ("no-reply".into(), 2), ("wrong-return".into(), 1)]
        );
        assert!(!f.iter().any(|f| f.kind == ErrorWithoutClass), "a secondary is never a primary");
        let also = also_seen(&r, false);
        assert_eq!((also.len(), also[0].kind, also[0].cases.len()), (1, ErrorWithoutClass, 3));

        let groups: Vec<String> = not_run(&r).iter().map(|g| g.line(1)).collect();
        assert_eq!(
            groups,
            [
                "UNSUPPORTED 2 cases: guest-info does not list guest-get-devices as enabled (a/7, and 1 more)",
                "UNSUPPORTED 1 case: needs a unix socket (a/9)",
                "BLOCKED 2 cases by dies-on-flush-byte: exits on 0xFF (a/5, and 1 more)",
            ]
        );
        let t = crate::report::Tally::new(&r.results, false);
        assert_eq!(t.sentence(), "1 passed, 6 failed, 5 not run (3 UNSUPPORTED, 2 BLOCKED)");
    }
}
