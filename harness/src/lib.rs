//! qga-harness: a conformance harness for QEMU Guest Agent implementations.
//!
//! The layers, bottom to top, one module each:
//!
//! | layer | module | knows about |
//! |---|---|---|
//! | wire | [`wire`] | bytes → JSON frames, the 0xFF sentinel, requests and replies |
//! | recording | [`transcript`] | every byte both ways, timestamped, with harness events |
//! | process | [`process`] | spawn, process groups, kill, reap, scratch dirs, signal cleanup; owns every pid |
//! | transport | [`transport`] | pty, socketpair, unix socket, which VM device; moves bytes, never looks inside |
//! | vm | [`vm`] | QEMU, the guest image and kernel, the guest init's control port, the console |
//! | connection | [`connection`] | buffered I/O with deadlines over a transport |
//! | link | [`link`] | the channel to a peer and the connection on it, with the deny-list; reconnect |
//! | agent | [`agent`] | command templates; the peer: start, stop, restart an agent, local or in a guest |
//! | client | [`client`] | the reference client: resync and execute |
//! | session | [`session`] | composes a link, a peer and the client (below it): readiness, restart, renew |
//! | cases | [`case`] | the catalogue as data: cases, steps, patterns |
//! | engine | [`engine`] | runs cases, grades them, measures recovery |
//! | benchmarks | [`bench`] | what the harness costs, against floors measured in the same run |
//! | fuzzing | [`fuzz`] | random fault schedules, shrunk to replayable cases |
//! | verdict | [`verdict`] | outcomes, levels, recovery grades |
//! | gating | [`baseline`] | expectation baselines |
//! | report | [`report`] | terminal and JSON reports |

pub mod agent;
pub mod baseline;
pub mod budget;
pub mod bench;
pub mod case;
pub mod client;
pub mod connection;
pub mod engine;
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
