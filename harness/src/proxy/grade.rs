//! Grading a client under test: was each result it reported the reply to
//! its own request?
//!
//! The pump knows, for every request the client sent, which reply the agent
//! gave to it and what became of that reply on the way (passed on, cut,
//! dropped, held). A reported `return` for command C is right when it is
//! the reply to the client's latest request for C sent before the report
//! line came, and that reply reached the client. Anything else is WRONG:
//! a stale reply the harness injected, the reply to another request, or a
//! value the agent never sent. Values compare as the client hands them to
//! its caller: a client that decodes into typed structs may leave members
//! out, so a reported object is right when each of its members matches.
//!
//! Beside the grade, the client's own bytes say how it syncs (0xFF first?
//! delimited? what ids?), whether it resyncs after its own timeout, and
//! whether its requests end in a newline: [`Habit`]s, grouped into findings
//! over the run.

use super::contract::{parse_line, ReportLine, Reported};
use super::pump::{Delivery, Pump, SeenRequest, Writer};
use crate::transcript::escape_bytes;
use crate::finding::FailureKind;
use crate::wire::message::ids_equal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use std::fmt;

/// Client mode: how the client under test came through a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientGrade {
    /// Every job command reported its own reply, at the first attempt.
    Recovered,
    /// Every job command reported its own reply, after the client's own
    /// retry (a second sync or a repeated command).
    RecoveredAfterRetry,
    /// The faulted command ended in a clean error (the fault cost it its
    /// reply: a timeout, a dead agent), and every command after it got its
    /// own reply: a library that surfaces the timeout to its caller and is
    /// back in sync on the next call.
    RecoveredAfterError,
    /// Some command reported an error (or nothing), and no wrong data.
    CleanError,
    /// A result that was not the reply to its request.
    Wrong,
    /// The client did not exit by the deadline; its process group was killed.
    Hung,
    /// The harness or the agent failed, or the report broke the contract:
    /// says nothing about the client's recovery.
    Invalid,
}

impl ClientGrade {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientGrade::Recovered => "recovered",
            ClientGrade::RecoveredAfterRetry => "recovered-after-retry",
            ClientGrade::RecoveredAfterError => "recovered-after-error",
            ClientGrade::CleanError => "clean-error",
            ClientGrade::Wrong => "wrong",
            ClientGrade::Hung => "hung",
            ClientGrade::Invalid => "invalid",
        }
    }
}

impl fmt::Display for ClientGrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}


/// What one report line was found to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportedResult {
    pub command: String,
    /// `right`, `wrong`, `error` or `invalid` (not per the contract).
    pub status: String,
    /// The reported value or error, escaped and cut to a readable length.
    pub value: String,
    /// For a wrong result: where the value came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A wire-level observation about the client, from its own bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Habit {
    pub kind: FailureKind,
    pub detail: String,
}

/// The client's side of one case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCaseDetail {
    pub grade: ClientGrade,
    pub reported: Vec<ReportedResult>,
    /// The client's exit status (None: it was killed, hung).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Sync requests and command requests the client sent.
    pub syncs: usize,
    pub commands: usize,
    /// Sync ids it used (as sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_ids: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub habits: Vec<Habit>,
}

/// The verdict for one client run, with the line that explains it.
#[derive(Debug, Clone)]
pub struct Graded {
    pub detail: ClientCaseDetail,
    /// For anything but a recovery: the failure kind and what happened.
    pub problem: Option<(FailureKind, String)>,
}

/// Everything the grade looks at.
pub struct Evidence<'a> {
    pub job: &'a [String],
    pub lines: &'a [ReportLine],
    pub pump: &'a Pump,
    pub exit: Option<String>,
    pub hung: bool,
    pub client_pid: i32,
    pub client_timeout: Duration,
    /// Sync ids the client used in the cases before this one.
    pub earlier_ids: &'a [Value],
    /// The job command the case's fault is on, when the fault costs a
    /// correct client that command's reply (a timeout, a dead agent): it
    /// may end in a clean error if the commands after it are right.
    pub may_fail: Option<usize>,
}

const SHOWN: usize = 200;

/// Pids a client's own processes may have: the leader the harness spawned,
/// and the children a wrapper (an adapter, a shell) starts right after it.
const PID_WINDOW: i64 = 64;

