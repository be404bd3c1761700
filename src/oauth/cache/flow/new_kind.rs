//! A fourth kind of IdP question, made for this test only: what a new
//! kind of call (a JWK Set, a security event stream ...) costs the cache
//! flow. One `Kind` implementation (its value, its failure, how an entry
//! is made and read) and nothing else: the flow, the slot and the zone's
//! table are the ones introspection and exchange use.

use std::collections::HashMap;

use crate::oauth::cache::flow::{step, Answer, Env, Kind, Refreshing, Step};
use crate::oauth::cache::slot::{CacheStatus, Role, Slot, TierEntry, TierNames};
use crate::oauth::cache::{CacheKey, CachePolicy, Lifetime};
use crate::oauth::call::{CallFailure, KindFailure};
use crate::shm::table::tests::Zone;
use crate::shm::table::{At, Claim, Live, Lookup};

/// A key set, as bytes.
struct KeySet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySetFailure {
    Call(CallFailure),
    NotAKeySet,
}

impl From<CallFailure> for KeySetFailure {
    fn from(failure: CallFailure) -> KeySetFailure {
        KeySetFailure::Call(failure)
    }
}

impl KindFailure for KeySetFailure {
    fn call(&self) -> Option<&CallFailure> {
        match self {
            KeySetFailure::Call(failure) => Some(failure),
            KeySetFailure::NotAKeySet => None,
        }
    }
    fn allows_stale(&self) -> bool {
        matches!(self, KeySetFailure::Call(_))
    }
}

impl Kind for KeySet {
    type Value = Vec<u8>;
    type Failure = KeySetFailure;

    fn entry(
        policy: &CachePolicy,
        value: &Vec<u8>,
        _subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)> {
        let fresh_until = now_ms + policy.max_ttl_ms;
        let stale_until = fresh_until + policy.stale_if_error_ms;
        Some((
            value.clone(),
            Lifetime {
                fresh_until,
                stale_until,
            },
        ))
    }
    fn says_revoked(_answer: &Answer<KeySet>) -> bool {
        false
    }
    fn decode(entry: &[u8]) -> Option<Vec<u8>> {
        Some(entry.to_vec())
    }
    fn decode_foreign(entry: &[u8]) -> Option<Vec<u8>> {
        Some(entry.to_vec())
    }
}

thread_local! {
    static ZONE: std::cell::RefCell<Option<Zone>> = const { std::cell::RefCell::new(None) };
}

/// The one zone of this test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TheZone;

impl crate::oauth::cache::flow::CacheZone for TheZone {
    fn lookup<T>(
        self,
        key: &CacheKey,
        at: At,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> (Lookup<T>, Option<i64>) {
        ZONE.with_borrow_mut(|z| {
            let zone = z.as_mut().unwrap();
            let found = zone.lookup_with(key, at, read);
            let cutoff = match found {
                Lookup::Hit(_) | Lookup::Due(_) => None,
                _ => zone.cutoff(key.tag()),
            };
            (found, cutoff)
        })
    }

    fn claim(self, key: &CacheKey, at: At, until_ms: i64) -> Claim {
        ZONE.with_borrow_mut(|z| z.as_mut().unwrap().claim_at(&mut Live, key, at, until_ms))
            .unwrap()
    }
    fn release(self, key: &CacheKey) {
        ZONE.with_borrow_mut(|z| z.as_mut().unwrap().release_with(&mut Live, key))
            .unwrap()
    }
    fn insert(self, key: &CacheKey, entry: &[u8], life: Lifetime, obtained: i64, now: i64) -> bool {
        ZONE.with_borrow_mut(|z| {
            z.as_mut()
                .unwrap()
                .insert_at(&mut Live, key, entry, life, obtained, now)
        })
        .unwrap()
    }
    fn cutoff(self, tag: &[u8; 8]) -> Option<i64> {
        ZONE.with_borrow_mut(|z| z.as_mut().unwrap().cutoff(*tag))
    }
    fn purge_tag(self, tag: &[u8; 8], cutoff_ms: i64, keep_until_ms: i64) {
        ZONE.with_borrow_mut(|z| {
            z.as_mut()
                .unwrap()
                .purge_at(&mut Live, *tag, cutoff_ms, keep_until_ms)
        })
        .unwrap();
    }
}

/// A request for the key set, and what it asked of its surroundings.
#[derive(Default)]
struct Fetch {
    slot: Slot<Answer<KeySet>, TheZone>,
    now: i64,
    calls: usize,
    statuses: HashMap<&'static str, usize>,
}

impl Env for Fetch {
    type Kind = KeySet;
    type Zone = TheZone;

