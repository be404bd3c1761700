//! The cache flow's surroundings in nginx: `oauth/cache/flow.rs` decides
//! what a question does next; this file carries it out for a request (its
//! context's slot, the zone of shared memory, this worker's in-flight
//! table, the Redis tier, the IdP's subrequest, the breaker, the metrics).

use crate::conf::{Endpoint, LocationConf, MainConf};
use crate::handler::ctx::{CacheStatus, RequestCtx, Role, Slot, TierEntry, TierNames};
use crate::handler::idp_call::{self, Refresh};
use crate::handler::inflight;
use crate::handler::question::{Answer, Question};
use crate::handler::redis_tier::{self, Tier};
use crate::metrics::LookupResult;
use crate::nginx::req::{now_ms, Req};
pub use crate::oauth::cache::flow::Step;
use crate::oauth::cache::flow::{self, Env, Refreshing};
use crate::oauth::cache::key::token_tag;
use crate::oauth::cache::{CacheKey, CachePolicy};
use crate::redis::call::{self, Failure};
use crate::resilience::breaker::Admit;
use crate::shm::zone::ShmZone;

/// Moves the question of the request's current stage on, as far as it
/// can; `ctx` is the request's context (`RequestCtx::of`).
pub fn step<'r, Q: Question>(
    req: &mut Req<'r>,
    conf: &'r LocationConf,
    ctx: *mut RequestCtx,
) -> Step {
    let mut env = Nginx::<Q> {
        req,
        conf,
        ctx,
        inputs: None,
    };
    flow::step(&mut env)
}

/// One request's question, as the flow sees it.
struct Nginx<'a, 'r, Q: Question> {
    req: &'a mut Req<'r>,
    conf: &'r LocationConf,
    /// The request's context, in its pool. Only reached through
    /// short-lived references: variable getters (run by `Q::read_inputs`)
    /// read it too.
    ctx: *mut RequestCtx,
    /// What the question is made of, read once per look.
    inputs: Option<Q::Inputs<'r>>,
}

impl<Q: Question> Nginx<'_, '_, Q> {
    fn ctx(&self) -> &RequestCtx {
        // SAFETY: `ctx` is the request's context, in its pool, which
        // outlives this value (made and dropped within one phase handler
        // call); no `&mut` to it is held while this reference lives.
        unsafe { &*self.ctx }
    }

    fn main(&self) -> Option<&'static MainConf> {
        self.req.main_conf()
    }

    /// Serving answers past their time is logged once a minute at most
    /// per worker, not per request.
    fn note_stale(&self) {
        let now = now_ms() / 1000;
        if LAST_STALE_LOG.get() + 60 > now {
            return;
        }
        LAST_STALE_LOG.set(now);
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_WARN,
            self.req.log(),
            "auth_oauth2_token: the IdP failed; serving cached answers past their time (stale_if_error)"
        );
    }

    fn count(&self, result: LookupResult) {
        if let (Some(main), Some(cache)) = (self.main(), &self.endpoint().cache) {
            main.counters.add(cache.metrics.lookup(result), 1);
        }
    }
}

impl<'r, Q: Question> Nginx<'_, 'r, Q> {
    /// The endpoint this request asks (the location's, or its token
    /// issuer's own).
    fn endpoint(&self) -> &'r Endpoint {
        Q::endpoint(self.conf, self.ctx())
    }

    fn tier(&self) -> Option<Tier<'r>> {
        Tier::of(self.req, self.conf)
    }
}

