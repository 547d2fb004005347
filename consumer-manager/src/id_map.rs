//! Maps keyed by offsets or lease holder ids, hashed cheaply: a delivery and an ack
//! look a lease up per record, and SipHash was a visible share of that.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes offsets and holder ids with one multiplication rather than SipHash: every
/// key stored is one the server chose (a delivered offset, a holder it numbered), so
/// there is no flooding to defend against, and a lease is looked up per record.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fx's constant: odd, so distinct keys stay distinct; high bits well mixed.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by offsets or holder ids.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_offsets_hash_apart() {
        let mut map: IdMap<u64> = IdMap::default();
        for offset in 0..10_000u64 {
            map.insert(offset, offset * 2);
        }
        assert_eq!(map.len(), 10_000);
        assert!((0..10_000u64).all(|o| map.get(&o) == Some(&(o * 2))));
        let hash = |n: u64| {
            let mut hasher = IdHasher::default();
            hasher.write_u64(n);
            hasher.finish()
        };
        assert_ne!(hash(1), hash(2));
    }
}
