//! One cache flow for every question the module asks the IdP (introspection
//! and token exchange): look in the cache, else join the requests of this
//! worker that ask the same, else ask; when the answer is in, store it and
//! hand it to the waiters.
//!
//! Look      -> hit: answered; miss: leader -> AskingIdp (subrequest),
//!              waiter -> WaitingForLeader; no cache: AskingIdp
//! AskingIdp / WaitingForLeader -> NGX_AGAIN until the answer is in (the
//!              subrequest's callback or the leader put it in the context)
//!              (with a shared tier, the leader asks it first: AskingShared;
//!              an entry there answers, and is stored in this zone)
//! answered  -> the leader stores it (and the IdP's answer in the shared
//!              tier, in the background) and wakes its waiters

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleMainConf;

use crate::conf::{CacheConf, LocationConf};
use crate::handler::ctx::{CacheStatus, Flight, Flow, RequestCtx, Role, SharedRead};
use crate::handler::{inflight, shared};
use crate::metrics::LookupResult;
use crate::module::Module;
use crate::oauth::cache::{CacheKey, Lifetime};
use crate::resilience::breaker::{Admit, BreakerConf};
use crate::shm::table::{At, Claim, Lookup};
use crate::shm::zone;

/// One kind of IdP question: where its answer goes, how it is cached, and
/// how the IdP is asked.
pub trait Question {
    type Answer: Clone;

    /// The slot of the request context its answer goes into.
    fn answer(ctx: &mut RequestCtx) -> &mut Option<Self::Answer>;

    /// The cache of the location, if it has one.
    fn cache(conf: &LocationConf) -> Option<&CacheConf>;

    /// Whether this question's cache look-up is what
    /// `$oauth2_token_cache_status` reports.
    fn reports_cache_status(conf: &LocationConf) -> bool;

    /// What the question is made of beyond the token, evaluated once per
    /// look so that the key and the IdP request agree.
    type Inputs<'r>;

    /// # Safety
    /// `r` must be a live request.
    unsafe fn inputs<'r>(
        r: *mut ngx_http_request_t,
        conf: &'r LocationConf,
    ) -> Option<Self::Inputs<'r>>;

    /// The cache key of this request's question.
    ///
    /// # Safety
    /// `r` must be a live request.
    unsafe fn key(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        token: &[u8],
        inputs: &Self::Inputs<'_>,
    ) -> CacheKey;

    /// What names this question's answer in its token's hash in the shared
    /// tier, where the server is named by its `server_name`s only.
    fn fleet_policy(conf: &LocationConf, inputs: &Self::Inputs<'_>) -> Vec<u8>;

    /// The slot for a cached answer past its time, kept in case the IdP fails.
    fn stale(ctx: &mut RequestCtx) -> &mut Option<Self::Answer>;

    /// Whether `answer` is a failure of the IdP that a stale answer may stand in for.
    fn may_serve_stale(answer: &Self::Answer) -> bool;

    /// The endpoint's circuit breaker (first state slot, parameters), if any.
    fn breaker(conf: &LocationConf) -> Option<(usize, BreakerConf)>;

    /// The answer when the breaker keeps the IdP from being asked.
    fn breaker_open(retry_after_s: u64) -> Self::Answer;

    /// A cached entry as an answer; `None` if it cannot be read.
    fn decode(entry: &[u8]) -> Option<Self::Answer>;

    /// The entry to store for `answer` and how long it lives, or `None`
    /// when it must not be cached.
    fn entry(
        conf: &LocationConf,
        cache: &CacheConf,
        ctx: &RequestCtx,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)>;

    /// Asks the IdP again in the background for the entry under `key`.
    ///
    /// # Safety
    /// `r` must be the live main request and `ctx` its context.
    unsafe fn refresh(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        key: CacheKey,
        inputs: &Self::Inputs<'_>,
    ) -> Result<(), ()>;

    /// Starts the subrequest that asks the IdP; its callback fills the slot.
    ///
    /// # Safety
    /// `r` must be a live request and `ctx` its context.
    unsafe fn ask(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        inputs: &Self::Inputs<'_>,
    ) -> Result<(), ()>;
}

/// Where a question stands after one step.
pub enum Step {
    /// The answer is in the context's slot.
    Answered,
    /// Waiting for the IdP, or for the request that asks it.
    Again,
    /// nginx is out of memory.
    Error,
}

/// How long a worker's mark on a key it asks the IdP for holds the other
/// workers back at most (a worker that dies mid-call is waited for no longer).
const CLAIM_MS: i64 = 5_000;
/// How often a request waiting for another worker's answer looks again.
const WORKER_POLL_MS: u64 = 10;

pub use crate::handler::raw::now_ms;

