//! Requests and replies as JSON.
//!
//! Requests are serialised through the `qapi` crate's `qga` command types and
//! its `Execute` envelope, so the command names and argument shapes are the
//! schema's. Replies are parsed here, not with `qapi_spec::Response`: that
//! type rejects unknown error classes, and an agent under test may send any.

use qapi::{Command, Execute};
use serde_json::Value;

/// A serialised request, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command name (`guest-sync-delimited`, ...), for messages.
    pub command: &'static str,
    /// The `id` member sent with it, if any; the agent must echo it.
    pub id: Option<i64>,
    /// The exact JSON text, without a trailing newline.
    pub json: Vec<u8>,
}

impl Request {
    /// Serialise `cmd`, with an `id` member when given.
    pub fn new<C: Command>(cmd: C, id: Option<i64>) -> Request {
        let json = serde_json::to_vec(&Execute::<C, i64>::new(cmd, id))
            .expect("qapi command types always serialise");
        Request { command: C::NAME, id, json }
    }

    /// The bytes to write: the JSON and a newline. Agents must not need the
    /// newline (they frame by braces), but it keeps line-oriented logs and
    /// agents readable; framing without it is a catalogue case of its own.
    /// A request whose `id` member is any JSON value (a string id, say).
    pub fn with_id_value<C: Command>(cmd: C, id: Option<Value>) -> Request {
        let json = serde_json::to_vec(&Execute::<C, Value>::new(cmd, id.clone()))
            .expect("qapi command types always serialise");
        Request { command: C::NAME, id: id.as_ref().and_then(Value::as_i64), json }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + 1);
        out.extend_from_slice(&self.json);
        out.push(b'\n');
        out
    }
}

/// One reply from an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"return": VALUE}`
    Return { value: Value, id: Option<Value> },
    /// `{"error": {"class": C, "desc": D}}`
    Error { class: String, desc: String, id: Option<Value> },
}

/// A framed JSON text that is not a well-formed reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed reply: {reason}")]
pub struct MalformedReply {
    /// What is wrong, for code that grades it.
    pub kind: MalformedKind,
    /// What is wrong, for a reader (reports quote it).
    pub reason: String,
}

/// The defects of a reply that a grader tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    /// An error object without a string `class`.
    ErrorWithoutClass,
    /// Both `return` and `error`.
    ReturnAndError,
    /// Anything else: not JSON, not an object, no `desc`, neither member.
    Other,
}

fn malformed(reason: impl Into<String>) -> MalformedReply {
    MalformedReply { kind: MalformedKind::Other, reason: reason.into() }
}

