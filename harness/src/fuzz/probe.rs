//! What the start-up probe finds about a campaign's agent. The reference
//! client adapts to an agent's defects (narrower ids, stray 0xFF skipped,
//! replies matched by order), so schedules may all pass against an agent
//! that `run` fails: the probe's findings are the campaign's own, reported
//! before and after it, and fail it as a failing schedule does.

use crate::client::{ProbeFinding, Profile};
use crate::session::{Session, SessionConfig};
use crate::transcript::{Caps, Transcript};

/// Start the agent once, probe it, stop it: its profile, or why it could
/// not be started.
pub async fn probe(config: SessionConfig) -> Result<Profile, String> {
    let t = Transcript::new(Caps { bytes: 256 * 1024, entries: 20_000 });
    match Session::start(config, t).await {
        Ok((session, profile)) => {
            session.shutdown().await;
            Ok(profile)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Add what a probe found to `into`, each defect once.
pub fn merge(into: &mut Vec<ProbeFinding>, found: &[ProbeFinding]) {
    for f in found {
        if !into.iter().any(|g| g.kind == f.kind && g.capability == f.capability) {
            into.push(f.clone());
        }
    }
}
