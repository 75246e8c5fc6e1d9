//! Verdicts that do not follow the random id draw, and a start-up probe
//! that finds id defects per magnitude and per command kind:
//!
//! - three runs without a seed against an agent that loses id precision
//!   (integers of 1e15 or more printed with 15 significant digits) give
//!   the same outcome for every case, and the probe names the defect once
//!   and draws every id below 1e15;
//! - an agent that echoes ids on the syncs only is matched by order on the
//!   other commands: one `id-not-echoed` finding, and no case's recovery
//!   is wedged;
//! - a delimited sync answered twice is a duplicate the probe sees.

mod common;

use common::*;
use qga_harness::case::load;
use qga_harness::client::{Capability, IdWidth, ReplyMatch};
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::finding::FailureKind;
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use qga_harness::verdict::{RecoveryGrade, RunResult};
use std::collections::BTreeMap;

/// The whole agent catalogue against the reference agent with `bugs`,
/// over a socketpair; `seed` None draws one, as `run` without `--seed` does.
fn run(bugs: &str, seed: Option<u64>) -> RunResult {
    let transport = TransportKind::Socketpair;
    let template = qga_harness::agent::template::reference_served_by(HARNESS, transport).unwrap().with_extra(&["--bug", bugs]).unwrap();
    let cases = load::embedded_role(qga_harness::case::Role::Agent).unwrap();
    let mut eo = EngineOptions { keep_transcripts: false, ..Default::default() };
    if let Some(seed) = seed {
        eo.seed = seed;
    }
    let config = SessionConfig::new(template, transport);
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run_cases(config, &cases, Transcript::default(), &eo))
}

fn outcomes(r: &RunResult) -> BTreeMap<String, String> {
    r.results.iter().map(|c| (c.id.clone(), format!("{:?}", c.outcome))).collect()
}

#[test]
fn three_unseeded_runs_of_a_precision_losing_agent_agree() {
    let runs: Vec<RunResult> = (0..3).map(|_| run("fifteen-digits", None)).collect();
    assert!(runs[0].seed != runs[1].seed || runs[1].seed != runs[2].seed, "the runs drew the same seed");
    let first = outcomes(&runs[0]);
    let mut differences = Vec::new();
    for r in &runs[1..] {
        for (id, outcome) in outcomes(r) {
            if first.get(&id) != Some(&outcome) {
                differences.push(format!("{id}: {:?} with seed {}, {outcome} with seed {}", first.get(&id), runs[0].seed, r.seed));
            }
        }
    }
    assert!(differences.is_empty(), "{} outcome(s) differ:\n{}", differences.len(), differences.join("\n"));
    for r in &runs {
        assert!(r.startup_error.is_none(), "seed {}: {:?}", r.seed, r.startup_error.as_ref().map(|e| &e.message));
        let p = r.profile.as_ref().expect("a profile");
        assert_eq!((p.id_width, p.request_id_width), (IdWidth::Below1e15, IdWidth::Below1e15), "seed {}", r.seed);
        let id_findings: Vec<_> = p.findings.iter().filter(|f| f.capability == Capability::ExactIds).map(|f| f.kind).collect();
        assert_eq!(id_findings, [FailureKind::IdFifteenDigits], "seed {}: {:?}", r.seed, p.findings);
    }
}

#[test]
fn an_agent_echoing_ids_on_the_syncs_only_is_matched_by_order_elsewhere() {
    let r = run("sync-only-id-echo", Some(1));
    let p = r.profile.as_ref().expect("a profile");
    assert_eq!(p.matching, ReplyMatch::Order);
    assert_eq!(p.matching_by_command.get("guest-sync"), Some(&ReplyMatch::IdEcho));
    let not_echoed: Vec<_> = p.findings.iter().filter(|f| f.kind == FailureKind::IdNotEchoed).collect();
    assert_eq!(not_echoed.len(), 1, "{:?}", p.findings);
    assert!(not_echoed[0].detail.contains("guest-ping"), "{}", not_echoed[0].detail);
    let wedged: Vec<&str> = r.results.iter().filter(|c| c.recovery.grade == RecoveryGrade::Wedged).map(|c| c.id.as_str()).collect();
    assert!(wedged.is_empty(), "wedged: {wedged:?}");
}

#[test]
fn a_delimited_sync_answered_twice_is_a_duplicate() {
    let r = run("reply-twice", Some(1));
    let p = r.profile.as_ref().expect("a profile");
    let dups: Vec<_> = p.findings.iter().filter(|f| f.kind == FailureKind::DuplicateReply).collect();
    assert_eq!(dups.len(), 1, "{:?}", p.findings);
    assert_eq!(dups[0].capability, Capability::OneReply);
    assert!(dups[0].detail.contains("guest-sync-delimited was answered twice"), "{}", dups[0].detail);
}
