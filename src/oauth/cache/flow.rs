//! The cache flow every IdP question goes through, in plain Rust: look in
//! the zone, else join the requests of this worker that ask the same, else
//! wait for another worker that asks, else ask the Redis tier, else the IdP;
//! once the answer is in, store it and hand it to the waiters.
//!
//! It decides; it does no I/O. What it needs from around it (the zone, the
//! in-flight table, the Redis tier, the breaker, the IdP, the metrics) is an
//! [`Env`]: nginx's glue in `handler/flow.rs`, and the model test
//! (`flow/promise.rs`) over a heap table, a map for Redis and a scripted IdP.
//! Calls that take time (the Redis tier, the IdP, another worker) only
//! start here and return [`Step::Again`]; their answer goes into the slot,
//! and the next [`step`] goes on from there.
//!
//! Look      -> hit: answered; miss: leader (claims the key for the other
//!              workers) -> AskingRedis (with the Redis tier) or AskingIdp;
//!              waiter -> WaitingForLeader; another worker's mark ->
//!              WaitingForWorker (look again later)
//! AskingRedis -> an entry the reader accepts answers; else AskingIdp
//! answered  -> a failed call gives way to a stale answer (stale_if_error);
//!              the leader stores the answer (an IdP's "no" purges what was
//!              known before) and hands it to its waiters

use crate::oauth::cache::mark::CLAIM_MS;
use crate::oauth::cache::slot::{CacheStatus, Flight, Flow, Role, Slot, TierEntry, TierRead};
use crate::oauth::cache::{CacheKey, CachePolicy, Lifetime, Mark};
use crate::oauth::call::{CallFailure, KindFailure};
use crate::shm::table::{At, Claim, Lookup};

/// How long a purge's cutoff stays in a zone (see `table::purge_tag`): an
/// hour of purges costs one small node each; a cutoff that leaves earlier
/// (a full zone) or later still refuses what it refused, through the
/// table's floor.
pub const PURGE_CUTOFF_KEEP_MS: i64 = 3_600_000;

/// How often a request waiting for another worker's answer looks again.
pub const WORKER_POLL_MS: u64 = 10;

/// A kind of IdP question as the cache sees it: what its answer is, and
/// how an answer becomes an entry and back.
pub trait Kind {
    type Value: Clone;
    type Failure: KindFailure + From<CallFailure>;

    /// The entry to store for `value` and how long it lives, or `None` when
    /// it must not be cached; `subject_exp` is the client token's `exp`,
    /// when introspection told it.
    fn entry(
        policy: &CachePolicy,
        value: &Self::Value,
        subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)>;

    /// Whether the IdP said the token is no good (inactive, `invalid_grant`):
    /// then no older answer about it may stand.
    fn says_revoked(answer: &Answer<Self>) -> bool;

    /// A cached entry as a value; `None` if it cannot be read.
    fn decode(entry: &[u8]) -> Option<Self::Value>;

    /// An entry this gateway did not write (the Redis tier's) as a value,
    /// if it passes the checks a fresh answer gets before it reaches
    /// headers; one that does not is a miss.
    fn decode_foreign(entry: &[u8]) -> Option<Self::Value>;
}

/// What a question's slot holds once answered.
pub type Answer<K> = Result<<K as Kind>::Value, <K as Kind>::Failure>;

/// Whether `answer` is a failure of the IdP that a stale answer may stand in for.
pub fn may_serve_stale<V, F: KindFailure>(answer: &Result<V, F>) -> bool {
    answer.as_ref().is_err_and(F::allows_stale)
}

