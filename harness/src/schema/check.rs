//! One reply checked against the schema: the schema's own findings, which
//! the engine maps to failure kinds and outcomes (the schema sits below the
//! verdicts and knows nothing of them).

use super::{validate, Kind, Schema, Violation, SCHEMA_VERSION};
use crate::wire::message::QAPI_ERROR_CLASSES;
use crate::wire::Reply;

/// What kind of finding a reply is, against the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMissKind {
    /// An error reply whose class QAPI does not define.
    ErrorClassNotQapi,
    /// A valid error reply: the command failed on this machine.
    CommandFailedHere,
    /// The command, or members of its reply, are not in this schema
    /// version (an agent newer than the schema).
    NotInSchema,
    /// The reply breaks the schema.
    Violation,
    /// Members the schema does not have, from an agent no newer than it.
    ExtraMember,
}

/// A reply that does not simply conform, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMiss {
    pub kind: SchemaMissKind,
    pub actual: String,
}

/// A reply to `command` checked against the QGA schema: every violation is
/// listed. `got` is the reply as shown to a reader. `agent_newer`: the
/// agent's version is newer than the schema's, so a member the schema lacks
/// may be one the agent's QEMU added.
pub fn check_reply(command: &str, reply: &Reply, got: &str, agent_newer: bool) -> Result<(), SchemaMiss> {
    let schema = Schema::embedded();
    let miss = |kind, actual: String| SchemaMiss { kind, actual };
    match reply {
        Reply::Error { class, desc, .. } => {
            if !QAPI_ERROR_CLASSES.contains(&class.as_str()) {
                return Err(miss(SchemaMissKind::ErrorClassNotQapi, format!("error class {class}, which QAPI does not define: {got}")));
            }
            Err(miss(SchemaMissKind::CommandFailedHere, format!("{command} failed here ({class}: {})", crate::transcript::escape_bytes(desc.as_bytes()))))
        }
        Reply::Return { value, .. } => {
            let Some(def) = schema.commands.get(command) else {
                return Err(miss(SchemaMissKind::NotInSchema, format!("{command} is not in schema version {SCHEMA_VERSION}; its reply was not checked: {got}")));
            };
            let Some(ty) = &def.returns else {
                // A command that returns nothing answers `{}`.
                return match value.as_object() {
                    Some(m) if m.is_empty() => Ok(()),
                    _ => Err(miss(SchemaMissKind::Violation, format!("return: expected {{}} ({command} returns nothing), got {} ({SCHEMA_VERSION})", value))),
                };
            };
            let violations = validate(schema, value, ty, "return");
            let (extra, hard): (Vec<_>, Vec<_>) = violations.iter().partition(|v| v.kind == Kind::Extra);
            let list = |vs: &[&Violation]| {
                let shown: Vec<String> = vs.iter().take(5).map(|v| v.to_string()).collect();
                let more = if vs.len() > 5 { format!(" (and {} more)", vs.len() - 5) } else { String::new() };
                format!("{}{more}", shown.join("; "))
            };
            if !hard.is_empty() {
                return Err(miss(SchemaMissKind::Violation, format!("{} violation(s): {}", hard.len(), list(&hard))));
            }
            if !extra.is_empty() && agent_newer {
                return Err(miss(SchemaMissKind::NotInSchema, format!("{} member(s) not in schema version {SCHEMA_VERSION}, which is older than the agent: {}", extra.len(), list(&extra))));
            }
            if !extra.is_empty() {
                return Err(miss(SchemaMissKind::ExtraMember, format!("{} member(s) the schema does not have: {}", extra.len(), list(&extra))));
            }
            Ok(())
        }
    }
}
