//! qga-harness: a conformance harness for QEMU Guest Agent implementations.
//!
//! The layers, bottom to top. A module uses only modules of the rows below
//! its own (modules sharing a row are peers and use neither each other);
//! `tests/layers.rs` holds the code to this table.
//!
//! | layer | modules | knows about |
//! |---|---|---|
//! | wire | [`wire`], [`finding`] | bytes → JSON frames, the 0xFF sentinel, requests and replies, the deny-list; the stable codes that name a defect |
//! | recording | [`transcript`] | every byte both ways, timestamped, with harness events |
//! | process | [`process`] | spawn, process groups, kill, reap, scratch dirs, signal cleanup; owns every pid |
//! | transport | [`transport`] | pty, socketpair, unix socket, which VM device; moves bytes, never looks inside |
//! | budgets | [`budget`] | every time limit, per transport and mode, paced to the agent |
//! | vm | [`vm`] | QEMU, the guest image and kernel, the guest init's control port, the console |
//! | connection | [`connection`] | buffered I/O with deadlines over a transport |
//! | link | [`link`] | the channel to a peer and the connection on it, with the deny-list; reconnect |
//! | agent | [`agent`] | command templates; the peer: start, stop, restart an agent, local or in a guest |
//! | client | [`client`] | the reference client: resync, execute, the start-up probe |
//! | session | [`session`] | composes a link, a peer and the client: readiness, restart, renew |
//! | schema | [`schema`] | the QGA QAPI schema and checking a reply against it |
//! | cases | [`case`] | the catalogue as data: cases, steps, patterns, selection |
//! | proxy | [`proxy`] | client mode: the fault-injecting proxy between a client and an agent, the client's grade |
//! | verdict | [`verdict`] | outcomes, failures, recovery grades; case and run results |
//! | engine | [`engine`] | runs cases on a session, grades them, measures recovery |
//! | gating | [`baseline`] | expectation baselines |
//! | gate | [`gate`] | a run's exit status against its baseline |
//! | report | [`report`] | terminal, JSON, JUnit, Markdown and HTML reports |
//! | benchmarks | [`bench`] | what the harness costs, against floors measured in the same run |
//! | fuzzing | [`fuzz`] | random fault schedules, shrunk to replayable cases |

pub mod agent;
pub mod baseline;
pub mod budget;
pub mod bench;
pub mod case;
pub mod client;
pub mod connection;
pub mod engine;
pub mod finding;
pub mod fuzz;
pub mod gate;
pub mod link;
pub mod process;
pub mod proxy;
pub mod report;
pub mod schema;
pub mod session;
pub mod transcript;
pub mod transport;
pub mod verdict;
pub mod vm;
pub mod wire;
