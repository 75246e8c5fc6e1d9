//! Shared helpers for the integration tests.
#![allow(dead_code)]

use qga_harness::agent::AgentTemplate;
use qga_harness::session::{Session, SessionConfig};
use qga_harness::transcript::Transcript;
use qga_harness::transport::TransportKind;

/// The qga-harness binary built for these tests.
pub const HARNESS: &str = env!("CARGO_BIN_EXE_qga-harness");

/// The in-tree reference agent, served by the harness binary itself.
pub fn reference_agent(transport: TransportKind) -> AgentTemplate {
    qga_harness::agent::template::reference_served_by(HARNESS, transport).unwrap()
}

/// qemu-ga's path, if installed. Under CI (`CI` set) its absence is a test
/// failure, never a skip: .ci/run installs it.
pub fn qemu_ga() -> Option<&'static str> {
    for p in ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"] {
        if std::path::Path::new(p).is_file() {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("qemu-ga is not installed, and CI is set: .ci/run must install qemu-guest-agent");
    }
    eprintln!("qemu-ga not installed: skipping (this would fail under CI)");
    None
}

/// qemu-ga over a method: `isa-serial` / `virtio-serial` on a pty,
/// `unix-listen` on a unix socket.
pub fn qemu_ga_template(method: &str) -> Option<(AgentTemplate, TransportKind)> {
    let bin = qemu_ga()?;
    let transport = if method == "unix-listen" { TransportKind::UnixListen } else { TransportKind::Pty };
    Some((AgentTemplate::parse(&format!("{bin} -m {method} -p {{path}} -t {{statedir}}")).unwrap(), transport))
}

pub async fn start(template: AgentTemplate, transport: TransportKind) -> (Session, Transcript) {
    let t = Transcript::default();
    match Session::start(SessionConfig::new(template, transport), t.clone()).await {
        Ok((s, _)) => (s, t),
        Err(e) => panic!("start failed: {e}\n{}", t.render(0, None)),
    }
}