/// A cache zone as the flow uses it, by a handle that is cheap to copy.
/// Every operation holds the zone's lock for itself; a zone that cannot be
/// used misses, stores nothing and marks nothing.
pub trait CacheZone: Copy {
    /// The entry of `key` for the reader `at`; unless it is served (a hit),
    /// also the token's cutoff, read under the same lock (see `cutoff`).
    fn lookup<T>(
        self,
        key: &CacheKey,
        at: At,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> (Lookup<T>, Option<i64>);
    fn claim(self, key: &CacheKey, at: At, until_ms: i64) -> Claim;
    fn release(self, key: &CacheKey);
    /// Whether the entry was stored (not when obtained at or before the
    /// token's cutoff, nor without room).
    fn insert(
        self,
        key: &CacheKey,
        entry: &[u8],
        lifetime: Lifetime,
        obtained_ms: i64,
        now_ms: i64,
    ) -> bool;
    /// The time at or before which an answer about the token must not be
    /// used; a zone that cannot be used says `Some(i64::MAX)`.
    fn cutoff(self, tag: &[u8; 8]) -> Option<i64>;
    fn purge_tag(self, tag: &[u8; 8], cutoff_ms: i64, keep_until_ms: i64);
}

/// A background refresh of an entry late in its life: what its answer is
/// stored as.
#[derive(Debug, Clone, Copy)]
pub struct Refreshing<Z> {
    /// When the IdP was asked: what its answer is dated.
    pub asked_at_ms: i64,
    pub zone: Z,
    pub key: CacheKey,
    pub policy: CachePolicy,
    /// The subject token's `exp`, which bounds an exchanged token.
    pub subject_exp: Option<i64>,
}

/// What is around one request's question: its slot, the cache, the other
/// requests, the Redis tier, the breaker and the IdP.
pub trait Env {
    type Kind: Kind;
    type Zone: CacheZone;

    fn slot(&mut self) -> &mut Slot<Answer<Self::Kind>, Self::Zone>;
    fn now_ms(&self) -> i64;
    /// A subrequest asks alone, outside the in-flight table.
    fn is_subrequest(&self) -> bool;
    /// The endpoint's cache, if it has one: its zone and this reader's policy.
    fn cache(&self) -> Option<(Self::Zone, CachePolicy)>;
    /// Reads what the question is made of, for this look; `false`: the
    /// gateway failed (out of memory).
    fn prepare(&mut self) -> bool;
    /// The question's cache key (after `prepare`; `None` before).
    fn key(&mut self) -> Option<CacheKey>;
    /// The tag of the client's token (the first 8 bytes of its keys).
    fn token_tag(&self) -> [u8; 8];
    /// The client token's `exp`, when introspection told it.
    fn subject_exp(&mut self) -> Option<i64>;
    /// Asks the IdP again after the client is served; a refresh that cannot
    /// start leaves the entry to expire as usual.
    fn refresh(&mut self, refreshing: Refreshing<Self::Zone>);
    /// What a look-up found, for the metrics (`count`: not a second look
    /// of the same request) and `$oauth2_token_cache_status`.
    fn looked_up(&mut self, status: CacheStatus, count: bool);
    /// The answer came from elsewhere than the look-up said: the Redis
    /// tier (`HitShared`), or a stale entry standing in for a failure.
    fn served_from(&mut self, status: CacheStatus);
    /// The request waits for another's call to the IdP (a metric).
    fn coalesced(&mut self);
    /// Joins this worker's in-flight table for `key` (the slot learns its
    /// role); `None`: the gateway failed.
    fn join(&mut self, key: CacheKey) -> Option<Role>;
    /// Has the request looked again in `ms`; `false`: the gateway failed.
    fn wake_in(&mut self, ms: u64) -> bool;
    /// Where the answer would live in the Redis tier; `None`: no tier.
    fn tier_names(&mut self) -> Option<crate::oauth::cache::slot::TierNames>;
    /// Starts reading the slot's tier names; `false`: it could not start.
    fn read_tier(&mut self) -> bool;
    /// An entry of the Redis tier that opened did not pass the checks of a
    /// fresh answer (logged and counted as undecryptable).
    fn tier_entry_refused(&mut self);
    /// Writes `entry` at the slot's tier names, in the background.
    fn write_tier(&mut self, entry: &TierEntry, now_ms: i64);
    /// Removes what the slot's tier names hold, in the background.
    fn forget_in_tier(&mut self);
    /// Whether the endpoint's breaker lets the call go; `Err` holds the
    /// seconds until it may (the refusal is noted).
    fn admit(&mut self) -> Result<(), u64>;
    /// Starts the call to the IdP; `false`: it could not start (no
    /// memory, no client assertion).
    fn call_idp(&mut self) -> bool;
    /// The leader hands its answer to the requests waiting for `key`.
    fn hand_over(&mut self, key: CacheKey, answer: Option<Answer<Self::Kind>>);
}

/// Where a question stands after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The answer is in the slot.
    Answered,
    /// Waiting for the IdP, the Redis tier, or another request.
    Again,
    /// The gateway failed: out of memory, or a client assertion that could
    /// not be signed.
    Error,
}

