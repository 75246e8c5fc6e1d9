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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::grade::ClientCaseDetail;
    use crate::verdict::{skeleton, ClientGrade};
    use serde_json::json;

    fn result(id: &str, sync_ids: Vec<Value>, habits: Vec<Habit>) -> CaseResult {
        let mut r = skeleton(&crate::case::schema_section::section().remove(0));
        r.id = id.into();
        r.client = Some(ClientCaseDetail { grade: ClientGrade::Recovered, reported: Vec::new(), exit: None, syncs: sync_ids.len(), commands: 0, sync_ids, habits });
        r
    }

    #[test]
    fn each_habit_once_with_the_first_case_that_showed_it() {
        let h = |d: &str| Habit { kind: FailureKind::ClientPredictableIds, detail: d.into() };
        let (habits, bits) = run_habits(&[result("a", vec![json!(5)], vec![h("x")]), result("b", vec![json!(300)], vec![h("y")])]);
        assert_eq!(habits, vec![Habit { kind: FailureKind::ClientPredictableIds, detail: "x (first in a)".into() }]);
        assert_eq!(bits, Some(9));
    }

    #[test]
    fn a_sync_id_used_again_in_another_case_is_predictable() {
        let (habits, _) = run_habits(&[result("a", vec![json!(7)], vec![]), result("b", vec![json!(7)], vec![])]);
        assert_eq!(habits, vec![Habit { kind: FailureKind::ClientPredictableIds, detail: "sync id 7 used in a and again in b".into() }]);
        let (habits, bits) = run_habits(&[result("a", vec![json!(7), json!(7)], vec![])]);
        assert!(habits.is_empty());
        assert_eq!(bits, Some(3));
    }
}
