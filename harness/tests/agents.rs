//! The reference agent on all three transports and qemu-ga on pty
//! (isa-serial, virtio-serial) and unix-listen: sync, delimited sync with
//! the sentinel checked on the transcript, ping, info; and the full set of
//! built-in checks.

mod common;

use common::*;
use qapi::qga;
use qga_harness::checks::{delimited_reply_at, run_checks, Outcome};
use qga_harness::client::{execute, resync, ClientOptions};
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;
use qga_harness::agent::AgentTemplate;

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

async fn all_checks_pass(template: AgentTemplate, transport: TransportKind) {
    let t = Transcript::default();
    let report = run_checks(SessionConfig::new(template, transport), t.clone()).await;
    let text = qga_harness::checks::render(&report, &t, false);
    assert!(report.verdicts.iter().all(|v| v.outcome == Outcome::Pass), "{text}");
    assert_eq!(report.verdicts.len(), 7, "{text}");
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
    all_checks_pass(t, k).await;
}

#[tokio::test]
async fn qemu_ga_virtio_serial_over_pty() {
    let Some((t, k)) = qemu_ga_template("virtio-serial") else { return };
    basic_conversation(t.clone(), k).await;
    all_checks_pass(t, k).await;
}

#[tokio::test]
async fn qemu_ga_unix_listen() {
    let Some((t, k)) = qemu_ga_template("unix-listen") else { return };
    basic_conversation(t.clone(), k).await;
    all_checks_pass(t, k).await;
}