impl<'r, Q: Question> Env for Nginx<'_, 'r, Q> {
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
        !self.req.is_main()
    }

    fn cache(&self) -> Option<(ShmZone, CachePolicy)> {
        let cache = self.endpoint().cache.as_ref()?;
        // SAFETY: a cache conf's zone was added by its directive and
        // initialised by nginx before any request ran.
        let zone = unsafe { ShmZone::new(cache.zone.cast()) };
        Some((zone, cache.policy))
    }

    fn prepare(&mut self) -> bool {
        self.inputs = Q::read_inputs(self.req, self.conf);
        self.inputs.is_some()
    }

    fn key(&mut self) -> Option<CacheKey> {
        let inputs = self.inputs.as_ref()?;
        let (zone, _) = self.cache()?;
        let secret = zone.key_secret();
        Some(Q::key(
            self.conf,
            self.endpoint(),
            &secret,
            self.ctx().token(),
            inputs,
        ))
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
        // The names, computed here (a hit has not needed them): refreshes
        // are rare, one per entry's life.
        let tier = match self.tier() {
            Some(tier) => self.tier_names().map(|names| tier.place(names)),
            None => None,
        };
        let refresh = Refresh {
            refreshing,
            call: Q::call(self.conf),
            tier,
        };
        let endpoint = self.endpoint();
        let _ = idp_call::post_refresh::<Q>(self.req, self.conf, endpoint, body, refresh);
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
        if let (Some(main), Some(cache)) = (self.main(), &self.endpoint().cache) {
            main.counters.add(cache.metrics.coalesced_wait(), 1);
        }
    }

    fn join(&mut self, key: CacheKey) -> Option<Role> {
        inflight::join_flight::<Q>(self.req, key)
    }

    fn wake_in(&mut self, ms: u64) -> bool {
        inflight::wake_after(self.req, ms).is_some()
    }

    fn tier_names(&mut self) -> Option<TierNames> {
        let tier = self.tier()?;
        let inputs = self.inputs.as_ref()?;
        let policy = Q::fleet_policy(self.conf, self.endpoint(), inputs);
        Some(redis_tier::names(&tier, self.ctx().token(), &policy))
    }

    fn read_tier(&mut self) -> bool {
        let Some(tier) = self.tier() else {
            return false;
        };
        redis_tier::ask::<Q>(self.req, &tier).is_ok()
    }

    fn tier_entry_refused(&mut self) {
        call::note_failure(self.req.log(), &Failure::Undecryptable);
    }

    fn write_tier(&mut self, entry: &TierEntry, now_ms: i64) {
        let Some(tier) = self.tier() else {
            return;
        };
        // SAFETY: as in `ctx`; the names are borrowed from the context for
        // the write, which runs no variable getter.
        let Some(names) = Q::slot(unsafe { &mut *self.ctx }).tier_names() else {
            return;
        };
        // A write that cannot start is a later miss elsewhere.
        let _ = redis_tier::store(self.req, &tier, names, entry, now_ms);
    }

    fn forget_in_tier(&mut self) {
        let Some(tier) = self.tier() else {
            return;
        };
        // SAFETY: as in `ctx`; the names are borrowed from the context for
        // the removal, which runs no variable getter.
        let Some(names) = Q::slot(unsafe { &mut *self.ctx }).tier_names() else {
            return;
        };
        let _ = redis_tier::remove(self.req, &tier, names);
    }

    fn admit(&mut self) -> Result<(), u64> {
        let endpoint = self.endpoint();
        let breaker = endpoint.breaker.zip(self.conf.breaker);
        let (Some((slot, breaker)), Some(main)) = (breaker, self.main()) else {
            return Ok(());
        };
        let Some(state) = main.counters.breaker(slot) else {
            return Ok(());
        };
        let now = u64::try_from(now_ms()).unwrap_or(0);
        match state.admit(&breaker, now) {
            Admit::Refuse { retry_after_s } => {
                idp_call::log_refusal(self.req, &state, endpoint, retry_after_s);
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
        let endpoint = self.endpoint();
        idp_call::post_question::<Q>(self.req, self.conf, endpoint, body).is_ok()
    }

    fn hand_over(&mut self, key: CacheKey, answer: Option<Answer<Q>>) {
        inflight::finish(key, |waiter| {
            // SAFETY: a waiter's context lives in its request's pool while
            // it is in the table (its cleanup takes it out).
            Q::slot(unsafe { &mut *waiter }).delivered(answer.clone());
        });
    }
}

thread_local! {
    /// When this worker last logged serving stale answers (s since the epoch).
    static LAST_STALE_LOG: core::cell::Cell<i64> = const { core::cell::Cell::new(i64::MIN / 2) };
}