impl Reply {
    /// Parse one framed JSON text (as found by [`super::scan`]).
    pub fn parse(text: &[u8]) -> Result<Reply, MalformedReply> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        Reply::from_value(value)
    }

    /// Interpret a JSON value as a reply: an object with exactly one of
    /// `return` and `error`, and optionally `id`. Other members are tolerated
    /// here (QMP lets servers add members); the catalogue may judge them.
    pub fn from_value(value: Value) -> Result<Reply, MalformedReply> {
        let Value::Object(mut obj) = value else {
            return Err(malformed("not a JSON object"));
        };
        let id = obj.remove("id");
        match (obj.remove("return"), obj.remove("error")) {
            (Some(value), None) => Ok(Reply::Return { value, id }),
            (None, Some(Value::Object(mut err))) => {
                let class = match err.remove("class") {
                    Some(Value::String(s)) => s,
                    _ => return Err(MalformedReply { kind: MalformedKind::ErrorWithoutClass, reason: "error without a string \"class\"".into() }),
                };
                let desc = match err.remove("desc") {
                    Some(Value::String(s)) => s,
                    _ => return Err(malformed("error without a string \"desc\"")),
                };
                Ok(Reply::Error { class, desc, id })
            }
            (None, Some(_)) => Err(malformed("\"error\" is not an object")),
            (Some(_), Some(_)) => Err(MalformedReply { kind: MalformedKind::ReturnAndError, reason: "both \"return\" and \"error\"".into() }),
            (None, None) => Err(malformed("neither \"return\" nor \"error\"")),
        }
    }

    /// Read an error reply that [`Reply::parse`] rejects (no string
    /// `class` or `desc`) as an error all the same: for grading agents found
    /// to send such errors on what the cases are about, not on that slip.
    /// `None` unless `text` is a JSON object with `error` and no `return`.
    pub fn lenient_error(text: &[u8]) -> Option<Reply> {
        let v: Value = serde_json::from_slice(text).ok()?;
        let err = v.get("error").filter(|_| v.get("return").is_none())?;
        let field = |k: &str, default: &str| err.get(k).and_then(Value::as_str).unwrap_or(default).to_owned();
        // A missing class reads as QAPI's catch-all, GenericError.
        Some(Reply::Error { class: field("class", "GenericError"), desc: field("desc", ""), id: v.get("id").cloned() })
    }

    pub fn id(&self) -> Option<&Value> {
        match self {
            Reply::Return { id, .. } | Reply::Error { id, .. } => id.as_ref(),
        }
    }

    /// True when this is `{"return": n}` with `n` exactly the integer `want`.
    /// Compared as numbers, never as text: agents re-serialise (protocol.md §4).
    pub fn returns_int(&self, want: i64) -> bool {
        matches!(self, Reply::Return { value, .. } if value.as_i64() == Some(want))
    }
}

/// True when an echoed `id` is the integer we sent.
pub fn id_matches(echoed: Option<&Value>, sent: i64) -> bool {
    echoed.and_then(Value::as_i64) == Some(sent)
}

/// How a value the agent echoed compares with the integer id we sent: the
/// id policy (cases/README.md), applied to sync returns and `id` members
/// alike. Ids compare as numbers. The same value in another JSON form is
/// its own finding; a changed value says how it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdMatch {
    /// The same integer, written as an integer.
    Exact,
    /// The same value in another number form (`1.0`, `1e3`): a client that
    /// reads ids as 64-bit integers rejects it.
    FloatForm,
    /// A different number: the id rounded to a double (held as a C double).
    Rounded,
    /// A different number: the id printed as a double with 15 significant
    /// digits (C's `%.15g`: 8653480422752571 -> 8.65348042275257e+15), what
    /// C JSON libraries that print every number through a double write.
    FifteenDigits,
    /// A different number: the id truncated to 32 bits.
    Truncated32,
    /// The id as a JSON string.
    Stringified,
    /// Absent.
    Missing,
    /// Something else.
    Changed,
}

impl IdMatch {
    /// Whether the value is the id (in any number form).
    pub fn same_value(self) -> bool {
        matches!(self, IdMatch::Exact | IdMatch::FloatForm)
    }

    /// How the echoed value differs, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            IdMatch::Exact => "the same id",
            IdMatch::FloatForm => "the same value written as a floating-point number",
            IdMatch::Rounded => "the id rounded to double precision (the agent holds numbers as doubles)",
            IdMatch::FifteenDigits => "the id printed with 15 significant digits (%.15g: the agent prints numbers through a double)",
            IdMatch::Truncated32 => "the id truncated to 32 bits",
            IdMatch::Stringified => "the id as a string",
            IdMatch::Missing => "no id",
            IdMatch::Changed => "another value",
        }
    }
}

