//! The mark a worker leaves on a key in its zone while it asks the IdP, so
//! that the other workers wait for its answer instead of asking too (the
//! table's side is `claim` and `release` in the shared-memory table): how
//! long a mark holds them back, and until when taking it off is the business
//! of the request that made it.

use crate::oauth::cache::key::CacheKey;

/// How long a mark holds the other workers back at most: a worker that died
/// mid-call, or a call that outlasts it, is waited for no longer.
pub const CLAIM_MS: i64 = 5_000;

/// A mark a request made: its key, and when it stops holding the other
/// workers back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub key: CacheKey,
    pub until_ms: i64,
}

impl Mark {
    /// The mark made on `key` at `now_ms`.
    pub fn made(key: CacheKey, now_ms: i64) -> Mark {
        Mark {
            key,
            until_ms: now_ms.saturating_add(CLAIM_MS),
        }
    }

    /// Whether the request that made the mark takes it off at `now_ms`
    /// (its answer was not stored, or the request went away first). Before
    /// the deadline the key's mark is this one: the table refuses every
    /// other worker's claim until then. From the deadline on, another
    /// worker may have marked the key for a call of its own, and taking the
    /// key's mark off would take off that one: an expired mark is left where
    /// it is, and holds nobody back.
    pub fn taken_off_at(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: CacheKey = CacheKey([7; 32]);

    #[test]
    fn a_mark_holds_for_claim_ms() {
        let mark = Mark::made(KEY, 1_000);
        assert_eq!(mark.key, KEY);
        assert_eq!(mark.until_ms, 1_000 + CLAIM_MS);
    }

    #[test]
    fn taken_off_only_before_its_deadline() {
        let mark = Mark::made(KEY, 1_000);
        // Gone at once, or when the IdP answered within the deadline.
        assert!(mark.taken_off_at(1_000));
        assert!(mark.taken_off_at(1_000 + CLAIM_MS - 1));
        // From the deadline on, the key's mark may be another worker's.
        assert!(!mark.taken_off_at(1_000 + CLAIM_MS));
        assert!(!mark.taken_off_at(1_000 + 60 * CLAIM_MS));
    }

    #[test]
    fn a_clock_at_its_end_does_not_wrap() {
        let mark = Mark::made(KEY, i64::MAX - 1);
        assert_eq!(mark.until_ms, i64::MAX);
        assert!(mark.taken_off_at(i64::MAX - 1));
        assert!(!mark.taken_off_at(i64::MAX));
    }
}
