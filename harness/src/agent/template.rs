//! Agent command templates: `qemu-ga -m isa-serial -p {path} -t {statedir}`.
//!
//! Split into argv the way a POSIX shell splits words (quotes, backslashes),
//! never run through `sh -c`, so a template means the same thing on every
//! machine and nothing in it is expanded but our placeholders:
//!
//! - `{path}`: the channel path (the pty slave, or the unix socket to listen
//!   on). Without it the agent serves on its stdin/stdout.
//! - `{statedir}`: a fresh, empty directory for this agent instance, removed
//!   when the instance is gone (qemu-ga's `-t`, which must exist).
//!
//! [`transport_problem`] catches a template that cannot work over the chosen
//! transport (a set-up error, reported before anything runs).

use crate::transport::TransportKind;
use std::path::Path;

/// A parsed agent command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTemplate {
    words: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("agent template is empty")]
    Empty,
    #[error("agent template does not split into words: {0}")]
    Quoting(String),
    #[error("unknown placeholder {0} in agent template (known: {{path}}, {{statedir}})")]
    UnknownPlaceholder(String),
}

const PATH: &str = "{path}";
const STATEDIR: &str = "{statedir}";

impl AgentTemplate {
    pub fn parse(template: &str) -> Result<AgentTemplate, TemplateError> {
        let words = shell_words::split(template).map_err(|e| TemplateError::Quoting(e.to_string()))?;
        if words.is_empty() {
            return Err(TemplateError::Empty);
        }
        for w in &words {
            if let Some(p) = unknown_placeholder(w) {
                return Err(TemplateError::UnknownPlaceholder(p));
            }
        }
        Ok(AgentTemplate { words })
    }

    /// A template from argv words that need no splitting.
    pub fn from_words(words: Vec<String>) -> Result<AgentTemplate, TemplateError> {
        AgentTemplate::parse(&shell_words::join(&words))
    }

    /// True when the agent opens the channel by path; otherwise it is given
    /// the channel as stdin/stdout.
    pub fn uses_path(&self) -> bool {
        self.words.iter().any(|w| w.contains(PATH))
    }

    pub fn program(&self) -> &str {
        &self.words[0]
    }

    /// The argv for one agent instance.
    pub fn expand(&self, path: Option<&Path>, statedir: &Path) -> Vec<String> {
        let path = path.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let statedir = statedir.to_string_lossy();
        self.words.iter().map(|w| w.replace(PATH, &path).replace(STATEDIR, &statedir)).collect()
    }
}

/// Why `template` cannot work over `transport`, as a message with a hint,
/// or None. The generic checks: socketpair has no path to put in `{path}`,
/// and unix-listen needs one. For qemu-ga (a word named `qemu-ga`), its
/// method (`-m X`, `-mX`, `-m=X`, `--method X`, `--method=X`) must match
/// the transport, and it needs `-p {path}`: it has no stdio mode, and
/// without a path it opens the machine's own device.
pub fn transport_problem(template: &AgentTemplate, transport: TransportKind) -> Option<String> {
    let qemu_ga = template.words.iter().position(|w| Path::new(w).file_name().is_some_and(|n| n == "qemu-ga"));
    if let Some(at) = qemu_ga {
        if let Some(p) = qemu_ga_problem(&template.words[at + 1..], template.uses_path(), transport) {
            return Some(p);
        }
    }
    match transport {
        TransportKind::Socketpair if template.uses_path() => Some(
            "--transport socketpair has no channel path to put in {path} (the agent gets the socket as its stdin and stdout): \
             drop {path} from the template, or use --transport pty or --transport unix-listen"
                .into(),
        ),
        TransportKind::UnixListen if !template.uses_path() => Some("--transport unix-listen needs {path} in the agent template".into()),
        TransportKind::VmVirtio | TransportKind::VmIsa if !template.uses_path() => Some(format!(
            "--transport {transport} runs the agent in a VM guest, where {{path}} is its port ({}): put {{path}} in the agent template",
            if transport == TransportKind::VmVirtio { "the virtio port named org.qemu.guest_agent.0" } else { "/dev/ttyS1" }
        )),
        _ => None,
    }
}