/// Compare an echoed JSON value with the integer id that was sent.
pub fn compare_id(sent: i64, echoed: Option<&Value>) -> IdMatch {
    let Some(v) = echoed else { return IdMatch::Missing };
    if let Some(n) = v.as_i64() {
        return if n == sent {
            IdMatch::Exact
        } else if fifteen_digits(sent) == Some(n as i128) {
            IdMatch::FifteenDigits
        } else if n == sent as i32 as i64 || n == sent as u32 as i64 {
            IdMatch::Truncated32
        } else {
            IdMatch::Changed
        };
    }
    if let Some(f) = v.as_f64() {
        // serde_json reads `6923800783752000.0` and `1e3` as f64.
        // Exactly the value, in float form (i128: no saturation at 2^63).
        if f.fract() == 0.0 && f.abs() < 1e19 && f as i128 == sent as i128 {
            return IdMatch::FloatForm;
        }
        if f == sent as f64 {
            return IdMatch::Rounded;
        }
        if fifteen_digits(sent).is_some_and(|d| f == d as f64) {
            return IdMatch::FifteenDigits;
        }
        if f == (sent as i32) as f64 || f == (sent as u32) as f64 {
            return IdMatch::Truncated32;
        }
        return IdMatch::Changed;
    }
    match v.as_str() {
        Some(s) if s.trim().parse::<i64>() == Ok(sent) => IdMatch::Stringified,
        _ => IdMatch::Changed,
    }
}

/// `sent` as C's `%.15g` prints it, as the exact number that text says:
/// what a 15-digit number printer leaves of it. None below 1e14, where the
/// 15 digits hold every integer.
fn fifteen_digits(sent: i64) -> Option<i128> {
    let text = format!("{:.14e}", sent as f64);
    let (mantissa, exp) = text.split_once('e')?;
    let exp: u32 = exp.parse::<i32>().ok()?.checked_sub(14)?.try_into().ok()?;
    let digits: i128 = mantissa.replace('.', "").parse().ok()?;
    digits.checked_mul(10i128.checked_pow(exp)?)
}

/// QAPI's error classes (qapi/error.json's QapiErrorClass).
pub const QAPI_ERROR_CLASSES: &[&str] = &["GenericError", "CommandNotFound", "DeviceNotActive", "DeviceNotFound", "KVMMissingCap"];

