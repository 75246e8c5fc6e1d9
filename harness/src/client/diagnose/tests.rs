//! The whole probe against scripted agents on a socketpair: id defects
//! that hide the sync from wide ids are found, and the run can go on.

use super::*;
use crate::client::{IdWidth, ReplyMatch};
use crate::transcript::Transcript;
use crate::transport::{Transport, TransportKind};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdStream;

/// An agent on the other end of a socketpair, one request per line (0xFF
/// bytes dropped). Sync ids pass through `sync_id`; request ids are echoed
/// unless `echo` is false for that command.
fn scripted(mut peer: StdStream, sync_id: fn(i64) -> Value, echo: fn(&str) -> bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = match peer.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend(buf[..n].iter().filter(|&&b| b != 0xFF));
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let Ok(req) = serde_json::from_slice::<Value>(&line) else {
                    let _ = peer.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"parse\"}}\n");
                    continue;
                };
                let cmd = req["execute"].as_str().unwrap_or("").to_owned();
                let mut reply = match cmd.as_str() {
                    "guest-sync" | "guest-sync-delimited" => json!({"return": sync_id(req["arguments"]["id"].as_i64().unwrap_or(0))}),
                    "guest-ping" => json!({"return": {}}),
                    "guest-info" => json!({"return": {"version": "scripted", "supported_commands": []}}),
                    _ => json!({"error": {"class": "CommandNotFound", "desc": "no"}}),
                };
                if let (Some(id), true) = (req.get("id"), echo(&cmd)) {
                    reply["id"] = id.clone();
                }
                let mut out = if cmd == "guest-sync-delimited" { vec![0xFF] } else { Vec::new() };
                out.extend_from_slice(reply.to_string().as_bytes());
                out.push(b'\n');
                if peer.write_all(&out).is_err() {
                    return;
                }
            }
        }
    })
}

fn probe_scripted(sync_id: fn(i64) -> Value, echo: fn(&str) -> bool) -> Result<Profile, NoSync> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let mut t = Transport::open(TransportKind::Socketpair).unwrap();
    let duplex = t.take_duplex().unwrap().unwrap();
    let peer = StdStream::from(t.agent_stdio().unwrap().try_clone_to_owned().unwrap());
    let mut conn = Connection::new(duplex, Transcript::default(), 1 << 20);
    let agent = scripted(peer, sync_id, echo);
    let opts = ClientOptions { ids: crate::client::Ids::seeded(5), ..ClientOptions::default() };
    let r = rt.block_on(diagnose(&mut conn, &opts, Duration::from_secs(2), &mut || false));
    drop(conn);
    drop(t);
    agent.join().unwrap();
    r
}

#[test]
fn an_agent_that_changes_every_wide_sync_id_is_an_id_defect_not_a_start_up_failure() {
    // Wide ids come back one off: no form the probe knows, so it retries
    // with narrow ids, then finds how wide ids may be.
    let p = probe_scripted(|id| if i32::try_from(id).is_ok() { json!(id) } else { json!(id.wrapping_add(1)) }, |_| true).expect("the probe syncs");
    assert_eq!(p.id_width, IdWidth::Int32);
    let ids: Vec<_> = p.findings.iter().map(|f| (f.kind, f.capability)).collect();
    assert_eq!(ids, [(FailureKind::IdChanged, Capability::ExactIds)], "{:?}", p.findings);
    assert_eq!(p.request_id_width, IdWidth::Full64);
}

#[test]
fn a_fifteen_digit_printer_syncs_below_1e15_and_ids_echoed_on_syncs_only_match_by_order() {
    let fifteen = |id: i64| if id.unsigned_abs() < 1_000_000_000_000_000 { json!(id) } else { serde_json::from_str(&format!("{:.14e}", id as f64)).unwrap() };
    let p = probe_scripted(fifteen, |cmd| cmd.starts_with("guest-sync")).expect("the probe syncs");
    assert_eq!(p.id_width, IdWidth::Below1e15);
    assert_eq!(p.matching, ReplyMatch::Order);
    assert_eq!(p.matching_by_command.get("guest-sync-delimited"), Some(&ReplyMatch::IdEcho));
    let kinds: Vec<_> = p.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FailureKind::IdFifteenDigits, FailureKind::IdNotEchoed], "{:?}", p.findings);
}