/// Moves the question on, as far as it can.
pub fn step<E: Env>(env: &mut E) -> Step {
    loop {
        if !env.slot().is_answered() {
            let step = match env.slot().flow() {
                Flow::Look | Flow::WaitingForWorker => look(env),
                Flow::AskingRedis => tier_answered(env),
                Flow::AskingIdp | Flow::WaitingForLeader => return Step::Again,
            };
            if step != Step::Answered {
                return step;
            }
        }
        if !purged_since_look(env) {
            break;
        }
        // The token was purged since the look-up. A stale answer read
        // before may not stand in for a failure; an IdP's answer that would
        // let the request pass, asked for before, is no answer: the
        // question starts again. ("No" and failures stand.)
        let passes =
            |answer: &Answer<E::Kind>| answer.is_ok() && !<E::Kind as Kind>::says_revoked(answer);
        let slot = env.slot();
        if !(slot.asked_idp() && slot.answer().is_some_and(passes)) {
            slot.forget_stale();
            break;
        }
        if let Some(held) = env.slot().start_over() {
            if held.mark.taken_off_at(env.now_ms()) {
                held.zone.release(&held.mark.key);
            }
        }
    }
    let served_stale = serve_stale(env);
    let Some(Flight { role, key }) = env.slot().flight() else {
        return Step::Answered;
    };
    if let (Role::Leader | Role::Alone, Some((zone, policy))) = (role, env.cache()) {
        store(env, zone, &policy, key, served_stale);
    }
    env.slot().land();
    if role == Role::Leader {
        let answer = env.slot().answer().cloned();
        env.hand_over(key, answer);
    }
    Step::Answered
}

/// Looks in the cache, joins the in-flight table, waits for another
/// worker, or asks the Redis tier or the IdP.
fn look<E: Env>(env: &mut E) -> Step {
    // Looking again while another worker asks is not another look-up.
    let relook = env.slot().start_looking();
    if !env.prepare() {
        return Step::Error;
    }
    if let Some((zone, policy)) = env.cache() {
        let (status, key) = match policy.enabled() {
            true => match env.key() {
                Some(key) => looked(env, zone, policy, key),
                None => return Step::Error,
            },
            false => (CacheStatus::Bypass, None),
        };
        env.looked_up(status, !relook);
        if status == CacheStatus::Hit {
            return Step::Answered;
        }
        if let Some(key) = key {
            if let Some(waits) = lead(env, zone, &policy, key) {
                return waits;
            }
        }
    }
    let in_flight = env.slot().flight().is_some();
    let not_asked = *env.slot().tier_read() == TierRead::NotAsked;
    if in_flight && not_asked {
        if let Some(names) = env.tier_names() {
            env.slot().ask_tier(names);
            if env.read_tier() {
                return Step::Again;
            }
            env.slot().tier_said(TierRead::Missed);
        }
    }
    ask_idp(env)
}

/// The zone's look-up, under this reader's policy: the cache status, and
/// the key when the question is still open.
fn looked<E: Env>(
    env: &mut E,
    zone: E::Zone,
    policy: CachePolicy,
    key: CacheKey,
) -> (CacheStatus, Option<CacheKey>) {
    let now = env.now_ms();
    let at = At::reading(&policy, now, CLAIM_MS);
    let (found, cutoff) = zone.lookup(&key, at, <E::Kind as Kind>::decode);
    env.slot().missed_at_cutoff(cutoff);
    match found {
        Lookup::Hit(value) => {
            env.slot().answered(Ok(value));
            (CacheStatus::Hit, None)
        }
        Lookup::Due(value) => {
            let subject_exp = env.subject_exp();
            env.slot().answered(Ok(value));
            // The client is served now; the IdP is asked after its request.
            if !env.is_subrequest() {
                env.refresh(Refreshing {
                    asked_at_ms: now,
                    zone,
                    key,
                    policy,
                    subject_exp,
                });
            }
            (CacheStatus::Hit, None)
        }
        Lookup::Stale(value, until_ms) => {
            env.slot().keep_stale(Ok(value), until_ms);
            (CacheStatus::Expired, Some(key))
        }
        Lookup::Expired => {
            env.slot().found_expired();
            (CacheStatus::Expired, Some(key))
        }
        Lookup::Miss | Lookup::Pending => (CacheStatus::Miss, Some(key)),
    }
}

