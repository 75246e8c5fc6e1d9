//! Id precision, probed at several magnitudes for sync ids (the sync's
//! return) and request ids (the `id` member on guest-ping): which width of
//! random id the client may use with this agent, and the id defects seen,
//! one finding per defect however many magnitudes show it.
//!
//! A single wide probe id says too little: an agent that prints numbers
//! with 15 significant digits echoes 2^53 + 1 as rounded would suggest a
//! 53-bit width, and then mangles most ids of that width. Each magnitude
//! below is the narrowest of a width ([`IdWidth::of`]) or a known trap.

use super::analyse::contains_value;
use super::wait::settle;
use super::{Capability, ProbeFinding, Profile};
use crate::client::observe::next_reply;
use crate::client::resync::sync_request_bytes_for;
use crate::client::{id_failure_kind, resync, ClientOptions, IdWidth, ResyncPolicy, SyncCommand, SyncMode};
use crate::connection::Connection;
use crate::finding::FailureKind;
use crate::transcript::escape_bytes;
use crate::wire::message::{compare_id, IdMatch};
use crate::wire::{Reply, Request};
use qapi::qga;
use tokio::time::Instant;

/// The ids tried, for sync ids and request ids alike.
pub(super) const MAGNITUDES: [i64; 7] = [
    1_234_567_891,         // below 2^31
    562_949_953_421_313,   // 2^49 + 1: below 10^15, written exactly with 15 digits
    4_503_599_627_370_497, // 2^52 + 1: a double holds it, 15 digits do not
    8_653_480_422_752_571, // its 15-digit form (8.65348042275257e+15) differs
    9_007_199_254_740_993, // 2^53 + 1: no double holds it
    i64::MAX,              // 2^63 - 1
    -i64::MAX,             // -(2^63 - 1)
];

/// Which ids: the sync's return, or a request's `id` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdKind {
    Sync,
    Request,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Sync => "sync id",
            IdKind::Request => "request id",
        }
    }
}

/// What came back for one id.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Got {
    /// A reply carrying the id in this form; its text.
    Id(IdMatch, Vec<u8>),
    /// An error reply (or an unreadable one); its text.
    Error(Vec<u8>),
    /// No reply; why.
    Nothing(String),
}

/// One id tried and what came back.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) id: i64,
    pub(super) got: Got,
}

impl Sample {
    /// The id came back as the same value (float forms are a finding of
    /// their own, not a loss of precision).
    fn held(&self) -> bool {
        matches!(&self.got, Got::Id(how, _) if how.same_value())
    }

    /// Whether it says nothing about precision: no id at all is the echo
    /// probe's finding.
    fn silent(&self) -> bool {
        matches!(&self.got, Got::Id(IdMatch::Missing, _))
    }

    /// The defect this sample shows, if any: its finding code and what came.
    fn defect(&self, kind: IdKind) -> Option<(FailureKind, String)> {
        let id = self.id;
        let what = kind.name();
        match &self.got {
            Got::Id(IdMatch::Exact | IdMatch::Missing, _) => None,
            Got::Id(how, text) => Some((id_failure_kind(*how), format!("{what} {id} came back in {}: {}", escape_bytes(text), how.describe()))),
            Got::Error(text) => Some((FailureKind::UnexpectedError, format!("{what} {id} got an error: {}", escape_bytes(text)))),
            Got::Nothing(why) => Some((FailureKind::NoReply, format!("{what} {id} got no reply: {why}"))),
        }
    }
}

/// The widest width that held at every magnitude (None: not even 32-bit
/// ids held). A magnitude not tried (the probe stopped early) proves
/// nothing: it counts as failed.
pub(super) fn widest(samples: &[Sample]) -> Option<IdWidth> {
    let proven = |id: i64| samples.iter().any(|s| s.id == id && (s.held() || s.silent()));
    IdWidth::widest_without(MAGNITUDES.into_iter().filter(|&id| !proven(id)))
}

/// Whether any id came back in float form (the client must accept it).
pub(super) fn float_form(samples: &[Sample]) -> bool {
    samples.iter().any(|s| matches!(s.got, Got::Id(IdMatch::FloatForm, _)))
}

