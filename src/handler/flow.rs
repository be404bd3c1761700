//! The cache flow's surroundings in nginx: `oauth/cache/flow.rs` decides
//! what a question does next; this file carries it out for a request (its
//! context's slot, the zone of shared memory, this worker's in-flight
//! table, the Redis tier, the IdP's subrequest, the breaker, the metrics).

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleMainConf;

use crate::conf::LocationConf;
use crate::handler::ctx::{CacheStatus, RequestCtx, Role, Slot, TierEntry, TierNames};
use crate::handler::idp_call::{self, Refresh};
use crate::handler::question::{Answer, Question};
use crate::handler::{inflight, redis_tier};
use crate::metrics::LookupResult;
use crate::module::Module;
pub use crate::oauth::cache::flow::Step;
use crate::oauth::cache::flow::{self, Env, Refreshing};
use crate::oauth::cache::key::token_tag;
use crate::oauth::cache::{CacheKey, CachePolicy};
use crate::resilience::breaker::Admit;
use crate::shm::zone::ShmZone;

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
    let mut env = Nginx::<Q> {
        r,
        conf,
        ctx,
        inputs: None,
    };
    flow::step(&mut env)
}

/// One request's question, as the flow sees it.
struct Nginx<'c, Q: Question> {
    /// A live request (`step`'s contract) ...
    r: *mut ngx_http_request_t,
    conf: &'c LocationConf,
    /// ... and its context, in its pool. Only reached through short-lived
    /// references: variable getters (run by `Q::inputs`) read it too.
    ctx: *mut RequestCtx,
    /// What the question is made of, read once per look.
    inputs: Option<Q::Inputs<'c>>,
}

impl<'c, Q: Question> Nginx<'c, Q> {
    fn ctx(&self) -> &RequestCtx {
        // SAFETY: ctx is r's context, in r's pool, which outlives this value
        // (made and dropped within one call of the phase handler).
        unsafe { &*self.ctx }
    }

    fn main(&self) -> Option<&crate::conf::MainConf> {
        // SAFETY: r is a live request; its main conf lives as long as the cycle.
        unsafe { Module::main_conf(&*self.r) }
    }

    /// Serving answers past their time is logged once a minute at most
    /// per worker, not per request.
    fn note_stale(&self) {
        let now = now_ms() / 1000;
        if LAST_STALE_LOG.get() + 60 > now {
            return;
        }
        LAST_STALE_LOG.set(now);
        // SAFETY: r is a live request; its connection's log is valid for logging.
        let log = unsafe { (*(*self.r).connection).log };
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_WARN,
            log,
            "auth_oauth2_token: the IdP failed; serving cached answers past their time (stale_if_error)"
        );
    }

    fn count(&self, result: LookupResult) {
        if let (Some(main), Some(cache)) = (self.main(), &Q::endpoint(self.conf).cache) {
            main.counters.add(cache.metrics.lookup(result), 1);
        }
    }
}

impl<'c, Q: Question> Env for Nginx<'c, Q> {
    type Kind = Q;
    type Zone = ShmZone;

    fn slot(&mut self) -> &mut Slot<Answer<Q>> {
        // SAFETY: as in `ctx`; the reference lives only until the next call
        // into the surroundings, none of which runs a variable getter while
        // it is held.
        Q::slot(unsafe { &mut *self.ctx })
    }

    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn is_subrequest(&self) -> bool {
        // SAFETY: r is a live request.
        unsafe { self.r != (*self.r).main }
    }

    fn cache(&self) -> Option<(ShmZone, CachePolicy)> {
        let cache = Q::endpoint(self.conf).cache.as_ref()?;
        // SAFETY: a cache conf's zone was added by its directive and
        // initialised by nginx before any request ran.
        let zone = unsafe { ShmZone::new(cache.zone.cast()) };
        Some((zone, cache.policy))
    }

    fn prepare(&mut self) -> bool {
        // SAFETY: r is a live request; no reference to the context is held.
        self.inputs = unsafe { Q::inputs(self.r, self.conf) };
        self.inputs.is_some()
    }

    fn key(&mut self) -> Option<CacheKey> {
        let inputs = self.inputs.as_ref()?;
        Some(Q::key(self.conf, self.ctx().token(), inputs))
    }

    fn token_tag(&self) -> [u8; 8] {
        token_tag(self.ctx().token())
    }

    fn subject_exp(&mut self) -> Option<i64> {
        self.ctx().active_claims().and_then(|claims| claims.exp)
    }

    fn refresh(&mut self, refreshing: Refreshing<ShmZone>) {
        let Some(inputs) = &self.inputs else {
            return;
        };
        let body = Q::body(self.ctx().token(), inputs);
        let refresh = Refresh {
            refreshing,
            call: Q::call(self.conf),
        };
        let endpoint = Q::endpoint(self.conf);
        // SAFETY: r is the live main request (the flow refreshes only for one).
        let _ = unsafe { idp_call::refresh::<Q>(self.r, self.conf, endpoint, body, refresh) };
    }

