//! A local agent (pty, socketpair, unix socket): the harness's round trip,
//! resync and start-up, each against its floor measured in the same run.

use super::raw::{raw_round_trip, startup_floor};
use super::stats::{line, stats, us, Stats};
use crate::client::{execute, resync};
use crate::session::{Session, SessionConfig};
use crate::transcript::Transcript;
use crate::wire::Request;
use qapi::qga;
use std::time::Instant;

/// What one local measurement found.
#[derive(Debug, Clone)]
pub struct LocalFigures {
    pub raw: Stats,
    pub harness: Stats,
    pub resyncs: Stats,
    pub floors: Stats,
    pub starts: Stats,
}

/// `iterations` round trips (each way) and resyncs, `spawns` start-ups
/// (each way).
pub async fn measure(config: SessionConfig, iterations: usize, spawns: usize) -> Result<LocalFigures, String> {
    let opts = config.client.clone();
    // A transcript that keeps nothing: the benchmark measures the recorder's
    // bookkeeping, not the growth of a log of thousands of round trips.
    let transcript = Transcript::new(crate::transcript::Caps { bytes: 0, entries: 0 });
    let (mut session, _) = Session::start(config.clone(), transcript).await.map_err(|e| e.to_string())?;
    let conn = session.conn().map_err(|e| e.to_string())?;

    // Interleave floor and harness samples so drift affects both alike.
    let ping = Request::new(qga::guest_ping {}, Some(1)).to_wire();
    let mut raw = Vec::with_capacity(iterations);
    let mut harness = Vec::with_capacity(iterations);
    for i in 0..iterations * 2 {
        if i % 2 == 0 {
            let t = Instant::now();
            raw_round_trip(conn.raw_fd(), &ping).map_err(|e| format!("raw round trip: {e}"))?;
            raw.push(t.elapsed());
        } else {
            let t = Instant::now();
            execute(conn, qga::guest_ping {}, &opts).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            harness.push(t.elapsed());
        }
    }
    let mut resyncs = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        resync(conn, &opts.resync, &opts).await.map_err(|e| e.to_string())?;
        resyncs.push(t.elapsed());
    }
    session.shutdown().await;

    let mut starts = Vec::with_capacity(spawns);
    let mut floors = Vec::with_capacity(spawns);
    for _ in 0..spawns {
        let t = Instant::now();
        let (s, _) = Session::start(config.clone(), Transcript::default()).await.map_err(|e| e.to_string())?;
        starts.push(t.elapsed());
        s.shutdown().await;
        floors.push(startup_floor(&config).await?);
    }
    Ok(LocalFigures { raw: stats(raw), harness: stats(harness), resyncs: stats(resyncs), floors: stats(floors), starts: stats(starts) })
}

impl std::fmt::Display for LocalFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LocalFigures { raw, harness, resyncs, floors, starts } = self;
        writeln!(f, "{}", line("ping round trip, raw syscalls", raw))?;
        writeln!(f, "{}", line("ping round trip, harness", harness))?;
        writeln!(f, "  harness / raw: p50 {:.2}x, mean {:.2}x", us(harness.p50) / us(raw.p50), us(harness.mean) / us(raw.mean))?;
        writeln!(f, "{}", line("resync (0xFF + sync-delimited)", resyncs))?;
        writeln!(f, "{}", line("start-up to first sync, raw", floors))?;
        writeln!(f, "{}", line("start-up to first sync, harness", starts))?;
        writeln!(f, "  harness - raw: p50 {:+.1} µs, mean {:+.1} µs", us(starts.p50) - us(floors.p50), us(starts.mean) - us(floors.mean))
    }
}
