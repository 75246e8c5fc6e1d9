//! proptest strategies for fault schedules, built from the catalogue's step
//! vocabulary (the same [`Step`] type case files use), so that a shrunk
//! failure is written out as an ordinary case file.
//!
//! A schedule is a list of faults; each fault is a few steps. proptest
//! shrinks a failing schedule by dropping faults and simplifying each one,
//! which is what makes a minimal replayable case come out.

use crate::case::bytes::ByteString;
use crate::case::step::{Abandon, Empty, Expect, Garbage, GarbageKind, IdCheck, Kill, ResyncStep, Send, Signal, Step};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::json;

/// The kinds of fault a schedule can apply (for the run's summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    PartialRequest,
    StrayBytes,
    Garbage,
    Chunked,
    Pipelined,
    Burst,
    AbandonReply,
    KillRestart,
    TermRestart,
    StaleAgentData,
    Reconnect,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::PartialRequest,
        FaultKind::StrayBytes,
        FaultKind::Garbage,
        FaultKind::Chunked,
        FaultKind::Pipelined,
        FaultKind::Burst,
        FaultKind::AbandonReply,
        FaultKind::KillRestart,
        FaultKind::TermRestart,
        FaultKind::StaleAgentData,
        FaultKind::Reconnect,
    ];
}

/// One fault: its kind and the steps that apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub steps: Vec<Step>,
}

/// A generated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub faults: Vec<Fault>,
}

/// What schedules may contain.
#[derive(Debug, Clone)]
pub struct ScheduleParams {
    /// At most this many faults per schedule.
    pub max_faults: usize,
    /// Cap on bytes written without reading in between (None: no cap).
    pub max_burst: Option<usize>,
    /// Every schedule kills and restarts the agent at least once.
    pub restart_every: bool,
    /// Kills and restarts may be generated at all.
    pub allow_restart: bool,
    /// Client disconnects (reconnect faults) may be generated.
    pub allow_reconnect: bool,
}

impl Default for ScheduleParams {
    fn default() -> Self {
        ScheduleParams { max_faults: 6, max_burst: None, restart_every: false, allow_restart: true, allow_reconnect: true }
    }
}

/// Requests the fuzzer sends: harmless, and each with a reply to verify.
fn command() -> impl Strategy<Value = Send> {
    prop_oneof![
        Just(Send::command("guest-sync", Some(json!({"id": "$fresh"})))),
        Just(Send::command("guest-sync-delimited", Some(json!({"id": "$fresh"})))),
        Just(Send::command("guest-ping", None)),
        Just(Send::command("guest-info", None)),
        Just(Send::command("guest-no-such-command", None)),
    ]
}

fn stray_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0xFFu8), Just(0xFE), 0u8..0x20, Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b'\\')]
}

fn stale_agent_data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<i64>(), 0usize..30).prop_map(|(id, cut)| {
            let full = format!("\u{0}{{\"return\": {id}}}\n");
            let mut v = full.into_bytes();
            v[0] = 0xFF;
            v.truncate(1 + cut.min(v.len() - 1));
            v
        }),
        any::<i64>().prop_map(|id| [&[0xFFu8][..], format!("{{\"return\": {id}}}\n").as_bytes()].concat()),
        (0usize..40).prop_map(|cut| {
            let mut v = br#"{"return": {"version": "7.2.22", "supported_commands": []}}"#.to_vec();
            v.truncate(cut);
            v
        }),
        Just(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n".to_vec()),
        prop::collection::vec(stray_byte(), 1..4),
    ]
}

