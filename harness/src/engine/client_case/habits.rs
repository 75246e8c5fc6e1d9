//! The client's habits over a whole run: what the cases saw it do, each
//! kind once, and what only shows across cases (a sync id used twice).

use crate::proxy::grade::Habit;
use crate::verdict::{CaseResult, FailureKind};
use serde_json::Value;

/// The run's habits: each kind once, with the first case that showed it;
/// plus a fixed id across cases, and the widest sync id.
pub(super) fn run_habits(results: &[CaseResult]) -> (Vec<Habit>, Option<u32>) {
    let mut out: Vec<Habit> = Vec::new();
    let mut ids: Vec<(Value, String)> = Vec::new();
    let mut bits = None;
    for r in results {
        let Some(c) = &r.client else { continue };
        for h in &c.habits {
            if !out.iter().any(|o| o.kind == h.kind) {
                out.push(Habit { kind: h.kind, detail: format!("{} (first in {})", h.detail, r.id) });
            }
        }
        for id in &c.sync_ids {
            if let Some(n) = id.as_i64() {
                let b = 64 - n.unsigned_abs().leading_zeros();
                bits = Some(bits.map_or(b, |x: u32| x.max(b)));
            }
            if let Some((_, first)) = ids.iter().find(|(x, _)| x == id) {
                if first != &r.id && !out.iter().any(|o| o.kind == FailureKind::ClientPredictableIds) {
                    out.push(Habit { kind: FailureKind::ClientPredictableIds, detail: format!("sync id {id} used in {first} and again in {}", r.id) });
                }
            } else {
                ids.push((id.clone(), r.id.clone()));
            }
        }
    }
    (out, bits)
}

