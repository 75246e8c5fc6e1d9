//! Causes behind misses, on plain data: a reply (or none), the request it
//! was due for and how that request was written.

use super::*;
use serde_json::json;

fn observed(text: &str) -> Observed {
    Observed { before: b"\n".to_vec(), text: text.as_bytes().to_vec(), reply: Reply::parse(text.as_bytes()) }
}

fn ping(shape: Shape) -> Pending {
    Pending { command: "guest-ping".into(), id: Some(json!(7)), sync_id: None, newline: true, shape }
}

fn miss(kind: FailureKind) -> Miss {
    Miss { kind, actual: String::new(), at_most: None }
}

#[test]
fn a_copy_of_an_earlier_singular_reply_is_a_duplicate() {
    let sync = r#"{"return": 77}"#;
    let seen = vec![sync.as_bytes().to_vec()];
    let c = behind_reply(&miss(FailureKind::WrongReturn), &observed(sync), Some(&ping(Shape::Alone)), &seen, true).unwrap();
    assert_eq!(c.kind, FailureKind::DuplicateReply);
    // `{"return": {}}` without an id may come twice by right.
    let empty = r#"{"return": {}}"#;
    let seen = vec![empty.as_bytes().to_vec()];
    assert_eq!(behind_reply(&miss(FailureKind::IdNotEchoed), &observed(empty), Some(&ping(Shape::Alone)), &seen, true), None);
    assert!(singular(br#"{"return": {}, "id": 1}"#) && singular(sync.as_bytes()) && !singular(empty.as_bytes()));
}

#[test]
fn one_error_for_requests_written_together_is_a_rejection() {
    let err = r#"{"error": {"desc": "Invalid Message Format", "code": -1}}"#;
    for shape in [Shape::First, Shape::Split] {
        let c = behind_reply(&miss(FailureKind::ErrorWithoutClass), &observed(err), Some(&ping(shape)), &[], true).unwrap();
        assert_eq!(c.kind, FailureKind::PipelinedRequestsRejected);
        assert_eq!(c.secondary.iter().map(|s| s.kind).collect::<Vec<_>>(), vec![FailureKind::ErrorWithoutClass]);
    }
    // Alone in its write, or an error that was due: no framing finding.
    assert_eq!(
        behind_reply(
            &miss(FailureKind::ErrorWithoutClass),
            &observed(err),
            Some(&ping(Shape::Alone)),
            &[],
            true
        ),
        None
    );
    assert_eq!(
        behind_reply(
            &miss(FailureKind::ErrorWithoutClass),
            &observed(err),
            Some(&ping(Shape::First)),
            &[],
            false
        ),
        None
    );
    // After the client's own 0xFF, an id-less error answers the 0xFF (what
    // qemu-ga and the reference agent do): not a rejection.
    let lexical =
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}"#;
    assert_eq!(
        behind_reply(
            &miss(FailureKind::UnexpectedError),
            &observed(lexical),
            Some(&ping(Shape::AfterFlush)),
            &[],
            true
        ),
        None
    );
    // An error with a class: the rejection, and nothing besides.
    let classed = r#"{"error": {"class": "GenericError", "desc": "x"}}"#;
    let c = behind_reply(&miss(FailureKind::UnexpectedError), &observed(classed), Some(&ping(Shape::First)), &[], true).unwrap();
    assert_eq!((c.kind, c.secondary.len()), (FailureKind::PipelinedRequestsRejected, 0));
}

#[test]
fn requests_after_other_input_are_swallowed() {
    let err = r#"{"error": {"class": "GenericError", "desc": "x"}, "id": 5}"#;
    let c = behind_reply(&miss(FailureKind::NoSentinel), &observed(err), Some(&ping(Shape::After)), &[], true).unwrap();
    assert_eq!(c.kind, FailureKind::RequestSwallowed);
    assert_eq!(
        behind_silence(FailureKind::NoReply, Some(&ping(Shape::After)), (0, 0)).map(|c| c.kind),
        Some(FailureKind::RequestSwallowed)
    );
    assert_eq!(
        behind_silence(FailureKind::NoReply, Some(&ping(Shape::First)), (0, 0)),
        None
    );
    // Stale input, then 0xFF, then the request: the 0xFF failed, whether
    // the request went unanswered or the stale input was answered.
    let stale = r#"{"return": {}, "id": "ab"}"#;
    assert_eq!(
        behind_reply(
            &miss(FailureKind::NoSentinel),
            &observed(stale),
            Some(&ping(Shape::AfterFlushedLine)),
            &[],
            true
        )
        .map(|c| c.kind),
        Some(FailureKind::FlushIgnored)
    );
    assert_eq!(
        behind_silence(
            FailureKind::NoReply,
            Some(&ping(Shape::AfterFlushedLine)),
            (0, 0)
        )
        .map(|c| c.kind),
        Some(FailureKind::FlushIgnored)
    );
    assert_eq!(
        behind_reply(
            &miss(FailureKind::NoSentinel),
            &observed(err),
            Some(&ping(Shape::AfterFlushedLine)),
            &[],
            true
        )
        .map(|c| c.kind),
        Some(FailureKind::FlushIgnored)
    );
    assert_eq!(
        behind_silence(FailureKind::PartialReply, Some(&ping(Shape::After)), (0, 0)),
        None
    );
    // Raw bytes with fifty requests: the second reply never came.
    assert_eq!(behind_silence(FailureKind::NoReply, None, (1, 50)).map(|c| c.kind), Some(FailureKind::RequestSwallowed));
    assert_eq!(behind_silence(FailureKind::NoReply, None, (0, 50)), None);
    assert_eq!(objects_in(b"{}\n{}\n\xff{\"a\": 1}{\"b"), 3);
}

#[test]
fn a_copy_of_the_last_reply_in_silence() {
    let last = br#"{"return": {}, "id": 7}"#;
    assert!(repeats_last(b"\n{\"return\": {}, \"id\": 7}\n", last));
    assert!(!repeats_last(b"{\"return\": {}, \"id\": 8}\n", last));
    assert!(!repeats_last(b"x", b""));
}
