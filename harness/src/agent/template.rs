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
}