/// Whether sync id `n` is built from the client's process id (`leader` or
/// a pid just after it): the pid's digits followed by a counter
/// (`"$$0" . $seq`, pid × 10^k + c), or a counter followed by them. Such
/// an id repeats whenever a pid is reused. The counter part must be
/// small (below 10^6): a random 64-bit id starts or ends with a pid's
/// digits by chance, but almost never has at most six digits besides.
pub fn pid_derived(n: i64, leader: i32) -> Option<String> {
    if leader <= 0 || n < 0 {
        return None;
    }
    let digits = n.to_string();
    let in_window = |p: &str| p.parse::<i64>().is_ok_and(|p| (leader as i64..leader as i64 + PID_WINDOW).contains(&p));
    for width in [leader.to_string().len(), leader.to_string().len() + 1] {
        if digits.len() <= width || digits.len() > width + 6 {
            continue;
        }
        let (head, tail) = digits.split_at(width);
        if in_window(head) {
            return Some(format!("the client's pid {head} followed by a counter ({tail})"));
        }
        let (head, tail) = digits.split_at(digits.len() - width);
        if in_window(tail) && !tail.starts_with('0') {
            return Some(format!("a counter ({head}) followed by the client's pid {tail}"));
        }
    }
    None
}

fn show(v: &Value) -> String {
    let text = escape_bytes(v.to_string().as_bytes());
    if text.len() > SHOWN {
        format!("{}...", &text[..text.char_indices().take_while(|(i, _)| *i < SHOWN).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        text
    }
}

/// Whether a reported value is what the client would make of `actual`.
pub fn consistent(reported: &Value, actual: &Value) -> bool {
    match (reported, actual) {
        // An empty object only for an empty object: it would match anything.
        (Value::Object(a), Value::Object(b)) if a.is_empty() => b.is_empty(),
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| b.get(k).is_some_and(|w| consistent(v, w))),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| consistent(x, y)),
        (Value::Number(_), Value::Number(_)) => ids_equal(reported, actual),
        // A unit result (`()` in a typed client) for an empty object.
        (Value::Null, Value::Object(b)) => b.is_empty(),
        _ => reported == actual,
    }
}

