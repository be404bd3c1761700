//! The Redis tier as the cache level between this gateway's zone
//! and the IdP: reading a question's entry on a zone miss, writing the IdP's
//! answer in the background; and the fleet's DPoP replay store, where a
//! proof this gateway accepted is recorded (`redis/replay.rs`). Names and
//! values in Redis are keyed hashes and sealed entries (`redis/fleet.rs`);
//! whatever goes wrong is a miss (for a proof: this gateway's store alone
//! decides, `handler/dpop.rs`).

use core::sync::atomic::{AtomicU8, Ordering};

use crate::conf::{LocationConf, RedisTier};
use crate::handler::ctx::{RequestCtx, TierEntry, TierNames, TierRead};
use crate::handler::question::Question;
use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::flow::TierUpdate;
use crate::redis::call::{self, Failure};
use crate::redis::replay::{self, FleetReplay};
use crate::redis::resp::{self, Reply};
use crate::redis::write::{self, Expiry};
use crate::redis::{fleet, tier_read};

/// The Redis tier a request's questions use: a main request in a location
/// with `auth_oauth2_token_shared_cache` and `auth_oauth2_token_redis`.
pub struct Tier<'a> {
    uri: &'a [u8],
    redis: &'a RedisTier,
}

impl<'a> Tier<'a> {
    /// The tier of `req`'s questions, if it has one.
    pub fn of(req: &Req<'_>, conf: &'a LocationConf) -> Option<Tier<'a>> {
        if !req.is_main() {
            return None;
        }
        let uri = conf.shared_cache_uri()?;
        let redis = req.main_conf()?.redis.as_ref()?;
        Some(Tier { uri, redis })
    }
}

/// What a background refresh keeps to update the Redis tier once its
/// answer is in (`handler/idp_call.rs`), after the client's request: the
/// location's Redis URI and the question's names.
pub struct TierPlace {
    uri: Vec<u8>,
    names: TierNames,
}

impl Tier<'_> {
    /// Where a refresh of the question with `names` updates this tier.
    pub fn place(&self, names: TierNames) -> TierPlace {
        TierPlace {
            uri: self.uri.to_vec(),
            names,
        }
    }
}

/// A refresh's answer is in: the tier gets what the zone kept, or loses
/// the token's entries when the IdP said no (`flow::refreshed`). `req` is
/// the main request, as for the writes of a miss; background calls.
pub fn refreshed(req: &mut Req<'_>, place: &TierPlace, update: TierUpdate, now_ms: i64) {
    let Some(redis) = req.main_conf().and_then(|m| m.redis.as_ref()) else {
        return;
    };
    let tier = Tier {
        uri: &place.uri,
        redis,
    };
    // A call that cannot start is a later miss elsewhere.
    if update.forget {
        let _ = remove(req, &tier, &place.names);
    }
    if let Some(found) = update.write {
        let _ = store(req, &tier, &place.names, &found, now_ms);
    }
}

/// Where the answer to a question about `token` with `policy` lives, under
/// the current key and then the old one: computed once per question.
pub fn names(tier: &Tier<'_>, token: &[u8], policy: &[u8]) -> TierNames {
    let keys = &tier.redis.keys;
    let places = keys
        .iter()
        .map(|k| {
            (
                fleet::token_slot(k, &tier.redis.prefix, token),
                fleet::entry_field(k, policy),
            )
        })
        .collect();
    TierNames { places }
}

/// Asks the Redis tier for the answer at the tier names of the request's
/// question; it goes to the question's slot, then nginx runs the request's
/// phase handler again.
pub fn ask<Q: Question>(req: &mut Req<'_>, tier: &Tier<'_>) -> Result<(), ()> {
    let ctx = RequestCtx::of(req).ok_or(())?;
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
    // lasts while the names are read, which reaches no nginx code.
    let Some(names) = (unsafe { Q::slot(&mut *ctx).tier_names() }) else {
        return Err(());
    };
    let mut commands = Vec::with_capacity(256);
    for (slot, field) in &names.places {
        resp::command(&mut commands, &[b"HGET", slot, field]);
    }
    let count = names.places.len();
    call::start(req, tier.uri, &commands, count, false, read_done::<Q>)
}

/// The reply to [`ask`], for `req`, the request that asked: the first
/// entry that opens and is still fresh.
fn read_done<Q: Question>(req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>) {
    let Some(ctx) = RequestCtx::of(req) else {
        return;
    };
    // SAFETY: `ctx` is the request's context, in its pool; the request
    // waits for this call (NGX_AGAIN), so no other reference to the
    // context is in use.
    let asked = unsafe { &*ctx };
    let policy = req
        .location_conf()
        .and_then(|conf| Q::endpoint(conf, asked).cache);
    // SAFETY: as for `asked`, whose use has ended.
    let slot = Q::slot(unsafe { &mut *ctx });
    let log = req.log();
    let redis = req.main_conf().and_then(|main| main.redis.as_ref());
    let read = match (redis, policy, slot.tier_names(), result) {
        (Some(redis), Some(cache), Some(names), Ok(replies)) => {
            let now = now_ms();
            let note = |failure| call::note_failure(log, &failure);
            tier_read::first_fresh(&redis.keys, &cache.policy, names, replies, now, note)
        }
        // A failure was logged by the call.
        _ => TierRead::Missed,
    };
    slot.tier_said(read);
}

