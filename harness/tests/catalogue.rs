//! The suite tests itself: the whole catalogue against the reference agent,
//! its legal variants and its mutants (fixtures/src/mutation.rs).
//!
//! - the reference agent and every legal variant (the slow ones included):
//!   no FAIL, NON-STRICT, BLOCKED, TIMEOUT or ERROR;
//! - every mutant fails exactly the cases it declares
//!   (`Bug::declared_failures`): one defect, its own findings;
//! - a mutant that declares its primary finding (`Bug::primary_finding`)
//!   gets it named first in the run's findings (`report::findings`): the
//!   cause before its symptoms;
//! - every MUST case is declared by some mutant (a case no mutant can fail
//!   tests nothing), except those listed as awaiting one.
//!
//! Cases run over a socketpair, or over their own transport where they do
//! not apply to one. The matrix is printed (run with --nocapture to see it
//! on success).

mod common;

use common::*;
use qga_fixtures::mutation::{Bug, Variant};
use qga_harness::agent::AgentTemplate;
use qga_harness::case::load;
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::finding::FailureKind;
use qga_harness::verdict::RunResult;
// Cases run over a socketpair where they apply; the rest (unix-listen only)
// over their own transport.
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use qga_harness::verdict::{Level, Outcome};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Reference,
    Legal,
    Defect,
}

fn agents() -> Vec<(String, Kind, String)> {
    // The third field is the reference agent's extra arguments.
    let mut v = vec![("reference".to_string(), Kind::Reference, String::new())];
    for var in Variant::ALL {
        v.push((var.name().to_string(), Kind::Legal, format!("--variant {}", var.name())));
    }
    for bug in Bug::ALL {
        v.push((bug.name().to_string(), Kind::Defect, format!("--bug {}", bug.name())));
    }
    v
}

/// Cases that do not apply over a socketpair (unix-listen only, say) run
/// over this transport instead.
fn transport_for(case: &qga_harness::case::Case) -> TransportKind {
    let local = [TransportKind::Socketpair, TransportKind::Pty, TransportKind::UnixListen];
    local.into_iter().find(|t| case.applies_to(*t)).expect("every case applies to a local transport")
}

/// Every case, each over the transport it applies to, in catalogue order,
/// as one run: the socketpair run (its probe, its header) with the results
/// of the cases run over other transports merged in.
fn run_all(extra: &str) -> RunResult {
    let cases = load::embedded_role(qga_harness::case::Role::Agent).unwrap();
    let mut by_id = std::collections::HashMap::new();
    let mut main: Option<RunResult> = None;
    for t in TransportKind::ALL {
        if cases.iter().any(|c| transport_for(c) == t) {
            let template = match t {
                TransportKind::UnixListen => format!("{HARNESS} ref-agent --unix-listen {{path}} {extra}"),
                _ => format!("{HARNESS} ref-agent {extra}"),
            };
            let mut run = run_one(&template, t, &|c| transport_for(c) == t);
            for r in std::mem::take(&mut run.results) {
                by_id.insert(r.id.clone(), r);
            }
            if main.is_none() || t == TransportKind::Socketpair {
                main = Some(run);
            }
        }
    }
    let mut run = main.expect("some case runs locally");
    run.results = cases.iter().map(|c| by_id.remove(&c.id).unwrap()).collect();
    run
}

fn run_one(template: &str, transport: TransportKind, keep: &dyn Fn(&qga_harness::case::Case) -> bool) -> RunResult {
    let cases: Vec<_> = load::embedded_role(qga_harness::case::Role::Agent).unwrap().into_iter().filter(|c| keep(c)).collect();
    let config = SessionConfig::new(AgentTemplate::parse(template).unwrap(), transport);
    let eo = EngineOptions { keep_transcripts: false, ..Default::default() };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run_cases(config, &cases, Transcript::default(), &eo))
}

