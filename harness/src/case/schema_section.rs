//! The schema section: cases generated from the QGA schema's read-only
//! commands ([`crate::schema::ALLOW_LIST`]), one per command, rather than
//! written one by one in a case file.

use super::step::{Expect, IdCheck, Send, Step};
use super::{Case, Level, Role};
use crate::schema::{Schema, ALLOW_LIST, SCHEMA_VERSION};

/// The schema section: one case per allow-listed command. A command the agent does not list as
/// enabled in guest-info is UNSUPPORTED; one the schema version does not
/// know is INFO.
pub fn section() -> Vec<Case> {
    ALLOW_LIST
        .iter()
        .enumerate()
        .map(|(i, &command)| {
            let returns = Schema::embedded().commands.get(command).map_or("not in this schema version".to_owned(), |c| c.returns.as_ref().map_or("nothing ({})".into(), |t| t.to_string()));
            Case {
                id: format!("schema/{}", i + 1),
                title: format!("{command}'s reply matches the schema"),
                level: Level::MUST,
                requirement: format!(
                    "{command}, called with no arguments, returns what the schema says ({returns}): every required member, JSON types, integer ranges, enum values and union variants as declared; members the schema lacks are NON-STRICT; an error reply carries a QAPI class and a desc."
                ),
                source: format!("qga/qapi-schema.json as of {SCHEMA_VERSION}: the {command} command"),
                tags: vec!["schema".into()],
                needs: vec![command.into()],
                fresh_agent: false,
                channel: vec![],
                transports: vec![],
                timeout_ms: None,
                role: Role::Agent,
                job: vec![],
                goal: None,
                checks: vec![],
                steps: vec![
                    Step::Send(Send::command(command, None)),
                    Step::Expect(Expect {
                        return_: None,
                        error: None,
                        id: IdCheck::Any,
                        delimited: false,
                        allow_errors_before: false,
                        line: false,
                        count: 1,
                        // fsinfo and disks read /proc and /sys: slower than a ping.
                        within_ms: Some(2000),
                        schema: true,
                    }),
                ],
            }
        })
        .collect()
}
