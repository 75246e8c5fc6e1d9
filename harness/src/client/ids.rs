//! Where the client's ids come from: a seeded stream, so that a run can be
//! reproduced byte for byte (`--seed`), with a width the agent can hold.
//!
//! The schema asks for random 64-bit sync ids, and the start-up probe uses
//! them. An agent found to round ids to doubles or truncate them to 32 bits
//! has that finding reported once; the run then goes on with ids it can
//! echo, so that its other defects still show. Every random id is drawn
//! within the width the probe proved for its kind (sync or request): an
//! id the agent may mangle would make a case's outcome follow the draw, and
//! two unseeded runs would disagree.

use crate::finding::FailureKind;
use crate::wire::message::IdMatch;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// How many bits of id the agent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdWidth {
    /// Any i64 (the schema's "random 64-bit value").
    #[default]
    Full64,
    /// |id| < 2^53: what a double holds exactly.
    Double53,
    /// |id| < 10^15: what a number printer with 15 significant digits
    /// (`%.15g`) writes exactly.
    #[serde(rename = "below-1e15")]
    Below1e15,
    /// Fits an i32.
    Int32,
}

impl IdWidth {
    /// Narrowest first.
    pub const ALL: [IdWidth; 4] = [IdWidth::Int32, IdWidth::Below1e15, IdWidth::Double53, IdWidth::Full64];

    fn clamp(self, raw: i64) -> i64 {
        match self {
            IdWidth::Full64 => raw,
            IdWidth::Double53 => raw % (1 << 53),
            IdWidth::Below1e15 => raw % 1_000_000_000_000_000,
            IdWidth::Int32 => raw % (1 << 31),
        }
    }

    fn rank(self) -> usize {
        IdWidth::ALL.iter().position(|&w| w == self).unwrap_or(0)
    }

    /// Whether `self` is at most as wide as `other`.
    pub fn within(self, other: IdWidth) -> bool {
        self.rank() <= other.rank()
    }

    /// The narrowest width that holds `id`.
    pub fn of(id: i64) -> IdWidth {
        let m = id.unsigned_abs();
        if i32::try_from(id).is_ok() {
            IdWidth::Int32
        } else if m < 1_000_000_000_000_000 {
            IdWidth::Below1e15
        } else if m < 1 << 53 {
            IdWidth::Double53
        } else {
            IdWidth::Full64
        }
    }

    /// The widest width that holds none of `failed` (ids the agent did not
    /// echo exactly): every id drawn within it is one the agent held at
    /// the magnitudes tried. None when even 32-bit ids failed.
    pub fn widest_without(failed: impl IntoIterator<Item = i64>) -> Option<IdWidth> {
        let narrowest_failure = failed.into_iter().map(IdWidth::of).min_by_key(|w| w.rank());
        match narrowest_failure {
            None => Some(IdWidth::Full64),
            Some(w) => w.rank().checked_sub(1).map(|r| IdWidth::ALL[r]),
        }
    }

    /// For messages and the profile.
    pub fn describe(self) -> &'static str {
        match self {
            IdWidth::Full64 => "any 64-bit id",
            IdWidth::Double53 => "ids below 2^53",
            IdWidth::Below1e15 => "ids below 10^15",
            IdWidth::Int32 => "32-bit ids",
        }
    }
}

/// The finding for an id that came back as `how`.
pub fn id_failure_kind(how: IdMatch) -> FailureKind {
    match how {
        IdMatch::Exact => FailureKind::Other,
        IdMatch::FloatForm => FailureKind::IdFloatForm,
        IdMatch::Rounded => FailureKind::IdRounded,
        IdMatch::FifteenDigits => FailureKind::IdFifteenDigits,
        IdMatch::Truncated32 => FailureKind::IdTruncated,
        IdMatch::Stringified => FailureKind::IdStringified,
        IdMatch::Missing => FailureKind::IdNotEchoed,
        IdMatch::Changed => FailureKind::IdChanged,
    }
}

/// A shared, seeded id stream. Clones share the stream.
#[derive(Debug, Clone)]
pub struct Ids {
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    /// Resync attempts draw from their own stream: how many a resync needs
    /// depends on timing, and must not shift the ids of the requests after.
    resync: Arc<Mutex<rand::rngs::StdRng>>,
    /// Width of sync ids (`$fresh`, resync).
    pub width: IdWidth,
    /// Width of request ids (the `id` member); never wider than 2^53
    /// unless the probe proved more.
    pub request_width: IdWidth,
}