/// Grade one client run.
pub fn grade(ev: &Evidence<'_>) -> Graded {
    let pump = ev.pump;
    let mut reported = Vec::new();
    let mut wrong: Option<String> = None;
    let mut bad_report: Option<String> = None;
    // Per job command, in job order (report lines come in job order): its
    // result was right (Some(true)), an error (Some(false)), or missing.
    let mut per_job: Vec<Option<bool>> = vec![None; ev.job.len()];
    let mut next_slot = 0;
    let mut slot_for = |command: &str, right: bool| {
        if let Some(j) = (next_slot..ev.job.len()).find(|&j| ev.job[j] == command) {
            per_job[j] = Some(right);
            next_slot = j + 1;
        }
    };
    let mut first_error: Option<String> = None;
    for line in ev.lines {
        let parsed = match parse_line(&line.text) {
            Ok(p) => p,
            Err(why) => {
                bad_report.get_or_insert(format!("report line {:?}: {why}", escape_bytes(line.text.as_bytes())));
                reported.push(ReportedResult { command: String::new(), status: "invalid".into(), value: escape_bytes(line.text.as_bytes()), note: Some(why) });
                continue;
            }
        };
        match parsed {
            Reported::Error { command, error } => {
                slot_for(&command, false);
                first_error.get_or_insert(format!("{command} reported an error: {}", show(&error)));
                reported.push(ReportedResult { command, status: "error".into(), value: show(&error), note: None });
            }
            Reported::Return { command, value } => {
                let (ok, note) = judge(pump, &command, &value, line.seq);
                slot_for(&command, ok);
                if !ok {
                    wrong.get_or_insert(format!("{command} reported {} as its result: {}", show(&value), note.clone().unwrap_or_default()));
                }
                reported.push(ReportedResult { command, status: if ok { "right" } else { "wrong" }.into(), value: show(&value), note });
            }
        }
    }
    let client_reqs: Vec<&SeenRequest> = pump.requests.iter().filter(|r| r.writer == Writer::Client).collect();
    let syncs = client_reqs.iter().filter(|r| r.is_sync()).count();
    let commands = client_reqs.len() - syncs;
    // A retry: a job command sent again after the first sync (a probe
    // before the sync, as qemu-ga-client's ping, is not one), or a sync
    // sent again with no command since the last (a sync before every
    // command is a habit, not a retry).
    let after_sync = client_reqs.iter().position(|r| r.is_sync()).map_or(&client_reqs[..], |i| &client_reqs[i..]);
    let resent = ev.job.iter().any(|c| after_sync.iter().filter(|r| r.execute == *c).count() > ev.job.iter().filter(|j| *j == c).count());
    let resynced = after_sync.windows(2).any(|w| w[0].is_sync() && w[1].is_sync());
    let retried = resent || resynced;
    let all_right = per_job.iter().all(|r| *r == Some(true));
    // Only the command the fault cost its reply failed, cleanly, and every
    // command after it is right: back in sync on the next call.
    let right_after_error = ev.may_fail.is_some_and(|f| {
        f + 1 < per_job.len() && per_job.iter().enumerate().all(|(j, r)| if j == f { *r == Some(false) } else { *r == Some(true) })
    });
    // Version 1 of the contract stopped at the first error: a report that
    // ends in an error with job commands left unreported.
    let stopped_at_error = !ev.hung && per_job.iter().rposition(Option::is_some).is_some_and(|last| per_job[last] == Some(false) && last + 1 < per_job.len());
    let (grade, problem) = if let Some(why) = pump.invalid.clone() {
        (ClientGrade::Invalid, Some((FailureKind::Harness, why)))
    } else if let Some(w) = wrong {
        (ClientGrade::Wrong, Some((FailureKind::ClientWrongResult, w)))
    } else if let Some(b) = bad_report {
        (ClientGrade::Invalid, Some((FailureKind::ClientBadReport, b)))
    } else if ev.hung {
        (ClientGrade::Hung, Some((FailureKind::ClientHung, format!("the client did not exit by the case's deadline ({} of {} command(s) reported)", ev.lines.len(), ev.job.len()))))
    } else if all_right {
        (if retried { ClientGrade::RecoveredAfterRetry } else { ClientGrade::Recovered }, None)
    } else if right_after_error {
        (ClientGrade::RecoveredAfterError, None)
    } else if stopped_at_error {
        let reported = per_job.iter().filter(|r| r.is_some()).count();
        let why = format!(
            "{}; the client then stopped with {} of {} job command(s) reported (exit: {}). That is version 1 of the client contract: a version 2 client reports every command of the job, going on after an error",
            first_error.unwrap_or_default(),
            reported,
            ev.job.len(),
            ev.exit.as_deref().unwrap_or("none")
        );
        (ClientGrade::Invalid, Some((FailureKind::ClientBadReport, why)))
    } else {
        let missing: Vec<&str> = ev.job.iter().zip(&per_job).filter(|(_, r)| **r != Some(true)).map(|(c, _)| c.as_str()).collect();
        let why = first_error.unwrap_or_else(|| format!("no result reported for {}", missing.join(", ")));
        (ClientGrade::CleanError, Some((FailureKind::ClientNotRecovered, format!("{why} (exit: {})", ev.exit.as_deref().unwrap_or("none")))))
    };
    let sync_ids = client_reqs.iter().filter_map(|r| r.sync_id.clone()).collect();
    Graded {
        detail: ClientCaseDetail { grade, reported, exit: ev.exit.clone(), syncs, commands, sync_ids, habits: habits(&client_reqs, pump, ev) },
        problem,
    }
}

