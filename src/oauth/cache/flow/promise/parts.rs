//! The promise model's vocabulary and its fixed parts: the world's sizes
//! and policies, the operations, the gateways' zones (heap tables reached by
//! a handle, as nginx's are by a pointer), a Redis that runs the module's
//! own pipelines, and the gateways' breakers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::key::{introspection_key, KeyScope, KeySecret};
use crate::oauth::cache::{CacheKey, CachePolicy, Lifetime};
use crate::redis::resp::{self, Reply};
use crate::resilience::breaker::{Breaker, BreakerConf};
use crate::shm::table::tests::Zone;
use crate::shm::table::{At, Claim, Live, Lookup};

pub(super) const GATEWAYS: usize = 2;
pub(super) const TOKENS: usize = 3;
pub(super) const START: i64 = 1_800_000_000_000;
/// The locations' policies, all reading the same key (one server, one
/// endpoint): `max_ttl`, `negative_ttl`, `stale_if_error`, `refresh`.
pub(super) const LOCATIONS: [CachePolicy; 3] = [
    CachePolicy {
        max_ttl_ms: 300_000,
        negative_ttl_ms: 0,
        stale_if_error_ms: 0,
        refresh_pct: 0,
    },
    CachePolicy {
        max_ttl_ms: 2_000,
        negative_ttl_ms: 5_000,
        stale_if_error_ms: 20_000,
        refresh_pct: 0,
    },
    CachePolicy {
        max_ttl_ms: 60_000,
        negative_ttl_ms: 0,
        stale_if_error_ms: 120_000,
        refresh_pct: 50,
    },
];
pub(super) const BREAKER: BreakerConf = BreakerConf {
    failures: 3,
    window_ms: 10_000,
    open_ms: 30_000,
};
pub(super) const PREFIX: &[u8] = b"t:";
pub(super) const FLEET_POLICY: &[u8] = b"one server, one endpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdpMode {
    Up,
    /// 500.
    Failing,
    /// 503 with `Retry-After` (seconds).
    Busy(u64),
    /// 429.
    Throttling,
    /// No answer in time.
    Timeout,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Request {
        gw: u8,
        loc: u8,
        token: u8,
    },
    /// What the `n`-th waiting request waits for arrives.
    Deliver {
        n: u8,
    },
    /// The `n`-th background refresh gets its answer.
    Refreshed {
        n: u8,
    },
    /// The `n`-th waiting request goes away: its client left (its marks
    /// come off) or its worker died (they stay).
    Abandon {
        n: u8,
        died: bool,
    },
    Revoke {
        token: u8,
    },
    Purge {
        token: u8,
    },
    Idp(IdpMode),
    /// Redis holds again the `n`-th value ever written to it.
    Replay {
        n: u16,
    },
    FlushRedis,
    Reload {
        gw: u8,
    },
    Advance {
        ms: i64,
    },
}

/// What the IdP knows of a token.
pub(super) struct Token {
    pub(super) exp_ms: i64,
    pub(super) revoked_at: Option<i64>,
}

pub(super) fn token_bytes(token: usize) -> Vec<u8> {
    format!("token-{token}-of-the-model").into_bytes()
}

pub(super) fn key_of(token: usize) -> CacheKey {
    introspection_key(
        &KeySecret([7, 7]),
        &KeyScope([7; 32]),
        &token_bytes(token),
        None,
    )
}

thread_local! {
    /// The gateways' zones, reached by a `Gw` handle as nginx's are by a
    /// zone pointer.
    pub(super) static ZONES: RefCell<Vec<Zone>> = const { RefCell::new(Vec::new()) };
}

/// A gateway's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gw(pub(super) usize);

