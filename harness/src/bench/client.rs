//! `bench --client`: the per-case cost of client mode, against a client
//! that does nothing.

use super::stats::{line, stats, us, Stats};
use crate::engine::client_case::{run_client_case, ClientConfig};
use crate::proxy::ClientTemplate;
use crate::session::{Session, SessionConfig};
use crate::transcript::Transcript;
use std::time::Instant;

/// What one client-mode measurement found.
#[derive(Debug, Clone)]
pub struct ClientFigures {
    pub template: String,
    pub case: String,
    pub runs: usize,
    /// A client that exits at once, spawned with plain std::process.
    pub spawn: Stats,
    /// That client through the whole case.
    pub floor_case: Stats,
    /// The client under test through the same case.
    pub client_case: Stats,
}

/// Three figures from one run: a client that exits at once, spawned with
/// plain std::process (the floor); the same client through a whole client
/// case (the floor plus the harness's per-case work: port, proxy, report
/// reading, reaping); and the client under test through the same case.
/// Each is measured `spawns` times (at least 3), interleaved.
pub async fn measure(config: SessionConfig, template: &str, case_id: &str, spawns: usize) -> Result<ClientFigures, String> {
    let cases = crate::case::load::embedded().map_err(|e| e.to_string())?;
    let case = cases.iter().find(|c| c.id == case_id).ok_or_else(|| format!("no case {case_id}"))?;
    let n = spawns.max(3);
    let floor_bin = ["/usr/bin/true", "/bin/true"].into_iter().find(|p| std::path::Path::new(p).is_file()).ok_or("no `true` program")?;
    let mut spawn = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        std::process::Command::new(floor_bin).status().map_err(|e| e.to_string())?;
        spawn.push(t.elapsed());
    }
    let transcript = Transcript::new(crate::transcript::Caps { bytes: 1 << 20, entries: 100_000 });
    let (mut session, _) = Session::start(config.clone(), transcript).await.map_err(|e| e.to_string())?;
    let eo = crate::engine::EngineOptions { keep_transcripts: false, seed: 1, ..Default::default() };
    let per_case = |t: &str| -> Result<ClientConfig, String> {
        // The bench's budgets: a slow interpreter's start spoils no sample.
        let mut agent = config.clone();
        agent.set_budgets(crate::budget::Budgets { client_startup: crate::budget::Budgets::defaults(agent.transport, crate::budget::Mode::Bench).client_startup, ..agent.budgets });
        Ok(ClientConfig { client: ClientTemplate::parse(t)?, port: crate::transport::TransportKind::UnixListen, agent })
    };
    let floor_cfg = per_case(&format!("{floor_bin} {{path}}"))?;
    let client_cfg = per_case(template)?;
    let mut floor_case = Vec::new();
    let mut client_case = Vec::new();
    for _ in 0..n {
        for (cfg, out) in [(&floor_cfg, &mut floor_case), (&client_cfg, &mut client_case)] {
            let (r, back) = run_client_case(session, case, cfg, None, &[], false, &eo).await;
            session = back;
            session.transcript().reset();
            let _ = session.wait_ready().await;
            out.push(r.elapsed);
        }
    }
    session.shutdown().await;
    Ok(ClientFigures {
        template: template.to_owned(),
        case: case.id.clone(),
        runs: n,
        spawn: stats(spawn),
        floor_case: stats(floor_case),
        client_case: stats(client_case),
    })
}

impl std::fmt::Display for ClientFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ClientFigures { template, case, runs, spawn, floor_case, client_case } = self;
        writeln!(f, "client: {template}\ncase: {case}, {runs} runs of each, interleaved")?;
        writeln!(f, "{}", line("floor client spawn+exit (plain)", spawn))?;
        writeln!(f, "{}", line("floor client through the case", floor_case))?;
        writeln!(f, "{}", line("client under test through the case", client_case))?;
        let overhead = floor_case.p50.saturating_sub(spawn.p50);
        writeln!(
            f,
            "harness per-case overhead beyond the floor: {:.2} ms at p50 ({:.1}x the floor's spawn; goal <= 5 ms)",
            overhead.as_secs_f64() * 1e3,
            us(floor_case.p50) / us(spawn.p50).max(1e-9)
        )?;
        writeln!(
            f,
            "client under test: {:.2} ms per case at p50, {:.2} ms of it beyond the floor case",
            us(client_case.p50) / 1e3,
            us(client_case.p50.saturating_sub(floor_case.p50)) / 1e3
        )
    }
}