/// Compare two JSON ids (string ids included): numbers by value.
pub fn ids_equal(a: &Value, b: &Value) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_f64(), b.as_f64()) {
        (Some(x), Some(y), _, _) => x == y,
        // An integer and a float: the same value in float form counts.
        (Some(x), None, _, Some(_)) => compare_id(x, Some(b)).same_value(),
        (None, Some(y), Some(_), _) => compare_id(y, Some(a)).same_value(),
        (None, None, Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qapi::qga;

    #[test]
    fn request_uses_schema_names() {
        let r = Request::new(qga::guest_sync_delimited { id: -5 }, None);
        let v: Value = serde_json::from_slice(&r.json).unwrap();
        assert_eq!(v, serde_json::json!({"execute": "guest-sync-delimited", "arguments": {"id": -5}}));
        let r = Request::new(qga::guest_ping {}, Some(7));
        let v: Value = serde_json::from_slice(&r.json).unwrap();
        assert_eq!(v, serde_json::json!({"execute": "guest-ping", "arguments": {}, "id": 7}));
        assert_eq!(r.to_wire().last(), Some(&b'\n'));
    }

    #[test]
    fn parses_returns_and_errors_in_any_key_order() {
        let r = Reply::parse(br#"{"id": 3, "return": 42}"#).unwrap();
        assert!(r.returns_int(42));
        assert!(id_matches(r.id(), 3));
        let e = Reply::parse(br#"{"error": {"desc": "x", "class": "CommandNotFound"}}"#).unwrap();
        assert_eq!(e, Reply::Error { class: "CommandNotFound".into(), desc: "x".into(), id: None });
    }

    #[test]
    fn malformed_replies_say_what_kind() {
        let kind = |t: &[u8]| Reply::parse(t).unwrap_err().kind;
        assert_eq!(kind(br#"{"error": {"desc": "x"}}"#), MalformedKind::ErrorWithoutClass);
        assert_eq!(kind(br#"{"error": {"class": 5, "desc": "x"}}"#), MalformedKind::ErrorWithoutClass);
        assert_eq!(kind(br#"{"return": 1, "error": {}}"#), MalformedKind::ReturnAndError);
        for t in [&b"[1]"[..], br#"{"error": {"class": "X"}}"#, br#"{"error": 1}"#, b"{}", b"{"] {
            assert_eq!(kind(t), MalformedKind::Other, "{}", String::from_utf8_lossy(t));
        }
        assert_eq!(Reply::parse(br#"{"error": {"desc": "x"}}"#).unwrap_err().reason, r#"error without a string "class""#);
    }

    #[test]
    fn id_policy_names_how_an_id_changed() {
        use serde_json::json;
        let big = 18014398509481985i64; // 2^54 + 1: not a double
        assert_eq!(compare_id(5, Some(&json!(5))), IdMatch::Exact);
        assert_eq!(compare_id(5, None), IdMatch::Missing);
        assert_eq!(compare_id(6923800783752000, Some(&serde_json::from_str("6923800783752000.0").unwrap())), IdMatch::FloatForm);
        assert_eq!(compare_id(1000, Some(&serde_json::from_str("1e3").unwrap())), IdMatch::FloatForm);
        assert_eq!(compare_id(big, Some(&serde_json::from_str("18014398509481984.0").unwrap())), IdMatch::Rounded);
        assert_eq!(compare_id(i64::MAX, Some(&serde_json::from_str("9.2233720368547758e+18").unwrap())), IdMatch::Rounded);
        assert_eq!(compare_id(-5038234901108228097, Some(&serde_json::from_str("-5.0382349011082281e+18").unwrap())), IdMatch::Rounded);
        assert_eq!(compare_id((1 << 32) + 5, Some(&json!(5))), IdMatch::Truncated32);
        // %.15g, as C JSON libraries print numbers through a double.
        let f = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert_eq!(compare_id(8653480422752571, Some(&f("8.65348042275257e+15"))), IdMatch::FifteenDigits);
        assert_eq!(compare_id(8653480422752571, Some(&json!(8653480422752570i64))), IdMatch::FifteenDigits);
        assert_eq!(compare_id(i64::MAX, Some(&f("9.22337203685478e+18"))), IdMatch::FifteenDigits);
        assert_eq!(compare_id(-(1 << 53) - 1, Some(&f("-9.00719925474099e+15"))), IdMatch::FifteenDigits);
        assert_eq!(compare_id((1 << 52) + 1, Some(&f("4.5035996273705e+15"))), IdMatch::FifteenDigits);
        // Below 1e15 the 15-digit form is the value: no defect shows.
        assert_eq!(compare_id(999_999_999_999_989, Some(&f("9.99999999999989e+14"))), IdMatch::FloatForm);
        assert_eq!(compare_id(8653480422752571, Some(&f("8.6534804227526e+15"))), IdMatch::Changed);
        // An integer is compared exactly: one off is another value, even
        // where doubles cannot tell the two apart.
        assert_eq!(compare_id(3725167443292225734, Some(&json!(3725167443292225735i64))), IdMatch::Changed);
        assert_eq!(compare_id(3725167443292225734, Some(&json!(3725167443292230000i64))), IdMatch::FifteenDigits);
        assert_eq!(compare_id(1 << 31, Some(&json!(-2147483648i64))), IdMatch::Truncated32);
        assert_eq!(compare_id(7, Some(&json!("7"))), IdMatch::Stringified);
        assert_eq!(compare_id(7, Some(&json!(8))), IdMatch::Changed);
        assert!(IdMatch::FloatForm.same_value() && !IdMatch::Rounded.same_value());
    }

    #[test]
    fn ids_compare_as_numbers_not_text() {
        let r = Reply::parse(br#"{"return": 1000}"#).unwrap();
        assert!(r.returns_int(1000));
        assert!(!r.returns_int(1001));
        let f = Reply::parse(br#"{"return": 1.5}"#).unwrap();
        assert!(!f.returns_int(1));
    }

    #[test]
    fn rejects_what_is_not_a_reply() {
        for bad in [&br#"[1]"#[..], br#"{"return": 1, "error": {}}"#, br#"{"x": 1}"#, br#"{"error": {"class": 1, "desc": ""}}"#, b"{inf}"] {
            assert!(Reply::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
