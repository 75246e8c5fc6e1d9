//! Reports of a run: the terminal summary and the JSON document (the source
//! of truth that other formats are made from), JUnit XML ([`junit`]) and a
//! Markdown summary ([`markdown`]). Reading run documents back and writing
//! report files and directories: [`read_run`], [`write_dir`].

mod files;
mod findings;
pub mod html;
pub mod junit;
pub mod markdown;
mod tally;
mod terminal;

pub use files::{read_run, write_baseline, write_dir, write_run, DirContents};
pub use findings::{also_seen, covered, findings, not_run, probe_lines, profile_lines, AlsoSeen, Finding, NotRun};
pub use tally::Tally;
pub use terminal::render_terminal;

use crate::baseline::Comparison;
use crate::verdict::{CaseResult, Outcome, RunResult};
use serde::Serialize;
use std::path::Path;

/// Version of the JSON document's layout.
pub const JSON_SCHEMA: &str = "qga-harness/run/4";

/// Merge the runs that are shards of one run (`--shard K/N`: same agent,
/// transport, role and seed) into that run: results in catalogue order,
/// elapsed the longest shard's (they run side by side). Other runs pass
/// through. A case in two shards of one run, or shards of one run that
/// disagree on N, is an error; missing shards are reported, not invented.
pub fn merge_shards(runs: Vec<RunResult>) -> Result<(Vec<RunResult>, Vec<String>), String> {
    let order: Vec<String> = crate::case::load::embedded().map(|c| c.into_iter().map(|c| c.id).collect()).unwrap_or_default();
    let rank = |id: &str| order.iter().position(|o| o == id).unwrap_or(usize::MAX);
    let mut out: Vec<RunResult> = Vec::new();
    let mut parts: Vec<Vec<crate::case::shard::Shard>> = Vec::new();
    let mut notes = Vec::new();
    for run in runs {
        let Some(shard) = run.shard else {
            out.push(run);
            parts.push(Vec::new());
            continue;
        };
        let same = out.iter().position(|m| {
            m.shard.is_some() && m.agent == run.agent && m.transport == run.transport && m.role == run.role && m.seed == run.seed
        });
        match same {
            None => {
                parts.push(vec![shard]);
                out.push(run);
            }
            Some(i) => {
                let m = &mut out[i];
                let n = parts[i][0].n;
                if shard.n != n {
                    return Err(format!("{} over {}: shards of {n} and of {} cannot be merged", run.agent, run.transport, shard.n));
                }
                if let Some(dup) = run.results.iter().find(|r| m.results.iter().any(|x| x.id == r.id)) {
                    return Err(format!("{} over {}: case {} is in two shards", run.agent, run.transport, dup.id));
                }
                parts[i].push(shard);
                m.results.extend(run.results);
                m.elapsed = m.elapsed.max(run.elapsed);
                if m.startup_error.is_none() {
                    m.startup_error = run.startup_error;
                }
            }
        }
    }
    for (m, p) in out.iter_mut().zip(&parts) {
        let Some(first) = p.first() else { continue };
        m.results.sort_by_key(|r| (rank(&r.id), r.id.clone()));
        let missing: Vec<String> = (1..=first.n).filter(|k| !p.iter().any(|s| s.k == *k)).map(|k| format!("{k}/{}", first.n)).collect();
        if missing.is_empty() {
            m.shard = None;
        } else {
            notes.push(format!("{} over {}: shard(s) {} missing; merged what is there", m.agent, m.transport, missing.join(", ")));
        }
    }
    Ok((out, notes))
}

/// Count of each outcome.
pub fn counts(results: &[CaseResult]) -> Vec<(Outcome, usize)> {
    Outcome::ALL.iter().map(|o| (*o, results.iter().filter(|r| r.outcome == *o).count())).collect()
}

/// Text that already has agent bytes escaped, made safe for a terminal:
/// control characters become `\xHH` (backslashes are left alone, so
/// escapes made earlier are not doubled).
pub fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { format!("\\x{:02X}", c as u32) } else { c.to_string() }).collect()
}

pub(crate) fn show_expected(exp: &[Outcome]) -> String {
    if exp.is_empty() {
        "a conforming outcome".into()
    } else {
        exp.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(" or ")
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} more bytes)", &s[..end], s.len() - end)
    }
}

/// Where a VM run's findings were made, in one line: the device, the
/// accelerator and why, and the measured boot and control-port restart.
pub fn vm_line(vm: &crate::vm::VmRunInfo) -> String {
    format!(
        "the agent ran in a QEMU guest over {} ({}: {}); boot {} ms, control-port restart {} ms; kernel {}, image {}",
        vm.device,
        vm.accel,
        sanitize(&vm.accel_reason),
        vm.boot_ms,
        vm.restart_ms,
        sanitize(&vm.kernel),
        sanitize(&vm.image)
    )
}

/// The JSON document of a run.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub schema: &'static str,
    pub harness_version: &'static str,
    pub strict: bool,
    #[serde(flatten)]
    pub run: &'a RunResult,
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Distinct defects, each with the cases that show it, most cases first.
    pub findings: Vec<Finding>,
    /// Defects seen besides cases' primary findings (not counted in
    /// `findings`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_seen: Vec<AlsoSeen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<&'a Comparison>,
}

impl<'a> JsonReport<'a> {
    pub fn new(run: &'a RunResult, baseline: Option<&'a Comparison>, strict: bool) -> JsonReport<'a> {
        JsonReport {
            schema: JSON_SCHEMA,
            harness_version: env!("CARGO_PKG_VERSION"),
            strict,
            run,
            counts: counts(&run.results).into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect(),
            findings: findings(run, strict),
            also_seen: also_seen(run, strict),
            baseline,
        }
    }
}

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, then a rename, so an interrupted run never leaves a
/// half-written report that looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    // NamedTempFile creates 0600; a report is for reading.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