/// qemu-ga's options (`args`, after its program word) against the transport.
fn qemu_ga_problem(args: &[String], uses_path: bool, transport: TransportKind) -> Option<String> {
    let method = qemu_ga_option(args, "-m", "--method");
    let has_config = qemu_ga_option(args, "-c", "--config").is_some();
    let serial = |m: &str| m == "isa-serial" || m == "virtio-serial";
    match (method.as_deref(), transport) {
        (Some("unix-listen"), TransportKind::Pty | TransportKind::Socketpair) => {
            Some("qemu-ga's -m unix-listen listens on a socket: use --transport unix-listen".into())
        }
        (Some(m), TransportKind::UnixListen) if serial(m) => Some(format!(
            "qemu-ga's -m {m} opens -p as a serial device, but --transport unix-listen expects the agent to listen on a socket there: \
             use --transport pty, or -m unix-listen"
        )),
        (Some(m), TransportKind::VmVirtio) if m != "virtio-serial" => Some(format!(
            "--transport vm-virtio gives the agent a virtio-serial port: use qemu-ga's -m virtio-serial, not -m {m}"
        )),
        (Some(m), TransportKind::VmIsa) if m != "isa-serial" => Some(format!(
            "--transport vm-isa gives the agent the guest's /dev/ttyS1: use qemu-ga's -m isa-serial, not -m {m}"
        )),
        (Some("vsock-listen"), _) => Some(
            "qemu-ga's -m vsock-listen listens on a vsock port, and the harness has no vsock transport: \
             use -m unix-listen with --transport unix-listen, or -m isa-serial with --transport pty"
                .into(),
        ),
        (_, TransportKind::Socketpair) if uses_path => Some(
            "qemu-ga's -p {path} needs a channel path, and --transport socketpair has none (qemu-ga has no stdin/stdout mode): \
             use --transport pty with -m isa-serial or virtio-serial, or --transport unix-listen with -m unix-listen"
                .into(),
        ),
        (m, _) if !uses_path && !has_config => Some(format!(
            "qemu-ga without -p {{path}} opens its default channel (the machine's own {} device), not the harness's: add -p {{path}}{}",
            m.filter(|m| m != &"virtio-serial").unwrap_or("virtio-serial"),
            if transport == TransportKind::Socketpair { " and use --transport pty (qemu-ga has no stdin/stdout mode)" } else { "" }
        )),
        _ => None,
    }
}

/// The value of a getopt-style option: `-m X`, `-mX`, `-m=X` (which qemu-ga
/// itself would read as `=X`, but the intent is plain), `--method X`,
/// `--method=X`. The last one wins, as with getopt.
fn qemu_ga_option(args: &[String], short: &str, long: &str) -> Option<String> {
    let mut value = None;
    let mut i = 0;
    while i < args.len() {
        let w = args[i].as_str();
        if w == "--" {
            break;
        }
        if w == short || w == long {
            value = args.get(i + 1).cloned();
            i += 2;
            continue;
        }
        if let Some(v) = w.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            value = Some(v.to_owned());
        } else if let Some(v) = w.strip_prefix(short).filter(|r| !r.is_empty() && !w.starts_with("--")) {
            value = Some(v.strip_prefix('=').unwrap_or(v).to_owned());
        }
        i += 1;
    }
    value
}

impl std::fmt::Display for AgentTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shell_words::join(&self.words))
    }
}

/// A `{name}` in a word that is not one of ours. Braces around anything else
/// (JSON, say) are left alone.
fn unknown_placeholder(word: &str) -> Option<String> {
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find('}') {
            let name = &after[..close];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '-') {
                let p = format!("{{{name}}}");
                if p != PATH && p != STATEDIR {
                    return Some(p);
                }
            }
        }
        rest = after;
    }
    None
}

