//! Turning a `send` step into bytes.
//!
//! Commands whose arguments fit the `qapi` crate's type are serialised
//! through that type and its `Execute` envelope, so well-formed requests are
//! exactly the schema's. Arguments that do not fit (the cases that test bad
//! arguments) are written as given: qapi could not express them.

use crate::case::step::Send;
use crate::client::ClientOptions;
use crate::wire::Request;
use qapi::qga;
use serde_json::{json, Map, Value};

/// A request the agent owes a reply to.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub command: String,
    /// The `id` member sent, if any.
    pub id: Option<Value>,
    /// The value that replaced `"$fresh"` in the arguments.
    pub sync_id: Option<i64>,
    /// Whether the request ended with a newline.
    pub newline: bool,
    /// How it was written: alone, with other requests, or in pieces.
    pub shape: Shape,
}

/// How a request reached the channel: what an agent that frames by
/// read() or by line does with it depends on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// In a write of its own.
    #[default]
    Alone,
    /// The first of several requests in one write.
    First,
    /// After another request in the same write.
    After,
    /// Written in several pieces.
    Split,
    /// Alone but for the client's 0xFF before it in the same write: an
    /// error line for the 0xFF may come first, by right.
    AfterFlush,
    /// After stale input left on an open line, with the client's 0xFF
    /// between: the 0xFF should have discarded that input. Lost, it is
    /// the 0xFF that failed, not the framing.
    AfterFlushedLine,
}

impl Shape {
    /// Written after other input that an agent framing by read() or by
    /// line would take it with.
    pub fn after_input(self) -> bool {
        matches!(self, Shape::After | Shape::AfterFlushedLine)
    }
}

/// Mark `pending`, written together in one write, as such.
pub fn together(pending: &mut [Pending]) {
    if pending.len() < 2 {
        return;
    }
    for (i, p) in pending.iter_mut().enumerate() {
        if p.shape != Shape::Split {
            p.shape = if i == 0 { Shape::First } else { Shape::After };
        }
    }
}

/// Replace every `"$fresh"` with a fresh sync id from the client's stream
/// (seeded, and within the width the agent holds); returns the first one.
fn fill_fresh(v: &mut Value, used: &mut Option<i64>, client: &ClientOptions) {
    match v {
        Value::String(s) if s == "$fresh" => {
            let id = client.ids.sync_id();
            used.get_or_insert(id);
            *v = json!(id);
        }
        Value::Array(a) => a.iter_mut().for_each(|x| fill_fresh(x, used, client)),
        Value::Object(o) => o.values_mut().for_each(|x| fill_fresh(x, used, client)),
        _ => {}
    }
}

/// Serialise through the qapi type `C` when `args` fits it exactly (the
/// typed form re-reads as the same arguments) and the id is an integer.
fn typed<C: qapi::Command + serde::de::DeserializeOwned>(args: &Value, id: Option<&Value>) -> Option<Vec<u8>> {
    let cmd: C = serde_json::from_value(args.clone()).ok()?;
    let id = match id {
        None => None,
        Some(v) => Some(v.as_i64()?),
    };
    let req = Request::new(cmd, id);
    let back: Value = serde_json::from_slice(&req.json).ok()?;
    (back.get("arguments") == Some(args)).then_some(req.json)
}

