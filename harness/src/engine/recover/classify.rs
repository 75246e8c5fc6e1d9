//! What a failed recovery saw: every reply the recovery client received,
//! held against the requests it sent, names the defect (a changed id, an
//! id not echoed, an error reply, a duplicate). A pure function of the
//! bytes, so that `wedged` is left for a channel where nothing answered.

use crate::engine::expect::id_finding;
use crate::verdict::FailureKind;
use crate::wire::message::{ids_equal, MalformedKind};
use crate::engine::expect::cause::objects;
use crate::wire::Reply;
use serde_json::Value;

/// How the recovery client matches replies (from the start-up profile):
/// what it takes as its own reply is no finding.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::engine) struct Accept {
    /// An id in float form is the same id.
    pub float_ids: bool,
    /// Replies are matched by order: ids are not trusted at all.
    pub by_order: bool,
}

/// One request found in the bytes sent.
#[derive(Debug, Clone)]
struct Sent {
    command: String,
    id: Option<Value>,
    /// guest-sync's (or guest-sync-delimited's) `arguments.id`.
    sync: Option<i64>,
}

fn requests(buf: &[u8]) -> Vec<Sent> {
    objects(buf)
        .0
        .into_iter()
        .filter_map(|o| serde_json::from_slice::<Value>(o).ok())
        .filter_map(|v| {
            let command = v.get("execute")?.as_str()?.to_string();
            let sync = command.starts_with("guest-sync").then(|| v.pointer("/arguments/id").and_then(Value::as_i64)).flatten();
            Some(Sent { command, id: v.get("id").cloned(), sync })
        })
        .collect()
}

/// How `got` relates to the id `sent`: None when it is that id (in a form
/// the client accepts), else the finding.
fn id_defect(sent: &Value, got: &Value, accept: Accept) -> Option<FailureKind> {
    match sent.as_i64() {
        Some(n) if !sent.is_string() => match id_finding(n, Some(got)) {
            FailureKind::Other => None,
            FailureKind::IdFloatForm if accept.float_ids => None,
            k => Some(k),
        },
        _ => (!ids_equal(sent, got)).then_some(FailureKind::IdChanged),
    }
}

/// The first finding among `received`, the bytes the recovery read, for
/// the requests it wrote (`sent`); `earlier` is what the case itself sent
/// before (a late reply to it is stale, not a finding). None when every
/// reply was ours or a legal answer to stray input.
pub(in crate::engine) fn classify(earlier: &[u8], sent: &[u8], received: &[u8], accept: Accept) -> Option<(FailureKind, String)> {
    let old = requests(earlier);
    let ours = requests(sent);
    let with_ids: Vec<&Sent> = ours.iter().filter(|s| s.id.is_some()).collect();
    let mut texts: Vec<&[u8]> = Vec::new();
    let mut answered: Vec<Value> = Vec::new();
    for text in objects(received).0 {
        let shown = crate::transcript::escape_bytes(text);
        let repeated = texts.contains(&text);
        texts.push(text);
        let reply = match Reply::parse(text) {
            Ok(r) => r,
            Err(m) if m.kind == MalformedKind::ErrorWithoutClass => return Some((FailureKind::ErrorWithoutClass, format!("an error reply without a class: {shown}"))),
            Err(m) => return Some((FailureKind::MalformedReply, format!("a malformed reply {shown}: {}", m.reason))),
        };
        let id = reply.id().cloned();
        if let Some(v) = &id {
            // A late reply to the case's own requests: stale, not ours.
            if old.iter().any(|s| s.id.as_ref().is_some_and(|i| ids_equal(i, v))) && !ours.iter().any(|s| s.id.as_ref().is_some_and(|i| ids_equal(i, v))) {
                continue;
            }
        }
        match (&reply, &id) {
            // The legal answer to a stray byte or a flush: no id, an error.
            (Reply::Error { .. }, None) => continue,
            (Reply::Error { class, desc, .. }, Some(v)) => {
                let to = with_ids.iter().find(|s| s.id.as_ref().is_some_and(|i| ids_equal(i, v))).map_or("a request", |s| s.command.as_str());
                return Some((FailureKind::UnexpectedError, format!("{to} was answered with an error {class}: {desc}: {shown}")));
            }
            (Reply::Return { .. }, Some(v)) => {
                if answered.iter().any(|a| ids_equal(a, v)) || repeated {
                    return Some((FailureKind::DuplicateReply, format!("a second reply to a request already answered: {shown}")));
                }
                if accept.by_order {
                    continue;
                }
                let defects: Vec<(FailureKind, &Sent)> = with_ids.iter().filter_map(|s| id_defect(s.id.as_ref()?, v, accept).map(|k| (k, *s))).collect();
                if defects.len() < with_ids.len() {
                    answered.push(v.clone());
                    continue;
                }
                // The most specific change found (a changed value only if
                // nothing else explains it).
                if let Some((k, s)) = defects.iter().find(|(k, _)| *k != FailureKind::IdChanged).or(defects.first()) {
                    return Some((*k, format!("the reply to {} (id {}) came back with id {v}: {shown}", s.command, s.id.as_ref().map_or(String::new(), Value::to_string))));
                }
            }
            (Reply::Return { value, .. }, None) => {
                if repeated && value.is_number() {
                    return Some((FailureKind::DuplicateReply, format!("a second copy of a sync's answer: {shown}")));
                }
                let syncs: Vec<&Sent> = ours.iter().filter(|s| s.sync.is_some()).collect();
                if value.is_number() && !syncs.is_empty() {
                    let defects: Vec<(FailureKind, &Sent)> = syncs.iter().filter_map(|s| id_defect(&Value::from(s.sync?), value, accept).map(|k| (k, *s))).collect();
                    if defects.len() < syncs.len() {
                        continue;
                    }
                    if let Some((k, s)) = defects.iter().find(|(k, _)| *k != FailureKind::IdChanged) {
                        return Some((*k, format!("{} {} was answered with {value}: {shown}", s.command, s.sync.unwrap_or_default())));
                    }
                }
                if !with_ids.is_empty() && !accept.by_order {
                    let to = with_ids.iter().map(|s| s.command.as_str()).collect::<Vec<_>>().join(", ");
                    return Some((FailureKind::IdNotEchoed, format!("a reply without the id our request ({to}) carried: {shown}")));
                }
            }
        }
    }
    None
}

/// What the bytes say when no reply named a defect: only error replies,
/// bytes that are no reply, or (nothing at all) a channel that stopped.
pub(in crate::engine) fn fallback(received: &[u8]) -> (FailureKind, &'static str) {
    let (objs, garbage) = objects(received);
    if objs.is_empty() && !garbage && received.iter().all(|b| b.is_ascii_whitespace()) {
        (FailureKind::Wedged, "no byte came back")
    } else if garbage && objs.is_empty() {
        (FailureKind::GarbageOutput, "only bytes that cannot begin a reply came back")
    } else if !objs.is_empty() && objs.iter().all(|o| matches!(Reply::parse(o), Ok(Reply::Error { .. }))) {
        (FailureKind::UnexpectedError, "only error replies without an id came back")
    } else {
        (FailureKind::NoReply, "replies came back, then none where one was due")
    }
}