/// One finding per defect: samples of both kinds that show the same code
/// go into one finding. `request_trusted` says whether request ids held at
/// some width (if not, replies cannot be matched by id at all: the id echo
/// capability is missing, and cases do not grade it).
/// An agent that holds numbers as doubles both rounds wide ids and writes
/// every id in float form: one defect, named by the rounding.
pub(super) fn findings(profile: &mut Profile, sync: &[Sample], request: &[Sample], request_trusted: bool, span: (u64, u64)) {
    let rounds = [sync, request].iter().any(|s| s.iter().any(|s| matches!(s.got, Got::Id(IdMatch::Rounded, _))));
    for (kind, samples) in [(IdKind::Sync, sync), (IdKind::Request, request)] {
        let capability = if kind == IdKind::Request && !request_trusted { Capability::IdEcho } else { Capability::ExactIds };
        let mut by_code: Vec<(FailureKind, Vec<String>)> = Vec::new();
        // Silence is an id defect only where the agent answers this form
        // at other magnitudes; silence at all of them is some other defect
        // (a broken sentinel, say), which the probe names where it shows.
        let answers = samples
            .iter()
            .any(|s| matches!(s.got, Got::Id(..) | Got::Error(_)));
        let defects = samples
            .iter()
            .filter(|s| answers || !matches!(s.got, Got::Nothing(_)))
            .filter_map(|s| s.defect(kind))
            .filter(|(code, _)| !(rounds && *code == FailureKind::IdFloatForm));
        for (code, detail) in defects {
            match by_code.iter_mut().find(|(c, _)| *c == code) {
                Some((_, details)) => details.push(detail),
                None => by_code.push((code, vec![detail])),
            }
        }
        for (code, details) in by_code {
            profile.note(ProbeFinding { kind: code, capability, detail: details.join("; "), transcript: span });
        }
    }
}

/// Read the next reply and say what it carries for `id`: the sync's
/// return (`Sync`) or its `id` member (`Request`). Its text goes with it.
async fn classify(conn: &mut Connection, client: &ClientOptions, id: i64, kind: IdKind) -> (Got, Option<Vec<u8>>) {
    let o = match next_reply(conn, client.reply_deadline(), client.max_reply_len).await {
        Ok(o) => o,
        Err(e) => return (Got::Nothing(e.to_string()), None),
    };
    let got = match (&o.reply, kind) {
        (Ok(Reply::Return { value, .. }), IdKind::Sync) => Got::Id(compare_id(id, Some(value)), o.text.clone()),
        (Ok(Reply::Return { id: echoed, .. }), IdKind::Request) => Got::Id(compare_id(id, echoed.as_ref()), o.text.clone()),
        _ => Got::Error(o.text.clone()),
    };
    (got, Some(o.text))
}

/// Try each magnitude as a sync id, in the client's mode, each after a
/// resync. A delimited sync's reply that comes twice is a duplicate
/// (noted once, with the ping's duplicate if there is one).
pub(super) async fn probe_sync_ids(conn: &mut Connection, client: &ClientOptions, policy: &ResyncPolicy, profile: &mut Profile) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut duplicate = false;
    for id in MAGNITUDES {
        if resync(conn, policy, client).await.is_err() {
            break;
        }
        settle(conn, client).await;
        let mark = conn.transcript().mark();
        // No 0xFF: the channel is in step, and the agent's answer to a
        // 0xFF (an error line, in qemu-ga) must not pass for the sync's.
        let mode = SyncMode { leading_ff: false, ..client.mode };
        if conn.send(&sync_request_bytes_for(&mode, id), Instant::now() + client.send_timeout * 4).await.is_err() {
            break;
        }
        let (got, text) = classify(conn, client, id, IdKind::Sync).await;
        if let (Some(text), SyncCommand::GuestSyncDelimited, false) = (text, client.mode.command, duplicate) {
            // A second copy, with or without its 0xFF, with nothing asked.
            let extra = super::wait::collect_quiet(conn, client).await;
            if contains_value(&extra, &text) {
                duplicate = true;
                profile.note(ProbeFinding {
                    kind: FailureKind::DuplicateReply,
                    capability: Capability::OneReply,
                    detail: format!("guest-sync-delimited was answered twice: {} then {}", escape_bytes(&text), escape_bytes(&extra[..extra.len().min(200)])),
                    transcript: (mark, conn.transcript().mark()),
                });
            }
        }
        samples.push(Sample { id, got });
    }
    samples
}