/// A likely cause of a failed start, from the template and what the agent
/// said. (Mismatches visible in the template alone are usage errors before
/// anything starts.)
pub fn startup_hint(template: &AgentTemplate, transport: TransportKind, stderr: &[String]) -> Option<String> {
    let text = stderr.join(" ").to_lowercase();
    let program = template.program().rsplit('/').next().unwrap_or_default().to_owned();
    if transport.vm().is_some() {
        // The agent's stderr and the guest console are in the transcript;
        // a host-side reading of them would mislead.
        return Some(format!(
            "over --transport {transport} the agent runs in a QEMU guest: the transcript holds the guest console and the agent's stderr (qemu-ga needs -m {} there)",
            if transport == TransportKind::VmIsa { "isa-serial" } else { "virtio-serial" }
        ));
    }
    if text.contains("unlink") || text.contains("address already in use") {
        return Some(format!("the agent could not set up its channel: is its method the right one for --transport {transport}?"));
    }
    if text.contains("no such file") || text.contains("permission denied") {
        return Some("the agent could not open a path it was given: check {path} and {statedir} in the template".into());
    }
    if stderr.is_empty() && program.contains("qemu-ga") {
        return Some(format!("qemu-ga said nothing: with --transport {transport}, its -m method must match (isa-serial or virtio-serial on pty, unix-listen on unix-listen)"));
    }
    None
}

// ---------------------------------------------------------------------------
// The in-tree reference agent: `qga-harness ref-agent`, the default agent of
// the command line and of the tests.

/// The reference agent served by this executable, over `transport`: always
/// there, nothing to build or install first.
pub fn reference(transport: TransportKind) -> Result<AgentTemplate, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    reference_served_by(&exe.to_string_lossy(), transport).map_err(|e| e.to_string())
}

/// The reference agent served by `harness`, a qga-harness executable (the
/// tests name the one cargo built for them).
pub fn reference_served_by(harness: &str, transport: TransportKind) -> Result<AgentTemplate, TemplateError> {
    let mut words = vec![harness.to_owned(), "ref-agent".to_owned()];
    match transport {
        TransportKind::Pty | TransportKind::VmVirtio | TransportKind::VmIsa => words.extend(["--path".into(), "{path}".into()]),
        TransportKind::UnixListen => words.extend(["--unix-listen".into(), "{path}".into()]),
        TransportKind::Socketpair => {}
    }
    AgentTemplate::from_words(words)
}

