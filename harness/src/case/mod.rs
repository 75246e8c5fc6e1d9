//! The catalogue: conformance cases as data.
//!
//! - [`step`]: the step vocabulary, one type shared by case files and the
//!   fuzzer.
//! - [`bytes`]: byte strings in case files (`\xFF` escapes).
//! - [`pattern`]: reply shapes with placeholders.
//! - [`load`]: reading and validating case files, with errors that name the
//!   file, line and field.

pub mod bytes;
pub mod load;
pub mod pattern;
pub mod step;

use crate::transport::TransportKind;
use crate::verdict::Level;
use serde::{Deserialize, Serialize};
pub use step::Step;

/// One conformance case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// `section/N`: stable forever, never reused.
    pub id: String,
    pub title: String,
    pub level: Level,
    /// The requirement, in one sentence.
    pub requirement: String,
    /// Where the requirement comes from: a quote or paraphrase, with the path.
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Commands the agent must offer (per guest-info) for the case to apply;
    /// otherwise the case is UNSUPPORTED.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Start a new agent instance before the case.
    #[serde(default)]
    pub fresh_agent: bool,
    /// Transports the case applies to (empty: all). Elsewhere UNSUPPORTED.
    #[serde(default)]
    pub transports: Vec<TransportKind>,
    /// Budget for the whole case, in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub steps: Vec<Step>,
}

impl Case {
    /// The section: the id up to its last `/`.
    pub fn section(&self) -> &str {
        self.id.rsplit_once('/').map_or(&self.id, |(s, _)| s)
    }
}

/// A case file: one section's cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The section every case id in the file starts with.
    pub section: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}
