//! The one exit policy: how a run (or one case of it) gates CI. `run`,
//! `client`, `replay` and the libtest target (`tests/conformance.rs`) all
//! decide through [`gate`], so a case that fails `run` fails the same way
//! under cargo test or nextest.

use crate::baseline::Baseline;
use crate::verdict::{CaseResult, Outcome, RunResult};

/// What a run means for CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Conforming, or every outcome as the baseline expects.
    Pass,
    /// Conformance failures (or regressions against the baseline): the
    /// cases and outcomes that count.
    Fail(Vec<(String, Outcome)>),
    /// The harness could not judge: it could not run the agent at all, or
    /// a case ERRORed (the harness failed, not the agent).
    HarnessError(String),
}

impl Gate {
    /// The process exit code of `run` and `client` (0, 1 or 2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Gate::Pass => 0,
            Gate::Fail(_) => 1,
            Gate::HarnessError(_) => 2,
        }
    }
}

/// Gate `results`: against `baseline` when given (only regressions count),
/// else every failing outcome (NON-STRICT only under `strict`).
pub fn gate_results(results: &[CaseResult], baseline: Option<&Baseline>, strict: bool) -> Gate {
    let counting: Vec<(String, Outcome)> = match baseline {
        Some(b) => b.compare(results, strict).regressions.into_iter().map(|(id, o, _)| (id, o)).collect(),
        None => results.iter().filter(|r| r.outcome.is_failing(strict)).map(|r| (r.id.clone(), r.outcome)).collect(),
    };
    if let Some((id, _)) = counting.iter().find(|(_, o)| *o == Outcome::Error) {
        let why = results.iter().find(|r| &r.id == id).and_then(|r| r.failure.as_ref()).map_or(String::new(), |f| f.actual.clone());
        return Gate::HarnessError(format!("{id}: {why}"));
    }
    if counting.is_empty() {
        Gate::Pass
    } else {
        Gate::Fail(counting)
    }
}

/// Gate a whole run. An agent the harness could not run at all (it could
/// not spawn it, open the channel, boot the machine) is one harness error,
/// not a verdict per case. An agent that started and whose defect kept the
/// run from going on (it died, or answered nothing usable) is the agent's
/// failure: its cases are BLOCKED by that finding and gate as such.
pub fn gate(run: &RunResult, baseline: Option<&Baseline>, strict: bool) -> Gate {
    match &run.startup_error {
        Some(e) if e.harness || e.finding.is_none() => Gate::HarnessError(format!("the agent could not be run: {}", e.message)),
        _ => gate_results(&run.results, baseline, strict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, outcome: Outcome) -> CaseResult {
        crate::verdict::test_result(id, outcome)
    }

    #[test]
    fn one_policy() {
        let results = vec![r("a/1", Outcome::Pass), r("a/2", Outcome::Fail), r("a/3", Outcome::NonStrict)];
        assert_eq!(gate_results(&results, None, false), Gate::Fail(vec![("a/2".into(), Outcome::Fail)]));
        assert_eq!(gate_results(&results, None, true).exit_code(), 1);
        let b = Baseline::parse("b", "[outcomes]\n\"a/2\" = \"FAIL\"\n", &["a/1", "a/2", "a/3"]).unwrap();
        assert_eq!(gate_results(&results, Some(&b), false), Gate::Pass);
        let errored = vec![r("a/1", Outcome::Error)];
        assert_eq!(gate_results(&errored, None, false).exit_code(), 2);
        assert_eq!(gate_results(&[r("a/1", Outcome::Pass)], None, false), Gate::Pass);
    }

    #[test]
    fn an_agent_that_started_and_cannot_be_run_fails_a_harness_that_could_not_run_it_errs() {
        let mut run = RunResult::begin(crate::case::Role::Agent, "a".into(), "pty".into(), 1);
        run.results = vec![r("a/1", Outcome::Blocked), r("a/2", Outcome::Unsupported)];
        let e = crate::verdict::StartupError { message: "m".into(), stderr: String::new(), hint: None, harness: false, finding: Some(crate::verdict::FailureKind::AgentGone), transcript: Vec::new() };
        run.startup_error = Some(e.clone());
        assert_eq!(gate(&run, None, false), Gate::Fail(vec![("a/1".into(), Outcome::Blocked)]));
        run.startup_error = Some(crate::verdict::StartupError { harness: true, finding: None, ..e });
        assert_eq!(gate(&run, None, false).exit_code(), 2);
    }
}
