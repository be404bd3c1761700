//! One cache flow for every question the module asks the IdP (introspection
//! and token exchange): look in the cache, else join the requests of this
//! worker that ask the same, else ask; when the answer is in, store it and
//! hand it to the waiters.
//!
//! Look      -> hit: answered; miss: leader -> AskingIdp (subrequest),
//!              waiter -> WaitingForLeader; no cache: AskingIdp
//! AskingIdp / WaitingForLeader -> NGX_AGAIN until the answer is in (the
//!              subrequest's callback or the leader put it in the context)
//!              (with the Redis tier, the leader asks it first: AskingRedis;
//!              an entry there answers, and is stored in this zone)
//! answered  -> the leader stores it (and the IdP's answer in the Redis
//!              tier, in the background) and wakes its waiters

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleMainConf;

use crate::conf::{CacheConf, Endpoint, LocationConf};
use crate::handler::ctx::{CacheStatus, Flight, Flow, RequestCtx, Role, TierEntry, TierRead};
use crate::handler::idp_call::{self, CallNotMade, Refresh};
use crate::handler::question::{may_serve_stale, Question};
use crate::handler::{inflight, redis_tier};
use crate::metrics::LookupResult;
use crate::module::Module;
use crate::oauth::cache::mark::CLAIM_MS;
use crate::oauth::cache::{CacheKey, Mark};
use crate::oauth::call::CallFailure;
use crate::resilience::breaker::Admit;
use crate::shm::table::{At, Claim, Lookup};
use crate::shm::zone;

/// Where a question stands after one step.
pub enum Step {
    /// The answer is in the context's slot.
    Answered,
    /// Waiting for the IdP, or for the request that asks it.
    Again,
    /// The gateway failed: nginx out of memory, or a client assertion that
    /// could not be signed (`CallNotMade`).
    Error,
}

/// How often a request waiting for another worker's answer looks again.
const WORKER_POLL_MS: u64 = 10;

pub use crate::handler::raw::now_ms;

/// Moves the question of the request's current stage on, as far as it can.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn step<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    // SAFETY: r and ctx as this function requires; no reference to the
    // context is held across a call that may run variable getters.
    unsafe {
        if !Q::slot(&mut *ctx).is_answered() {
            let step = match Q::slot(&mut *ctx).flow() {
                Flow::Look | Flow::WaitingForWorker => look::<Q>(r, conf, ctx),
                Flow::AskingRedis => tier_answered::<Q>(r, conf, ctx),
                Flow::AskingIdp | Flow::WaitingForLeader => return Step::Again,
            };
            match step {
                Step::Answered => {}
                other => return other,
            }
        }
        let served_stale = serve_stale::<Q>(r, conf, ctx);
        let Some(Flight { role, key }) = Q::slot(&mut *ctx).flight() else {
            return Step::Answered;
        };
        if let (Role::Leader | Role::Alone, Some(cache)) = (role, &Q::endpoint(conf).cache) {
            store::<Q>(r, conf, ctx, cache, key, served_stale);
        }
        Q::slot(&mut *ctx).land();
        if role == Role::Leader {
            let answer = Q::slot(&mut *ctx).answer().cloned();
            inflight::finish(key, |waiter| {
                Q::slot(&mut *waiter).delivered(answer.clone());
            });
        }
        Step::Answered
    }
}