/// Becomes the one request of the gateway that asks about `key`: `None`
/// when it does, else what it waits for.
fn lead<E: Env>(env: &mut E, zone: E::Zone, policy: &CachePolicy, key: CacheKey) -> Option<Step> {
    if env.is_subrequest() {
        env.slot().go_alone(key);
        return None;
    }
    // Looking again after another worker's call: still this worker's
    // leader for the key.
    let leads = env.slot().leads(key);
    if !leads {
        match env.join(key) {
            Some(Role::Leader | Role::Alone) => {}
            Some(Role::Waiter) => {
                env.coalesced();
                env.slot().wait_for_leader();
                return Some(Step::Again);
            }
            None => return Some(Step::Error),
        }
    }
    let now = env.now_ms();
    let mark = Mark::made(key, now);
    let at = At::reading(policy, now, CLAIM_MS);
    match zone.claim(&key, at, mark.until_ms) {
        Claim::Claimed => env.slot().claimed(zone, mark),
        Claim::Unmarked => {}
        Claim::Taken => {
            if !leads {
                env.coalesced();
            }
            env.slot().wait_for_worker();
            return Some(match env.wake_in(WORKER_POLL_MS) {
                true => Step::Again,
                false => Step::Error,
            });
        }
    }
    None
}

/// The Redis tier's answer is in: an entry answers the question, unless
/// the token was purged since it was obtained; otherwise the IdP is asked.
fn tier_answered<E: Env>(env: &mut E) -> Step {
    let zone = env.cache().map(|(zone, _)| zone);
    let tag = env.token_tag();
    let value = match env.slot().tier_read() {
        TierRead::Asking => return Step::Again,
        TierRead::Found(found) if purged_since(zone, &tag, found) => None,
        TierRead::Found(found) => match <E::Kind as Kind>::decode_foreign(&found.entry) {
            Some(value) => Some(value),
            None => {
                env.tier_entry_refused();
                None
            }
        },
        TierRead::NotAsked | TierRead::Missed => None,
    };
    if let Some(value) = value {
        env.slot().answered(Ok(value));
        env.served_from(CacheStatus::HitShared);
        return Step::Answered;
    }
    env.slot().tier_said(TierRead::Missed);
    if !env.prepare() {
        return Step::Error;
    }
    ask_idp(env)
}

/// Whether the token was purged (here, or by a purge message from the
/// fleet) at or after `found` was obtained: an answer from the Redis tier
/// that old is refused, whether it was written before the purge or
/// replayed since.
fn purged_since<Z: CacheZone>(zone: Option<Z>, tag: &[u8; 8], found: &TierEntry) -> bool {
    zone.and_then(|zone| zone.cutoff(tag))
        .is_some_and(|cutoff| found.obtained_ms <= cutoff)
}

/// Whether the token was purged since the look-up that what the slot
/// holds comes from (an IdP's answer, a stale answer): its cutoff moved
/// since. A hit holds neither, and costs no second look at the zone.
fn purged_since_look<E: Env>(env: &mut E) -> bool {
    let Some(seen) = env.slot().cutoff_at_look() else {
        return false;
    };
    let Some((zone, _)) = env.cache() else {
        return false;
    };
    zone.cutoff(&env.token_tag()) > seen
}

/// Asks the IdP, unless its circuit breaker is open.
fn ask_idp<E: Env>(env: &mut E) -> Step {
    if let Err(retry_after_s) = env.admit() {
        let open = CallFailure::BreakerOpen(retry_after_s);
        env.slot().answered(Err(open.into()));
        return Step::Answered;
    }
    let now = env.now_ms();
    env.slot().ask_idp(now);
    match env.call_idp() {
        true => Step::Again,
        false => Step::Error,
    }
}

/// When the IdP failed and the cache had an answer past its time within
/// the reader's `stale_if_error`, that answer stands in for the failure;
/// it is not stored again.
fn serve_stale<E: Env>(env: &mut E) -> bool {
    let now = env.now_ms();
    if !env.slot().serve_stale(may_serve_stale, now) {
        return false;
    }
    env.served_from(CacheStatus::Stale);
    true
}

