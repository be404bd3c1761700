//! The introspection stage: the IdP's verdict on the client's token (RFC
//! 7662, or a phantom token's JWT), through the cache flow.

use ngx::ffi::ngx_http_request_t;

use crate::conf::{CacheConf, LocationConf};
use crate::handler::ctx::{Outcome, RequestCtx, Stage};
use crate::handler::flow::{self, Question, Step};
use crate::handler::idp_call::{self, IdpCall, Refresh};
use crate::handler::raw::evaluate;
use crate::oauth::cache::key::{introspection_key, policy};
use crate::oauth::cache::{CacheKey, CachedIntrospection, Lifetime};
use crate::oauth::form;
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
use crate::resilience::breaker::BreakerConf;

pub struct Introspection;

impl Question for Introspection {
    type Answer = Result<IntrospectionResult, IdpFailure>;
    /// The values of `auth_oauth2_token_cache_vary`.
    type Inputs<'r> = &'r [u8];

    fn answer(ctx: &mut RequestCtx) -> &mut Option<Self::Answer> {
        &mut ctx.introspection
    }

    fn cache(conf: &LocationConf) -> Option<&CacheConf> {
        conf.introspect_cache.as_ref()
    }

    fn reports_cache_status(_conf: &LocationConf) -> bool {
        true
    }

    unsafe fn inputs(r: *mut ngx_http_request_t, conf: &LocationConf) -> Option<&[u8]> {
        // SAFETY: r is a live request; the template comes from the directive.
        unsafe { evaluate(r, conf.cache_vary) }
    }

    unsafe fn key(
        _r: *mut ngx_http_request_t,
        conf: &LocationConf,
        token: &[u8],
        vary: &&[u8],
    ) -> CacheKey {
        let vary = conf.cache_vary.map(|_| *vary);
        introspection_key(&conf.introspection_scope, token, vary)
    }

    fn fleet_policy(conf: &LocationConf, vary: &&[u8]) -> Vec<u8> {
        match conf.cache_vary {
            Some(_) => policy(&conf.introspection_fleet_scope, &[vary]),
            None => policy(&conf.introspection_fleet_scope, &[]),
        }
    }

    fn stale(ctx: &mut RequestCtx) -> &mut Option<Self::Answer> {
        &mut ctx.stale_introspection
    }

    /// Never for an inactive entry: only active ones are kept past their time.
    fn may_serve_stale(answer: &Self::Answer) -> bool {
        answer.as_ref().is_err_and(IdpFailure::allows_stale)
    }

    fn decode(entry: &[u8]) -> Option<Self::Answer> {
        CachedIntrospection::decode(entry).map(Ok)
    }

    fn breaker(conf: &LocationConf) -> Option<(usize, BreakerConf)> {
        Some((conf.introspection_breaker?, conf.breaker?))
    }

    fn breaker_open(retry_after_s: u64) -> Self::Answer {
        Err(IdpFailure::BreakerOpen(retry_after_s))
    }

    fn entry(
        _conf: &LocationConf,
        cache: &CacheConf,
        ctx: &RequestCtx,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)> {
        let Some(Ok(result)) = &ctx.introspection else {
            return None;
        };
        let lifetime = cache.policy.lifetime(result, now_ms)?;
        Some((CachedIntrospection::encode(result), lifetime))
    }

    unsafe fn refresh(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        key: CacheKey,
        _vary: &&[u8],
    ) -> Result<(), ()> {
        let Some(cache) = &conf.introspect_cache else {
            return Err(());
        };
        let call = match conf.phantom_enabled() {
            true => IdpCall::PhantomIntrospection,
            false => IdpCall::Introspection,
        };
        let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
        // SAFETY: r is the live main request and ctx its context.
        let body = form::introspection_body(unsafe { (*ctx).token() });
        let refresh = Refresh {
            zone: cache.zone,
            key,
            policy: cache.policy,
            call,
            subject_exp: None,
        };
        // SAFETY: as above.
        unsafe { idp_call::refresh(r, conf, endpoint, body, refresh) }
    }

    unsafe fn ask(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        _vary: &&[u8],
    ) -> Result<(), ()> {
        let call = match conf.phantom_enabled() {
            true => IdpCall::PhantomIntrospection,
            false => IdpCall::Introspection,
        };
        let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
        // SAFETY: r is a live request and ctx its context.
        let token = unsafe { (*ctx).token() };
        // SAFETY: as above.
        unsafe {
            idp_call::ask(
                r,
                conf,
                call,
                endpoint,
                form::introspection_body(token),
                ctx,
            )
        }
    }
}

/// Moves the introspection on; the verdict comes next once it is known.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn run(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'static> {
    // SAFETY: guaranteed by the caller.
    match unsafe { flow::step::<Introspection>(r, conf, ctx) } {
        Step::Answered => Outcome::Next(Stage::Verdict),
        Step::Again => Outcome::Again,
        Step::Error => Outcome::Error,
    }
}
