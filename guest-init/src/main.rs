//! qga-guest-init: PID 1 of the harness's VM guests.
//!
//! The guest exists to put an agent behind a real channel (QEMU's
//! virtio-serial or ISA serial), so its init does only what that needs:
//! mount the pseudo file systems, load the virtio modules, find the agent's
//! port, then serve the control port ([`protocol`]). The harness starts,
//! kills and restarts the agent through it without rebooting, so the
//! channel (and whatever bytes sit in it) outlives each agent, as it does
//! in a real VM when qemu-ga crashes or is upgraded.
//!
//! Built static (see harness/build.rs): the guest image holds the agent's
//! shared libraries, never ours. No dependencies, only std and a handful of
//! libc calls, declared below.

mod boot;
mod protocol;
mod supervisor;

use std::io::{BufRead, BufReader};

fn main() {
    if std::process::id() != 1 {
        eprintln!("qga-guest-init is the init of qga-harness's VM guests; it runs as PID 1 in a guest only");
        std::process::exit(2);
    }
    boot::console();
    let booted = boot::boot();
    let (control, agent_path) = match booted {
        Ok(b) => b,
        Err(e) => {
            // Said on the console, which the harness keeps in the transcript;
            // then a power-off, which ends QEMU and so the harness's wait.
            eprintln!("qga-guest-init: {e}");
            boot::poweroff();
        }
    };
    let reader = BufReader::new(control.try_clone().unwrap_or_else(|e| {
        eprintln!("qga-guest-init: cannot clone the control port: {e}");
        boot::poweroff()
    }));
    let sup = supervisor::Supervisor::new(control);
    sup.send(&format!("hello {} {}", agent_path, boot::uptime_ms()));
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        match protocol::parse(line.trim()) {
            Ok(protocol::Command::Poweroff) => {
                sup.kill(9);
                boot::poweroff();
            }
            Ok(cmd) => sup.handle(cmd),
            Err(e) => sup.send(&format!("error {}", protocol::hex(e.as_bytes()))),
        }
    }
    // The host closed the control port: nothing can reach us any more.
    sup.kill(9);
    boot::poweroff();
}
