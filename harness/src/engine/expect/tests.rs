//! Every expectation kind [`Checker::check`] grades, on plain data: an
//! observed reply, the request it answers, and a grading from a profile.

use super::*;
use crate::engine::request::Shape;
use crate::client::{ProbeFinding, Profile};
use serde_json::{json, Value};

/// A case with `tags` (the capabilities it is about).
fn case(tags: &[&str]) -> Case {
    let mut c = crate::case::schema_section::section().remove(0);
    c.tags = tags.iter().map(|t| t.to_string()).collect();
    c
}

/// How one expectation is judged: the agent lacks `lacks`, the case is
/// about `tags`.
struct Judge {
    grading: Grading,
    case: Case,
    opts: ClientOptions,
}

impl Judge {
    fn new() -> Judge {
        Judge::with(&[], &[])
    }

    fn with(lacks: &[Capability], tags: &[&str]) -> Judge {
        let mut profile = Profile::reference();
        for &capability in lacks {
            profile.findings.push(ProbeFinding { kind: FailureKind::Other, capability, detail: String::new(), transcript: (0, 0) });
        }
        let case = case(tags);
        Judge { grading: Grading::new(profile, std::slice::from_ref(&case)), case, opts: ClientOptions::default() }
    }

    fn versioned(version: &str) -> Judge {
        let mut profile = Profile::reference();
        profile.version = Some(version.into());
        let case = case(&[]);
        Judge { grading: Grading::new(profile, &[]), case, opts: ClientOptions::default() }
    }

    fn check_all(&self, e: Value, p: Option<&Pending>, before: &[u8], text: &str, next: Option<u8>) -> Result<(), Miss> {
        let e: Expect = serde_json::from_value(e).unwrap();
        Checker { grading: &self.grading, case: &self.case, opts: &self.opts }.check(&e, p, &observed(before, text), next)
    }

    /// What the expectation says it wants, for request `p`.
    fn describe(&self, e: &Value, p: &Pending) -> String {
        describe_expectation(&serde_json::from_value(e.clone()).unwrap(), Some(p))
    }

    /// The kind of the miss, if the check failed.
    fn kind(&self, e: Value, p: Option<&Pending>, before: &[u8], text: &str) -> Option<FailureKind> {
        self.check_all(e, p, before, text, None).err().map(|m| m.kind)
    }
}

fn observed(before: &[u8], text: &str) -> Observed {
    Observed { before: before.to_vec(), text: text.as_bytes().to_vec(), reply: Reply::parse(text.as_bytes()) }
}

fn pending(command: &str, id: Option<Value>, sync_id: Option<i64>) -> Pending {
    Pending { command: command.into(), id, sync_id, newline: true, shape: Shape::Alone }
}

fn ping(id: i64) -> Pending {
    pending("guest-ping", Some(json!(id)), None)
}

