//! How long garbage takes to be answered: measured at start-up on VM
//! transports, where an emulated guest CPU writes error floods far slower
//! than its guest-info reply suggests.

use crate::client::{resync, ClientOptions};
use crate::connection::{Connection, Fill};
use std::time::Duration;
use tokio::time::Instant;

/// How long `garbage_in` bytes of garbage take to be answered:
/// from the write to the last byte of the agent's error output, in µs. The
/// channel is resynced afterwards. None when the agent does not resync.
pub async fn measure_garbage_answer(conn: &mut Connection, client: &ClientOptions, garbage: &[u8]) -> Option<u64> {
    let start = Instant::now();
    conn.send_discarding(garbage, Instant::now() + client.send_timeout).await.ok()?;
    conn.send_discarding(b"\n", Instant::now() + client.send_timeout).await.ok()?;
    let quiet = Duration::from_millis(50);
    let end = Instant::now() + client.reply_timeout * 10;
    let mut last = start;
    loop {
        match conn.fill(end.min(Instant::now() + quiet)).await {
            Ok(Fill::Data(_)) | Ok(Fill::Full) => {
                last = Instant::now();
                conn.clear();
            }
            _ => break,
        }
    }
    resync(conn, &client.resync, client).await.ok()?;
    Some(last.duration_since(start).as_micros() as u64)
}