/// Moves the question of the request's current stage on, as far as it can.
///
/// # Safety
/// `r` must be a live request and `ctx` its context, whose stage has
/// a flow.
pub unsafe fn step<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    // SAFETY: r and ctx as this function requires; no reference to the
    // context is held across a call that may run variable getters.
    unsafe {
        if Q::answer(&mut *ctx).is_none() {
            let step = match (*ctx).stage.flow() {
                Some(Flow::Look | Flow::WaitingForWorker) => look::<Q>(r, conf, ctx),
                Some(Flow::AskingShared) => shared_answered::<Q>(r, conf, ctx),
                _ => return Step::Again,
            };
            match step {
                Step::Answered => {}
                other => return other,
            }
        }
        let served_stale = serve_stale::<Q>(r, conf, ctx);
        if let Some(Flight { role, key }) = (*ctx).flight {
            if let (Role::Leader | Role::Alone, Some(cache)) = (role, Q::cache(conf)) {
                let now = now_ms();
                let from_shared = match core::mem::replace(&mut (*ctx).shared, SharedRead::NotAsked)
                {
                    SharedRead::Found(entry, lifetime) => Some((entry, lifetime)),
                    _ => None,
                };
                let asked = (*ctx).asked_idp && !served_stale;
                let entry = match (from_shared, asked) {
                    (Some(found), _) => Some(found),
                    (None, true) => Q::entry(conf, cache, &*ctx, now),
                    (None, false) => None,
                };
                if let (true, Some((entry, lifetime)), Some(names)) =
                    (asked, &entry, (*ctx).shared_names.as_ref())
                {
                    if let Some(tier) = shared::tier(r, conf) {
                        // A write that cannot start is a later miss elsewhere.
                        let _ = shared::write(r, &tier, names, entry, *lifetime, now);
                    }
                }
                let stored = entry.is_some_and(|(entry, lifetime)| {
                    // SAFETY: the zone was set up by the directive and initialised by nginx.
                    zone::insert(cache.zone.cast(), &key, &entry, lifetime, now)
                });
                if (*ctx).claimed && !stored {
                    zone::release(cache.zone.cast(), &key);
                }
                (*ctx).claimed = false;
            }
            match role {
                Role::Leader => inflight::finish(ctx, |waiter| {
                    *Q::answer(&mut *waiter) = Q::answer(&mut *ctx).clone();
                }),
                Role::Waiter | Role::Alone => (*ctx).flight = None,
            }
        }
        Step::Answered
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
    // SAFETY: as for `step`.
    unsafe {
        let failed = Q::answer(&mut *ctx)
            .as_ref()
            .is_some_and(Q::may_serve_stale);
        if !failed || Q::stale(&mut *ctx).is_none() {
            return false;
        }
        *Q::answer(&mut *ctx) = Q::stale(&mut *ctx).take();
        if Q::reports_cache_status(conf) {
            (*ctx).cache_status = Some(CacheStatus::Stale);
        }
        if let (Some(main), Some(cache)) = (Module::main_conf(&*r), Q::cache(conf)) {
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
    // SAFETY: as for `step`.
    unsafe {
        (*ctx).asked_idp = false;
        if (*ctx).stage.flow() == Some(Flow::Look) {
            (*ctx).shared = SharedRead::NotAsked;
            (*ctx).shared_names = None;
        }
        // Looking again while another worker asks is not another look-up.
        let relook = (*ctx).stage.flow() == Some(Flow::WaitingForWorker);
        let Some(inputs) = Q::inputs(r, conf) else {
            return Step::Error;
        };
        if let Some(cache) = Q::cache(conf) {
            let (status, key) = match cache.policy.enabled() {
                true => {
                    let key = Q::key(r, conf, (*ctx).token(), &inputs);
                    // SAFETY: the zone was set up by the directive and initialised by nginx.
                    let at = At {
                        now_ms: now_ms(),
                        max_ttl_ms: cache.policy.max_ttl_ms,
                        refresh_pct: cache.policy.refresh_pct,
                        refresh_for_ms: CLAIM_MS,
                    };
                    match zone::lookup(cache.zone.cast(), &key, at, Q::decode) {
                        Lookup::Hit(answer) => {
                            *Q::answer(&mut *ctx) = Some(answer);
                            (CacheStatus::Hit, None)
                        }
                        Lookup::Due(answer) => {
                            *Q::answer(&mut *ctx) = Some(answer);
                            // The client is served now; the IdP is asked
                            // after its request. A refresh that cannot start
                            // leaves the entry to expire as usual.
                            if r == (*r).main {
                                let _ = Q::refresh(r, conf, ctx, key, &inputs);
                            }
                            (CacheStatus::Hit, None)
                        }
                        Lookup::Stale(answer) => {
                            *Q::stale(&mut *ctx) = Some(answer);
                            (CacheStatus::Expired, Some(key))
                        }
                        Lookup::Expired => (CacheStatus::Expired, Some(key)),
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
            // A request sent back by a vanished leader keeps its first status.
            if Q::reports_cache_status(conf)
                && ((*ctx).cache_status.is_none() || status == CacheStatus::Hit)
            {
                (*ctx).cache_status = Some(status);
            }
            if status == CacheStatus::Hit {
                return Step::Answered;
            }
            if let Some(key) = key.filter(|_| r != (*r).main) {
                (*ctx).flight = Some(Flight {
                    key,
                    role: Role::Alone,
                });
            } else if let Some(key) = key {
                // Looking again after another worker's call: still this
                // worker's leader for the key.
                let leads = (*ctx).flight
                    == Some(Flight {
                        key,
                        role: Role::Leader,
                    });
                if !leads {
                    match inflight::join(r, ctx, key) {
                        Some(Role::Leader | Role::Alone) => {}
                        Some(Role::Waiter) => {
                            if let Some(counters) = counters {
                                counters.add(cache.metrics.coalesced_wait(), 1);
                            }
                            (*ctx).stage = (*ctx).stage.with_flow(Flow::WaitingForLeader);
                            return Step::Again;
                        }
                        None => return Step::Error,
                    }
                }
                let now = now_ms();
                match zone::claim(cache.zone.cast(), &key, now, now + CLAIM_MS) {
                    Claim::Claimed => (*ctx).claimed = true,
                    Claim::Unmarked => {}
                    Claim::Taken => {
                        if !leads {
                            if let Some(counters) = counters {
                                counters.add(cache.metrics.coalesced_wait(), 1);
                            }
                        }
                        (*ctx).stage = (*ctx).stage.with_flow(Flow::WaitingForWorker);
                        return match inflight::wake_in(r, ctx, WORKER_POLL_MS) {
                            Some(()) => Step::Again,
                            None => Step::Error,
                        };
                    }
                }
            }
        }
        if let (Some(tier), Some(_)) = (shared::tier(r, conf), (*ctx).flight) {
            if (*ctx).shared == SharedRead::NotAsked {
                let policy = Q::fleet_policy(conf, &inputs);
                (*ctx).shared_names = Some(shared::names(&tier, (*ctx).token(), &policy));
                (*ctx).stage = (*ctx).stage.with_flow(Flow::AskingShared);
                match shared::read(r, &tier, ctx) {
                    Ok(()) => return Step::Again,
                    Err(()) => (*ctx).shared = SharedRead::Missed,
                }
            }
        }
        ask_idp::<Q>(r, conf, ctx, &inputs)
    }
}

/// The shared tier's answer is in: an entry answers the question (and
/// fills this gateway's zone when it is stored); otherwise the IdP is asked.
///
/// # Safety
/// As for [`step`].
unsafe fn shared_answered<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    // SAFETY: as for `step`.
    unsafe {
        let answer = match &(*ctx).shared {
            SharedRead::Asking => return Step::Again,
            SharedRead::Found(entry, _) => Q::decode(entry),
            SharedRead::NotAsked | SharedRead::Missed => None,
        };
        if let Some(answer) = answer {
            *Q::answer(&mut *ctx) = Some(answer);
            if Q::reports_cache_status(conf) {
                (*ctx).cache_status = Some(CacheStatus::HitShared);
            }
            if let (Some(main), Some(cache)) = (Module::main_conf(&*r), Q::cache(conf)) {
                main.counters
                    .add(cache.metrics.lookup(LookupResult::SharedHit), 1);
            }
            return Step::Answered;
        }
        (*ctx).shared = SharedRead::Missed;
        let Some(inputs) = Q::inputs(r, conf) else {
            return Step::Error;
        };
        ask_idp::<Q>(r, conf, ctx, &inputs)
    }
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
    // SAFETY: as for `step`.
    unsafe {
        if let (Some((slot, breaker)), Some(main)) = (Q::breaker(conf), Module::main_conf(&*r)) {
            if let Some(state) = main.counters.breaker(slot) {
                let now = u64::try_from(now_ms()).unwrap_or(0);
                if let Admit::Refuse { retry_after_s } = state.admit(&breaker, now) {
                    *Q::answer(&mut *ctx) = Some(Q::breaker_open(retry_after_s));
                    return Step::Answered;
                }
            }
        }
        (*ctx).stage = (*ctx).stage.with_flow(Flow::AskingIdp);
        (*ctx).asked_idp = true;
        match Q::ask(r, conf, ctx, inputs) {
            Ok(()) => Step::Again,
            Err(()) => Step::Error,
        }
    }
}