impl Default for Ids {
    fn default() -> Self {
        Ids::seeded(rand::random())
    }
}

impl Ids {
    pub fn seeded(seed: u64) -> Ids {
        Ids {
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            resync: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_5EED_5EED_5EED))),
            width: IdWidth::Full64,
            request_width: IdWidth::Double53,
        }
    }

    /// A new, independent stream for one case: its ids depend only on the
    /// run's seed and the case id, not on how many retries earlier cases
    /// needed.
    pub fn for_case(&self, run_seed: u64, case_id: &str) -> Ids {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ run_seed;
        for b in case_id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ids { width: self.width, request_width: self.request_width, ..Ids::seeded(h) }
    }

    fn next(&self) -> i64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen()
    }

    /// A fresh sync id within the agent's width.
    pub fn sync_id(&self) -> i64 {
        self.width.clamp(self.next())
    }

    /// A fresh id for one resync attempt (its own stream).
    pub fn resync_id(&self) -> i64 {
        self.width.clamp(self.resync.lock().unwrap_or_else(|e| e.into_inner()).gen())
    }

    /// A fresh request id within the request width, not negative.
    pub fn request_id(&self) -> i64 {
        self.request_width.clamp(self.next()).abs()
    }

    /// A fresh positive 32-bit sync id: what the start-up probe retries
    /// with when wide ids came back changed.
    pub fn narrow_id(&self) -> i64 {
        IdWidth::Int32.clamp(self.next()).abs()
    }

    /// A sync id that a double cannot hold (odd, above 2^53): the start-up
    /// probe uses it to tell rounding agents from exact ones.
    pub fn probe_id(&self) -> i64 {
        let r = self.next();
        let magnitude = (r.unsigned_abs() | (1 << 60) | 1) & (i64::MAX as u64);
        if r < 0 { -(magnitude as i64) } else { magnitude as i64 }
    }

    /// Raw pseudo-random bits (garbage seeds and the like).
    pub fn bits(&self) -> u64 {
        self.next() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_widths_hold() {
        let a = Ids::seeded(7);
        let b = Ids::seeded(7);
        let xs: Vec<i64> = (0..20).map(|_| a.sync_id()).collect();
        let ys: Vec<i64> = (0..20).map(|_| b.sync_id()).collect();
        assert_eq!(xs, ys);
        let c = Ids { width: IdWidth::Int32, ..Ids::seeded(1) };
        assert!((0..1000).all(|_| i32::try_from(c.sync_id()).is_ok()));
        let d = Ids { width: IdWidth::Double53, ..Ids::seeded(1) };
        assert!((0..1000).all(|_| d.sync_id().unsigned_abs() < 1 << 53));
        let e = Ids { width: IdWidth::Below1e15, request_width: IdWidth::Int32, ..Ids::seeded(1) };
        assert!((0..1000).all(|_| e.sync_id().unsigned_abs() < 1_000_000_000_000_000 && i32::try_from(e.request_id()).is_ok()));
        assert_eq!(e.for_case(1, "x").request_width, IdWidth::Int32);
        let p = Ids::seeded(3).probe_id();
        assert!(p.unsigned_abs() > 1 << 53 && (p as f64) as i64 != p);
        assert_eq!(a.for_case(1, "x/1").sync_id(), b.for_case(1, "x/1").sync_id());
        assert_ne!(a.for_case(1, "x/1").sync_id(), a.for_case(1, "x/2").sync_id());
    }

    #[test]
    fn the_widest_width_excludes_every_failed_magnitude() {
        assert_eq!(IdWidth::widest_without([]), Some(IdWidth::Full64));
        assert_eq!(IdWidth::widest_without([(1 << 53) + 1, i64::MAX]), Some(IdWidth::Double53));
        assert_eq!(IdWidth::widest_without([(1 << 52) + 1, 8653480422752571, i64::MAX]), Some(IdWidth::Below1e15));
        assert_eq!(IdWidth::widest_without([i64::MAX, 1 << 40]), Some(IdWidth::Int32));
        assert_eq!(IdWidth::widest_without([7]), None);
        assert_eq!(IdWidth::of(-(1 << 31)), IdWidth::Int32);
        assert_eq!(IdWidth::of(999_999_999_999_999), IdWidth::Below1e15);
        assert!(IdWidth::Int32.within(IdWidth::Double53) && !IdWidth::Full64.within(IdWidth::Below1e15));
    }
}
