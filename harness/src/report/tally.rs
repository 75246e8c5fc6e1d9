//! The closing count every report ends with: what passed, what failed,
//! what did not run.

use crate::verdict::{CaseResult, Outcome};

/// The closing count: PASS and INFO count as passed, UNSUPPORTED and
/// BLOCKED as not run (BLOCKED still fails a run: the agent lacks
/// something every client needs), NON-STRICT apart unless `--strict` makes
/// it a failure, and every other failing outcome as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    /// NON-STRICT outcomes when they do not fail the run.
    pub non_strict: usize,
    pub unsupported: usize,
    pub blocked: usize,
}

impl Tally {
    pub fn new(results: &[CaseResult], strict: bool) -> Tally {
        let n = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
        let non_strict = if strict { 0 } else { n(Outcome::NonStrict) };
        let (unsupported, blocked) = (n(Outcome::Unsupported), n(Outcome::Blocked));
        let passed = n(Outcome::Pass) + n(Outcome::Info);
        Tally { total: results.len(), passed, failed: results.len() - passed - non_strict - unsupported - blocked, non_strict, unsupported, blocked }
    }

    pub fn not_run(&self) -> usize {
        self.unsupported + self.blocked
    }

    /// How an outcome counts, in the words of [`Tally::sentence`].
    pub fn counts_as(o: Outcome, strict: bool) -> &'static str {
        match o {
            Outcome::Pass | Outcome::Info => "passed",
            Outcome::Unsupported => "not run",
            Outcome::Blocked => "not run (fails the run)",
            Outcome::NonStrict if !strict => "apart (fails only under --strict)",
            _ => "failed",
        }
    }

    /// `0 passed, 106 failed, 17 not run (13 UNSUPPORTED, 4 BLOCKED)`,
    /// with `, 2 NON-STRICT` after the failed count when there are any.
    pub fn sentence(&self) -> String {
        let mut out = format!("{} passed, {} failed", self.passed, self.failed);
        if self.non_strict > 0 {
            out.push_str(&format!(", {} NON-STRICT", self.non_strict));
        }
        if self.not_run() > 0 {
            out.push_str(&format!(", {} not run ({} UNSUPPORTED, {} BLOCKED)", self.not_run(), self.unsupported, self.blocked));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_pass_and_info_as_passed_and_keeps_not_run_apart() {
        let results: Vec<CaseResult> = ["PASS", "INFO", "NON-STRICT", "UNSUPPORTED", "BLOCKED", "FAIL", "ERROR"]
            .iter()
            .enumerate()
            .map(|(i, o)| crate::verdict::test_result(&format!("s/{i}"), Outcome::parse(o).unwrap()))
            .collect();
        assert_eq!(Tally::new(&results, false).sentence(), "2 passed, 2 failed, 1 NON-STRICT, 2 not run (1 UNSUPPORTED, 1 BLOCKED)");
        assert_eq!(Tally::new(&results, true).sentence(), "2 passed, 3 failed, 2 not run (1 UNSUPPORTED, 1 BLOCKED)");
        let all_pass = [crate::verdict::test_result("s/1", Outcome::Pass)];
        assert_eq!(Tally::new(&all_pass, false).sentence(), "1 passed, 0 failed");
    }
}
