//! The reference client as a program (`qga-harness call`): the positive
//! control of client mode. It runs the client contract's job with the
//! library's own client, the way a careful host tool should: before every
//! command a resync (0xFF, guest-sync-delimited with a fresh id, discard up
//! to the sentinel, ignore replies that are not ours), then the command
//! with a fresh id, skipping replies that are proven not its own; after a
//! timeout, resync and retry once.

use super::{execute_named, resync, ClientError, ClientOptions, ResyncPolicy};
use crate::connection::Connection;
use crate::wire::Reply;
use serde_json::{json, Value};
use std::time::Duration;

/// Replies proven not ours that one command may skip.
const SKIPS: usize = 64;

/// Run `job`, returning one contract report line per command.
pub async fn run_job(conn: &mut Connection, opts: &ClientOptions, job: &[String], timeout: Duration) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut opts = opts.clone();
    opts.reply_timeout = timeout;
    opts.idle_timeout = timeout;
    let policy = ResyncPolicy { first_attempt: timeout / 4, max_attempt: timeout, budget: timeout * 2, byte_budget: 1 << 20 };
    for command in job {
        let mut last_error = String::new();
        let mut done = false;
        for _attempt in 0..2 {
            if let Err(e) = resync(conn, &policy, &opts).await {
                last_error = format!("resync failed: {e}");
                continue;
            }
            match execute_named(conn, command, &opts, SKIPS).await {
                Ok(Reply::Return { value, .. }) => {
                    lines.push(json!({"command": command, "return": value}));
                    done = true;
                    break;
                }
                Ok(Reply::Error { class, desc, .. }) => {
                    lines.push(json!({"command": command, "error": {"class": class, "desc": desc}}));
                    done = true;
                    break;
                }
                Err(ClientError::Closed) => {
                    last_error = "the channel closed".into();
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        if !done {
            // Client contract, version 2: report it and go on; the next
            // command starts with a resync.
            lines.push(json!({"command": command, "error": last_error}));
        }
    }
    lines
}


/// `qga-harness call`: run `job` over `duplex` with the default client
/// options. The report lines, and whether every command returned.
pub async fn call(duplex: crate::transport::Duplex, job: &[String], timeout: Duration) -> (Vec<Value>, bool) {
    // The recording is nobody's to read here: a small one.
    let transcript = crate::transcript::Transcript::new(crate::transcript::Caps { bytes: 1 << 16, entries: 1000 });
    let mut conn = Connection::new(duplex, transcript, 1 << 20);
    let lines = run_job(&mut conn, &ClientOptions::default(), job, timeout).await;
    let ok = lines.len() == job.len() && lines.iter().all(|l| l.get("return").is_some());
    (lines, ok)
}