/// Whether `value`, reported for `command` when the report line was
/// recorded at `seq`, is the reply to the client's request; if not, where
/// it came from.
fn judge(pump: &Pump, command: &str, value: &Value, seq: u64) -> (bool, Option<String>) {
    let req = pump.requests.iter().rposition(|r| r.writer == Writer::Client && r.execute == command && r.seq <= seq);
    let Some(ri) = req else {
        return (false, Some(format!("it never sent {command}")));
    };
    let ours = pump.requests[ri].reply.map(|i| &pump.replies[i]);
    if let Some(reply) = ours {
        // It reached the client whole, before the client reported it.
        let delivered = matches!(reply.delivery, Delivery::Whole | Delivery::Delayed | Delivery::Duplicated) && reply.delivered_seq.is_some_and(|d| d <= seq);
        if let Some(ret) = reply.value.get("return") {
            if delivered && consistent(value, ret) {
                return (true, None);
            }
        }
    }
    let what_ours = match ours {
        None => "its request got no reply".to_owned(),
        Some(r) if r.delivered_seq.is_none_or(|d| d > seq) && matches!(r.delivery, Delivery::Whole | Delivery::Delayed | Delivery::Duplicated) => {
            format!("the reply to its request, {}, had not reached it when it reported", show(&r.value))
        }
        Some(r) => match r.delivery {
            Delivery::Dropped => "the reply to its request never reached it".to_owned(),
            Delivery::Truncated(n) => format!("the reply to its request reached it cut after {n} byte(s)"),
            _ => format!("the reply to its request was {}", show(&r.value)),
        },
    };
    for inj in pump.injections.iter().rev() {
        if inj.values.iter().any(|v| v.get("return").is_some_and(|r| consistent(value, r))) {
            return (false, Some(format!("that is the stale reply injected at #{}; {what_ours}", inj.seq)));
        }
    }
    // A typed client's unit result (`{}` or null) keeps no member of the
    // object it decoded: any stale object gives it.
    let unit = value.is_null() || value.as_object().is_some_and(|m| m.is_empty());
    if unit {
        if let Some(inj) = pump.injections.iter().rev().find(|inj| inj.values.iter().any(|v| v.get("return").is_some_and(Value::is_object))) {
            return (false, Some(format!("an empty result, as a typed client makes of the stale object injected at #{} (it keeps none of its members); {what_ours}", inj.seq)));
        }
    }
    for (i, r) in pump.replies.iter().enumerate().rev() {
        if Some(i) == pump.requests[ri].reply {
            continue;
        }
        if r.value.get("return").is_some_and(|ret| consistent(value, ret)) {
            let to = r.request.map_or("no request".to_owned(), |q| {
                let q = &pump.requests[q];
                let whose = if q.writer == Writer::Harness { "an earlier client's" } else { "its" };
                format!("{whose} {} (#{})", q.execute, q.seq)
            });
            return (false, Some(format!("that is the agent's reply to {to}, at #{}; {what_ours}", r.seq)));
        }
    }
    (false, Some(format!("the agent never sent that value; {what_ours}")))
}

/// What the client's own bytes show.
fn habits(reqs: &[&SeenRequest], pump: &Pump, ev: &Evidence<'_>) -> Vec<Habit> {
    let mut out = Vec::new();
    let mut add = |kind, detail: String| {
        if !out.iter().any(|h: &Habit| h.kind == kind) {
            out.push(Habit { kind, detail });
        }
    };
    let syncs: Vec<&&SeenRequest> = reqs.iter().filter(|r| r.is_sync()).collect();
    if let Some(first_cmd) = reqs.iter().position(|r| !r.is_sync()) {
        if !reqs[..first_cmd].iter().any(|r| r.is_sync()) {
            add(FailureKind::ClientNoSync, format!("its first request is {} with no sync before it", reqs[first_cmd].execute));
        }
    }
    if let Some(s) = syncs.iter().find(|r| !r.flush_before) {
        add(FailureKind::ClientNoFlushByte, format!("{} sent with no 0xFF before it (#{})", s.execute, s.seq));
    }
    if let Some(s) = syncs.iter().find(|r| r.execute == "guest-sync") {
        add(FailureKind::ClientPlainSync, format!("guest-sync (#{}), whose reply cannot be told from a stale one by a sentinel", s.seq));
    }
    let ids: Vec<&Value> = syncs.iter().filter_map(|r| r.sync_id.as_ref()).collect();
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].iter().any(|x| ids_equal(x, id)) {
            add(FailureKind::ClientPredictableIds, format!("sync id {} used twice in one conversation", show(id)));
        }
        if ev.earlier_ids.iter().any(|x| ids_equal(x, id)) {
            add(FailureKind::ClientPredictableIds, format!("sync id {} was used in an earlier conversation", show(id)));
        }
        match id.as_i64() {
            Some(n) if n == ev.client_pid as i64 => add(FailureKind::ClientPredictableIds, format!("sync id {n} is the client's process id")),
            Some(n) if n.unsigned_abs() < 1 << 16 => add(FailureKind::ClientPredictableIds, format!("sync id {n} fits in 16 bits")),
            Some(n) => {
                if let Some(how) = pid_derived(n, ev.client_pid) {
                    add(FailureKind::ClientPredictableIds, format!("sync id {n} is {how}: it repeats whenever the pid is reused"));
                }
                let earlier = ev.earlier_ids.iter().chain(ids[..i].iter().copied());
                if let Some(prev) = earlier.filter_map(Value::as_i64).find(|&p| p.checked_add(1) == Some(n)) {
                    add(FailureKind::ClientPredictableIds, format!("sync id {n} follows {prev}: the ids are a counter"));
                }
            }
            None => {}
        }
    }
    if let Some(r) = reqs.iter().find(|r| r.newline == Some(false)) {
        add(FailureKind::ClientNoNewline, format!("{} (#{}) not followed by a newline", r.execute, r.seq));
    }
    // After a request the client gave up on (no reply reached it before its
    // timeout), a sync must come before the next request whose result it
    // reports. A probe whose answer it only checks for life (qemu-ga-client
    // pings before its guest-sync) may go first: a stale reply it eats
    // hands the caller nothing.
    let reported = reported_requests(reqs, ev);
    for (k, w) in reqs.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        let answered_before_b = a.reply.is_some_and(|i| {
            let r = &pump.replies[i];
            r.delivered_seq.is_some_and(|d| d < b.seq) && !matches!(r.delivery, Delivery::Truncated(_) | Delivery::Dropped)
        });
        let waited = b.at.saturating_duration_since(a.at);
        if answered_before_b || b.is_sync() || waited < ev.client_timeout * 8 / 10 {
            continue;
        }
        // The first request from b on that is a sync or a reported one.
        let next = (k + 1..reqs.len()).find(|&j| reqs[j].is_sync() || reported[j]);
        if let Some(j) = next.filter(|&j| !reqs[j].is_sync()) {
            let c = reqs[j];
            let probes = if j > k + 1 { format!(" (after {} unreported request(s))", j - k - 1) } else { String::new() };
            add(
                FailureKind::ClientNoResyncAfterTimeout,
                format!("{} (#{}) sent {} ms after an unanswered {} with no sync between{probes}, and its result reported", c.execute, c.seq, c.at.saturating_duration_since(a.at).as_millis(), a.execute),
            );
        }
    }
    out
}

