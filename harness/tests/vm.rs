//! The VM transports end to end: qemu-ga in a QEMU guest (TCG when there
//! is no usable KVM), reached through QEMU's chardev socket.
//!
//! - through the library: a guest boots, its agent answers, a control-port
//!   restart replaces the agent without a reboot (same QEMU), and dropping
//!   the session leaves no QEMU behind;
//! - through the CLI: sync/1 and restart/7 over vm-isa, framing/13 (the
//!   piecewise burst qemu-ga loses replies to over virtio-serial) and
//!   connection/1 over vm-virtio, and the template check that refuses
//!   `-m isa-serial` on vm-virtio;
//! - QEMU killed under a case: the case is an ERROR of the VM (never a
//!   finding against the agent), and the session goes on in a new VM.
//!
//! Every boot costs seconds under TCG, so the tests that boot take turns
//! (one VM at a time) and none runs a whole catalogue. Without QEMU, the
//! guest kernel or qemu-ga they say so and return, except under CI (`CI`
//! set), where that is a failure: .ci/run installs QEMU and qemu-ga and
//! fetches the kernel into the default cache.

mod common;

use assert_cmd::Command;
use qapi::qga;
use qga_harness::process::live_in_group;
use qga_harness::agent::AgentTemplate;
use qga_harness::client::execute;
use qga_harness::session::{Session, SessionConfig};
use qga_harness::transcript::{Event, Record, Transcript};
use qga_harness::transport::TransportKind;
use serde_json::Value;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One booted guest at a time: each is a QEMU under TCG, which takes a
/// core of its own, and framing/13 and the restart timing are measured.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a guest needs: qemu-ga's path, once QEMU and the guest kernel have
/// been found (the kernel fetched into the default cache if need be, as
/// the harness itself would). `None` (after a note) when something is
/// missing outside CI; a panic when it is missing under CI.
fn vm_ready() -> Option<&'static str> {
    static READY: OnceLock<Result<&'static str, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let qemu = "qemu-system-x86_64";
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(qemu).is_file()))
            .unwrap_or(false);
        if !on_path {
            return Err(format!("{qemu} is not installed (package qemu-system-x86)"));
        }
        // The shared lookup: it fails under CI itself when qemu-ga is missing.
        let Some(qga) = common::qemu_ga() else {
            return Err("qemu-ga is not installed (package qemu-guest-agent)".into());
        };
        let cache = qga_harness::vm::default_cache();
        std::fs::create_dir_all(&cache).map_err(|e| format!("cache {}: {e}", cache.display()))?;
        match qga_harness::vm::kernel::locate_or_fetch(&cache) {
            Ok(k) => {
                eprintln!("guest kernel {} ({})", k.release, k.vmlinuz.display());
                Ok(qga)
            }
            Err(e) => Err(format!("no guest kernel: {e}")),
        }
    });
    match ready {
        Ok(qga) => Some(qga),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{why}; CI is set: .ci/run must install QEMU and qemu-ga and fetch the guest kernel")
        }
        Err(why) => {
            eprintln!("{why}: skipping the VM tests (this would fail under CI)");
            None
        }
    }
}

/// `qga-harness run ARGS --json FILE`: the exit code, the run document and
/// what the harness printed (for failure messages).
fn run(args: &[&str]) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let started = Instant::now();
    let out = Command::cargo_bin("qga-harness").unwrap().arg("run").args(args).arg("--json").arg(&json).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("qga-harness run {args:?}: exit {:?} after {:?}", out.status.code(), started.elapsed());
    let doc = match std::fs::read(&json) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the run document: {e}\n{said}")),
        Err(e) => panic!("no run document ({e}): exit {:?}\n{said}", out.status.code()),
    };
    (out.status.code(), doc, said)
}

/// The outcome of case `id` in a run document.
fn outcome<'a>(doc: &'a Value, id: &str) -> &'a str {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the run: {doc}"))["outcome"]
        .as_str()
        .unwrap()
}

fn qemu_ga_template(qga: &str, method: &str) -> String {
    format!("{qga} -m {method} -p {{path}} -t {{statedir}}")
}

/// The events of `t` from entry `from` on.
fn events(t: &Transcript, from: u64) -> Vec<Event> {
    t.entries(from, None)
        .into_iter()
        .filter_map(|e| match e.record {
            Record::Event(ev) => Some(ev),
            _ => None,
        })
        .collect()
}