/// Try each magnitude as guest-ping's `id` member, each after a resync.
pub(super) async fn probe_request_ids(conn: &mut Connection, client: &ClientOptions, policy: &ResyncPolicy) -> Vec<Sample> {
    let mut samples = Vec::new();
    for id in MAGNITUDES {
        if resync(conn, policy, client).await.is_err() {
            break;
        }
        settle(conn, client).await;
        let ping = Request::new(qga::guest_ping {}, Some(id));
        if conn.send(&ping.to_wire(), Instant::now() + client.send_timeout * 4).await.is_err() {
            break;
        }
        samples.push(Sample { id, got: classify(conn, client, id, IdKind::Request).await.0 });
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: i64, text: &str) -> Sample {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        Sample { id, got: Got::Id(compare_id(id, Some(&v)), text.as_bytes().to_vec()) }
    }

    /// What a 15-digit printer does to each magnitude.
    fn fifteen(id: i64) -> Sample {
        let text = if IdWidth::of(id).within(IdWidth::Below1e15) { id.to_string() } else { format!("{:.14e}", id as f64).replace('e', "e+") };
        sample(id, &text)
    }

    #[test]
    fn a_fifteen_digit_printer_gets_ids_below_1e15_and_one_finding() {
        let samples: Vec<Sample> = MAGNITUDES.iter().map(|&id| fifteen(id)).collect();
        assert_eq!(samples[3].got, Got::Id(IdMatch::FifteenDigits, b"8.65348042275257e+15".to_vec()));
        assert_eq!(widest(&samples), Some(IdWidth::Below1e15));
        let mut p = Profile::reference();
        findings(&mut p, &samples, &samples, true, (0, 1));
        let codes: Vec<_> = p.findings.iter().map(|f| (f.kind, f.capability)).collect();
        assert_eq!(codes, [(FailureKind::IdFifteenDigits, Capability::ExactIds)], "{:?}", p.findings);
        assert!(p.findings[0].detail.contains("sync id 8653480422752571") && p.findings[0].detail.contains("request id 8653480422752571"));
    }

    #[test]
    fn doubles_hold_53_bits_and_exact_agents_all() {
        let doubles: Vec<Sample> = MAGNITUDES.iter().map(|&id| sample(id, &format!("{:?}", id as f64))).collect();
        assert_eq!(widest(&doubles), Some(IdWidth::Double53));
        assert!(float_form(&doubles));
        let exact: Vec<Sample> = MAGNITUDES.iter().map(|&id| sample(id, &id.to_string())).collect();
        assert_eq!(widest(&exact), Some(IdWidth::Full64));
        let mut p = Profile::reference();
        findings(&mut p, &doubles, &doubles, true, (0, 1));
        let codes: Vec<_> = p.findings.iter().map(|f| f.kind).collect();
        assert_eq!(codes, [FailureKind::IdRounded]);
        let mut p = Profile::reference();
        findings(&mut p, &exact, &exact, true, (0, 1));
        assert!(p.findings.is_empty());
        let truncated: Vec<Sample> = MAGNITUDES.iter().map(|&id| sample(id, &(id as i32).to_string())).collect();
        assert_eq!(widest(&truncated), Some(IdWidth::Int32));
    }

    #[test]
    fn silence_at_every_magnitude_is_no_id_finding() {
        let nothing = |id: i64| Sample {
            id,
            got: Got::Nothing("bytes that cannot begin a reply: \\xC3\\xBF".into()),
        };
        let mut p = Profile::reference();
        let all: Vec<Sample> = MAGNITUDES.into_iter().map(nothing).collect();
        findings(&mut p, &all, &[], true, (0, 0));
        assert!(p.findings.is_empty(), "{:?}", p.findings);
        // Silent only at the widest magnitude, answered below it: a finding.
        let mut some: Vec<Sample> = MAGNITUDES
            .into_iter()
            .map(|id| sample(id, &id.to_string()))
            .collect();
        *some.last_mut().unwrap() = nothing(*MAGNITUDES.last().unwrap());
        findings(&mut p, &some, &[], true, (0, 0));
        assert_eq!(
            p.findings.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [FailureKind::NoReply]
        );
        assert_eq!(widest(&all), None);
    }

    #[test]
    fn no_echo_is_not_a_precision_loss_and_errors_are() {
        let missing: Vec<Sample> = MAGNITUDES.iter().map(|&id| Sample { id, got: Got::Id(IdMatch::Missing, b"{}".to_vec()) }).collect();
        assert_eq!(widest(&missing), Some(IdWidth::Full64));
        let mut errs = missing.clone();
        errs[4].got = Got::Error(b"{\"error\": {}}".to_vec());
        errs[5].got = Got::Nothing("nothing came".into());
        assert_eq!(widest(&errs), Some(IdWidth::Double53));
        // A probe that stopped after two magnitudes proved no more.
        assert_eq!(widest(&missing[..2]), Some(IdWidth::Below1e15));
        assert_eq!(widest(&[]), None);
        let stringified: Vec<Sample> = MAGNITUDES.iter().map(|&id| sample(id, &format!("\"{id}\""))).collect();
        assert_eq!(widest(&stringified), None);
        let mut p = Profile::reference();
        findings(&mut p, &[], &stringified, false, (0, 1));
        assert_eq!(p.findings.len(), 1);
        assert_eq!((p.findings[0].kind, p.findings[0].capability), (FailureKind::IdStringified, Capability::IdEcho));
    }
}