/// Per request: whether the client reported its result, i.e. it is the
/// latest request for its command before a report line for that command.
fn reported_requests(reqs: &[&SeenRequest], ev: &Evidence<'_>) -> Vec<bool> {
    let mut out = vec![false; reqs.len()];
    for line in ev.lines {
        let Ok(parsed) = parse_line(&line.text) else { continue };
        if let Some(i) = reqs.iter().rposition(|r| r.execute == parsed.command() && r.seq <= line.seq) {
            out[i] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_built_from_the_pid_are_told_from_random_ones() {
        // "$$0" . $seq with pid 48213, and a wrapper's child a few pids on.
        assert!(pid_derived(4821301, 48213).is_some());
        assert!(pid_derived(482130017, 48213).is_some());
        assert!(pid_derived(48215007, 48213).is_some());
        // pid × 10^6 + counter; counter then pid.
        assert!(pid_derived(48213 * 1_000_000 + 42, 48213).is_some());
        assert!(pid_derived(748213, 48213).is_some());
        // Not the pid: another process's digits, a random 64-bit id that
        // starts with the pid's digits, a plain 7-digit number.
        assert!(pid_derived(5821301, 48213).is_none());
        assert!(pid_derived(4821312345678901234, 48213).is_none());
        assert!(pid_derived(1234567, 48213).is_none());
        assert!(pid_derived(-4821301, 48213).is_none());
    }
    use serde_json::json;

    #[test]
    fn typed_clients_may_leave_members_out() {
        let info = json!({"version": "7.2", "supported_commands": [{"name": "guest-ping", "enabled": true, "success-response": true}]});
        assert!(consistent(&json!({"version": "7.2", "supported_commands": [{"name": "guest-ping", "enabled": true}]}), &info));
        assert!(!consistent(&json!({"version": "stale"}), &info));
        assert!(!consistent(&json!({"version": "7.2", "supported_commands": []}), &info));
        assert!(consistent(&json!(1700000000123456789i64), &json!(1700000000123456789i64)));
        assert!(!consistent(&json!(12345), &json!(1700000000123456789i64)));
        assert!(consistent(&Value::Null, &json!({})));
        assert!(!consistent(&json!({}), &info));
        assert!(consistent(&json!({}), &json!({})));
        assert!(!consistent(&Value::Null, &json!({"stale": true})));
    }
}
