//! JUnit XML for CI systems: one testsuite per catalogue section, one
//! testcase per case. FAIL (and NON-STRICT under `--strict`) is a
//! `<failure>`, ERROR and TIMEOUT an `<error>`, UNSUPPORTED `<skipped>`; the
//! failure body holds requirement, expected and actual. Written with
//! quick-junit, which also drops characters XML cannot carry; agent bytes
//! are escaped as `\xHH` before they get here.

use super::sanitize;
use crate::verdict::RunResult;
use crate::verdict::Outcome;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::collections::BTreeMap;

/// The JUnit document for one run.
pub fn render(run: &RunResult, strict: bool) -> Result<String, String> {
    let mut report = Report::new(sanitize(&format!("qga-harness: {} over {}", run.agent, run.transport)));
    report.set_time(run.elapsed);
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for r in &run.results {
        let status = match r.outcome {
            Outcome::Pass | Outcome::Info => TestCaseStatus::success(),
            Outcome::NonStrict if !strict => TestCaseStatus::success(),
            Outcome::Unsupported => {
                let mut s = TestCaseStatus::skipped();
                if let Some(f) = &r.failure {
                    s.set_message(sanitize(&f.actual));
                }
                s
            }
            Outcome::Fail | Outcome::Wrong | Outcome::NonStrict | Outcome::Blocked => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Outcome::Error | Outcome::Timeout => TestCaseStatus::non_success(NonSuccessKind::Error),
        };
        let mut status = status;
        if !matches!(status, TestCaseStatus::Success { .. } | TestCaseStatus::Skipped { .. }) {
            status.set_type(r.outcome.as_str());
            if let Some(f) = &r.failure {
                status.set_message(sanitize(&format!("{}: {}", r.outcome, f.actual)));
                let body = format!(
                    "finding: {} ({})\nrequirement: {}\nexpected: {}\nactual: {}\ntranscript: #{}..#{}",
                    f.kind.code(),
                    f.kind.summary(),
                    f.requirement,
                    f.expected,
                    f.actual,
                    f.transcript.0,
                    f.transcript.1
                );
                // Keep the line breaks; escape every other control character.
                status.set_description(body.split('\n').map(sanitize).collect::<Vec<_>>().join("\n"));
            }
        }
        let mut case = TestCase::new(sanitize(&format!("{} {}", r.id, r.title)), status);
        case.set_classname(format!("qga.{}", r.section));
        case.set_time(r.elapsed);
        suites.entry(&r.section).or_insert_with(|| TestSuite::new(r.section.clone())).add_test_case(case);
    }
    report.add_test_suites(suites.into_values());
    report.to_string().map_err(|e| e.to_string())
}
