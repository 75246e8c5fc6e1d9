//! Shards: a deterministic partition of the catalogue (or of a fuzz
//! campaign) into N parts, so that N machines run one run between them.
//! A case belongs to shard `hash(id) mod N + 1`, with a hash fixed here
//! (FNV-1a), so the partition does not change between builds, machines or
//! case orders; the union of the N shards is the catalogue, without overlap.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Shard `k` of `n` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl Shard {
    /// `K/N` with 1 <= K <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?}: write it K/N, e.g. 2/4"))?;
        let (k, n): (u32, u32) = (k.trim().parse().map_err(|_| format!("shard {s:?}: K is not a number"))?, n.trim().parse().map_err(|_| format!("shard {s:?}: N is not a number"))?);
        if n == 0 || k == 0 || k > n {
            return Err(format!("shard {s:?}: need 1 <= K <= N"));
        }
        Ok(Shard { k, n })
    }

    /// Whether the case with this id is in the shard.
    pub fn contains(&self, id: &str) -> bool {
        (fnv1a(id.as_bytes()) % u64::from(self.n)) as u32 + 1 == self.k
    }

    /// The fuzz job streams of this shard, for `jobs` local jobs: the
    /// shard's jobs interleave with the other shards', so no two shards of
    /// one seed share a stream.
    pub fn streams(&self, jobs: usize) -> Vec<u64> {
        (0..jobs as u64).map(|j| u64::from(self.k - 1) + u64::from(self.n) * j).collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        Shard::parse(s)
    }
}

impl Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
        Shard::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition() {
        let ids: Vec<String> = (1..200).map(|i| format!("s{}/{i}", i % 7)).collect();
        for n in [1, 3, 4] {
            let mut seen = 0;
            for k in 1..=n {
                let s = Shard { k, n };
                seen += ids.iter().filter(|id| s.contains(id)).count();
            }
            assert_eq!(seen, ids.len());
        }
        assert_eq!(Shard::parse("2/4"), Ok(Shard { k: 2, n: 4 }));
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let (a, b) = (Shard { k: 1, n: 2 }.streams(3), Shard { k: 2, n: 2 }.streams(3));
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
    }
}