/// The leader stores what answered its question: an entry of the Redis
/// tier as it was, or the IdP's answer (which the Redis tier gets too, in
/// the background), and takes off the mark it held for the other workers
/// when nothing replaced it (while the mark is still its own).
fn store<E: Env>(
    env: &mut E,
    zone: E::Zone,
    policy: &CachePolicy,
    key: CacheKey,
    served_stale: bool,
) {
    let now = env.now_ms();
    let settled = env.slot().settle(served_stale);
    let revoked = env
        .slot()
        .answer()
        .is_some_and(<E::Kind as Kind>::says_revoked);
    if let (true, true, Some(asked_at)) = (revoked, settled.replaces_old, settled.asked_at_ms) {
        // The IdP said no to a token the zone kept an answer for: no answer
        // about it obtained before stands, in any policy, here or in the
        // Redis tier (only then: junk tokens cost nothing).
        zone.purge_tag(
            &key.tag(),
            asked_at - 1,
            now.saturating_add(PURGE_CUTOFF_KEEP_MS),
        );
        if env.slot().tier_names().is_some() {
            env.forget_in_tier();
        }
    }
    let subject_exp = env.subject_exp();
    // What to store, and when the IdP gave it: a purge since then keeps it
    // out (the zone refuses what its cutoff voids).
    let entry = match (settled.from_tier, settled.asked_at_ms) {
        (Some(found), _) => {
            let lifetime = found.lifetime();
            Some((found.entry, lifetime, found.obtained_ms))
        }
        (None, Some(asked_at)) => match env.slot().answer() {
            Some(Ok(value)) => <E::Kind as Kind>::entry(policy, value, subject_exp, now)
                .map(|(entry, lifetime)| (entry, lifetime, asked_at)),
            _ => None,
        },
        (None, None) => None,
    };
    if let (Some(asked_at), Some((entry, lifetime, _))) = (settled.asked_at_ms, &entry) {
        // No purge came since the look-up (`step` asked again otherwise).
        if env.slot().tier_names().is_some() {
            let found = TierEntry {
                obtained_ms: asked_at,
                fresh_until_ms: lifetime.fresh_until,
                stale_until_ms: lifetime.stale_until,
                entry: entry.clone(),
            };
            env.write_tier(&found, now);
        }
    }
    let stored = entry.is_some_and(|(entry, lifetime, obtained)| {
        zone.insert(&key, &entry, lifetime, obtained, now)
    });
    if let (Some(held), false) = (settled.mark, stored) {
        if held.mark.taken_off_at(now) {
            held.zone.release(&held.mark.key);
        }
    }
}

/// What a background refresh's answer asks of the Redis tier: the entry
/// to write (the one this gateway's zone took), and whether the token's
/// entries there go (the IdP said no).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TierUpdate {
    pub write: Option<TierEntry>,
    pub forget: bool,
}

/// A background refresh's answer is in: an answer to keep replaces the
/// entry; the IdP's "no" voids every answer about the token obtained
/// before it; a failure leaves the entry as it is. The Redis tier gets
/// the same ([`TierUpdate`]): only an entry the zone took is written, so
/// one a purge voided since the refresh was asked stays out of it too.
pub fn refreshed<K: Kind, Z: CacheZone>(
    refreshing: &Refreshing<Z>,
    answer: Answer<K>,
    now_ms: i64,
) -> TierUpdate {
    let Refreshing {
        asked_at_ms,
        zone,
        key,
        policy,
        subject_exp,
    } = *refreshing;
    let mut update = TierUpdate::default();
    if K::says_revoked(&answer) {
        let keep = now_ms.saturating_add(PURGE_CUTOFF_KEEP_MS);
        zone.purge_tag(&key.tag(), asked_at_ms - 1, keep);
        update.forget = true;
    }
    let entry = match answer {
        Ok(value) => K::entry(&policy, &value, subject_exp, now_ms),
        Err(_) => None,
    };
    if let Some((entry, lifetime)) = entry {
        if zone.insert(&key, &entry, lifetime, asked_at_ms, now_ms) {
            update.write = Some(TierEntry {
                obtained_ms: asked_at_ms,
                fresh_until_ms: lifetime.fresh_until,
                stale_until_ms: lifetime.stale_until,
                entry,
            });
        }
    }
    update
}

#[cfg(test)]
mod new_kind;
#[cfg(test)]
mod promise;
