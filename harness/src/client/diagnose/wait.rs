//! How the probe waits on the channel between its steps: for quiet, and
//! for one reply to one request.

use crate::client::{read_reply, ClientOptions};
use crate::connection::{Connection, Fill};
use crate::wire::Reply;
use std::time::Duration;
use tokio::time::Instant;

/// What arrives until the agent has been quiet for a few milliseconds
/// (bounded), taken out of the connection.
pub(super) async fn collect_quiet(conn: &mut Connection, client: &ClientOptions) -> Vec<u8> {
    let quiet = Duration::from_millis(3).max(client.idle_timeout / 50);
    let end = Instant::now() + quiet * 10;
    let mut got = conn.buffered().to_vec();
    conn.clear();
    loop {
        let until = end.min(Instant::now() + quiet);
        match conn.fill(until).await {
            Ok(Fill::Data(_)) => {
                got.extend_from_slice(conn.buffered());
                conn.clear();
                if got.len() > 1 << 20 {
                    return got;
                }
            }
            _ => return got,
        }
    }
}

/// Wait until the agent has been quiet for a few milliseconds (bounded),
/// and drop what came.
pub(super) async fn settle(conn: &mut Connection, client: &ClientOptions) {
    let quiet = Duration::from_millis(3).max(client.idle_timeout / 50);
    let _ = conn.drain(quiet, Instant::now() + quiet * 10).await;
}

/// Send `bytes` (one request) and read one reply, with the paced deadline.
pub(super) async fn round_trip(conn: &mut Connection, client: &ClientOptions, bytes: &[u8]) -> Option<Reply> {
    conn.send(bytes, Instant::now() + client.send_timeout * 4).await.ok()?;
    read_reply(conn, client.reply_deadline(), client, "probe").await.ok()
}
