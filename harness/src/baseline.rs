//! Expectation baselines, WPT-style: the outcomes a given agent is known to
//! have, so CI gates on regressions instead of on known defects.
//!
//! ```toml
//! agent = "qemu-ga 7.2.22 (Debian), isa-serial over pty"
//! [outcomes]
//! "framing/8" = ["FAIL", "PASS"]   # known intermittent: either is expected
//! "flush-answer/1" = "INFO"
//! ```
//!
//! A case not listed is expected to conform (PASS, INFO, UNSUPPORTED, and
//! NON-STRICT unless `--strict`). A run then has regressions (a failing
//! outcome the baseline does not list: the run fails) and unexpected passes
//! (the baseline lists only failing outcomes and the case conformed:
//! reported, so the baseline can be tightened).

use crate::verdict::CaseResult;
use crate::verdict::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Free text: which agent, version and transport this describes.
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub outcomes: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// How a run compares with a baseline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// (case id, outcome, expected outcomes): failing and not expected.
    pub regressions: Vec<(String, Outcome, Vec<Outcome>)>,
    /// (case id, outcome, expected outcomes): conforming where only failures were expected.
    pub unexpected_passes: Vec<(String, Outcome, Vec<Outcome>)>,
}

impl Baseline {
    /// Parse a baseline file; errors name the file, line and field.
    pub fn parse(name: &str, text: &str, known_ids: &[&str]) -> Result<Baseline, String> {
        let b: Baseline = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            format!("{name}:{line}: {}", e.message())
        })?;
        for (id, v) in &b.outcomes {
            let line = text.find(&format!("\"{id}\"")).map_or(0, |at| text[..at].matches('\n').count() + 1);
            if !known_ids.contains(&id.as_str()) {
                return Err(format!("{name}:{line}: outcomes.\"{id}\": no such case in the catalogue"));
            }
            for s in v.list() {
                if Outcome::parse(s).is_none() {
                    return Err(format!("{name}:{line}: outcomes.\"{id}\": unknown outcome {s:?} (one of PASS, NON-STRICT, INFO, UNSUPPORTED, FAIL, TIMEOUT, ERROR)"));
                }
            }
        }
        Ok(b)
    }

    /// Read and parse the baseline file at `path` (`--expect`, `QGA_EXPECT`).
    pub fn read(path: &std::path::Path, known_ids: &[String]) -> Result<Baseline, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Baseline::parse(&path.display().to_string(), &text, &known_ids.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The outcomes expected for a case; empty when it is not listed.
    pub fn expected(&self, id: &str) -> Vec<Outcome> {
        self.outcomes.get(id).map(|v| v.list().iter().filter_map(|s| Outcome::parse(s)).collect()).unwrap_or_default()
    }

    pub fn compare(&self, results: &[CaseResult], strict: bool) -> Comparison {
        let mut c = Comparison::default();
        for r in results {
            let expected = self.expected(&r.id);
            if expected.is_empty() {
                if r.outcome.is_failing(strict) {
                    c.regressions.push((r.id.clone(), r.outcome, expected));
                }
            } else if !expected.contains(&r.outcome) {
                if r.outcome.is_failing(strict) {
                    c.regressions.push((r.id.clone(), r.outcome, expected));
                } else if expected.iter().all(|o| o.is_failing(strict)) {
                    c.unexpected_passes.push((r.id.clone(), r.outcome, expected));
                }
            }
        }
        c
    }

    /// A baseline that expects exactly what `results` shows.
    pub fn from_results(agent: &str, results: &[CaseResult], strict: bool) -> Baseline {
        let outcomes = results
            .iter()
            .filter(|r| r.outcome.is_failing(strict) || r.outcome == Outcome::Info)
            .map(|r| (r.id.clone(), OneOrMany::One(r.outcome.as_str().to_owned())))
            .collect();
        Baseline { agent: agent.to_owned(), outcomes }
    }
}

impl OneOrMany {
    fn list(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, outcome: Outcome) -> CaseResult {
        crate::verdict::test_result(id, outcome)
    }

    #[test]
    fn regressions_and_unexpected_passes() {
        let text = "agent = \"x\"\n[outcomes]\n\"s/1\" = \"FAIL\"\n\"s/2\" = [\"FAIL\", \"PASS\"]\n\"s/3\" = \"FAIL\"\n";
        let b = Baseline::parse("b.toml", text, &["s/1", "s/2", "s/3", "s/4", "s/5"]).unwrap();
        let results = [
            result("s/1", Outcome::Fail),
            result("s/2", Outcome::Pass),
            result("s/3", Outcome::Pass),
            result("s/4", Outcome::Fail),
            result("s/5", Outcome::NonStrict),
        ];
        let c = b.compare(&results, false);
        assert_eq!(c.regressions.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["s/4"]);
        assert_eq!(c.unexpected_passes.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["s/3"]);
        let c = b.compare(&results, true);
        assert_eq!(c.regressions.len(), 2);
    }

    #[test]
    fn bad_baselines_name_line_and_field() {
        let e = Baseline::parse("b.toml", "[outcomes]\n\"s/1\" = \"FAIL\"\n\"nope/9\" = \"FAIL\"\n", &["s/1"]).unwrap_err();
        assert!(e.starts_with("b.toml:3:") && e.contains("nope/9"), "{e}");
        let e = Baseline::parse("b.toml", "[outcomes]\n\"s/1\" = \"BROKEN\"\n", &["s/1"]).unwrap_err();
        assert!(e.starts_with("b.toml:2:") && e.contains("BROKEN"), "{e}");
        let e = Baseline::parse("b.toml", "[outcome]\n", &["s/1"]).unwrap_err();
        assert!(e.starts_with("b.toml:1:"), "{e}");
    }
}
