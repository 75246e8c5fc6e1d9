//! How the harness process ends on a signal or a closed output: every
//! agent killed and every scratch directory removed first, since `exit`
//! runs no destructors.

/// Our stdout (or stderr) was closed by its reader (`qga-harness list |
/// head`): end the way a plain Unix tool does, killed by SIGPIPE, quietly,
/// after killing every agent (nothing else runs destructors on this path).
pub fn exit_on_broken_pipe() -> ! {
    super::kill_all();
    // SAFETY: plain libc calls; the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE);
}

/// True for the panic that `print!`/`println!` (and `eprint!`) raise when
/// the reader of that stream has gone: "failed printing to stdout: Broken
/// pipe (os error 32)".
fn is_broken_pipe_panic(message: &str) -> bool {
    (message.starts_with("failed printing to stdout") || message.starts_with("failed printing to stderr"))
        && (message.contains("Broken pipe") || message.contains(&format!("os error {}", libc::EPIPE)))
}

/// Writes to stdout or stderr do not check for a closed pipe (Rust ignores
/// SIGPIPE, so `print!` panics on EPIPE instead). SIGPIPE's default action
/// is not restored: it would also kill the harness when it writes to an
/// agent's socket that the agent closed. Instead, that one panic ends the
/// process quietly, from whatever command printed.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_panic(message) {
            exit_on_broken_pipe();
        }
        default(info);
    }));
}

/// Ctrl-C or SIGTERM: kill every process group (agents, QEMU) and remove
/// every scratch directory (VM sockets and console, agent state), then
/// exit. Destructors do not run on `exit`, so this is the path that
/// guarantees nothing we started or made outlives us.
///
/// The handlers are registered here and now, within the runtime, and a task
/// waits on them: registered inside that task, they would exist only once
/// the task first ran, and on a one-thread runtime a signal that came
/// before the command's first await (the agent already spawned) would kill
/// the harness by default, its agents' groups and directories left behind.
pub fn stop_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        super::kill_all();
        eprintln!("qga-harness: interrupted; all agents killed");
        std::process::exit(code);
    });
}