fn cell(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => ".",
        Outcome::NonStrict => "n",
        Outcome::Info => "i",
        Outcome::Unsupported => "u",
        Outcome::Blocked => "B",
        Outcome::Fail => "F",
        Outcome::Wrong => "W",
        Outcome::Timeout => "T",
        Outcome::Error => "E",
    }
}

#[test]
fn every_mutant_fails_and_every_must_case_bites() {
    let agents = agents();
    // Two workers: this machine has two cores, and each run is one agent
    // plus the harness.
    let jobs: Vec<_> = agents.iter().cloned().enumerate().collect();
    let queue = std::sync::Mutex::new(jobs);
    let results = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some((i, (_, _, template))) = queue.lock().unwrap().pop() else { break };
                let r = run_all(&template);
                results.lock().unwrap().insert(i, r);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let cases = load::embedded_role(qga_harness::case::Role::Agent).unwrap();

    // The matrix: one row per case, one column per agent.
    let mut out = String::from("\ncase                      lvl   ");
    for (i, (name, _, _)) in agents.iter().enumerate() {
        out.push_str(&format!("{:>3}", i));
        let _ = name;
    }
    out.push('\n');
    for (ci, case) in cases.iter().enumerate() {
        out.push_str(&format!("{:<25} {:<5} ", case.id, case.level.to_string()));
        for i in 0..agents.len() {
            out.push_str(&format!("{:>3}", cell(results[&i].results[ci].outcome)));
        }
        out.push('\n');
    }
    out.push_str("\ncolumns:\n");
    for (i, (name, kind, _)) in agents.iter().enumerate() {
        out.push_str(&format!("{i:>3} {name} ({kind:?})\n"));
    }
    out.push_str("cells: . PASS  n NON-STRICT  i INFO  u UNSUPPORTED  B BLOCKED  F FAIL  T TIMEOUT  E ERROR\n");
    println!("{out}");

    let mut problems = Vec::new();
    // Mutants whose primary finding is not the first one named, all in
    // one problem so that the list shows which.
    let mut not_first = Vec::new();
    let failing = |o: Outcome| matches!(o, Outcome::Fail | Outcome::NonStrict | Outcome::Timeout | Outcome::Error);
    for (i, (name, kind, _)) in agents.iter().enumerate() {
        let run = &results[&i];
        let r = &run.results;
        match kind {
            Kind::Reference | Kind::Legal => {
                let details: Vec<String> = r
                    .iter()
                    .filter(|c| c.outcome.is_failing(false) || c.outcome == Outcome::NonStrict)
                    .map(|c| format!("{} {}: {}", c.id, c.outcome, c.failure.as_ref().map_or(String::new(), |f| f.actual.clone())))
                    .collect();
                if !details.is_empty() {
                    problems.push(format!("{name} ({kind:?}) must conform but got: {}", details.join("; ")));
                }
            }
            Kind::Defect => {
                // One defect, its own findings: it fails exactly the cases
                // it declares (fixtures/src/mutation.rs), and no other.
                let bug = Bug::from_name(name).expect("a bug");
                let declared = bug.declared_failures();
                let must: Vec<&str> = declared.iter().filter(|d| !d.ends_with('?')).copied().collect();
                let may: Vec<&str> = declared.iter().map(|d| d.trim_end_matches('?')).collect();
                for c in r.iter().filter(|c| failing(c.outcome)) {
                    if !may.contains(&c.id.as_str()) {
                        let why = c.failure.as_ref().map_or(String::new(), |f| format!("{}: {}", f.kind.code(), f.actual));
                        problems.push(format!("mutant {name} fails {} ({}), which it does not declare: {why}", c.id, c.outcome));
                    }
                }
                for id in &must {
                    match r.iter().find(|c| c.id == *id) {
                        Some(c) if failing(c.outcome) => {}
                        Some(c) => problems.push(format!("mutant {name} declares {id} but got {}", c.outcome)),
                        None => problems.push(format!("mutant {name} declares {id}, which is not in the catalogue")),
                    }
                }
                if must.is_empty() {
                    problems.push(format!("mutant {name} declares no case it must fail"));
                }
                // One defect, at most two findings (its cause, and one
                // symptom the harness cannot trace back to it). The
                // exceptions are exact, so that a change either way shows.
                const MORE_FINDINGS: &[(&str, usize)] = &[
                    // flush-ignored; two recoveries after deep or pre-restart
                    // stale input that no resync gets through (wedged,
                    // resync-failed).
                    ("ff-line-start-only", 3),
                    // Fragments dropped per read: split requests rejected,
                    // requests of a burst cut at a read boundary swallowed,
                    // and raw split or 256 KiB requests answered by an error.
                    ("fragment-per-read", 3),
                    // Two defects in one: 0xFF dropped without ending the
                    // line (flush-ignored), and framing by newline (no reply
                    // without one; a request spread over lines rejected).
                    ("newline-swallow", 3),
                ];
                let found = qga_harness::report::findings(run, false).len();
                let allowed = MORE_FINDINGS
                    .iter()
                    .find(|(n, _)| *n == name.as_str())
                    .map_or(2, |(_, k)| *k);
                if found > allowed || (allowed > 2 && found != allowed) {
                    problems.push(format!("mutant {name}: {found} distinct findings, {allowed} expected at most (exact above 2)"));
                }
                // The cause first: the finding a user should read first
                // is the first the run names.
                if let Some(code) = bug.primary_finding() {
                    if serde_json::from_value::<FailureKind>(serde_json::Value::from(code)).is_err() {
                        problems.push(format!("mutant {name} declares primary finding {code}, which is no finding code"));
                    }
                    let findings = qga_harness::report::findings(run, false);
                    if findings.first().map(|f| f.kind.code()).as_deref() != Some(code) {
                        let named: Vec<String> = findings
                            .iter()
                            .map(|f| {
                                let probe = if f.probe.is_some() { "probe, " } else { "" };
                                format!("{} ({probe}{} cases)", f.kind.code(), f.cases.len())
                            })
                            .collect();
                        not_first.push(format!("{name}: wants {code} first, run names [{}]", named.join(", ")));
                    }
                }
            }
        }
    }
    if !not_first.is_empty() {
        problems.push(format!(
            "{} mutant(s) do not get their primary finding named first:\n  {}",
            not_first.len(),
            not_first.join("\n  ")
        ));
    }
    // MUST cases no single defect fails. They check that a client recovers
    // (after restarts, stale replies, garbage, a client leaving): only a
    // defect that breaks the sentinel or the resync fails them, and the
    // start-up probe now names such a defect once and BLOCKs these cases,
    // so they need mutants of their own that break recovery only after a
    // restart or under stale input. Kept exact: a case that a mutant now
    // declares must leave the list.
    const AWAITING_A_MUTANT: &[&str] = &[
        "connection/2",
        "framing/10",
        "limits/5",
        "limits/6",
        "partial-response/1",
        "partial-response/3",
        "partial-response/4",
        "partial-response/7",
        "restart/1",
        "restart/2",
        "restart/3",
        "restart/4",
        "restart/6",
        "restart/7",
    ];
    // The schema section is generated: one validator checks every command
    // against the schema. The schema mutants bite it through the commands
    // the reference agent has (schema/1, 2, 4, 5, 6, 14, 19), and its unit
    // tests cover the rest of the schema; a mutant per command would test
    // the reference agent's data, not the validator.
    for case in cases.iter().filter(|c| c.level == Level::MUST && c.section() != "schema") {
        let declared = Bug::ALL.iter().any(|b| b.declared_failures().contains(&case.id.as_str()));
        let awaiting = AWAITING_A_MUTANT.contains(&case.id.as_str());
        if !declared && !awaiting {
            problems.push(format!("MUST case {} is failed by no mutant", case.id));
        }
        if declared && awaiting {
            problems.push(format!("MUST case {} is now declared by a mutant: take it off AWAITING_A_MUTANT", case.id));
        }
    }
    assert!(problems.is_empty(), "{out}\n{} problem(s):\n{}", problems.len(), problems.join("\n"));
}
