//! qga-harness: a conformance harness for QEMU Guest Agent implementations.
//!
//! The layers, bottom to top, one module each:
//!
//! | layer | module | knows about |
//! |---|---|---|
//! | wire | [`wire`] | bytes → JSON frames, the 0xFF sentinel, requests and replies |
//! | transport | [`transport`] | pty, socketpair, unix socket; moves bytes, never looks inside |
//! | recording | [`transcript`] | every byte both ways, timestamped, with harness events |
//! | connection | [`connection`] | buffered I/O with deadlines over a transport |
//! | agent process | [`agent`] | command templates, spawn, kill, reap; owns every pid |
//! | session | [`session`] | one agent on one channel: start, restart, reconnect |
//! | client | [`client`] | the reference client: resync and execute |
//! | cases | [`case`] | the catalogue as data: cases, steps, patterns |
//! | engine | [`engine`] | runs cases, grades them, measures recovery |
//! | benchmarks | [`bench`] | what the harness costs, against floors measured in the same run |
//! | fuzzing | [`fuzz`] | random fault schedules, shrunk to replayable cases |
//! | verdict | [`verdict`] | outcomes, levels, recovery grades |
//! | gating | [`baseline`] | expectation baselines |
//! | report | [`report`] | terminal and JSON reports |

pub mod agent;
pub mod baseline;
pub mod bench;
pub mod case;
pub mod client;
pub mod connection;
pub mod engine;
pub mod fuzz;
pub mod gate;
pub mod proxy;
pub mod report;
pub mod schema;
pub mod session;
pub mod transcript;
pub mod transport;
pub mod verdict;
pub mod vm;
pub mod wire;
