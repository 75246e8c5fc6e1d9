//! The probe's last stage, once a sync mode works: resync for real, find
//! out which ids hold (`precision`) and how replies are matched per command
//! (`echo`), the other defects a few plain requests show, read guest-info
//! leniently, and measure the pace.

use super::analyse::contains_value;
use super::wait::{collect_quiet, round_trip, settle};
use super::{Capability, NoSync, ProbeFinding, Profile};
use super::precision::{self, Got};
use super::echo;
use crate::client::{execute_value, resync, ClientOptions, IdWidth, ResyncPolicy};
use crate::connection::Connection;
use crate::transcript::{escape_bytes, Event};
use crate::finding::FailureKind;
use crate::wire::message::{compare_id, IdMatch};
use crate::wire::{Reply, SENTINEL};
use qapi::qga;
use std::time::Duration;
use tokio::time::Instant;

/// With the mode chosen: resync for real, find out which ids hold and how
/// replies are matched, read guest-info leniently, and measure the pace.
pub(super) async fn verify_and_measure(conn: &mut Connection, opts: &ClientOptions, mut profile: Profile) -> Result<Profile, NoSync> {
    // Ids nothing has proven yet: 32 bits until the precision probe below.
    // (The answer's id is no proof: it is random, so how it came back
    // would vary from run to run, and a rounded id and one printed with 15
    // digits can be the same number.)
    profile.id_width = IdWidth::Int32;
    profile.request_id_width = IdWidth::Int32;
    let mut client = opts.clone();
    profile.apply(&mut client);
    let policy = ResyncPolicy { first_attempt: Duration::from_millis(5), max_attempt: client.reply_timeout, ..client.resync.clone() };
    resync(conn, &policy, &client).await.map_err(|e| NoSync { detail: format!("the agent answered a probe but then did not resync with {}: {e}", profile.mode.describe()), closed: false })?;

    // Let anything the sync provoked besides its reply (a duplicate, a
    // late sentinel) arrive and go, so it is not taken for the ping's reply.
    settle(conn, &client).await;
    first_ping(conn, &client, &policy, &mut profile).await;
    profile.apply(&mut client);

    // Id precision, sync ids and request ids, at several magnitudes.
    let mark = conn.transcript().mark();
    let sync = precision::probe_sync_ids(conn, &client, &policy, &mut profile).await;
    let request = if profile.string_ids { Vec::new() } else { precision::probe_request_ids(conn, &client, &policy).await };
    // Whether float forms are accepted follows from the fixed magnitudes,
    // not from the answer's random id (so it is the same every run).
    if !sync.is_empty() {
        profile.mode.accept_float_ids = precision::float_form(&sync) || precision::float_form(&request);
    }
    if let Some(w) = precision::widest(&sync) {
        profile.id_width = w;
    }
    let request_width = precision::widest(&request);
    // Ids never echoed prove nothing: the narrowest width then.
    let silent = request.iter().all(|s| matches!(s.got, Got::Id(IdMatch::Missing, _)));
    profile.request_id_width = match request_width {
        Some(w) if !silent => w,
        _ => IdWidth::Int32,
    };
    precision::findings(&mut profile, &sync, &request, request_width.is_some(), (mark, conn.transcript().mark()));
    profile.apply(&mut client);

    // Id echo, per command kind.
    let mark = conn.transcript().mark();
    let seen = echo::probe_echo(conn, &client, &policy).await;
    (profile.matching, profile.matching_by_command) = echo::rules(&seen, profile.mode.accept_float_ids);
    echo::findings(&mut profile, &seen, (mark, conn.transcript().mark()));
    profile.apply(&mut client);
    let _ = resync(conn, &policy, &client).await;
    settle(conn, &client).await;

    // guest-sync, libvirt's sync: answered with exactly its id?
    let mark = conn.transcript().mark();
    let id = client.ids.sync_id();
    let what = match execute_value(conn, qga::guest_sync { id }, &client).await {
        Ok(reply) if crate::client::resync::is_sync_reply(&reply, id, &client.mode) => None,
        Ok(Reply::Return { value, .. }) => Some((
            FailureKind::IdChanged,
            format!(
                "guest-sync {{\"id\": {id}}} returned {value}: {}",
                compare_id(id, Some(&value)).describe()
            ),
        )),
        Ok(Reply::Error { class, desc, .. }) if class == "CommandNotFound" => Some((
            FailureKind::GuestSyncMissing,
            format!(
                "guest-sync {{\"id\": {id}}} got an error: {class}: {}",
                escape_bytes(desc.as_bytes())
            ),
        )),
        Ok(Reply::Error { class, desc, .. }) => Some((
            FailureKind::UnexpectedError,
            format!(
                "guest-sync {{\"id\": {id}}} got an error: {class}: {}",
                escape_bytes(desc.as_bytes())
            ),
        )),
        Err(e) => Some((
            FailureKind::NoReply,
            format!("guest-sync {{\"id\": {id}}}: {e}"),
        )),
    };
    if let Some((kind, detail)) = what {
        profile.findings.push(ProbeFinding { kind, capability: Capability::GuestSync, detail, transcript: (mark, conn.transcript().mark()) });
        let _ = resync(conn, &policy, &client).await;
    }
    settle(conn, &client).await;

    // An unknown command: is the error reply's class one QAPI has?
    let mark = conn.transcript().mark();
    let n = client.ids.request_id();
    let req = format!("{{\"execute\": \"qga-harness-probe-no-such-command\", \"id\": {}}}\n", client.request_id_value(n));
    if conn.send(req.as_bytes(), Instant::now() + client.send_timeout).await.is_ok() {
        if let Ok(o) = crate::client::observe::next_reply(conn, client.reply_deadline(), client.max_reply_len).await {
            let finding = match &o.reply {
                Err(why) if why.kind == crate::wire::message::MalformedKind::ErrorWithoutClass => Some((FailureKind::ErrorWithoutClass, format!("an unknown command got {}: {}", escape_bytes(&o.text), why.reason))),
                Ok(Reply::Error { class, .. }) if !crate::wire::message::QAPI_ERROR_CLASSES.contains(&class.as_str()) => {
                    Some((FailureKind::ErrorClassNotQapi, format!("an unknown command got error class {}, which QAPI does not define", escape_bytes(class.as_bytes()))))
                }
                _ => None,
            };
            if let Some((kind, detail)) = finding {
                profile.findings.push(ProbeFinding { kind, capability: Capability::ErrorClass, detail, transcript: (mark, conn.transcript().mark()) });
            }
        }
    }
    let _ = resync(conn, &policy, &client).await;
    settle(conn, &client).await;

    // guest-info, leniently: a schema slip is the info cases' business.
    let t0 = Instant::now();
    let before = conn.transcript().mark();
    if let Ok(Reply::Return { value, .. }) = execute_value(conn, qga::guest_info {}, &client).await {
        profile.pace.info_us = t0.elapsed().as_micros() as u64;
        profile.version = value.get("version").and_then(|v| v.as_str()).map(str::to_owned);
        profile.supported_commands = Profile::enabled_commands(&value);
        let (bytes, gap) = agent_bytes_and_max_gap(conn, before);
        profile.pace.info_bytes = bytes;
        profile.pace.max_gap_us = gap.as_micros() as u64;
    } else {
        let _ = resync(conn, &policy, &client).await;
    }

    // Round trips; and guest-ping's return value, which many cases use as
    // their plain request: it must be `{}`.
    let mut rtts = Vec::new();
    let mut odd_ping = None;
    let mark = conn.transcript().mark();
    for _ in 0..5 {
        let t0 = Instant::now();
        if let Ok(reply) = execute_value(conn, qga::guest_ping {}, &client).await {
            rtts.push(t0.elapsed());
            if let Reply::Return { value, .. } = reply {
                if value != serde_json::json!({}) {
                    odd_ping.get_or_insert(value);
                }
            }
        } else {
            let _ = resync(conn, &policy, &client).await;
        }
    }
    if let Some(value) = odd_ping {
        profile.findings.push(ProbeFinding {
            kind: FailureKind::WrongReturn,
            capability: Capability::EmptyPing,
            detail: format!("guest-ping returned {} instead of {{}}", escape_bytes(value.to_string().as_bytes())),
            transcript: (mark, conn.transcript().mark()),
        });
    }
    rtts.sort();
    profile.pace.rtt_us = rtts.get(rtts.len() / 2).map_or(0, |d| d.as_micros() as u64);
    // Input pace: a ping padded to 8 KiB (a valid request).
    let n = client.ids.request_id();
    let mut padded = crate::wire::Request::with_id_value(qga::guest_ping {}, Some(client.request_id_value(n))).to_wire();
    padded.splice(1..1, std::iter::repeat_n(b' ', 8 << 10));
    let t0 = Instant::now();
    if round_trip(conn, &client, &padded).await.is_some() {
        profile.pace.padded_us = t0.elapsed().as_micros() as u64;
    }
    let _ = resync(conn, &policy, &client).await;
    profile.pace.factor = profile.pace.measured_factor();
    conn.transcript().event(Event::Note {
        text: format!(
            "start-up probe: ping {} us, guest-info {} us ({} bytes, longest pause {} us), 8 KiB request {} us: pace factor {:.1}",
            profile.pace.rtt_us, profile.pace.info_us, profile.pace.info_bytes, profile.pace.max_gap_us, profile.pace.padded_us, profile.pace.factor
        ),
    });
    Ok(profile)
}

