//! Verdicts that hold up on agents with several defects, slow agents and
//! repeated runs:
//!
//! - an agent with several defects at once gets every one of them named in
//!   the run's findings (the first must not hide the others);
//! - the slow legal variants pass the whole catalogue on a pty and a unix
//!   socket too (the catalogue self-test covers the socketpair);
//! - each case's outcome alone equals its outcome in the full run
//!   (isolation), for the reference agent, a slow variant and three mutants;
//! - two runs with the same `--seed` send byte-identical requests.

mod common;

use common::*;
use qga_harness::agent::AgentTemplate;
use qga_harness::case::load;
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::verdict::RunResult;
use qga_harness::session::SessionConfig;
use qga_harness::transcript::{Direction, Record, Transcript};
use qga_harness::transport::TransportKind;
use qga_harness::verdict::Outcome;
use std::collections::BTreeSet;

fn template(extra: &str, transport: TransportKind) -> AgentTemplate {
    let extra = shell_words::split(extra).unwrap();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    qga_harness::agent::template::reference_served_by(HARNESS, transport).unwrap().with_extra(&extra).unwrap()
}

fn run(extra: &str, transport: TransportKind, filter: &dyn Fn(&str) -> bool, seed: u64, keep: bool) -> RunResult {
    let cases: Vec<_> = load::embedded_role(qga_harness::case::Role::Agent).unwrap().into_iter().filter(|c| filter(&c.id)).collect();
    let config = SessionConfig::new(template(extra, transport), transport);
    let eo = EngineOptions { keep_transcripts: keep, seed, ..Default::default() };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run_cases(config, &cases, Transcript::default(), &eo))
}

fn kinds(r: &RunResult) -> BTreeSet<String> {
    qga_harness::report::findings(r, false).iter().map(|f| f.kind.code()).collect()
}

