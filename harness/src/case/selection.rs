//! Which cases a run runs: a catalogue (the embedded one, or case files)
//! narrowed by id globs, tags, levels, role and a shard. `run`, `client`
//! and `list` select through it, and so does the libtest target, so a
//! selection means the same everywhere. A selection that matches no case is
//! a usage error, never an empty run that passes.

use super::shard::Shard;
use super::{load, Case, Role};
use super::Level;
use std::path::PathBuf;

/// A selection of cases; an empty list of ids, tags or levels selects all.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Case files (a directory of *.toml or one file); None: the catalogue
    /// built into this binary.
    pub cases: Option<PathBuf>,
    /// Globs over case ids (e.g. `restart/*`); `/` is an ordinary character.
    pub ids: Vec<String>,
    /// Cases with any of these tags.
    pub tags: Vec<String>,
    /// Cases of any of these levels.
    pub levels: Vec<Level>,
    /// Only cases of this role (agent cases for `run`, client cases for
    /// `client`).
    pub role: Option<Role>,
    /// Only this shard of what the rest selects.
    pub shard: Option<Shard>,
}

/// The cases a [`Selection`] chose, with every id of the catalogue they
/// came from (a baseline may name any of them).
#[derive(Debug, Clone)]
pub struct Selected {
    pub cases: Vec<Case>,
    pub catalogue_ids: Vec<String>,
}

impl Selection {
    /// The selected cases, or a usage error (an unreadable case file, a bad
    /// glob, nothing selected).
    pub fn select(&self) -> Result<Selected, String> {
        let all = match &self.cases {
            Some(p) => load::from_path(p),
            None => load::embedded(),
        }
        .map_err(|e| e.to_string())?;
        let catalogue_ids = all.iter().map(|c| c.id.clone()).collect();
        let mut globs = globset::GlobSetBuilder::new();
        for g in &self.ids {
            globs.add(globset::GlobBuilder::new(g).literal_separator(false).build().map_err(|e| format!("--case {g:?}: {e}"))?);
        }
        let globs = globs.build().map_err(|e| e.to_string())?;
        let matched: Vec<Case> = all
            .into_iter()
            .filter(|c| self.ids.is_empty() || globs.is_match(&c.id))
            .filter(|c| self.tags.is_empty() || c.tags.iter().any(|t| self.tags.contains(t)))
            .filter(|c| self.levels.is_empty() || self.levels.contains(&c.level))
            .filter(|c| self.shard.is_none_or(|s| s.contains(&c.id)))
            .collect();
        if matched.is_empty() {
            return Err(format!("no case selected (--case {:?}, --tag {:?}): `qga-harness list` shows the catalogue", self.ids, self.tags));
        }
        let Some(role) = self.role else {
            return Ok(Selected { cases: matched, catalogue_ids });
        };
        let n = matched.len();
        let cases: Vec<Case> = matched.into_iter().filter(|c| c.role == role).collect();
        if cases.is_empty() {
            let (this, other) = match role {
                Role::Agent => ("agent", "`qga-harness client` runs client cases"),
                Role::Client => ("client", "`qga-harness run` runs agent cases"),
            };
            return Err(format!("no {this} case selected ({n} case(s) of the other role matched: {other})"));
        }
        Ok(Selected { cases, catalogue_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &Selection) -> Vec<String> {
        s.select().unwrap().cases.into_iter().map(|c| c.id).collect()
    }

    #[test]
    fn every_filter_narrows_the_embedded_catalogue() {
        let all = Selection::default().select().unwrap();
        assert_eq!(all.cases.len(), all.catalogue_ids.len());
        let agent = ids(&Selection { role: Some(Role::Agent), ..Selection::default() });
        let client = ids(&Selection { role: Some(Role::Client), ..Selection::default() });
        assert!(!agent.is_empty() && !client.is_empty());
        assert_eq!(agent.len() + client.len(), all.cases.len());
        let one = &all.cases[0];
        let by_glob = ids(&Selection { ids: vec![format!("{}*", one.id.split('/').next().unwrap())], ..Selection::default() });
        assert!(by_glob.contains(&one.id) && by_glob.len() < all.cases.len());
        let musts = Selection { levels: vec![Level::MUST], ..Selection::default() }.select().unwrap();
        assert!(musts.cases.iter().all(|c| c.level == Level::MUST) && musts.cases.len() < all.cases.len());
        // The shards partition the selection.
        let shards: usize = (1..=3).map(|k| ids(&Selection { shard: Some(Shard { k, n: 3 }), ..Selection::default() }).len()).sum();
        assert_eq!(shards, all.cases.len());
        // Narrowed or not, a baseline may name any case of the catalogue.
        assert_eq!(Selection { role: Some(Role::Client), ..Selection::default() }.select().unwrap().catalogue_ids, all.catalogue_ids);
    }

    #[test]
    fn selecting_nothing_is_a_usage_error() {
        let e = Selection { ids: vec!["no-such/*".into()], ..Selection::default() }.select().unwrap_err();
        assert!(e.starts_with("no case selected") && e.contains("no-such/*"), "{e}");
        let e = Selection { ids: vec!["[".into()], ..Selection::default() }.select().unwrap_err();
        assert!(e.starts_with("--case \"[\""), "{e}");
        let client = Selection { role: Some(Role::Client), ..Selection::default() }.select().unwrap();
        let id = client.cases[0].id.clone();
        let e = Selection { ids: vec![id], role: Some(Role::Agent), ..Selection::default() }.select().unwrap_err();
        assert!(e.starts_with("no agent case selected (1 case(s) of the other role matched"), "{e}");
    }
}