/// The leader stores what answered its question: an entry of the Redis
/// tier as it was, or the IdP's answer (which the Redis tier gets too, in
/// the background), and takes off the mark it held for the other workers
/// when nothing replaced it (while the mark is still its own).
///
/// # Safety
/// As for [`step`].
unsafe fn store<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
    cache: &CacheConf,
    key: CacheKey,
    served_stale: bool,
) {
    // SAFETY: as for `step`; the zone was set up by the directive and
    // initialised by nginx.
    unsafe {
        let now = now_ms();
        let settled = Q::slot(&mut *ctx).settle(served_stale);
        let asked = settled.asked_at_ms.is_some();
        let revoked = asked && Q::slot(&mut *ctx).answer().is_some_and(Q::says_revoked);
        if let (true, true, Some(asked_at)) = (revoked, settled.replaces_old, settled.asked_at_ms) {
            // The IdP said no to a token the zone kept an answer for: no
            // answer about it obtained before stands, in any policy, here
            // or in the Redis tier (only then: junk tokens cost nothing).
            let keep = now.saturating_add(zone::PURGE_CUTOFF_KEEP_MS);
            zone::purge_tag(cache.zone.cast(), &key.tag(), asked_at - 1, keep);
            if let (Some(tier), Some(names)) =
                (redis_tier::tier(r, conf), Q::slot(&mut *ctx).tier_names())
            {
                let _ = redis_tier::forget(r, &tier, names);
            }
        }
        let subject_exp = (*ctx).active_claims().and_then(|claims| claims.exp);
        // What to store, and when the IdP gave it: a purge since then
        // keeps it out (the zone refuses what its cutoff voids).
        let entry = match (settled.from_tier, settled.asked_at_ms) {
            (Some(found), _) => {
                let lifetime = found.lifetime();
                Some((found.entry, lifetime, found.obtained_ms))
            }
            (None, Some(asked_at)) => match Q::slot(&mut *ctx).answer() {
                Some(Ok(value)) => Q::entry(&cache.policy, value, subject_exp, now)
                    .map(|(entry, lifetime)| (entry, lifetime, asked_at)),
                _ => None,
            },
            (None, None) => None,
        };
        if let (Some(asked_at), Some((entry, lifetime, _))) = (settled.asked_at_ms, &entry) {
            // An answer asked for before a purge of the token (a call in
            // flight) goes nowhere: the zone refuses it below, and the Redis
            // tier does not get it.
            let voided = zone::cutoff(cache.zone.cast(), &key.tag()).is_some_and(|c| asked_at <= c);
            if let (Some(tier), Some(names), false) = (
                redis_tier::tier(r, conf),
                Q::slot(&mut *ctx).tier_names(),
                voided,
            ) {
                let found = TierEntry {
                    obtained_ms: asked_at,
                    fresh_until_ms: lifetime.fresh_until,
                    stale_until_ms: lifetime.stale_until,
                    entry: entry.clone(),
                };
                // A write that cannot start is a later miss elsewhere.
                let _ = redis_tier::write(r, &tier, names, &found, now);
            }
        }
        let stored = entry.is_some_and(|(entry, lifetime, obtained)| {
            zone::insert(cache.zone.cast(), &key, &entry, lifetime, obtained, now)
        });
        if let (Some(held), false) = (settled.mark, stored) {
            if held.mark.taken_off_at(now) {
                zone::release(held.zone, &held.mark.key);
            }
        }
    }
}

/// When the IdP failed and the cache had an answer past its time within
/// `stale_if_error`, that answer stands in for the failure: the request is
/// served, `$oauth2_token_cache_status` is STALE, and it is not stored
/// again. Logged once a minute at most per worker, not per request.
///
/// # Safety
/// As for [`step`].
unsafe fn serve_stale<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> bool {
    // SAFETY: r is the live request nginx runs the phase handler for, and
    // ctx its context in r's pool (`step`'s contract, passed down unchanged);
    // no `&mut` to the context is held across a call that runs variable getters.
    unsafe {
        if !Q::slot(&mut *ctx).serve_stale(may_serve_stale) {
            return false;
        }
        if Q::reports_cache_status(conf) {
            (*ctx).served_from(CacheStatus::Stale);
        }
        if let (Some(main), Some(cache)) = (Module::main_conf(&*r), &Q::endpoint(conf).cache) {
            main.counters
                .add(cache.metrics.lookup(LookupResult::Stale), 1);
        }
        let now = now_ms() / 1000;
        if LAST_STALE_LOG.get() + 60 <= now {
            LAST_STALE_LOG.set(now);
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_WARN,
                (*(*r).connection).log,
                "auth_oauth2_token: the IdP failed; serving cached answers past their time (stale_if_error)"
            );
        }
        true
    }
}

thread_local! {
    /// When this worker last logged serving stale answers (s since the epoch).
    static LAST_STALE_LOG: core::cell::Cell<i64> = const { core::cell::Cell::new(i64::MIN / 2) };
}

