//! Agents that misbehave as processes: each gets a clear verdict within its
//! budget, the harness's memory stays bounded, and no process survives.

mod common;

use common::*;
use qga_harness::process::live_in_group;
use qga_harness::agent::AgentTemplate;
use qga_harness::session::{Session, SessionConfig, SessionError};
use qga_harness::transcript::{Caps, Event, Record, Transcript};
use qga_harness::transport::TransportKind;
use std::time::{Duration, Instant};

fn config(template: &str, transport: TransportKind) -> SessionConfig {
    let mut c = SessionConfig::new(AgentTemplate::parse(template).unwrap(), transport);
    c.budgets.startup = Duration::from_millis(300);
    c
}

/// Process groups of every agent the transcript saw spawned.
fn spawned(t: &Transcript) -> Vec<i32> {
    t.entries(0, None)
        .into_iter()
        .filter_map(|e| match e.record {
            Record::Event(Event::Spawn { pid, .. }) => Some(pid),
            _ => None,
        })
        .collect()
}

fn assert_no_survivors(t: &Transcript) {
    let groups = spawned(t);
    assert!(!groups.is_empty());
    for g in groups {
        assert!(live_in_group(g).is_empty(), "processes left in group {g}: {:?}", live_in_group(g));
    }
}

async fn start_err(c: SessionConfig, t: &Transcript) -> (SessionError, Duration) {
    let began = Instant::now();
    match Session::start(c, t.clone()).await {
        Ok(_) => panic!("a broken agent started:\n{}", t.render(0, None)),
        Err(e) => (e, began.elapsed()),
    }
}

#[tokio::test]
async fn mute_agent_times_out_within_budget() {
    for k in [TransportKind::Pty, TransportKind::Socketpair] {
        let t = Transcript::default();
        let (e, took) = start_err(config("sleep 30", k), &t).await;
        assert!(matches!(e, SessionError::NotReady { .. }), "{e}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
        assert_no_survivors(&t);
    }
    // unix-listen: an agent that never listens.
    let t = Transcript::default();
    let (e, took) = start_err(config("sh -c 'exec sleep 30' {path}", TransportKind::UnixListen), &t).await;
    assert!(matches!(e, SessionError::Connect { .. }), "{e}");
    assert!(took < Duration::from_secs(2));
    assert_no_survivors(&t);
}

#[tokio::test]
async fn flooding_agent_is_cut_off_and_memory_stays_bounded() {
    for k in [TransportKind::Socketpair, TransportKind::Pty] {
        let cap = 64 * 1024;
        let t = Transcript::new(Caps { bytes: cap, entries: 10_000 });
        let mut c = config("yes", k);
        c.client.resync.byte_budget = 8 << 20;
        c.budgets.startup = Duration::from_secs(5);
        let (e, took) = start_err(c, &t).await;
        let msg = e.to_string();
        assert!(msg.contains("byte budget"), "{k}: {msg}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let (kept, dropped) = t.kept_and_dropped();
        assert!(kept <= cap, "{kept}");
        assert!(dropped > 4 << 20, "{dropped}");
        assert_no_survivors(&t);
    }
}

#[tokio::test]
async fn agent_that_exits_at_once_is_reported_as_exited() {
    for k in [TransportKind::Pty, TransportKind::Socketpair] {
        let t = Transcript::default();
        let (e, took) = start_err(config("sh -c 'exit 3'", k), &t).await;
        match &e {
            SessionError::AgentExited { status, .. } => assert!(status.contains("exit status 3"), "{status}"),
            other => panic!("{other}"),
        }
        assert!(took < Duration::from_millis(300), "{took:?}");
        assert_no_survivors(&t);
    }
    let t = Transcript::default();
    let (e, _) = start_err(config("true {path}", TransportKind::UnixListen), &t).await;
    assert!(matches!(e, SessionError::AgentExited { .. }), "{e}");
}

#[tokio::test]
async fn agent_ignoring_sigterm_is_killed_after_the_grace() {
    let template = format!("sh -c \"trap '' TERM; exec {HARNESS} ref-agent\"");
    let t = Transcript::default();
    let mut c = config(&template, TransportKind::Socketpair);
    c.budgets.term_grace = Duration::from_millis(50);
    let (session, _) = Session::start(c, t.clone()).await.unwrap();
    let began = Instant::now();
    session.shutdown().await;
    assert!(began.elapsed() < Duration::from_secs(1));
    let log = t.render(0, None);
    assert!(log.contains("SIGTERM") && log.contains("SIGKILL"), "{log}");
    assert_no_survivors(&t);
}

#[tokio::test]
async fn agent_that_forks_leaves_nothing_behind() {
    let template = format!("sh -c \"sleep 30 & sleep 30 & exec {HARNESS} ref-agent\"");
    let t = Transcript::default();
    let (mut session, _) = Session::start(config(&template, TransportKind::Socketpair), t.clone()).await.unwrap();
    let pgid = session.agent().unwrap().pid();
    assert!(live_in_group(pgid).len() >= 3, "{:?}", live_in_group(pgid));
    session.shutdown().await;
    assert_no_survivors(&t);
}

#[test]
fn panic_with_a_live_session_leaves_nothing_behind() {
    let t = Transcript::default();
    let t2 = t.clone();
    let r = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let template = format!("sh -c \"sleep 30 & exec {HARNESS} ref-agent\"");
            let (_session, _) = Session::start(config(&template, TransportKind::Pty), t2).await.unwrap();
            panic!("test panic while the agent runs");
        })
    })
    .join();
    assert!(r.is_err());
    assert_no_survivors(&t);
}