/// Each combination is modelled on a real agent (protocol.md §6); each
/// defect must show as its own finding.
#[test]
fn every_defect_of_a_multi_defect_agent_is_named() {
    let combos: &[(&str, &[&str])] = &[
        // No sentinel, no id echo, one request per read.
        (
            "no-sentinel,no-id-echo,one-read-one-request",
            // one request per read: the requests after the first in a
            // write are swallowed (named as such, not as silence).
            &["no-sentinel", "id-not-echoed", "request-swallowed"],
        ),
        // Ids held as doubles, newline-only framing, output flush before
        // each delimited reply.
        ("double-ids,newline-framing,flush-before-delimited", &["id-rounded", "no-reply-without-newline", "replies-lost"]),
        // UTF-8 sentinel, numeric ids rejected, errors without a class.
        ("utf8-sentinel,numeric-id-rejected,error-without-class", &["utf8-sentinel", "numeric-id-rejected", "error-without-class"]),
        // 32-bit ids, error classes outside QAPI, unknown commands unanswered.
        ("truncated-ids,bad-error-class,silent-unknown", &["id-truncated", "error-class-not-qapi", "no-reply"]),
    ];
    let mut problems = Vec::new();
    for (bugs, want) in combos {
        let r = run(&format!("--bug {bugs}"), TransportKind::Socketpair, &|_| true, 1, false);
        let got = kinds(&r);
        for w in *want {
            if !got.contains(*w) {
                problems.push(format!("--bug {bugs}: finding {w} missing; got {got:?}"));
            }
        }
        assert!(r.startup_error.is_none(), "--bug {bugs}: {:?}", r.startup_error.map(|e| e.message));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn assert_conforms(extra: &str, transport: TransportKind) {
    let r = run(extra, transport, &|_| true, 3, false);
    let bad: Vec<String> = r
        .results
        .iter()
        .filter(|c| c.outcome.is_failing(true))
        .map(|c| format!("{} {}: {}", c.id, c.outcome, c.failure.as_ref().map_or(String::new(), |f| f.actual.clone())))
        .collect();
    assert!(bad.is_empty(), "{extra} over {transport}: {}", bad.join("\n"));
}

#[test]
fn chunked_slow_agent_passes_over_pty() {
    assert_conforms("--variant chunked-slow", TransportKind::Pty);
}

#[test]
fn chunked_slow_agent_passes_over_unix() {
    assert_conforms("--variant chunked-slow", TransportKind::UnixListen);
}

#[test]
fn slow_reading_agent_passes_over_pty() {
    assert_conforms("--variant slow-reader", TransportKind::Pty);
}

#[test]
fn slow_reading_agent_passes_over_unix() {
    assert_conforms("--variant slow-reader", TransportKind::UnixListen);
}

/// Each case run alone gets the outcome it gets in the full run: no case's
/// leftovers change another's verdict.
#[test]
fn a_case_alone_grades_as_in_the_full_run() {
    let agents = ["", "--variant slow-reader", "--bug no-sentinel", "--bug reply-twice", "--bug double-ids"];
    let ids: Vec<String> = load::embedded_role(qga_harness::case::Role::Agent).unwrap().into_iter().map(|c| c.id).collect();
    let mut problems = Vec::new();
    for extra in agents {
        let full = run(extra, TransportKind::Socketpair, &|_| true, 5, false);
        // Two workers: the machine has two cores.
        let chunks: Vec<Vec<String>> = ids.chunks(ids.len().div_ceil(2)).map(|c| c.to_vec()).collect();
        let alone: Vec<(String, Outcome)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|id| {
                                let r = run(extra, TransportKind::Socketpair, &|c| c == id, 5, false);
                                (id.clone(), r.results[0].outcome)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for (id, outcome) in alone {
            let in_full = full.results.iter().find(|r| r.id == id).unwrap();
            if in_full.outcome != outcome {
                problems.push(format!("agent '{extra}': {id} alone {outcome}, in the full run {}", in_full.outcome));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A resync attempt's request: 0xFF + guest-sync-delimited with no `id`
/// member. How many a resync needs depends on timing (they have their own
/// id stream, so they do not shift the ids of what follows).
fn is_resync_attempt(data: &[u8]) -> bool {
    data.first() == Some(&0xFF) && serde_json::from_slice::<serde_json::Value>(&data[1..]).is_ok_and(|v| v["execute"] == "guest-sync-delimited" && v.get("id").is_none())
}

/// What the harness wrote in each case, resync attempts aside.
fn written(r: &RunResult) -> Vec<(String, Vec<u8>)> {
    r.results
        .iter()
        .map(|c| {
            let bytes = c
                .transcript
                .iter()
                .filter_map(|e| match &e.record {
                    Record::Bytes { dir: Direction::ToAgent, data, .. } if !is_resync_attempt(data) => Some(data.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            (c.id.clone(), bytes)
        })
        .collect()
}

#[test]
fn the_same_seed_sends_the_same_requests() {
    let a = run("", TransportKind::Socketpair, &|_| true, 42, true);
    let b = run("", TransportKind::Socketpair, &|_| true, 42, true);
    let c = run("", TransportKind::Socketpair, &|_| true, 43, true);
    assert_eq!(a.seed, 42);
    let (wa, wb, wc) = (written(&a), written(&b), written(&c));
    // Garbage is not a request: its bytes come from the case's own seed,
    // but a slow agent gets less of it, and "slow" is measured.
    let garbage: Vec<String> = load::embedded_role(qga_harness::case::Role::Agent)
        .unwrap()
        .into_iter()
        .filter(|c| c.steps.iter().any(|s| matches!(s, qga_harness::case::Step::Garbage(_))))
        .map(|c| c.id)
        .collect();
    let differ: Vec<&str> = wa.iter().zip(&wb).filter(|(x, y)| x.1 != y.1 && !garbage.contains(&x.0)).map(|(x, _)| x.0.as_str()).collect();
    assert!(differ.is_empty(), "same seed, different requests in {differ:?}");
    // A test that cannot fail tests nothing: another seed changes the ids.
    let changed = wa.iter().zip(&wc).filter(|(x, y)| x.1 != y.1).count();
    assert!(changed > wa.len() / 2, "another seed changed only {changed} cases");
}