/// Looks in the cache, joins the in-flight table or asks the IdP.
///
/// # Safety
/// As for [`step`].
unsafe fn look<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    // SAFETY: r is the live request nginx runs the phase handler for, and
    // ctx its context in r's pool (`step`'s contract, passed down unchanged);
    // no `&mut` to the context is held across a call that runs variable getters.
    unsafe {
        // Looking again while another worker asks is not another look-up.
        let relook = Q::slot(&mut *ctx).start_looking();
        let Some(inputs) = Q::inputs(r, conf) else {
            return Step::Error;
        };
        if let Some(cache) = &Q::endpoint(conf).cache {
            let (status, key) = match cache.policy.enabled() {
                true => {
                    let key = Q::key(conf, (*ctx).token(), &inputs);
                    // SAFETY: the zone was set up by the directive and initialised by nginx.
                    let at = At::reading(&cache.policy, now_ms(), CLAIM_MS);
                    match zone::lookup(cache.zone.cast(), &key, at, Q::decode) {
                        Lookup::Hit(value) => {
                            Q::slot(&mut *ctx).answered(Ok(value));
                            (CacheStatus::Hit, None)
                        }
                        Lookup::Due(value) => {
                            let subject_exp = (*ctx).active_claims().and_then(|c| c.exp);
                            Q::slot(&mut *ctx).answered(Ok(value));
                            // The client is served now; the IdP is asked
                            // after its request. A refresh that cannot start
                            // leaves the entry to expire as usual.
                            if r == (*r).main {
                                let body = Q::body((*ctx).token(), &inputs);
                                let refresh = Refresh {
                                    asked_at_ms: now_ms(),
                                    zone: cache.zone,
                                    key,
                                    policy: cache.policy,
                                    call: Q::call(conf),
                                    subject_exp,
                                };
                                let _ = idp_call::refresh::<Q>(
                                    r,
                                    conf,
                                    Q::endpoint(conf),
                                    body,
                                    refresh,
                                );
                            }
                            (CacheStatus::Hit, None)
                        }
                        Lookup::Stale(value) => {
                            Q::slot(&mut *ctx).keep_stale(Ok(value));
                            (CacheStatus::Expired, Some(key))
                        }
                        Lookup::Expired => {
                            Q::slot(&mut *ctx).found_expired();
                            (CacheStatus::Expired, Some(key))
                        }
                        Lookup::Miss | Lookup::Pending => (CacheStatus::Miss, Some(key)),
                    }
                }
                false => (CacheStatus::Bypass, None),
            };
            let counters = Module::main_conf(&*r).map(|main| &main.counters);
            if let (Some(counters), false) = (counters, relook) {
                let result = match status {
                    CacheStatus::Hit => LookupResult::Hit,
                    CacheStatus::Miss => LookupResult::Miss,
                    CacheStatus::Expired => LookupResult::Expired,
                    CacheStatus::Bypass => LookupResult::Bypass,
                    CacheStatus::Stale => LookupResult::Stale,
                    CacheStatus::HitShared => LookupResult::SharedHit,
                };
                counters.add(cache.metrics.lookup(result), 1);
            }
            if Q::reports_cache_status(conf) {
                (*ctx).looked_up(status);
            }
            if status == CacheStatus::Hit {
                return Step::Answered;
            }
            if let Some(key) = key.filter(|_| r != (*r).main) {
                Q::slot(&mut *ctx).go_alone(key);
            } else if let Some(key) = key {
                // Looking again after another worker's call: still this
                // worker's leader for the key.
                let leads = Q::slot(&mut *ctx).leads(key);
                if !leads {
                    match inflight::join::<Q>(r, ctx, key) {
                        Some(Role::Leader | Role::Alone) => {}
                        Some(Role::Waiter) => {
                            if let Some(counters) = counters {
                                counters.add(cache.metrics.coalesced_wait(), 1);
                            }
                            Q::slot(&mut *ctx).wait_for_leader();
                            return Step::Again;
                        }
                        None => return Step::Error,
                    }
                }
                let now = now_ms();
                let mark = Mark::made(key, now);
                let at = At::reading(&cache.policy, now, CLAIM_MS);
                match zone::claim(cache.zone.cast(), &key, at, mark.until_ms) {
                    Claim::Claimed => Q::slot(&mut *ctx).claimed(cache.zone.cast(), mark),
                    Claim::Unmarked => {}
                    Claim::Taken => {
                        if !leads {
                            if let Some(counters) = counters {
                                counters.add(cache.metrics.coalesced_wait(), 1);
                            }
                        }
                        Q::slot(&mut *ctx).wait_for_worker();
                        return match inflight::wake_in(r, ctx, WORKER_POLL_MS) {
                            Some(()) => Step::Again,
                            None => Step::Error,
                        };
                    }
                }
            }
        }
        let in_flight = Q::slot(&mut *ctx).flight().is_some();
        let not_asked = *Q::slot(&mut *ctx).tier_read() == TierRead::NotAsked;
        if let (Some(tier), true, true) = (redis_tier::tier(r, conf), in_flight, not_asked) {
            let policy = Q::fleet_policy(conf, &inputs);
            let names = redis_tier::names(&tier, (*ctx).token(), &policy);
            Q::slot(&mut *ctx).ask_tier(names);
            match redis_tier::read::<Q>(r, &tier, ctx) {
                Ok(()) => return Step::Again,
                Err(()) => Q::slot(&mut *ctx).tier_said(TierRead::Missed),
            }
        }
        ask_idp::<Q>(r, conf, ctx, &inputs)
    }
}