fn fault(params: &ScheduleParams) -> BoxedStrategy<Fault> {
    let f = |kind: FaultKind, steps: Vec<Step>| Fault { kind, steps };
    let mut options: Vec<(u32, BoxedStrategy<Fault>)> = vec![
        (
            3,
            (command(), 1usize..60)
                .prop_map(move |(mut s, k)| {
                    s.truncate = Some(k);
                    f(FaultKind::PartialRequest, vec![Step::Send(s)])
                })
                .boxed(),
        ),
        (
            2,
            prop::collection::vec(stray_byte(), 1..8)
                .prop_map(move |b| {
                    let mut s = Send::command("x", None);
                    s.command = None;
                    s.raw = Some(ByteString(b));
                    f(FaultKind::StrayBytes, vec![Step::Send(s)])
                })
                .boxed(),
        ),
        (
            1,
            // Seeds stay below 2^63: case files are TOML, whose integers are i64.
            (1usize..512, 0u64..=i64::MAX as u64)
                .prop_map(move |(len, seed)| f(FaultKind::Garbage, vec![Step::Garbage(Garbage { len, seed, kind: GarbageKind::Any })]))
                .boxed(),
        ),
        (
            2,
            (command(), 1usize..8, 0u64..30, any::<bool>())
                .prop_map(move |(mut s, chunk, delay, nl)| {
                    s.chunk = Some(chunk);
                    s.delay_us = delay;
                    s.newline = nl;
                    f(FaultKind::Chunked, vec![Step::Send(s)])
                })
                .boxed(),
        ),
        (
            2,
            (command(), 2usize..40)
                .prop_map(move |(mut s, n)| {
                    s.repeat = n;
                    f(FaultKind::Pipelined, vec![Step::Send(s)])
                })
                .boxed(),
        ),
        (
            // A checked burst: after a resync (so earlier faults cannot
            // swallow its first request), N requests in one write must get
            // N replies, each its own. This is where reply loss under
            // back-pressure shows (qemu-ga over a char device, protocol.md
            // §4); proptest shrinks N to the smallest burst that loses one.
            1,
            (1usize..=400)
                .prop_map(move |n| {
                    let mut s = Send::command("guest-sync", Some(json!({"id": "$fresh"})));
                    s.repeat = n;
                    let e = Expect {
                        return_: Some(json!("$sync")),
                        error: None,
                        id: IdCheck::Echo,
                        delimited: false,
                        allow_errors_before: false,
                        line: false,
                        count: n,
                        within_ms: None,
                        schema: false,
                    };
                    f(FaultKind::Burst, vec![Step::Resync(ResyncStep::default()), Step::Send(s), Step::Expect(e)])
                })
                .boxed(),
        ),
        (
            2,
            (command(), 1usize..40)
                .prop_map(move |(s, after)| f(FaultKind::AbandonReply, vec![Step::Send(s), Step::Abandon(Abandon { after })]))
                .boxed(),
        ),
        (
            2,
            stale_agent_data().prop_map(move |b| f(FaultKind::StaleAgentData, vec![Step::Inject(ByteString(b))])).boxed(),
        ),
    ];
    if params.allow_reconnect {
        options.push((1, Just(f(FaultKind::Reconnect, vec![Step::Reconnect(Empty {})])).boxed()));
    }
    if params.allow_restart {
        options.push((2, kill_restart(Signal::KILL).boxed()));
        options.push((1, kill_restart(Signal::TERM).boxed()));
    }
    prop::strategy::Union::new_weighted(options).boxed()
}

/// Kill the agent (possibly in the middle of a reply to a request just
/// sent) and start a new one on the same channel.
pub fn kill_restart(signal: Signal) -> impl Strategy<Value = Fault> {
    (prop::option::of((command(), 1usize..4, 0usize..80))).prop_map(move |mid| {
        let mut steps = Vec::new();
        let mut after_bytes = None;
        if let Some((mut s, n, k)) = mid {
            s.repeat = n;
            steps.push(Step::Send(s));
            after_bytes = Some(k);
        }
        steps.push(Step::Kill(Kill { signal, after_bytes }));
        steps.push(Step::Restart(Empty {}));
        let kind = if signal == Signal::KILL { FaultKind::KillRestart } else { FaultKind::TermRestart };
        Fault { kind, steps }
    })
}

/// Bytes a step writes, roughly (the cap needs an upper bound, not the
/// exact figure).
fn written(step: &Step) -> usize {
    match step {
        Step::Send(s) => {
            let one = s.raw.as_ref().map_or(120, |r| r.0.len()) + s.pad.unwrap_or(0);
            s.truncate.unwrap_or(one).min(one) * s.repeat + usize::from(s.flush)
        }
        Step::Batch(b) => b.iter().map(|s| written(&Step::Send(s.clone()))).sum(),
        Step::Garbage(g) => g.len,
        _ => 0,
    }
}

/// Steps after which the client has read (or the channel's input was
/// reset), so pending unread writes start again from zero.
fn reads(step: &Step) -> bool {
    matches!(step, Step::Abandon(_) | Step::Resync(_) | Step::Expect(_) | Step::Restart(_) | Step::Reconnect(_))
}

