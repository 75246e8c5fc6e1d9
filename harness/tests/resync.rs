//! Why 0xFF matters, and recovery after an agent restart on the same channel.

mod common;

use common::*;
use qapi::qga;
use qga_harness::agent::AgentTemplate;
use qga_harness::client::{execute, read_reply, resync, ClientError, ClientOptions};
use qga_harness::connection::Connection;
use qga_harness::transport::TransportKind;
use qga_harness::wire::{Reply, Request};
use std::time::Duration;
use tokio::time::Instant;

/// The stale partial request a client that timed out may leave behind (the
/// shape protocol.md §2 saw wreck qemu-ga's next request).
const STALE_PARTIAL_REQUEST: &[u8] = br#"{"execute":"guest-sync","argu"#;

/// All replies that arrive within `window`.
async fn replies_within(conn: &mut Connection, window: Duration, opts: &ClientOptions) -> Vec<Reply> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    loop {
        match read_reply(conn, qga_harness::client::Deadline::fixed(deadline), opts, "anything").await {
            Ok(r) => out.push(r),
            Err(ClientError::Timeout { .. }) => return out,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

/// A stale partial request, then a plain guest-sync without 0xFF: the agent
/// parses the two as one broken request, and the sync never gets its return.
/// Then 0xFF + guest-sync-delimited recovers and the next command is answered.
async fn stale_partial_request(template: AgentTemplate, transport: TransportKind, reconnect_between: bool) {
    let (mut session, t) = start(template, transport).await;
    let opts = ClientOptions::default();
    let conn = session.conn().unwrap();
    conn.send(STALE_PARTIAL_REQUEST, Instant::now() + opts.send_timeout).await.unwrap();
    if reconnect_between {
        // The client that left the partial request goes away; a new one comes.
        session.reconnect().await.unwrap();
    }
    let conn = session.conn().unwrap();
    let from = t.mark();
    let id = 4242;
    conn.send(&Request::new(qga::guest_sync { id }, None).to_wire(), Instant::now() + opts.send_timeout).await.unwrap();
    let replies = replies_within(conn, Duration::from_millis(50), &opts).await;
    assert!(!replies.iter().any(|r| r.returns_int(id)), "plain sync got through:\n{}", t.render(from, None));
    assert!(replies.iter().any(|r| matches!(r, Reply::Error { .. })), "no error for the broken request:\n{}", t.render(from, None));

    let r = resync(conn, &opts.resync, &opts).await.unwrap();
    assert!(r.bytes_discarded > 0);
    execute(conn, qga::guest_ping {}, &opts).await.unwrap().unwrap();
    let id = -99;
    assert_eq!(execute(conn, qga::guest_sync { id }, &opts).await.unwrap().unwrap(), id);
    session.shutdown().await;
}

#[tokio::test]
async fn reference_agent_stale_partial_request() {
    // The VM transports have their own tests (vm.rs), which need QEMU.
    for k in TransportKind::LOCAL {
        stale_partial_request(reference_agent(k), k, false).await;
    }
    stale_partial_request(reference_agent(TransportKind::UnixListen), TransportKind::UnixListen, true).await;
}

#[tokio::test]
async fn qemu_ga_stale_partial_request() {
    for method in ["isa-serial", "virtio-serial", "unix-listen"] {
        let Some((t, k)) = qemu_ga_template(method) else { return };
        stale_partial_request(t, k, false).await;
    }
    // qemu-ga keeps its parser across unix clients (protocol.md §2).
    let Some((t, k)) = qemu_ga_template("unix-listen") else { return };
    stale_partial_request(t, k, true).await;
}

/// SIGKILL with replies unread in the pty, restart on the same pty (the
/// master never closes), resync: the killed agent's output is discarded and
/// the next commands get their own replies.
async fn kill_restart_on_pty(template: AgentTemplate) {
    let (mut session, t) = start(template, TransportKind::Pty).await;
    let opts = ClientOptions::default();
    let conn = session.conn().unwrap();
    let mut burst = Vec::new();
    let n = 5;
    for i in 0..n {
        burst.extend_from_slice(&Request::new(qga::guest_sync { id: 1000 + i }, Some(i)).to_wire());
    }
    conn.send(&burst, Instant::now() + opts.send_timeout).await.unwrap();
    // Let the agent answer into the pty, where the replies stay unread. The
    // agent answers in microseconds; this only has to be long enough.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let kill_mark = t.mark();
    session.kill_agent().await;
    session.start_agent().await.unwrap();
    let r = session.wait_ready().await.unwrap();
    // The stale replies arrived after the kill and were thrown away.
    let stale = t.received_since(kill_mark);
    for i in 0..n {
        let needle = format!("{}", 1000 + i);
        assert!(String::from_utf8_lossy(&stale).contains(&needle), "stale reply {i} not in the pty:\n{}", t.render(kill_mark, None));
    }
    assert!(r.bytes_discarded as usize >= n as usize * 20, "{r:?}");
    let conn = session.conn().unwrap();
    assert!(conn.buffered().iter().all(|b| b.is_ascii_whitespace()));
    execute(conn, qga::guest_ping {}, &opts).await.unwrap().unwrap();
    assert_eq!(execute(conn, qga::guest_sync { id: 77 }, &opts).await.unwrap().unwrap(), 77);
    // And once more: repeated restarts on the same channel.
    let r2 = session.restart().await.unwrap();
    assert!(r2.attempts >= 1);
    execute(session.conn().unwrap(), qga::guest_ping {}, &opts).await.unwrap().unwrap();
    session.shutdown().await;
}

#[tokio::test]
async fn reference_agent_kill_restart_on_pty() {
    kill_restart_on_pty(reference_agent(TransportKind::Pty)).await;
}

#[tokio::test]
async fn qemu_ga_kill_restart_on_pty() {
    for method in ["isa-serial", "virtio-serial"] {
        let Some((t, _)) = qemu_ga_template(method) else { return };
        kill_restart_on_pty(t).await;
    }
}