/// The Redis tier's answer is in: an entry answers the question (and
/// fills this gateway's zone when it is stored); otherwise the IdP is asked.
///
/// # Safety
/// As for [`step`].
unsafe fn tier_answered<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    // SAFETY: r is the live request nginx runs the phase handler for, and
    // ctx its context in r's pool (`step`'s contract, passed down unchanged);
    // no `&mut` to the context is held across a call that runs variable getters.
    unsafe {
        let value = match Q::slot(&mut *ctx).tier_read() {
            TierRead::Asking => return Step::Again,
            TierRead::Found(found) if purged_since(Q::endpoint(conf), (*ctx).token(), found) => {
                None
            }
            TierRead::Found(found) => Q::decode(&found.entry),
            TierRead::NotAsked | TierRead::Missed => None,
        };
        if let Some(value) = value {
            Q::slot(&mut *ctx).answered(Ok(value));
            if Q::reports_cache_status(conf) {
                (*ctx).served_from(CacheStatus::HitShared);
            }
            if let (Some(main), Some(cache)) = (Module::main_conf(&*r), &Q::endpoint(conf).cache) {
                main.counters
                    .add(cache.metrics.lookup(LookupResult::SharedHit), 1);
            }
            return Step::Answered;
        }
        Q::slot(&mut *ctx).tier_said(TierRead::Missed);
        let Some(inputs) = Q::inputs(r, conf) else {
            return Step::Error;
        };
        ask_idp::<Q>(r, conf, ctx, &inputs)
    }
}

/// Whether the token was purged (here, or by a purge message from the
/// fleet) at or after `obtained_ms`: an answer from the Redis tier that old
/// is refused, whether it was written before the purge or replayed since.
fn purged_since(endpoint: &Endpoint, token: &[u8], found: &TierEntry) -> bool {
    let Some(cache) = &endpoint.cache else {
        return false;
    };
    let tag = crate::oauth::cache::key::token_tag(token);
    // SAFETY: the zone was set up by the directive and initialised by nginx.
    unsafe { zone::cutoff(cache.zone.cast(), &tag) }
        .is_some_and(|cutoff| found.obtained_ms <= cutoff)
}

/// Asks the IdP, unless its circuit breaker is open.
///
/// # Safety
/// As for [`step`].
unsafe fn ask_idp<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
    inputs: &Q::Inputs<'_>,
) -> Step {
    // SAFETY: r is the live request nginx runs the phase handler for, and
    // ctx its context in r's pool (`step`'s contract, passed down unchanged);
    // no `&mut` to the context is held across a call that runs variable getters.
    unsafe {
        let endpoint = Q::endpoint(conf);
        let breaker = endpoint.breaker.zip(conf.breaker);
        if let (Some((slot, breaker)), Some(main)) = (breaker, Module::main_conf(&*r)) {
            if let Some(state) = main.counters.breaker(slot) {
                let now = u64::try_from(now_ms()).unwrap_or(0);
                if let Admit::Refuse { retry_after_s } = state.admit(&breaker, now) {
                    idp_call::note_refusal(r, &state, endpoint, retry_after_s);
                    let open = CallFailure::BreakerOpen(retry_after_s);
                    Q::slot(&mut *ctx).answered(Err(open.into()));
                    return Step::Answered;
                }
            }
        }
        Q::slot(&mut *ctx).ask_idp(now_ms());
        let body = Q::body((*ctx).token(), inputs);
        match idp_call::ask::<Q>(r, conf, endpoint, body, ctx) {
            Ok(()) => Step::Again,
            Err(CallNotMade::NoMemory | CallNotMade::NoAssertion) => Step::Error,
        }
    }
}