/// Enforce `max_burst`: shrink any single write to fit, and resync (which
/// reads) before a write that would take the unread total past the cap.
fn cap_bursts(mut faults: Vec<Fault>, cap: usize) -> Vec<Fault> {
    let mut unread = 0;
    for fault in &mut faults {
        let mut steps = Vec::with_capacity(fault.steps.len() + 1);
        for mut step in std::mem::take(&mut fault.steps) {
            match &mut step {
                Step::Send(s) => {
                    while s.repeat > 1 && written(&Step::Send(s.clone())) > cap {
                        s.repeat -= 1;
                    }
                }
                Step::Garbage(g) => g.len = g.len.min(cap),
                _ => {}
            }
            let w = written(&step);
            if w > 0 && unread + w > cap {
                steps.push(Step::Resync(ResyncStep::default()));
                unread = 0;
            }
            if reads(&step) {
                unread = 0;
            }
            unread += w;
            steps.push(step);
        }
        // A checked burst expects as many replies as it sent.
        let sent: Option<usize> = steps.iter().find_map(|s| match s {
            Step::Send(x) if fault.kind == FaultKind::Burst => Some(x.repeat),
            _ => None,
        });
        if let Some(n) = sent {
            for s in &mut steps {
                if let Step::Expect(e) = s {
                    e.count = n;
                }
            }
        }
        fault.steps = steps;
    }
    faults
}

/// Fault schedules with the given parameters.
pub fn schedule(params: ScheduleParams) -> impl Strategy<Value = Schedule> {
    let forced = params.restart_every;
    let cap = params.max_burst;
    let restart = kill_restart(Signal::KILL);
    (prop::collection::vec(fault(&params), 1..=params.max_faults.max(1)), restart, any::<prop::sample::Index>()).prop_map(
        move |(mut faults, restart, at)| {
            if forced && !faults.iter().any(|f| matches!(f.kind, FaultKind::KillRestart | FaultKind::TermRestart)) {
                let i = at.index(faults.len() + 1);
                faults.insert(i, restart);
            }
            if let Some(cap) = cap {
                faults = cap_bursts(faults, cap);
            }
            Schedule { faults }
        },
    )
}

impl Schedule {
    /// The case steps: the faults, then the property's own checks (resync,
    /// an unknown command answered with its own CommandNotFound, a fresh
    /// sync); the engine's recovery then checks ping, sync and info.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self.faults.iter().flat_map(|f| f.steps.clone()).collect();
        steps.extend(verification_tail());
        steps
    }
}

/// What must hold after any schedule, as steps.
pub fn verification_tail() -> Vec<Step> {
    let expect = |ret: Option<serde_json::Value>, err: Option<&str>| {
        Step::Expect(Expect {
            return_: ret,
            error: err.map(str::to_owned),
            id: IdCheck::Echo,
            delimited: false,
            allow_errors_before: false,
            line: false,
            count: 1,
            within_ms: None,
            schema: false,
        })
    };
    let mut sync = Send::command("guest-sync-delimited", Some(json!({"id": "$fresh"})));
    sync.flush = true;
    let mut delimited = match expect(Some(json!("$sync")), None) {
        Step::Expect(e) => e,
        _ => unreachable!(),
    };
    delimited.delimited = true;
    delimited.allow_errors_before = true;
    vec![
        Step::Resync(ResyncStep::default()),
        // Proxmox's way: a delimited sync and the next command in one write.
        Step::Batch(vec![sync, Send::command("guest-no-such-command", None)]),
        Step::Expect(delimited),
        expect(None, Some("CommandNotFound")),
        Step::Send(Send::command("guest-sync", Some(json!({"id": "$fresh"})))),
        expect(Some(json!("$sync")), None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};

    #[test]
    fn same_seed_same_schedules() {
        let gen = |seed: u8| {
            let mut r = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]));
            (0..20).map(|_| schedule(ScheduleParams::default()).new_tree(&mut r).unwrap().current()).collect::<Vec<_>>()
        };
        assert_eq!(gen(1), gen(1));
        assert_ne!(gen(1), gen(2));
    }

    proptest! {
        #[test]
        fn burst_cap_holds(s in schedule(ScheduleParams { max_burst: Some(500), ..Default::default() })) {
            let mut unread = 0;
            for step in s.steps() {
                if reads(&step) {
                    unread = 0;
                }
                unread += written(&step);
                prop_assert!(unread <= 500 || matches!(step, Step::Send(ref x) if x.repeat == 1), "{unread} {step:?}");
            }
        }

        #[test]
        fn restart_every_forces_a_restart(s in schedule(ScheduleParams { restart_every: true, ..Default::default() })) {
            prop_assert!(s.steps().iter().any(|st| matches!(st, Step::Restart(_))));
        }
    }
}