impl AgentTemplate {
    /// This template with `extra` words after its own (options of the
    /// reference agent, say).
    pub fn with_extra(&self, extra: &[&str]) -> Result<AgentTemplate, TemplateError> {
        AgentTemplate::from_words(self.words.iter().cloned().chain(extra.iter().map(|w| (*w).to_owned())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell_and_fills_placeholders() {
        let t = AgentTemplate::parse("qemu-ga -m isa-serial -p {path} -t '{statedir}' --x=\"a b\"").unwrap();
        assert!(t.uses_path());
        assert_eq!(
            t.expand(Some(Path::new("/dev/pts/3")), Path::new("/tmp/s")),
            ["qemu-ga", "-m", "isa-serial", "-p", "/dev/pts/3", "-t", "/tmp/s", "--x=a b"]
        );
    }

    #[test]
    fn without_path_the_agent_uses_stdio() {
        let t = AgentTemplate::parse("ref-agent --statedir={statedir}").unwrap();
        assert!(!t.uses_path());
        assert_eq!(t.expand(None, Path::new("/s")), ["ref-agent", "--statedir=/s"]);
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(AgentTemplate::parse("  "), Err(TemplateError::Empty));
        assert!(matches!(AgentTemplate::parse("a 'b"), Err(TemplateError::Quoting(_))));
        assert_eq!(
            AgentTemplate::parse("qemu-ga -p {pth}"),
            Err(TemplateError::UnknownPlaceholder("{pth}".into()))
        );
        assert!(AgentTemplate::parse(r#"agent --json '{"a": 1}'"#).is_ok());
    }

    fn problem(template: &str, transport: TransportKind) -> Option<String> {
        transport_problem(&AgentTemplate::parse(template).unwrap(), transport)
    }

    #[test]
    fn path_with_socketpair_is_a_problem() {
        let p = problem("my-agent --chardev {path}", TransportKind::Socketpair).unwrap();
        assert!(p.contains("socketpair has no channel path") && p.contains("{path}"), "{p}");
        assert_eq!(problem("my-agent", TransportKind::Socketpair), None);
        assert_eq!(problem("my-agent --chardev {path}", TransportKind::Pty), None);
        assert_eq!(problem("my-agent", TransportKind::Pty), None);
    }

    #[test]
    fn unix_listen_needs_a_path() {
        assert!(problem("my-agent", TransportKind::UnixListen).unwrap().contains("needs {path}"));
        assert_eq!(problem("my-agent --listen {path}", TransportKind::UnixListen), None);
    }

    #[test]
    fn qemu_ga_method_must_match_the_transport() {
        use TransportKind::*;
        // The README's three ways are fine.
        assert_eq!(problem("qemu-ga -m isa-serial -p {path} -t {statedir}", Pty), None);
        assert_eq!(problem("/usr/sbin/qemu-ga -m virtio-serial -p {path} -t {statedir}", Pty), None);
        assert_eq!(problem("qemu-ga -m unix-listen -p {path} -t {statedir}", UnixListen), None);
        assert_eq!(problem("qemu-ga --method=unix-listen --path={path}", UnixListen), None);
        // unix-listen over anything else, in every spelling.
        for t in ["qemu-ga -m unix-listen -p {path}", "qemu-ga --method unix-listen -p {path}", "qemu-ga -m=unix-listen -p {path}", "qemu-ga -munix-listen -p {path}", "sudo /usr/sbin/qemu-ga --method=unix-listen -p {path}"] {
            for k in [Pty, Socketpair] {
                assert_eq!(problem(t, k).as_deref(), Some("qemu-ga's -m unix-listen listens on a socket: use --transport unix-listen"), "{t} over {k}");
            }
        }
        // Serial methods over unix-listen.
        for m in ["isa-serial", "virtio-serial"] {
            let p = problem(&format!("qemu-ga -m {m} -p {{path}} -t {{statedir}}"), UnixListen).unwrap();
            assert!(p.contains(&format!("-m {m}")) && p.contains("use --transport pty"), "{p}");
        }
        // -p {path} over socketpair.
        let p = problem("qemu-ga -m isa-serial -p {path}", Socketpair).unwrap();
        assert!(p.starts_with("qemu-ga's -p {path} needs a channel path") && p.contains("--transport pty"), "{p}");
        // No -p: it would open the machine's own device.
        let p = problem("qemu-ga -m isa-serial -t {statedir}", Pty).unwrap();
        assert!(p.contains("isa-serial device") && p.contains("add -p {path}"), "{p}");
        assert!(problem("qemu-ga -t {statedir}", Socketpair).unwrap().contains("virtio-serial device"));
        assert_eq!(problem("qemu-ga -c /etc/my.conf", Pty), None, "a config file may give the path");
        assert!(problem("qemu-ga -m vsock-listen -p 3:1234", Pty).unwrap().contains("no vsock transport"));
        // Not qemu-ga: -m means nothing to us.
        assert_eq!(problem("other-agent -m unix-listen --tty {path}", Pty), None);
        assert_eq!(problem("qemu-ga-like -m unix-listen -p {path}", Pty), None);
    }

    #[test]
    fn the_reference_agent_takes_the_channel_its_transport_gives() {
        let t = |k| reference_served_by("/x/qga harness", k).unwrap();
        assert_eq!(t(TransportKind::Pty).expand(Some(Path::new("/p")), Path::new("/s")), ["/x/qga harness", "ref-agent", "--path", "/p"]);
        assert_eq!(t(TransportKind::UnixListen).expand(Some(Path::new("/p")), Path::new("/s"))[2..], ["--unix-listen", "/p"]);
        assert!(!t(TransportKind::Socketpair).uses_path());
        for k in TransportKind::ALL {
            assert_eq!(transport_problem(&t(k), k), None, "{k}");
        }
        let nonce = t(TransportKind::Socketpair).with_extra(&["--variant", "nonce"]).unwrap();
        assert_eq!(nonce.expand(None, Path::new("/s")), ["/x/qga harness", "ref-agent", "--variant", "nonce"]);
        assert!(reference(TransportKind::Pty).is_ok());
    }
}
