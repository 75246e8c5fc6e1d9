//! Where the client's ids come from: a seeded stream, so that a run can be
//! reproduced byte for byte (`--seed`), with a width the agent can hold.
//!
//! The schema asks for random 64-bit sync ids, and the start-up probe uses
//! them. An agent found to round ids to doubles or truncate them to 32 bits
//! has that finding reported once; the run then goes on with ids it can
//! echo, so that its other defects still show.

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
    /// Fits an i32.
    Int32,
}

impl IdWidth {
    fn clamp(self, raw: i64) -> i64 {
        match self {
            IdWidth::Full64 => raw,
            IdWidth::Double53 => raw % (1 << 53),
            IdWidth::Int32 => raw % (1 << 31),
        }
    }
}

/// A shared, seeded id stream. Clones share the stream.
#[derive(Debug, Clone)]
pub struct Ids {
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    /// Resync attempts draw from their own stream: how many a resync needs
    /// depends on timing, and must not shift the ids of the requests after.
    resync: Arc<Mutex<rand::rngs::StdRng>>,
    /// Width of sync ids (`$fresh`, resync). Request ids are always below
    /// 2^53 as well.
    pub width: IdWidth,
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
        Ids { width: self.width, ..Ids::seeded(h) }
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

    /// A fresh request id: below 2^53 (agents that hold numbers as doubles
    /// echo it exactly) and within the agent's width.
    pub fn request_id(&self) -> i64 {
        let w = if self.width == IdWidth::Full64 { IdWidth::Double53 } else { self.width };
        w.clamp(self.next()).abs()
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
        let p = Ids::seeded(3).probe_id();
        assert!(p.unsigned_abs() > 1 << 53 && (p as f64) as i64 != p);
        assert_eq!(a.for_case(1, "x/1").sync_id(), b.for_case(1, "x/1").sync_id());
        assert_ne!(a.for_case(1, "x/1").sync_id(), a.for_case(1, "x/2").sync_id());
    }
}
