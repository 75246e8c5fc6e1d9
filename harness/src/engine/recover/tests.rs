//! The recovery classifier on plain bytes: what was sent, what came back.

use super::*;

const PING: &[u8] = b"{\"execute\": \"guest-ping\", \"id\": 8653480422752571}\n";

fn sync_then_ping() -> Vec<u8> {
    let mut v = b"\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": 77}}\n".to_vec();
    v.extend_from_slice(PING);
    v
}

fn kind(received: &[u8], accept: Accept) -> Option<FailureKind> {
    classify(b"", &sync_then_ping(), received, accept).map(|(k, _)| k)
}

#[test]
fn ours_are_no_finding() {
    let got = b"\xff{\"return\": 77}\n{\"return\": {}, \"id\": 8653480422752571}\n";
    assert_eq!(kind(got, Accept::default()), None);
    // The legal answer to a flush byte: an error without an id.
    let got = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n\xff{\"return\": 77}\n";
    assert_eq!(kind(got, Accept::default()), None);
}

#[test]
fn changed_ids_name_how() {
    let ret = |id: &str| format!("{{\"return\": {{}}, \"id\": {id}}}\n").into_bytes();
    assert_eq!(kind(&ret("8.65348042275257e+15"), Accept::default()), Some(FailureKind::IdFifteenDigits));
    assert_eq!(kind(&ret("8653480422752571.0"), Accept::default()), Some(FailureKind::IdFloatForm));
    assert_eq!(kind(&ret("8653480422752571.0"), Accept { float_ids: true, by_order: false }), None);
    assert_eq!(kind(&ret("\"8653480422752571\""), Accept::default()), Some(FailureKind::IdStringified));
    assert_eq!(kind(&ret("5"), Accept::default()), Some(FailureKind::IdChanged));
    // Matched by order: ids are not trusted, so no id finding.
    assert_eq!(kind(&ret("5"), Accept { float_ids: false, by_order: true }), None);
}

#[test]
fn missing_ids_errors_and_duplicates() {
    assert_eq!(kind(b"{\"return\": {}}\n", Accept::default()), Some(FailureKind::IdNotEchoed));
    let err = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 8653480422752571}\n";
    assert_eq!(kind(err, Accept::default()), Some(FailureKind::UnexpectedError));
    assert_eq!(kind(b"{\"error\": {\"desc\": \"no\"}}\n", Accept::default()), Some(FailureKind::ErrorWithoutClass));
    // The sync's answer again, without its 0xFF.
    assert_eq!(kind(b"\xff{\"return\": 77}\n{\"return\": 77}\n", Accept::default()), Some(FailureKind::DuplicateReply));
    let twice = b"{\"return\": {}, \"id\": 8653480422752571}\n{\"return\": {}, \"id\": 8653480422752571}\n";
    assert_eq!(kind(twice, Accept::default()), Some(FailureKind::DuplicateReply));
    // A sync answered with another number in 15-digit form.
    let sent = b"\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": 1234567890123456789}}\n";
    let got = classify(b"", sent, b"\xff{\"return\": 1.23456789012346e+18}\n", Accept::default());
    assert_eq!(got.map(|(k, _)| k), Some(FailureKind::IdFifteenDigits));
}

#[test]
fn stale_replies_to_the_case_are_skipped() {
    let case = b"{\"execute\": \"guest-ping\", \"id\": 42}\n";
    let got = b"{\"return\": {}, \"id\": 42}\n\xff{\"return\": 77}\n";
    assert_eq!(classify(case, &sync_then_ping(), got, Accept::default()), None);
}

#[test]
fn wedged_only_when_nothing_came() {
    assert_eq!(fallback(b"").0, FailureKind::Wedged);
    assert_eq!(fallback(b" \n").0, FailureKind::Wedged);
    assert_eq!(fallback(b"hello").0, FailureKind::GarbageOutput);
    assert_eq!(fallback(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n").0, FailureKind::UnexpectedError);
    assert_eq!(fallback(b"\xff{\"return\": 77}\n").0, FailureKind::NoReply);
}