/// A first ping, with a 32-bit id: a raw 0xFF before its reply, the reply
/// twice, or an error for a numeric id (then: does a string id work?).
async fn first_ping(conn: &mut Connection, client: &ClientOptions, policy: &ResyncPolicy, profile: &mut Profile) {
    let mark = conn.transcript().mark();
    let n = client.ids.narrow_id();
    let ping = crate::wire::Request::new(qga::guest_ping {}, Some(n));
    let reply = match conn.send(&ping.to_wire(), Instant::now() + client.send_timeout * 4).await {
        Ok(()) => crate::client::observe::next_reply(conn, client.reply_deadline(), client.max_reply_len).await.ok(),
        Err(_) => None,
    };
    if let Some(o) = reply.as_ref().filter(|o| o.before.contains(&SENTINEL)) {
        profile.note(ProbeFinding {
            kind: FailureKind::StraySentinel,
            capability: Capability::CleanReplies,
            detail: format!("guest-ping after a delimited sync was answered {}{}: a raw 0xFF on a reply that is not delimited", escape_bytes(&o.before), escape_bytes(&o.text)),
            transcript: (mark, conn.transcript().mark()),
        });
    }
    if let Some(o) = reply.as_ref() {
        // Anything more after the reply, with nothing asked? The same reply
        // again is a duplicate.
        let extra = collect_quiet(conn, client).await;
        if contains_value(&extra, &o.text) {
            profile.note(ProbeFinding {
                kind: FailureKind::DuplicateReply,
                capability: Capability::OneReply,
                detail: format!("guest-ping was answered twice: {}", escape_bytes(&o.text)),
                transcript: (mark, conn.transcript().mark()),
            });
        }
    }
    // An error object without a class is still an error here (the error
    // class probe reports it).
    let rejected = reply.is_some_and(|o| matches!(o.reply.ok().or_else(|| Reply::lenient_error(&o.text)), Some(Reply::Error { .. })));
    if rejected {
        // Rejected with a numeric id: does a string id work?
        let _ = resync(conn, policy, client).await;
        let sid = serde_json::Value::String(format!("qga-harness-{n}"));
        let ping = crate::wire::Request::with_id_value(qga::guest_ping {}, Some(sid.clone()));
        if let Some(Reply::Return { .. }) = round_trip(conn, client, &ping.to_wire()).await {
            profile.note(ProbeFinding {
                kind: FailureKind::NumericIdRejected,
                capability: Capability::IdEcho,
                detail: format!("guest-ping with \"id\": {n} got an error; with \"id\": {sid} it is answered"),
                transcript: (mark, conn.transcript().mark()),
            });
            profile.string_ids = true;
        }
    }
}

/// Bytes read from the agent since `mark`, and the longest pause between
/// two reads after the first.
fn agent_bytes_and_max_gap(conn: &Connection, mark: u64) -> (u64, Duration) {
    use crate::transcript::{Direction, Record};
    let mut bytes = 0;
    let mut gap = Duration::ZERO;
    let mut last = None;
    for e in conn.transcript().entries(mark, None) {
        if let Record::Bytes { dir: Direction::FromAgent, data, .. } = &e.record {
            bytes += data.len() as u64;
            if let Some(prev) = last {
                gap = gap.max(e.at.saturating_sub(prev));
            }
            last = Some(e.at);
        }
    }
    (bytes, gap)
}
