//! The Redis tier as the cache level between this gateway's zone
//! and the IdP: reading a question's entry on a zone miss, writing the IdP's
//! answer in the background. Names and values in Redis are keyed hashes and
//! sealed entries (`oauth/fleet`); whatever goes wrong is a miss.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, Ordering};

use ngx::ffi::{ngx_http_request_t, ngx_log_t};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use crate::conf::{LocationConf, RedisTier};
use crate::handler::ctx::{RequestCtx, TierEntry, TierNames, TierRead};
use crate::handler::question::Question;
use crate::handler::raw;
use crate::module::Module;
use crate::redis::call::{self, Failure};
use crate::redis::resp::{self, Reply};
use crate::redis::write::{self, Expiry};
use crate::redis::{fleet, tier_read};

/// The Redis tier a request's questions use: a main request in a location
/// with `auth_oauth2_token_shared_cache` and `auth_oauth2_token_redis`.
pub struct Tier<'a> {
    uri: &'a [u8],
    redis: &'a RedisTier,
}

/// # Safety
/// `r` must be a live request.
pub unsafe fn tier<'a>(r: *mut ngx_http_request_t, conf: &'a LocationConf) -> Option<Tier<'a>> {
    // SAFETY: r is a live request (this function's contract).
    unsafe {
        if r != (*r).main {
            return None;
        }
        let uri = conf.shared_cache_uri()?;
        let redis = Module::main_conf(&*r)?.redis.as_ref()?;
        Some(Tier { uri, redis })
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

/// Asks the Redis tier for the answer at `ctx.tier_names`; it goes to
/// the question's slot, then nginx runs the request's phase handler again.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
pub unsafe fn read<Q: Question>(
    r: *mut ngx_http_request_t,
    tier: &Tier<'_>,
    ctx: *mut RequestCtx,
) -> Result<(), ()> {
    // SAFETY: ctx is r's context (this function's contract).
    let Some(names) = (unsafe { Q::slot(&mut *ctx).tier_names() }) else {
        return Err(());
    };
    let mut commands = Vec::with_capacity(256);
    for (slot, field) in &names.places {
        resp::command(&mut commands, &[b"HGET", slot, field]);
    }
    let count = names.places.len();
    // SAFETY: as above; the callback runs while r and its pool live.
    unsafe {
        call::start(
            r,
            tier.uri,
            &commands,
            count,
            false,
            Some(read_done::<Q>),
            ctx.cast(),
        )
    }
}

/// The reply to [`read`]: the first entry that opens and is still fresh.
///
/// # Safety
/// Called by `redis::call` with the main request and its context.
unsafe fn read_done<Q: Question>(
    r: *mut ngx_http_request_t,
    data: *mut c_void,
    result: Result<Vec<Reply>, Failure>,
) {
    let ctx = data.cast::<RequestCtx>();
    // SAFETY: r is the live main request whose context is `data`.
    unsafe {
        let log = (*(*r).connection).log;
        let redis = Module::main_conf(&*r).and_then(|main| main.redis.as_ref());
        let policy = Module::location_conf(&*r).and_then(|conf| Q::endpoint(conf).cache);
        let read = match (redis, policy, Q::slot(&mut *ctx).tier_names(), result) {
            (Some(redis), Some(cache), Some(names), Ok(replies)) => {
                let now = raw::now_ms();
                let note = |failure| call::note_failure(log, &failure);
                tier_read::first_fresh(
                    &redis.keys,
                    &cache.policy,
                    names,
                    replies,
                    Q::sound,
                    now,
                    note,
                )
            }
            // A failure was logged by the call.
            _ => TierRead::Missed,
        };
        Q::slot(&mut *ctx).tier_said(read);
    }
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
///
/// # Safety
/// `r` must be the live main request.
pub unsafe fn write(
    r: *mut ngx_http_request_t,
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
    let sealed = fleet::seal_entry(
        &tier.redis.keys.current,
        slot,
        field,
        found.obtained_ms,
        lifetime.fresh_until,
        lifetime.stale_until,
        &found.entry,
    );
    // Relative, so Redis' clock does not matter; from the clock now, not
    // nginx's cached time, which may be some milliseconds behind.
    let ttl_ms = lifetime.fresh_until - clock_ms();
    if ttl_ms <= 0 {
        return Ok(());
    }
    let expiry = Expiry::from_code(EXPIRY.load(Ordering::Relaxed));
    let (commands, replies) = write::commands(expiry, slot, field, &sealed, ttl_ms);
    // SAFETY: r is the live main request (this function's contract). The
    // callback's data is how the write was sent, as a number, never read
    // through.
    unsafe {
        call::start(
            r,
            tier.uri,
            &commands,
            replies,
            true,
            Some(write_done),
            usize::from(expiry.code()) as *mut c_void,
        )
    }
}

/// What the replies to a write teach about the server (kept for this
/// worker's next writes), and the refusals noted (`-OOM`, `-READONLY`, ...).
///
/// # Safety
/// Called by `redis::call` with a live request, and the data [`write`] gave.
unsafe fn write_done(
    r: *mut ngx_http_request_t,
    data: *mut c_void,
    result: Result<Vec<Reply>, Failure>,
) {
    // SAFETY: r is a live request.
    let log: *mut ngx_log_t = unsafe { (*(*r).connection).log };
    // A failure was logged by the call.
    let Ok(replies) = result else {
        return;
    };
    let sent = Expiry::from_code(u8::try_from(data as usize).unwrap_or(0));
    let (next, refused) = write::learn(sent, &replies);
    EXPIRY.store(next.code(), Ordering::Relaxed);
    if let Some(failure) = refused.and_then(call::error_reply) {
        call::note_failure(log, &failure);
    }
}

/// Removes the answer at `names` from the Redis tier (under every key), in
/// the background: the IdP said no to the token since it was written.
///
/// # Safety
/// `r` must be the live main request.
pub unsafe fn forget(
    r: *mut ngx_http_request_t,
    tier: &Tier<'_>,
    names: &TierNames,
) -> Result<(), ()> {
    let mut commands = Vec::with_capacity(256);
    for (slot, field) in &names.places {
        resp::command(&mut commands, &[b"HDEL", slot, field]);
    }
    // SAFETY: r is the live main request (this function's contract).
    unsafe {
        call::start(
            r,
            tier.uri,
            &commands,
            names.places.len(),
            true,
            Some(refusals_noted),
            core::ptr::null_mut(),
        )
    }
}

/// Notes a removal the tier refused (`-OOM`, `-READONLY`, ...).
///
/// # Safety
/// Called by `redis::call` with a live request.
unsafe fn refusals_noted(
    r: *mut ngx_http_request_t,
    _data: *mut c_void,
    result: Result<Vec<Reply>, Failure>,
) {
    // SAFETY: r is a live request.
    let log: *mut ngx_log_t = unsafe { (*(*r).connection).log };
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