impl CacheZone for Gw {
    fn lookup<T>(
        self,
        key: &CacheKey,
        at: At,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> (Lookup<T>, Option<i64>) {
        ZONES.with_borrow_mut(|z| {
            let found = z[self.0].lookup_with(key, at, read);
            let cutoff = match found {
                Lookup::Hit(_) | Lookup::Due(_) => None,
                _ => z[self.0].cutoff(key.tag()),
            };
            (found, cutoff)
        })
    }

    fn claim(self, key: &CacheKey, at: At, until_ms: i64) -> Claim {
        ZONES.with_borrow_mut(|z| {
            z[self.0]
                .claim_at(&mut Live, key, at, until_ms)
                .expect("live")
        })
    }
    fn release(self, key: &CacheKey) {
        ZONES.with_borrow_mut(|z| z[self.0].release_with(&mut Live, key).expect("live"))
    }
    fn insert(self, key: &CacheKey, entry: &[u8], life: Lifetime, obtained: i64, now: i64) -> bool {
        ZONES.with_borrow_mut(|z| {
            z[self.0]
                .insert_at(&mut Live, key, entry, life, obtained, now)
                .expect("live")
        })
    }
    fn cutoff(self, tag: &[u8; 8]) -> Option<i64> {
        ZONES.with_borrow_mut(|z| z[self.0].cutoff(*tag))
    }
    fn purge_tag(self, tag: &[u8; 8], cutoff_ms: i64, keep_until_ms: i64) {
        ZONES.with_borrow_mut(|z| {
            z[self.0]
                .purge_at(&mut Live, *tag, cutoff_ms, keep_until_ms)
                .expect("live")
        });
    }
}

/// A token's hash: its fields and until when it lives.
type Hash = (HashMap<Vec<u8>, Vec<u8>>, Option<i64>);

/// A Redis that keeps hashes, their lifetimes, and every value it was sent.
#[derive(Default)]
pub(super) struct Redis {
    pub(super) hashes: HashMap<Vec<u8>, Hash>,
    pub(super) written: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl Redis {
    fn expire(&mut self, now: i64) {
        self.hashes
            .retain(|_, (_, until)| until.is_none_or(|until| now < until));
    }

    /// Runs a pipeline the module built.
    pub(super) fn run(&mut self, commands: &[u8], count: usize, now: i64) {
        self.expire(now);
        for command in resp::read_commands(commands, count) {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            match args.as_slice() {
                [b"HSET", slot, field, value] => {
                    let hash = self.hashes.entry(slot.to_vec()).or_default();
                    hash.0.insert(field.to_vec(), value.to_vec());
                    self.written
                        .push((slot.to_vec(), field.to_vec(), value.to_vec()));
                }
                [b"PEXPIRE", slot, ms, option @ ..] => {
                    let ms: i64 = std::str::from_utf8(ms).unwrap().parse().unwrap();
                    if let Some((_, until)) = self.hashes.get_mut(*slot) {
                        let new = now + ms;
                        *until = match (option, *until) {
                            ([b"NX"], None) | ([], _) => Some(new),
                            ([b"GT"], Some(old)) if new > old => Some(new),
                            (_, old) => old,
                        };
                    }
                }
                [b"HDEL", slot, field] => {
                    if let Some((hash, _)) = self.hashes.get_mut(*slot) {
                        hash.remove(*field);
                    }
                }
                [b"DEL", slot] => {
                    self.hashes.remove(*slot);
                }
                [b"PUBLISH", ..] => {}
                other => panic!("a command the model's Redis does not know: {other:?}"),
            }
        }
    }

    pub(super) fn hget(&mut self, slot: &[u8], field: &[u8], now: i64) -> Reply {
        self.expire(now);
        let value = self.hashes.get(slot).and_then(|(hash, _)| hash.get(field));
        Reply::Bulk(value.cloned())
    }
}

/// One gateway's breaker and what it learnt from the IdP.
pub(super) struct Gateway {
    pub(super) breaker: [AtomicU64; 6],
    /// When this gateway last reported a failure to its breaker.
    pub(super) last_failure: i64,
    /// Per token: when the IdP said "inactive" to a request whose look-up
    /// found an older entry (which the answer then replaced).
    pub(super) inactive_since: [i64; TOKENS],
}

impl Gateway {
    pub(super) fn breaker(&self) -> Breaker<'_> {
        let [failures, last_failure_ms, open_until_ms, probe_ms, refusal_logged_s, openings] =
            &self.breaker;
        Breaker {
            failures,
            last_failure_ms,
            open_until_ms,
            probe_ms,
            refusal_logged_s,
            openings,
        }
    }
}
