//! The exchange stage (RFC 8693): the client's token traded for one meant for
//! the upstream, through the cache flow; the issued token becomes the
//! upstream's `Authorization`.

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR};

use crate::conf::{CacheConf, LocationConf};
use crate::handler::ctx::{Outcome, RequestCtx};
use crate::handler::flow::{self, Question, Step};
use crate::handler::idp_call::{self, IdpCall, Refresh};
use crate::handler::raw::evaluate;
use crate::handler::upstream;
use crate::oauth::cache::key::{exchange_key, policy};
use crate::oauth::cache::{CacheKey, CachedExchange, Lifetime};
use crate::oauth::challenge::BearerError;
use crate::oauth::exchange::{self, ExchangeFailure, ExchangeParams, IssuedToken};
use crate::oauth::introspection::IntrospectionResult;
use crate::resilience::breaker::BreakerConf;

pub struct Exchange;

impl Question for Exchange {
    type Answer = Result<IssuedToken, ExchangeFailure>;
    /// The exchange's parameters, and the values of `auth_oauth2_token_cache_vary`.
    type Inputs<'r> = (ExchangeParams<'r>, &'r [u8]);

    fn answer(ctx: &mut RequestCtx) -> &mut Option<Self::Answer> {
        &mut ctx.exchange
    }

    fn cache(conf: &LocationConf) -> Option<&CacheConf> {
        conf.exchange_cache.as_ref()
    }

    /// After introspection the status is that of the introspection cache.
    fn reports_cache_status(conf: &LocationConf) -> bool {
        !conf.introspection_enabled()
    }

    unsafe fn inputs<'r>(
        r: *mut ngx_http_request_t,
        conf: &'r LocationConf,
    ) -> Option<Self::Inputs<'r>> {
        // SAFETY: r is a live request; templates come from the directives.
        unsafe {
            let params = ExchangeParams {
                audience: evaluate(r, conf.audience)?,
                scope: evaluate(r, conf.scope)?,
                resource: evaluate(r, conf.resource)?,
                requested_token_type: conf.requested_token_type.as_deref().unwrap_or_default(),
            };
            Some((params, evaluate(r, conf.cache_vary)?))
        }
    }

    unsafe fn key(
        _r: *mut ngx_http_request_t,
        conf: &LocationConf,
        token: &[u8],
        (params, vary): &Self::Inputs<'_>,
    ) -> CacheKey {
        exchange_key(&conf.exchange_scope, token, vary, params)
    }

    fn fleet_policy(conf: &LocationConf, (params, vary): &Self::Inputs<'_>) -> Vec<u8> {
        let parts = [
            *vary,
            params.audience,
            params.scope,
            params.resource,
            params.requested_token_type,
        ];
        policy(&conf.exchange_fleet_scope, &parts)
    }

    fn stale(ctx: &mut RequestCtx) -> &mut Option<Self::Answer> {
        &mut ctx.stale_exchange
    }

    fn may_serve_stale(answer: &Self::Answer) -> bool {
        answer.as_ref().is_err_and(ExchangeFailure::allows_stale)
    }

    fn decode(entry: &[u8]) -> Option<Self::Answer> {
        CachedExchange::decode(entry).map(Ok)
    }

    fn breaker(conf: &LocationConf) -> Option<(usize, BreakerConf)> {
        Some((conf.exchange_breaker?, conf.breaker?))
    }

    fn breaker_open(retry_after_s: u64) -> Self::Answer {
        Err(ExchangeFailure::BreakerOpen(retry_after_s))
    }

    fn entry(
        _conf: &LocationConf,
        cache: &CacheConf,
        ctx: &RequestCtx,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)> {
        let Some(Ok(issued)) = &ctx.exchange else {
            return None;
        };
        let subject_exp = match &ctx.introspection {
            Some(Ok(IntrospectionResult::Active(claims))) => claims.exp,
            _ => None,
        };
        let lifetime = cache
            .policy
            .exchange_lifetime(issued.expires_in, subject_exp, now_ms)?;
        Some((CachedExchange::encode(issued), lifetime))
    }

    unsafe fn refresh(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        key: CacheKey,
        (params, _vary): &Self::Inputs<'_>,
    ) -> Result<(), ()> {
        let Some(cache) = &conf.exchange_cache else {
            return Err(());
        };
        let endpoint = conf.token_endpoint.as_deref().unwrap_or_default();
        // SAFETY: r is the live main request and ctx its context.
        let (body, subject_exp) = unsafe {
            let subject_exp = match &(*ctx).introspection {
                Some(Ok(IntrospectionResult::Active(claims))) => claims.exp,
                _ => None,
            };
            (exchange::request_body((*ctx).token(), params), subject_exp)
        };
        let refresh = Refresh {
            zone: cache.zone,
            key,
            policy: cache.policy,
            call: IdpCall::Exchange,
            subject_exp,
        };
        // SAFETY: as above.
        unsafe { idp_call::refresh(r, conf, endpoint, body, refresh) }
    }

    unsafe fn ask(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        (params, _vary): &Self::Inputs<'_>,
    ) -> Result<(), ()> {
        let endpoint = conf.token_endpoint.as_deref().unwrap_or_default();
        // SAFETY: r is a live request and ctx its context.
        let body = exchange::request_body(unsafe { (*ctx).token() }, params);
        // SAFETY: as above.
        unsafe { idp_call::ask(r, conf, IdpCall::Exchange, endpoint, body, ctx) }
    }
}

/// Moves the exchange on; once the token endpoint answered, the issued token
/// goes upstream, or the request is refused.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn run<'c>(
    r: *mut ngx_http_request_t,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    // SAFETY: guaranteed by the caller.
    match unsafe { flow::step::<Exchange>(r, conf, ctx) } {
        Step::Answered => {}
        Step::Again => return Outcome::Again,
        Step::Error => return Outcome::Error,
    }
    // SAFETY: as above; nothing below runs variable getters.
    let answer = unsafe { &(*ctx).exchange };
    match answer {
        Some(Ok(issued)) => {
            // SAFETY: as above.
            match unsafe { upstream::authorize(r, issued.access_token.as_bytes()) } {
                Some(()) => Outcome::Pass,
                None => Outcome::Error,
            }
        }
        Some(Err(failure)) => {
            // SAFETY: r is live; its connection log is valid for logging.
            let log = unsafe { (*(*r).connection).log };
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            match failure {
                ExchangeFailure::InvalidGrant => Outcome::Refuse(BearerError::InvalidToken),
                ExchangeFailure::NotPermitted(_) => {
                    Outcome::Refuse(BearerError::InsufficientScope(None))
                }
                _ => Outcome::Fail {
                    timeout: *failure == ExchangeFailure::Timeout,
                    status: failure.status(),
                    retry_after: match failure {
                        ExchangeFailure::BreakerOpen(seconds) => Some(*seconds),
                        _ => None,
                    },
                },
            }
        }
        None => Outcome::Error,
    }
}