    fn looked_up(&mut self, status: CacheStatus, count: bool) {
        if count {
            self.count(match status {
                CacheStatus::Hit => LookupResult::Hit,
                CacheStatus::Miss => LookupResult::Miss,
                CacheStatus::Expired => LookupResult::Expired,
                CacheStatus::Bypass => LookupResult::Bypass,
                CacheStatus::Stale => LookupResult::Stale,
                CacheStatus::HitShared => LookupResult::SharedHit,
            });
        }
        if Q::reports_cache_status(self.conf) {
            // SAFETY: as in `ctx`; no other reference to the context is held.
            unsafe { (*self.ctx).looked_up(status) };
        }
    }

    fn served_from(&mut self, status: CacheStatus) {
        if Q::reports_cache_status(self.conf) {
            // SAFETY: as in `ctx`; no other reference to the context is held.
            unsafe { (*self.ctx).served_from(status) };
        }
        match status {
            CacheStatus::HitShared => self.count(LookupResult::SharedHit),
            CacheStatus::Stale => {
                self.count(LookupResult::Stale);
                self.note_stale();
            }
            _ => {}
        }
    }

    fn coalesced(&mut self) {
        if let (Some(main), Some(cache)) = (self.main(), &Q::endpoint(self.conf).cache) {
            main.counters.add(cache.metrics.coalesced_wait(), 1);
        }
    }

    fn join(&mut self, key: CacheKey) -> Option<Role> {
        // SAFETY: r is a live request and ctx its context.
        unsafe { inflight::join::<Q>(self.r, self.ctx, key) }
    }

    fn wake_in(&mut self, ms: u64) -> bool {
        // SAFETY: r is a live request and ctx its context.
        unsafe { inflight::wake_in(self.r, self.ctx, ms) }.is_some()
    }

    fn tier_names(&mut self) -> Option<TierNames> {
        // SAFETY: r is a live request.
        let tier = unsafe { redis_tier::tier(self.r, self.conf) }?;
        let inputs = self.inputs.as_ref()?;
        let policy = Q::fleet_policy(self.conf, inputs);
        Some(redis_tier::names(&tier, self.ctx().token(), &policy))
    }

    fn read_tier(&mut self) -> bool {
        // SAFETY: r is a live request and ctx its context.
        unsafe {
            let Some(tier) = redis_tier::tier(self.r, self.conf) else {
                return false;
            };
            redis_tier::read::<Q>(self.r, &tier, self.ctx).is_ok()
        }
    }

    fn write_tier(&mut self, entry: &TierEntry, now_ms: i64) {
        // SAFETY: r is a live request; the names are read from its context
        // before the write starts (no variable getter runs meanwhile).
        unsafe {
            let (Some(tier), Some(names)) = (
                redis_tier::tier(self.r, self.conf),
                Q::slot(&mut *self.ctx).tier_names(),
            ) else {
                return;
            };
            // A write that cannot start is a later miss elsewhere.
            let _ = redis_tier::write(self.r, &tier, names, entry, now_ms);
        }
    }

    fn forget_in_tier(&mut self) {
        // SAFETY: as for `write_tier`.
        unsafe {
            let (Some(tier), Some(names)) = (
                redis_tier::tier(self.r, self.conf),
                Q::slot(&mut *self.ctx).tier_names(),
            ) else {
                return;
            };
            let _ = redis_tier::forget(self.r, &tier, names);
        }
    }

    fn admit(&mut self) -> Result<(), u64> {
        let endpoint = Q::endpoint(self.conf);
        let (Some((slot, breaker)), Some(main)) =
            (endpoint.breaker.zip(self.conf.breaker), self.main())
        else {
            return Ok(());
        };
        let Some(state) = main.counters.breaker(slot) else {
            return Ok(());
        };
        let now = u64::try_from(now_ms()).unwrap_or(0);
        match state.admit(&breaker, now) {
            Admit::Refuse { retry_after_s } => {
                // SAFETY: r is a live request.
                unsafe { idp_call::note_refusal(self.r, &state, endpoint, retry_after_s) };
                Err(retry_after_s)
            }
            _ => Ok(()),
        }
    }

    fn call_idp(&mut self) -> bool {
        let Some(inputs) = &self.inputs else {
            return false;
        };
        let body = Q::body(self.ctx().token(), inputs);
        let endpoint = Q::endpoint(self.conf);
        // SAFETY: r is a live request and ctx its context.
        unsafe { idp_call::ask::<Q>(self.r, self.conf, endpoint, body, self.ctx) }.is_ok()
    }

    fn hand_over(&mut self, key: CacheKey, answer: Option<Answer<Q>>) {
        // SAFETY: the waiters' contexts live in their requests' pools while
        // they are in the table (their cleanup takes them out).
        unsafe {
            inflight::finish(key, |waiter| {
                Q::slot(&mut *waiter).delivered(answer.clone());
            });
        }
    }
}

thread_local! {
    /// When this worker last logged serving stale answers (s since the epoch).
    static LAST_STALE_LOG: core::cell::Cell<i64> = const { core::cell::Cell::new(i64::MIN / 2) };
}