/// What this worker knows of the server's `PEXPIRE NX`/`GT`
/// (`redis::write::Expiry`, by its code): learnt from the replies to its
/// writes.
static EXPIRY: AtomicU8 = AtomicU8::new(0);

/// Keeps the IdP's answer for the fleet: the sealed entry in the token's
/// hash (under the current key), which lives at least until the entry stops
/// being fresh (never past `exp`): a write extends the hash's lifetime,
/// never shortens it, where the server allows (`redis/write.rs`). A
/// background subrequest: the client's request does not wait for it.
pub fn store(
    req: &mut Req<'_>,
    tier: &Tier<'_>,
    names: &TierNames,
    found: &TierEntry,
    now_ms: i64,
) -> Result<(), ()> {
    let lifetime = found.lifetime();
    let Some((slot, field)) = names.places.first() else {
        return Err(());
    };
    if lifetime.fresh_until <= now_ms {
        return Ok(());
    }
    // Relative, so Redis' clock does not matter; from the clock now, not
    // nginx's cached time, which may be some milliseconds behind.
    let ttl_ms = lifetime.fresh_until - clock_ms();
    if ttl_ms <= 0 {
        return Ok(());
    }
    let expiry = Expiry::from_code(EXPIRY.load(Ordering::Relaxed));
    let key = &tier.redis.keys.current;
    let place = (slot.as_slice(), field.as_slice());
    let (commands, replies) = write::entry_commands(expiry, key, place, found, ttl_ms);
    let done = move |req: &mut Req<'_>, result| write_done(req, expiry, result);
    call::start(req, tier.uri, &commands, replies, true, done)
}

/// What the replies to a write teach about the server (kept for this
/// worker's next writes), and the refusals noted (`-OOM`, `-READONLY`, ...).
///
/// `data` is what [`store`] gave: a number, never read through.
fn write_done(req: &mut Req<'_>, sent: Expiry, result: Result<Vec<Reply>, Failure>) {
    let log = req.log();
    // A failure was logged by the call.
    let Ok(replies) = result else {
        return;
    };
    let (next, refused) = write::learn(sent, &replies);
    EXPIRY.store(next.code(), Ordering::Relaxed);
    if let Some(failure) = refused.and_then(call::error_reply) {
        call::note_failure(log, &failure);
    }
}

/// Removes the answer at `names` from the Redis tier (under every key), in
/// the background: the IdP said no to the token since it was written.
pub fn remove(req: &mut Req<'_>, tier: &Tier<'_>, names: &TierNames) -> Result<(), ()> {
    let mut commands = Vec::with_capacity(256);
    for (slot, field) in &names.places {
        resp::command(&mut commands, &[b"HDEL", slot, field]);
    }
    let count = names.places.len();
    call::start(req, tier.uri, &commands, count, true, refusals_noted)
}

/// Records the request's DPoP proof `replay_id` for the fleet, for the
/// locations of `tenant`, until the end of its window (`until_s`): a
/// waited call (`SET NX PX`, `redis/replay.rs`); what the fleet said goes
/// to the request's context, then nginx runs the phase handler again.
pub fn record_proof(
    req: &mut Req<'_>,
    tier: &Tier<'_>,
    tenant: &[u8],
    replay_id: &[u8; 32],
    until_s: i64,
) -> Result<(), ()> {
    let redis = tier.redis;
    let (commands, count) = replay::commands(
        &redis.keys,
        &redis.prefix,
        tenant,
        replay_id,
        until_s,
        clock_ms(),
    );
    let done = move |req: &mut Req<'_>, result| proof_recorded(req, count, result);
    call::start(req, tier.uri, &commands, count, false, done)
}

/// The replies to [`record_proof`] (`count` asked for), for the request that asked.
fn proof_recorded(req: &mut Req<'_>, count: usize, result: Result<Vec<Reply>, Failure>) {
    let Some(ctx) = RequestCtx::of(req) else {
        return;
    };
    let said = match result {
        Ok(replies) => replay::classify(&replies, count),
        // Logged and counted by the call.
        Err(failure) => {
            // SAFETY: `ctx` is the request's context, in its pool; the
            // request waits for this call (NGX_AGAIN), so no other
            // reference to the context is in use.
            unsafe { (*ctx).fleet_said(FleetReplay::Failed(failure)) };
            return;
        }
    };
    if let FleetReplay::Failed(failure) = &said {
        call::note_failure(req.log(), failure);
    }
    // SAFETY: as above: the request's context, which nothing else borrows
    // while the request waits for this call.
    unsafe { (*ctx).fleet_said(said) };
}

/// Notes a removal the tier refused (`-OOM`, `-READONLY`, ...).
fn refusals_noted(req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>) {
    let log = req.log();
    // A failure was logged by the call; refusals (-OOM, -READONLY) are noted here.
    if let Ok(replies) = result {
        if let Some(failure) = replies.iter().find_map(call::error_reply) {
            call::note_failure(log, &failure);
        }
    }
}

/// The time now (ms since the epoch).
fn clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