#[test]
fn a_guest_boots_answers_restarts_its_agent_without_a_reboot_and_leaves_no_qemu() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t = Transcript::default();
    let qemu_pid = rt.block_on(async {
        let template = AgentTemplate::parse(&qemu_ga_template(qga, "virtio-serial")).unwrap();
        let config = SessionConfig::new(template, TransportKind::VmVirtio);
        // The budgets for a guest (an emulated device is slower than a
        // pty, and these waits only bound a broken agent), as the CLI's.
        assert_eq!((config.budgets.reply, config.budgets.resync, config.budgets.send), (Duration::from_secs(1), Duration::from_secs(4), Duration::from_secs(5)));
        let (mut session, _profile) = match Session::start(config, t.clone()).await {
            Ok(s) => s,
            Err(e) => panic!("the guest's agent did not start: {e}\n{}", t.render(0, None)),
        };

        // Started means synced; and a plain request is answered too.
        let opts = session.client().clone();
        let id = 0x5eed_0001;
        assert_eq!(execute(session.conn().unwrap(), qga::guest_sync { id }, &opts).await.unwrap().unwrap(), id);
        let vm = session.vm().expect("a vm-virtio session runs its agent in a VM");
        assert!(vm.boot_time > Duration::ZERO && vm.boot_time < Duration::from_secs(30), "boot time {:?}", vm.boot_time);
        eprintln!("booted in {:?} ({}); agent port {}", vm.boot_time, vm.accel, vm.agent_path);
        // The accelerator reported is the one the transcript says was chosen.
        let chosen = [format!("accelerator {}:", vm.accel), format!("KVM probe: a {} guest booted", vm.accel)];
        assert!(
            events(&t, 0).iter().any(|e| matches!(e, Event::Note { text } if chosen.iter().any(|c| text.starts_with(c.as_str())))),
            "the transcript does not say why {} was used\n{}",
            vm.accel,
            t.render(0, None)
        );
        assert!(vm.agent_path.starts_with("/dev/vport"), "{}", vm.agent_path);
        let qemu_pid = vm.qemu_pid();
        assert!(!live_in_group(qemu_pid).is_empty(), "QEMU (group {qemu_pid}) is not running");
        let agent_pid = events(&t, 0)
            .into_iter()
            .rev()
            .find_map(|e| match e {
                Event::Spawn { pid, argv } if argv.first().is_some_and(|a| a.ends_with("qemu-ga")) => Some(pid),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no qemu-ga spawn in the transcript\n{}", t.render(0, None)));

        // A restart through the control port: the agent is killed and a new
        // one started in the same guest, on the same channel.
        let mark = t.mark();
        let started = Instant::now();
        if let Err(e) = session.restart().await {
            panic!("restart failed: {e}\n{}", t.render(mark, None));
        }
        let took = started.elapsed();
        eprintln!("control-port restart (kill, start, resync) in {took:?}");
        let log = t.render(mark, None);
        assert!(took < Duration::from_secs(1), "the restart took {took:?}: a reboot?\n{log}");
        let vm = session.vm().expect("still a VM after the restart");
        assert_eq!(vm.qemu_pid(), qemu_pid, "QEMU was replaced: the restart rebooted\n{log}");
        assert!(!live_in_group(qemu_pid).is_empty(), "QEMU is gone after the restart\n{log}");
        let after = events(&t, mark);
        assert!(after.iter().any(|e| matches!(e, Event::Restart)), "no restart event\n{log}");
        assert!(
            after.iter().any(|e| matches!(e, Event::Exit { pid, status } if *pid == agent_pid && status.contains("SIGKILL") && status.contains("in the guest"))),
            "no exit event of the old agent (pid {agent_pid} in the guest)\n{log}"
        );
        assert!(
            after.iter().any(|e| matches!(e, Event::Spawn { pid, .. } if *pid != agent_pid)),
            "no new agent spawned\n{log}"
        );
        // The new agent answers on the same channel.
        let id = 0x5eed_0002;
        assert_eq!(execute(session.conn().unwrap(), qga::guest_sync { id }, &opts).await.unwrap().unwrap(), id, "{log}");
        // Dropped, not shut down: the plain drop path must end QEMU too.
        drop(session);
        qemu_pid
    });
    drop(rt);
    assert!(live_in_group(qemu_pid).is_empty(), "QEMU's process group {qemu_pid} outlived the session: {:?}", live_in_group(qemu_pid));
}

#[test]
fn over_vm_isa_qemu_ga_syncs_and_survives_stale_replies_across_a_restart() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let agent = qemu_ga_template(qga, "isa-serial");
    let (code, doc, said) = run(&["--agent", &agent, "--transport", "vm-isa", "--case", "sync/1", "--case", "restart/7"]);
    assert_eq!(doc["transport"], "vm-isa");
    assert_eq!(doc["results"].as_array().unwrap().len(), 2, "{said}");
    assert_eq!(outcome(&doc, "sync/1"), "PASS", "{said}");
    assert_eq!(outcome(&doc, "restart/7"), "PASS", "{said}");
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn over_vm_virtio_qemu_ga_loses_replies_to_a_piecewise_burst() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let agent = qemu_ga_template(qga, "virtio-serial");
    let (code, doc, said) = run(&["--agent", &agent, "--transport", "vm-virtio", "--case", "framing/13"]);
    let result = &doc["results"][0];
    assert_eq!(result["id"], "framing/13", "{said}");
    assert_eq!(result["outcome"], "FAIL", "{said}");
    let failure = &result["failure"];
    assert_eq!(failure["kind"], "replies-lost", "{failure}");
    let actual = failure["actual"].as_str().unwrap();
    assert!(actual.contains("replies lost"), "{actual}");
    assert_eq!(code, Some(1), "{said}");
    // The positive control: the reference agent, in the same kind of guest
    // on the same channel, answers every request of the same bursts. What
    // loses replies is the agent, not the harness or the channel.
    let (code, doc, said) = run(&["--transport", "vm-virtio", "--case", "framing/13"]);
    assert_eq!(outcome(&doc, "framing/13"), "PASS", "{said}");
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn over_vm_virtio_qemu_ga_serves_a_client_that_reconnects_to_the_chardev() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let agent = qemu_ga_template(qga, "virtio-serial");
    let (code, doc, said) = run(&["--agent", &agent, "--transport", "vm-virtio", "--case", "connection/1"]);
    assert_eq!(outcome(&doc, "connection/1"), "PASS", "{said}");
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn vm_virtio_refuses_qemu_ga_on_isa_serial_before_booting() {
    // A usage error, found from the template alone: no QEMU, kernel or
    // qemu-ga is needed, so this one runs everywhere.
    let started = Instant::now();
    let out = Command::cargo_bin("qga-harness")
        .unwrap()
        .args(["run", "--transport", "vm-virtio", "--agent", "qemu-ga -m isa-serial -p {path}", "--case", "sync/1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Exit 3: bad usage or configuration (harness/src/main.rs).
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("-m virtio-serial"), "{err}");
    assert!(err.contains("vm-virtio"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a usage error took {:?}: did it boot a guest?", started.elapsed());
}

#[test]
fn qemu_dying_mid_run_is_an_error_of_the_vm_not_a_finding_against_the_agent() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t = Transcript::default();
    rt.block_on(async {
        let template = AgentTemplate::parse(&qemu_ga_template(qga, "virtio-serial")).unwrap();
        let config = SessionConfig::new(template, TransportKind::VmVirtio);
        let (mut session, profile) = Session::start(config, t.clone()).await.unwrap_or_else(|e| panic!("{e}\n{}", t.render(0, None)));
        let cases = qga_harness::case::load::embedded().unwrap();
        let case = cases.iter().find(|c| c.id == "sync/1").unwrap();
        let grading = qga_harness::engine::Grading::new(profile, &cases);
        let eo = qga_harness::engine::EngineOptions::default();
        let qemu = session.vm().unwrap().qemu_pid();
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(qemu), nix::sys::signal::Signal::SIGKILL).unwrap();
        let (r, renew) = qga_harness::engine::run_case(&mut session, case, &grading, &eo).await;
        let failure = r.failure.as_ref().expect("a failure");
        assert_eq!(r.outcome, qga_harness::verdict::Outcome::Error, "{failure:?}");
        assert!(failure.actual.contains("the VM exited (killed by SIGKILL)"), "{failure:?}");
        assert!(renew, "the next case needs a new VM");
        // The session boots a new VM, on a new channel, and goes on.
        session.renew().await.unwrap_or_else(|e| panic!("{e}\n{}", t.render(0, None)));
        assert_ne!(session.vm().unwrap().qemu_pid(), qemu);
        let (r, _) = qga_harness::engine::run_case(&mut session, case, &grading, &eo).await;
        assert_eq!(r.outcome, qga_harness::verdict::Outcome::Pass, "{:?}", r.failure);
        session.shutdown().await;
    });
}

/// Ctrl-C in the middle of a VM run: the signal handler exits without
/// running destructors, so the process layer's registry does their work:
/// QEMU is killed and reaped, and the VM's directory (sockets, console) and
/// every agent state directory are removed. A private TMPDIR shows what is
/// left behind.
#[test]
fn ctrl_c_leaves_no_vm_directory_and_no_qemu() {
    let Some(qga) = vm_ready() else { return };
    let _heavy = heavy();
    let tmp = tempfile::tempdir().unwrap();
    let ours = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().starts_with("qga-harness-");
    let left = || std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).filter(|p| ours(p)).collect::<Vec<_>>();
    let mut harness = std::process::Command::new(assert_cmd::cargo::cargo_bin("qga-harness"))
        .args(["run", "--agent", &qemu_ga_template(qga, "virtio-serial"), "--transport", "vm-virtio"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the guest is up: QEMU has made the agent's socket in the VM's directory.
    let deadline = Instant::now() + Duration::from_secs(120);
    let vm_dir = loop {
        if let Some(d) = left().into_iter().find(|p| p.to_string_lossy().contains("qga-harness-vm-") && p.join("qga.sock").exists()) {
            break d;
        }
        assert!(Instant::now() < deadline, "no VM directory appeared in {}", tmp.path().display());
        assert!(harness.try_wait().unwrap().is_none(), "the harness ended before its VM was up");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    // QEMU: the process whose command line names the VM's directory (it leads its own group).
    let needle = vm_dir.to_string_lossy().into_owned();
    let qemu: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle)))
        .collect();
    assert!(!qemu.is_empty(), "no QEMU runs with {needle}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(harness.id() as i32, libc::SIGINT) };
    let status = harness.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(left().is_empty(), "left behind in the temp dir: {:?}", left());
    for pid in qemu {
        assert!(live_in_group(pid).is_empty(), "QEMU {pid} outlived the harness: {:?}", live_in_group(pid));
    }
}
