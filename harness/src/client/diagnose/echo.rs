//! Id echo, per command kind: does the reply to guest-ping, guest-info,
//! guest-sync and guest-sync-delimited carry the request's `id`? Some
//! agents echo it on the syncs only; a client that matches every reply by
//! id then takes each of their pings for lost. The rule found for each
//! kind goes into the profile, and the client matches each command's
//! replies by it.

use super::precision::Got;
use super::wait::settle;
use super::{Capability, ProbeFinding, Profile};
use crate::client::observe::next_reply;
use crate::client::{id_failure_kind, resync, ClientOptions, ReplyMatch, ResyncPolicy};
use crate::connection::Connection;
use crate::finding::FailureKind;
use crate::transcript::escape_bytes;
use crate::wire::message::{compare_id, ids_equal, IdMatch};
use crate::wire::{Reply, Request};
use qapi::qga;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// The command kinds probed; the first two are plain commands, whose rule
/// is the default for every command not probed.
pub(super) const KINDS: [&str; 4] = ["guest-ping", "guest-info", "guest-sync", "guest-sync-delimited"];

/// How replies to each kind are matched, from what came back for each
/// (kinds that got no reply are left out: nothing is known of them).
/// The default rule is id echo only if every plain kind echoed.
pub(super) fn rules(seen: &[(&'static str, Got)], accept_float: bool) -> (ReplyMatch, BTreeMap<String, ReplyMatch>) {
    let rule = |got: &Got| match got {
        Got::Id(IdMatch::Exact, _) => Some(ReplyMatch::IdEcho),
        Got::Id(IdMatch::FloatForm, _) if accept_float => Some(ReplyMatch::IdEcho),
        Got::Id(_, _) => Some(ReplyMatch::Order),
        Got::Error(_) | Got::Nothing(_) => None,
    };
    let found: Vec<(&str, ReplyMatch)> = seen.iter().filter_map(|(k, g)| rule(g).map(|r| (*k, r))).collect();
    let plain = |k: &str| !k.starts_with("guest-sync");
    let default = if found.iter().any(|&(k, r)| plain(k) && r == ReplyMatch::Order) { ReplyMatch::Order } else { ReplyMatch::IdEcho };
    let per = found.into_iter().filter(|&(_, r)| r != default).map(|(k, r)| (k.to_owned(), r)).collect();
    (default, per)
}

/// The findings: one `id-not-echoed` naming every kind without the id,
/// and one per other way the id came back changed.
pub(super) fn findings(profile: &mut Profile, seen: &[(&'static str, Got)], span: (u64, u64)) {
    let missing: Vec<&str> = seen.iter().filter(|(_, g)| matches!(g, Got::Id(IdMatch::Missing, _))).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        let echoed: Vec<&str> = seen.iter().filter(|(_, g)| matches!(g, Got::Id(h, _) if h.same_value())).map(|(k, _)| *k).collect();
        let but = if echoed.is_empty() { String::new() } else { format!(" (it is echoed on {})", echoed.join(", ")) };
        profile.note(ProbeFinding {
            kind: FailureKind::IdNotEchoed,
            capability: Capability::IdEcho,
            detail: format!("replies to {} carry no id{but}: they are matched by order", missing.join(", ")),
            transcript: span,
        });
    }
    for (k, g) in seen {
        if let Got::Id(how @ (IdMatch::Rounded | IdMatch::FifteenDigits | IdMatch::Truncated32 | IdMatch::Stringified | IdMatch::Changed), text) = g {
            profile.note(ProbeFinding {
                kind: id_failure_kind(*how),
                capability: Capability::IdEcho,
                detail: format!("{k}'s reply {}: {}", escape_bytes(text), how.describe()),
                transcript: span,
            });
        }
    }
}

/// Send each kind once, with an id the client may use, each after a
/// resync, and say how its reply carried the id.
pub(super) async fn probe_echo(conn: &mut Connection, client: &ClientOptions, policy: &ResyncPolicy) -> Vec<(&'static str, Got)> {
    let mut seen = Vec::new();
    for kind in KINDS {
        if resync(conn, policy, client).await.is_err() {
            break;
        }
        settle(conn, client).await;
        let n = client.ids.request_id();
        let id = client.request_id_value(n);
        let sync = client.ids.sync_id();
        let req = match kind {
            "guest-ping" => Request::with_id_value(qga::guest_ping {}, Some(id.clone())),
            "guest-info" => Request::with_id_value(qga::guest_info {}, Some(id.clone())),
            "guest-sync" => Request::with_id_value(qga::guest_sync { id: sync }, Some(id.clone())),
            _ => Request::with_id_value(qga::guest_sync_delimited { id: sync }, Some(id.clone())),
        };
        // No 0xFF before the delimited sync: the channel is in step, and
        // the agent's answer to a 0xFF (an error line) carries no id.
        if conn.send(&req.to_wire(), Instant::now() + client.send_timeout * 4).await.is_err() {
            break;
        }
        let got = match next_reply(conn, client.reply_deadline(), client.max_reply_len).await {
            Err(e) => Got::Nothing(e.to_string()),
            Ok(o) => {
                // An error reply carries the id too (an unknown command's).
                let reply = o.reply.clone().ok().or_else(|| Reply::lenient_error(&o.text));
                match reply {
                    None => Got::Error(o.text),
                    Some(r) => {
                        let how = match (client.string_ids, r.id()) {
                            (_, None) => IdMatch::Missing,
                            (true, Some(got)) if ids_equal(got, &id) => IdMatch::Exact,
                            (true, Some(_)) => IdMatch::Changed,
                            (false, got) => compare_id(n, got),
                        };
                        Got::Id(how, o.text)
                    }
                }
            }
        };
        seen.push((kind, got));
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(how: IdMatch) -> Got {
        Got::Id(how, b"{}".to_vec())
    }

    #[test]
    fn an_agent_that_echoes_on_the_syncs_only_is_matched_by_order_elsewhere() {
        let seen = [("guest-ping", id(IdMatch::Missing)), ("guest-info", id(IdMatch::Missing)), ("guest-sync", id(IdMatch::Exact)), ("guest-sync-delimited", id(IdMatch::Exact))];
        let (default, per) = rules(&seen, false);
        assert_eq!(default, ReplyMatch::Order);
        assert_eq!(per.get("guest-sync"), Some(&ReplyMatch::IdEcho));
        assert_eq!(per.get("guest-ping"), None);
        let mut p = Profile::reference();
        findings(&mut p, &seen, (0, 1));
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].kind, FailureKind::IdNotEchoed);
        assert!(p.findings[0].detail.contains("guest-ping, guest-info carry no id"), "{}", p.findings[0].detail);
    }

    #[test]
    fn an_echoing_agent_keeps_id_matching_and_unknown_kinds_say_nothing() {
        let seen = [("guest-ping", id(IdMatch::Exact)), ("guest-info", Got::Nothing("nothing came".into())), ("guest-sync", id(IdMatch::FloatForm))];
        assert_eq!(rules(&seen, true), (ReplyMatch::IdEcho, BTreeMap::new()));
        let (default, per) = rules(&seen, false);
        assert_eq!((default, per.get("guest-sync")), (ReplyMatch::IdEcho, Some(&ReplyMatch::Order)));
        let mut p = Profile::reference();
        findings(&mut p, &seen, (0, 1));
        assert!(p.findings.is_empty());
    }
}