    fn slot(&mut self) -> &mut Slot<Answer<KeySet>, TheZone> {
        &mut self.slot
    }
    fn now_ms(&self) -> i64 {
        self.now
    }
    fn is_subrequest(&self) -> bool {
        false
    }
    fn cache(&self) -> Option<(TheZone, CachePolicy)> {
        let policy = CachePolicy {
            max_ttl_ms: 60_000,
            stale_if_error_ms: 600_000,
            ..CachePolicy::default()
        };
        Some((TheZone, policy))
    }
    fn prepare(&mut self) -> bool {
        true
    }
    fn key(&mut self) -> Option<CacheKey> {
        Some(CacheKey::from_parts(&[b"https://idp.example/jwks"]))
    }
    fn token_tag(&self) -> [u8; 8] {
        *b"jwks-url"
    }
    fn subject_exp(&mut self) -> Option<i64> {
        None
    }
    fn refresh(&mut self, _refreshing: Refreshing<TheZone>) {}
    fn looked_up(&mut self, status: CacheStatus, _count: bool) {
        *self.statuses.entry(status.as_str()).or_default() += 1;
    }
    fn served_from(&mut self, status: CacheStatus) {
        *self.statuses.entry(status.as_str()).or_default() += 1;
    }
    fn coalesced(&mut self) {}
    fn join(&mut self, key: CacheKey) -> Option<Role> {
        self.slot.joined(key, Role::Leader);
        Some(Role::Leader)
    }
    fn wake_in(&mut self, _ms: u64) -> bool {
        true
    }
    fn tier_names(&mut self) -> Option<TierNames> {
        None
    }
    fn read_tier(&mut self) -> bool {
        false
    }
    fn tier_entry_refused(&mut self) {}
    fn write_tier(&mut self, _entry: &TierEntry, _now_ms: i64) {}
    fn forget_in_tier(&mut self) {}
    fn admit(&mut self) -> Result<(), u64> {
        Ok(())
    }
    fn call_idp(&mut self) -> bool {
        self.calls += 1;
        true
    }
    fn hand_over(&mut self, _key: CacheKey, _answer: Option<Answer<KeySet>>) {}
}

/// One request at `now`, the endpoint answering `answer` if asked.
fn fetch(now: i64, answer: Answer<KeySet>) -> Fetch {
    let mut request = Fetch {
        now,
        ..Fetch::default()
    };
    if step(&mut request) == Step::Again {
        request.slot.answered_once(|| answer);
        assert_eq!(step(&mut request), Step::Answered);
    }
    request
}

#[test]
fn a_new_kind_of_question_is_one_kind_implementation() {
    ZONE.with_borrow_mut(|z| *z = Some(Zone::with_key(1 << 20, [9; 16])));
    let keys = b"{\"keys\":[]}".to_vec();
    let first = fetch(1_000_000, Ok(keys.clone()));
    assert_eq!((first.calls, first.statuses.get("MISS")), (1, Some(&1)));
    assert_eq!(first.slot.answer(), Some(&Ok(keys.clone())));
    let again = fetch(1_030_000, Err(KeySetFailure::NotAKeySet));
    assert_eq!(
        (again.calls, again.statuses.get("HIT")),
        (0, Some(&1)),
        "cached"
    );
    // Past its time, with the endpoint down: the last key set stands in.
    let down = fetch(1_100_000, Err(CallFailure::Timeout.into()));
    assert_eq!(down.calls, 1);
    assert_eq!(down.statuses.get("STALE"), Some(&1));
    assert_eq!(down.slot.answer(), Some(&Ok(keys)));
    // Not a key set: the answer is the failure, and nothing is stored.
    let wrong = fetch(1_800_000, Err(KeySetFailure::NotAKeySet));
    assert_eq!(wrong.slot.answer(), Some(&Err(KeySetFailure::NotAKeySet)));
}
