//! The reference agent on all three transports and qemu-ga on pty
//! (isa-serial, virtio-serial) and unix-listen: sync, delimited sync with
//! the sentinel checked on the transcript, ping, info; and the whole
//! catalogue (against qemu-ga, compared with its committed baselines).

mod common;

use common::*;
use qapi::qga;
use qga_harness::agent::AgentTemplate;
use qga_harness::baseline::Baseline;
use qga_harness::case::load;
use qga_harness::client::{execute, resync, ClientOptions};
use qga_harness::engine::{run_cases, EngineOptions};
use qga_harness::verdict::RunResult;
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use qga_harness::verdict::Outcome;
use qga_harness::wire::{scan, Reply, Scan, SENTINEL};

/// Offset of a raw sentinel immediately followed by a reply returning `id`.
fn delimited_reply_at(received: &[u8], id: i64) -> Option<usize> {
    received.iter().enumerate().filter(|(_, &b)| b == SENTINEL).map(|(i, _)| i).find(|&i| {
        matches!(scan(&received[i + 1..]), Scan::Value { start: 0, end }
            if Reply::parse(&received[i + 1..i + 1 + end]).is_ok_and(|r| r.returns_int(id)))
    })
}

async fn basic_conversation(template: AgentTemplate, transport: TransportKind) {
    let (mut session, t) = start(template, transport).await;
    let opts = ClientOptions::default();
    let conn = session.conn().unwrap();

    // Delimited sync: the raw 0xFF sits right before the reply on the wire.
    let from = t.mark();
    let r = resync(conn, &opts.resync, &opts).await.unwrap();
    let received = t.received_since(from);
    assert!(delimited_reply_at(&received, r.id).is_some(), "no 0xFF right before the reply:\n{}", t.render(from, None));
    assert!(!received.windows(2).any(|w| w == [0xC3, 0xBF]), "UTF-8 encoded sentinel");

    let id = 0x1234_5678_9abc_def0;
    assert_eq!(execute(conn, qga::guest_sync { id }, &opts).await.unwrap().unwrap(), id);
    assert_eq!(execute(conn, qga::guest_sync { id: -7 }, &opts).await.unwrap().unwrap(), -7);
    execute(conn, qga::guest_ping {}, &opts).await.unwrap().unwrap();
    let info = execute(conn, qga::guest_info {}, &opts).await.unwrap().unwrap();
    assert!(!info.version.is_empty());
    assert!(info.supported_commands.iter().any(|c| c.name == "guest-sync-delimited"));
    session.shutdown().await;
}

async fn catalogue(template: AgentTemplate, transport: TransportKind, case_glob: Option<&str>) -> RunResult {
    let cases: Vec<_> = load::embedded_role(qga_harness::case::Role::Agent)
        .unwrap()
        .into_iter()
        .filter(|c| case_glob.is_none_or(|g| globset::Glob::new(g).unwrap().compile_matcher().is_match(&c.id)))
        .collect();
    run_cases(SessionConfig::new(template, transport), &cases, Transcript::default(), &EngineOptions::default()).await
}

fn failures(run: &RunResult) -> String {
    run.results
        .iter()
        .filter(|r| r.outcome.is_failing(false))
        .map(|r| format!("{} {}: {}", r.id, r.outcome, r.failure.as_ref().map_or("", |f| f.actual.as_str())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The reference agent conforms to the whole catalogue.
async fn all_checks_pass(template: AgentTemplate, transport: TransportKind) {
    let run = catalogue(template, transport, None).await;
    assert!(run.results.len() >= 60);
    assert_eq!(failures(&run), "", "the reference agent failed cases over {transport}");
}

/// qemu-ga's outcomes match its committed baseline (no regression).
async fn matches_baseline(template: AgentTemplate, transport: TransportKind, baseline: &str) {
    let run = catalogue(template, transport, None).await;
    let text = std::fs::read_to_string(format!("{}/../reports/qemu-ga-7.2/{baseline}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let ids: Vec<String> = run.results.iter().map(|r| r.id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let b = Baseline::parse(baseline, &text, &ids).unwrap();
    let cmp = b.compare(&run.results, false);
    assert!(cmp.regressions.is_empty(), "regressions against {baseline}: {:?}\n{}", cmp.regressions, failures(&run));
    assert!(!run.results.iter().any(|r| matches!(r.outcome, Outcome::Timeout | Outcome::Error)), "{}", failures(&run));
}

#[tokio::test]
async fn reference_agent_over_pty() {
    basic_conversation(reference_agent(TransportKind::Pty), TransportKind::Pty).await;
    all_checks_pass(reference_agent(TransportKind::Pty), TransportKind::Pty).await;
}

#[tokio::test]
async fn reference_agent_over_pty_stdio() {
    // No {path}: the agent gets the pty slave as its stdin/stdout.
    let t = AgentTemplate::parse(&format!("{HARNESS} ref-agent")).unwrap();
    basic_conversation(t.clone(), TransportKind::Pty).await;
    all_checks_pass(t, TransportKind::Pty).await;
}

#[tokio::test]
async fn reference_agent_over_socketpair() {
    basic_conversation(reference_agent(TransportKind::Socketpair), TransportKind::Socketpair).await;
    all_checks_pass(reference_agent(TransportKind::Socketpair), TransportKind::Socketpair).await;
}

#[tokio::test]
async fn reference_agent_over_unix_listen() {
    basic_conversation(reference_agent(TransportKind::UnixListen), TransportKind::UnixListen).await;
    all_checks_pass(reference_agent(TransportKind::UnixListen), TransportKind::UnixListen).await;
}

#[tokio::test]
async fn qemu_ga_isa_serial_over_pty() {
    let Some((t, k)) = qemu_ga_template("isa-serial") else { return };
    basic_conversation(t.clone(), k).await;
    matches_baseline(t, k, "pty-isa-serial.expect.toml").await;
}

#[tokio::test]
async fn qemu_ga_virtio_serial_over_pty() {
    let Some((t, k)) = qemu_ga_template("virtio-serial") else { return };
    basic_conversation(t.clone(), k).await;
    // The same char-device defect, the same baseline.
    matches_baseline(t, k, "pty-isa-serial.expect.toml").await;
}

#[tokio::test]
async fn qemu_ga_unix_listen() {
    let Some((t, k)) = qemu_ga_template("unix-listen") else { return };
    basic_conversation(t.clone(), k).await;
    matches_baseline(t, k, "unix-listen.expect.toml").await;
}

/// The catalogue exposes qemu-ga's reply loss over a pty (protocol.md §4)
/// and finds none over a unix socket. The loss is intermittent, so the pty
/// side gets three tries to show it.
#[tokio::test]
async fn qemu_ga_burst_reply_loss_on_pty_only() {
    let Some((t, k)) = qemu_ga_template("isa-serial") else { return };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let run = catalogue(t.clone(), k, Some("framing/8")).await;
        seen.push(run.results[0].outcome);
        if run.results[0].outcome == Outcome::Fail {
            let actual = &run.results[0].failure.as_ref().unwrap().actual;
            assert!(actual.contains("lost"), "{actual}");
            break;
        }
    }
    assert_eq!(seen.last(), Some(&Outcome::Fail), "no reply loss seen over the pty in 3 runs: {seen:?}");
    let Some((t, k)) = qemu_ga_template("unix-listen") else { return };
    let run = catalogue(t, k, Some("framing/8")).await;
    assert_eq!(run.results[0].outcome, Outcome::Pass, "{}", failures(&run));
}