#[test]
fn return_patterns() {
    let j = Judge::new();
    let p = ping(7);
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 7}"#), None);
    assert_eq!(j.kind(json!({"return": {"a": 1}}), Some(&p), b"", r#"{"return": {"a": 2}, "id": 7}"#), Some(FailureKind::WrongReturn));
    let m = j.check_all(json!({"return": {"a": 1}}), Some(&p), b"", r#"{"return": {"a": 2}, "id": 7}"#, None).unwrap_err();
    assert!(m.actual.contains("expected 1, got 2") && m.at_most.is_none(), "{m:?}");
    // A ping that returns something else: only the cases about it grade it.
    let relaxed = Judge::with(&[Capability::EmptyPing], &[]);
    assert_eq!(relaxed.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {"x": 1}, "id": 7}"#), None);
    let about = Judge::with(&[Capability::EmptyPing], &[Capability::EmptyPing.tag()]);
    assert_eq!(about.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {"x": 1}, "id": 7}"#), Some(FailureKind::WrongReturn));
}

#[test]
fn members_beyond_the_pattern_are_non_strict() {
    let j = Judge::new();
    let p = pending("guest-info", Some(json!(7)), None);
    let e = json!({"return": {"version": "$string", "supported_commands": ["$contains", {"name": "guest-ping", "$more": true}]}});
    let ok = r#"{"return": {"version": "1", "supported_commands": [{"name": "guest-ping", "enabled": true}]}, "id": 7}"#;
    assert_eq!(j.kind(e.clone(), Some(&p), b"", ok), None);
    let extra = r#"{"return": {"version": "1", "vendor": "x", "supported_commands": [{"name": "guest-ping"}]}, "id": 7}"#;
    let m = j.check_all(e.clone(), Some(&p), b"", extra, None).unwrap_err();
    assert_eq!((m.kind, m.at_most), (FailureKind::SchemaExtraMember, Some(Outcome::NonStrict)), "{m:?}");
    // An extra member does not excuse a wrong or missing one.
    let wrong = r#"{"return": {"version": 1, "vendor": "x", "supported_commands": [{"name": "guest-ping"}]}, "id": 7}"#;
    assert_eq!(j.kind(e.clone(), Some(&p), b"", wrong), Some(FailureKind::WrongReturn));
    let missing = r#"{"return": {"vendor": "x", "supported_commands": [{"name": "guest-ping"}]}, "id": 7}"#;
    assert_eq!(j.kind(e, Some(&p), b"", missing), Some(FailureKind::WrongReturn));
}

#[test]
fn sync_returns_and_explicit_ids() {
    let j = Judge::new();
    let p = pending("guest-sync", None, Some(123456789));
    let e = json!({"return": "$sync"});
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": 123456789}"#), None);
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": 5}"#), Some(FailureKind::IdChanged));
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": "123456789"}"#), Some(FailureKind::IdStringified));
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": 123456789.0}"#), Some(FailureKind::IdFloatForm));
    assert_eq!(j.describe(&e, &p), "{\"return\": 123456789} without an id");
    // An explicit id the case sent, compared as an id (i64::MAX rounds as a double).
    let p = pending("guest-sync", None, None);
    let e = json!({"return": i64::MAX});
    assert_eq!(j.kind(e.clone(), Some(&p), b"", &format!(r#"{{"return": {}}}"#, i64::MAX)), None);
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": 9223372036854775808.0}"#), Some(FailureKind::IdRounded));
    assert_eq!(j.kind(e.clone(), Some(&p), b"", r#"{"return": -1}"#), Some(FailureKind::IdTruncated));
    // Printed through a double with 15 significant digits.
    assert_eq!(j.kind(e, Some(&p), b"", r#"{"return": 9.22337203685478e+18}"#), Some(FailureKind::IdFifteenDigits));
    let p = ping(8653480422752571);
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 8.65348042275257e+15}"#), Some(FailureKind::IdFifteenDigits));
    // Below 1e15 the 15-digit form is exact.
    let p = ping(865348042275257);
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 8.65348042275257e+14}"#), Some(FailureKind::IdFloatForm));
}

#[test]
fn float_form_ids_are_non_strict_unless_accepted() {
    let j = Judge::new();
    let p = ping(42);
    let m = j.check_all(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 42.0}"#, None).unwrap_err();
    assert_eq!((m.kind, m.at_most), (FailureKind::IdFloatForm, Some(Outcome::NonStrict)));
    assert!(m.actual.starts_with("request id 42 came back as 42.0: the same value written as a floating-point number"), "{}", m.actual);
    // A client set up to accept them (the probe found them) lets them
    // through, except in the cases about ids.
    let mut j = Judge::new();
    j.opts.mode.accept_float_ids = true;
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 42.0}"#), None);
    let mut about = Judge::with(&[], &[Capability::IdEcho.tag()]);
    about.opts.mode.accept_float_ids = true;
    assert_eq!(about.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 42.0}"#), Some(FailureKind::IdFloatForm));
}

#[test]
fn error_classes() {
    let j = Judge::new();
    let p = ping(1);
    let err = |class: &str| format!(r#"{{"error": {{"class": "{class}", "desc": "d"}}, "id": 1}}"#);
    assert_eq!(j.kind(json!({"error": "CommandNotFound"}), Some(&p), b"", &err("CommandNotFound")), None);
    assert_eq!(j.kind(json!({"error": "CommandNotFound"}), Some(&p), b"", &err("GenericError")), Some(FailureKind::WrongErrorClass));
    assert_eq!(j.kind(json!({"error": "$any"}), Some(&p), b"", &err("GenericError")), None);
    assert_eq!(j.kind(json!({"error": "$any"}), Some(&p), b"", &err("MadeUpError")), Some(FailureKind::ErrorClassNotQapi));
    // Reported once by the probe: outside the errors cases, any class.
    let relaxed = Judge::with(&[Capability::ErrorClass], &[]);
    assert_eq!(relaxed.kind(json!({"error": "$any"}), Some(&p), b"", &err("MadeUpError")), None);
    assert_eq!(relaxed.kind(json!({"error": "GenericError"}), Some(&p), b"", &err("MadeUpError")), Some(FailureKind::WrongErrorClass));
}

#[test]
fn unexpected_errors_and_returns() {
    let j = Judge::new();
    let p = ping(1);
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"error": {"class": "GenericError", "desc": "d"}, "id": 1}"#), Some(FailureKind::UnexpectedError));
    assert_eq!(j.kind(json!({"error": "GenericError"}), Some(&p), b"", r#"{"return": {}, "id": 1}"#), Some(FailureKind::UnexpectedReturn));
    assert_eq!(j.kind(json!({}), Some(&p), b"", r#"{"return": {}, "id": 1}"#), Some(FailureKind::Other));
}

#[test]
fn malformed_replies_by_kind_with_their_text() {
    let j = Judge::new();
    let p = ping(1);
    let m = j.check_all(json!({"error": "$any"}), Some(&p), b"", r#"{"error": {"desc": "d"}, "id": 1}"#, None).unwrap_err();
    assert_eq!(m.kind, FailureKind::ErrorWithoutClass);
    assert_eq!(m.actual, r#"malformed reply {"error": {"desc": "d"}, "id": 1}: error without a string "class""#);
    let m = j.check_all(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "error": {}}"#, None).unwrap_err();
    assert_eq!((m.kind, m.actual.ends_with(r#": both "return" and "error""#)), (FailureKind::ReturnAndError, true));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"error": {"class": "GenericError"}}"#), Some(FailureKind::MalformedReply));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"[1]"#), Some(FailureKind::MalformedReply));
    // An agent found to omit the class: its errors read as GenericError.
    let relaxed = Judge::with(&[Capability::ErrorClass], &[]);
    assert_eq!(relaxed.kind(json!({"error": "$any"}), Some(&p), b"", r#"{"error": {"desc": "d"}, "id": 1}"#), None);
}

#[test]
fn ids_absent_any_and_echoed() {
    let j = Judge::new();
    let p = ping(9);
    let bare = pending("guest-ping", None, None);
    assert_eq!(j.kind(json!({"return": {}, "id": "any"}), Some(&p), b"", r#"{"return": {}, "id": "x"}"#), None);
    assert_eq!(j.kind(json!({"return": {}, "id": "absent"}), Some(&p), b"", r#"{"return": {}}"#), None);
    assert_eq!(j.kind(json!({"return": {}, "id": "absent"}), Some(&p), b"", r#"{"return": {}, "id": 9}"#), Some(FailureKind::IdUnexpected));
    assert_eq!(j.kind(json!({"return": {}}), Some(&bare), b"", r#"{"return": {}}"#), None);
    assert_eq!(j.kind(json!({"return": {}}), Some(&bare), b"", r#"{"return": {}, "id": 1}"#), Some(FailureKind::IdUnexpected));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}}"#), Some(FailureKind::IdNotEchoed));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": 10}"#), Some(FailureKind::IdChanged));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}, "id": "9"}"#), Some(FailureKind::IdStringified));
    // String ids are compared as given.
    let s = pending("guest-ping", Some(json!("abc")), None);
    assert_eq!(j.kind(json!({"return": {}}), Some(&s), b"", r#"{"return": {}, "id": "abc"}"#), None);
    assert_eq!(j.kind(json!({"return": {}}), Some(&s), b"", r#"{"return": {}, "id": "abd"}"#), Some(FailureKind::IdChanged));
    assert_eq!(j.kind(json!({"return": {}}), Some(&s), b"", r#"{"return": {}}"#), Some(FailureKind::IdNotEchoed));
    // An agent found not to echo ids: replies match by order, except in
    // the cases about ids.
    let relaxed = Judge::with(&[Capability::IdEcho], &[]);
    assert_eq!(relaxed.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}}"#), None);
    let about = Judge::with(&[Capability::IdEcho], &[Capability::IdEcho.tag()]);
    assert_eq!(about.kind(json!({"return": {}}), Some(&p), b"", r#"{"return": {}}"#), Some(FailureKind::IdNotEchoed));
}

#[test]
fn delimited_replies_and_where_the_sentinel_went() {
    let j = Judge::new();
    let p = pending("guest-sync-delimited", None, Some(5));
    let e = json!({"return": "$sync", "delimited": true});
    let reply = r#"{"return": 5}"#;
    assert_eq!(j.kind(e.clone(), Some(&p), b"\xff", reply), None);
    assert_eq!(j.kind(e.clone(), Some(&p), b"\n\xff", reply), None);
    assert_eq!(j.kind(e.clone(), Some(&p), b"", reply), Some(FailureKind::NoSentinel));
    assert_eq!(j.kind(e.clone(), Some(&p), b"\xc3\xbf", reply), Some(FailureKind::Utf8Sentinel));
    assert_eq!(j.kind(e.clone(), Some(&p), b"\xff\n", reply), Some(FailureKind::MisplacedSentinel));
    assert_eq!(j.kind(e.clone(), Some(&p), b"\xff\xff", reply), Some(FailureKind::MisplacedSentinel));
    let late = j.check_all(e.clone(), Some(&p), b"", reply, Some(0xFF)).unwrap_err();
    assert_eq!((late.kind, late.actual.as_str()), (FailureKind::LateSentinel, r#"not delimited: {"return": 5}"#));
    assert_eq!(j.check_all(e.clone(), Some(&p), b"", reply, Some(b'{')).unwrap_err().kind, FailureKind::NoSentinel);
    assert_eq!(j.describe(&e, &p), "a raw 0xFF immediately followed by {\"return\": 5} without an id");
}

#[test]
fn stray_flush_bytes() {
    let j = Judge::new();
    let p = ping(1);
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"\xff", r#"{"return": {}, "id": 1}"#), Some(FailureKind::StraySentinel));
    assert_eq!(j.kind(json!({"return": {}}), Some(&p), b"\xfe\n", r#"{"return": {}, "id": 1}"#), Some(FailureKind::StraySentinel));
    // An agent found to put 0xFF before every reply: only the sentinel
    // cases grade that, but a 0xFF inside the reply is still stray.
    let relaxed = Judge::with(&[Capability::CleanReplies], &[]);
    assert_eq!(relaxed.kind(json!({"return": {}}), Some(&p), b"\xff", r#"{"return": {}, "id": 1}"#), None);
    let about = Judge::with(&[Capability::CleanReplies], &[Capability::CleanReplies.tag()]);
    assert_eq!(about.kind(json!({"return": {}}), Some(&p), b"\xff", r#"{"return": {}, "id": 1}"#), Some(FailureKind::StraySentinel));
}

#[test]
fn schema_findings_and_their_caps() {
    let j = Judge::new();
    let info = |c: &str| pending(c, None, None);
    let e = json!({"id": "any", "schema": true});
    let outcome = |j: &Judge, p: &Pending, text: &str| j.check_all(e.clone(), Some(p), b"", text, None).err().map(|m| (m.kind, m.at_most));
    let good = r#"{"return": {"version": "7.2", "supported_commands": []}}"#;
    assert_eq!(outcome(&j, &info("guest-info"), good), None);
    assert_eq!(outcome(&j, &info("guest-info"), r#"{"return": {"version": 7, "supported_commands": []}}"#), Some((FailureKind::SchemaViolation, None)));
    let extra = r#"{"return": {"version": "7.2", "supported_commands": [], "uptime": 5}}"#;
    assert_eq!(outcome(&j, &info("guest-info"), extra), Some((FailureKind::SchemaExtraMember, Some(Outcome::NonStrict))));
    assert_eq!(outcome(&Judge::versioned("10.0.0"), &info("guest-info"), extra), Some((FailureKind::NotInSchema, Some(Outcome::Info))));
    assert_eq!(outcome(&j, &info("guest-ping"), r#"{"return": {}}"#), None);
    assert_eq!(outcome(&j, &info("guest-ping"), r#"{"return": {"a": 1}}"#), Some((FailureKind::SchemaViolation, None)));
    assert_eq!(outcome(&j, &info("guest-no-such-command"), r#"{"return": {}}"#), Some((FailureKind::NotInSchema, Some(Outcome::Info))));
    assert_eq!(outcome(&j, &info("guest-get-disks"), r#"{"error": {"class": "GenericError", "desc": "no /sys"}}"#), Some((FailureKind::CommandFailedHere, Some(Outcome::Info))));
    assert_eq!(outcome(&j, &info("guest-get-disks"), r#"{"error": {"class": "Oops", "desc": "d"}}"#), Some((FailureKind::ErrorClassNotQapi, None)));
    let m = j.check_all(e.clone(), Some(&info("guest-get-disks")), b"", r#"{"error": {"class": "GenericError", "desc": "no /sys"}}"#, None).unwrap_err();
    assert_eq!(m.actual, "guest-get-disks failed here (GenericError: no /sys)");
}

#[test]
fn lines_and_newlines() {
    let o = observed(b"", r#"{"return": {}}"#);
    assert_eq!(line_end(&o, b"\n"), Some(Ok(())));
    assert_eq!(line_end(&o, b" \t\r\n{"), Some(Ok(())));
    assert_eq!(line_end(&o, b"  "), None);
    let m = line_end(&o, b" {\"return\"").unwrap().unwrap_err();
    assert_eq!((m.kind, m.actual.as_str()), (FailureKind::NoNewline, r#"no newline after the reply {"return": {}}; next came {"return""#));
    assert_eq!(no_newline(&o).actual, r#"no newline after the reply {"return": {}}"#);
    let split = observed(b"", "{\"return\":\n {}}");
    assert_eq!(line_end(&split, b"\n").unwrap().unwrap_err().kind, FailureKind::MultiLineReply);
}

#[test]
fn no_reply_kinds() {
    let e: Expect = serde_json::from_value(json!({"return": {}})).unwrap();
    let d: Expect = serde_json::from_value(json!({"return": {}, "delimited": true})).unwrap();
    let p = ping(1);
    let unterminated = Pending { newline: false, ..ping(1) };
    assert_eq!(no_reply_kind(&NoReply::Timeout { partial: b"\n ".to_vec() }, &e, Some(&p)), FailureKind::NoReply);
    assert_eq!(no_reply_kind(&NoReply::Timeout { partial: vec![] }, &e, Some(&unterminated)), FailureKind::NoReplyWithoutNewline);
    assert_eq!(no_reply_kind(&NoReply::Timeout { partial: b"{\"ret".to_vec() }, &e, Some(&p)), FailureKind::PartialReply);
    assert_eq!(no_reply_kind(&NoReply::Closed { partial: vec![] }, &e, Some(&p)), FailureKind::AgentGone);
    assert_eq!(no_reply_kind(&NoReply::Garbage { bytes: b"\xc3\xbf".to_vec() }, &d, Some(&p)), FailureKind::Utf8Sentinel);
    assert_eq!(no_reply_kind(&NoReply::Garbage { bytes: b"\xc3\xbf".to_vec() }, &e, Some(&p)), FailureKind::GarbageOutput);
    assert_eq!(no_reply_kind(&NoReply::Interrupted { bytes: b"{\xff".to_vec() }, &e, Some(&p)), FailureKind::StraySentinel);
    assert_eq!(no_reply_kind(&NoReply::TooLong, &e, Some(&p)), FailureKind::MalformedReply);
    assert_eq!(no_reply_kind(&NoReply::Io("x".into()), &e, Some(&p)), FailureKind::Harness);
}