/// The JSON text of one request.
pub fn command_json(name: &str, args: Option<&Value>, id: Option<&Value>) -> Vec<u8> {
    let typed_args = args.cloned().unwrap_or_else(|| json!({}));
    let via_qapi = match name {
        "guest-sync" => typed::<qga::guest_sync>(&typed_args, id),
        "guest-sync-delimited" => typed::<qga::guest_sync_delimited>(&typed_args, id),
        "guest-ping" => typed::<qga::guest_ping>(&typed_args, id),
        "guest-info" => typed::<qga::guest_info>(&typed_args, id),
        "guest-get-time" => typed::<qga::guest_get_time>(&typed_args, id),
        "guest-get-host-name" => typed::<qga::guest_get_host_name>(&typed_args, id),
        "guest-get-timezone" => typed::<qga::guest_get_timezone>(&typed_args, id),
        "guest-get-osinfo" => typed::<qga::guest_get_osinfo>(&typed_args, id),
        _ => None,
    };
    // qapi always writes "arguments"; a case that omits them must get a
    // request without the member.
    if let Some(json) = via_qapi.filter(|_| args.is_some()) {
        return json;
    }
    let mut obj = Map::new();
    obj.insert("execute".into(), json!(name));
    if let Some(a) = args {
        obj.insert("arguments".into(), a.clone());
    }
    if let Some(i) = id {
        obj.insert("id".into(), i.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).expect("JSON values serialise")
}

/// The bytes of a send step, and the replies it makes the agent owe.
pub fn build(send: &Send, client: &ClientOptions) -> (Vec<u8>, Vec<Pending>) {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    if send.flush {
        out.push(crate::wire::SENTINEL);
    }
    for _ in 0..send.repeat {
        let mut piece = match (&send.command, &send.raw) {
            (Some(name), _) => {
                let mut args = send.arguments.clone();
                let mut sync_id = None;
                if let Some(a) = args.as_mut() {
                    fill_fresh(a, &mut sync_id, client);
                }
                let id = match &send.id {
                    None => Some(client.request_id_value(client.ids.request_id())),
                    Some(Value::String(s)) if s == "$none" => None,
                    Some(v) => Some(v.clone()),
                };
                let mut json = command_json(name, args.as_ref(), id.as_ref());
                if let Some(n) = send.pad {
                    json.splice(1..1, std::iter::repeat_n(b' ', n));
                }
                if send.expects_replies() {
                    let split = send.chunk.is_some_and(|n| n < json.len());
                    let shape = if split { Shape::Split } else { Shape::Alone };
                    pending.push(Pending { command: name.clone(), id, sync_id, newline: send.newline && send.truncate.is_none(), shape });
                }
                json
            }
            (None, Some(raw)) => raw.0.clone(),
            (None, None) => Vec::new(),
        };
        if let Some(k) = send.truncate {
            piece.truncate(k);
        } else if send.newline && send.command.is_some() {
            piece.push(b'\n');
        }
        out.extend_from_slice(&piece);
    }
    together(&mut pending);
    // A flush byte before a request: the request is not alone in its write.
    if let [p] = pending.as_mut_slice() {
        if send.flush && p.shape == Shape::Alone {
            p.shape = Shape::AfterFlush;
        }
    }
    (out, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_when_it_fits_verbatim_when_not() {
        let v: Value = serde_json::from_slice(&command_json("guest-sync", Some(&json!({"id": 5})), Some(&json!(9)))).unwrap();
        assert_eq!(v, json!({"execute": "guest-sync", "arguments": {"id": 5}, "id": 9}));
        // Extra members qapi would drop are kept.
        let v: Value = serde_json::from_slice(&command_json("guest-ping", Some(&json!({"x": 1})), None)).unwrap();
        assert_eq!(v, json!({"execute": "guest-ping", "arguments": {"x": 1}}));
        // Wrong types qapi cannot express are kept.
        let v: Value = serde_json::from_slice(&command_json("guest-sync", Some(&json!({"id": "a"})), None)).unwrap();
        assert_eq!(v["arguments"]["id"], "a");
        // No arguments member when the case gives none.
        let v: Value = serde_json::from_slice(&command_json("guest-ping", None, None)).unwrap();
        assert_eq!(v, json!({"execute": "guest-ping"}));
    }

    #[test]
    fn build_fills_fresh_ids_per_copy() {
        let mut s = Send::command("guest-sync", Some(json!({"id": "$fresh"})));
        s.repeat = 3;
        s.flush = true;
        let client = ClientOptions::default();
        let (bytes, pending) = build(&s, &client);
        assert_eq!(bytes[0], 0xFF);
        assert_eq!(pending.len(), 3);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        let ids: Vec<_> = pending.iter().map(|p| p.sync_id.unwrap()).collect();
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        s.truncate = Some(10);
        let (bytes, pending) = build(&s, &client);
        assert_eq!(bytes.len(), 1 + 30);
        assert!(pending.is_empty());
    }
}
