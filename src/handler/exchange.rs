//! The exchange stage (RFC 8693): the client's token traded for one meant for
//! the upstream, through the cache flow; the issued token becomes the
//! upstream's `Authorization`.

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR};

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{Exchanged, Outcome, RequestCtx, Slot};
use crate::handler::flow::{self, Step};
use crate::handler::question::{IdpCall, Question};
use crate::handler::raw::evaluate;
use crate::handler::upstream;
use crate::oauth::cache::key::{exchange_key, policy};
use crate::oauth::cache::CacheKey;
use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::challenge::BearerError;
use crate::oauth::exchange::{self, ExchangeFailure, ExchangeParams};
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::ClaimPaths;

pub use crate::oauth::cache::kinds::Exchange;

impl Question for Exchange {
    /// The exchange's parameters, and the values of `auth_oauth2_token_cache_vary`.
    type Inputs<'r> = (ExchangeParams<'r>, &'r [u8]);

    fn endpoint(conf: &LocationConf) -> &Endpoint {
        &conf.token_endpoint
    }

    fn slot(ctx: &mut RequestCtx) -> &mut Slot<Exchanged> {
        ctx.exchange_mut()
    }

    /// After introspection the status is that of the introspection cache.
    fn reports_cache_status(conf: &LocationConf) -> bool {
        !conf.introspection_enabled()
    }

    fn call(_conf: &LocationConf) -> IdpCall {
        IdpCall::Exchange
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

    fn key(conf: &LocationConf, token: &[u8], (params, vary): &Self::Inputs<'_>) -> CacheKey {
        exchange_key(&conf.token_endpoint.key_scope, token, vary, params)
    }

    fn fleet_policy(conf: &LocationConf, (params, vary): &Self::Inputs<'_>) -> Vec<u8> {
        let parts = [
            *vary,
            params.audience,
            params.scope,
            params.resource,
            params.requested_token_type,
        ];
        policy(&conf.token_endpoint.tier_scope, &parts)
    }

    fn body(token: &[u8], (params, _vary): &Self::Inputs<'_>) -> Vec<u8> {
        exchange::request_body(token, params)
    }

    fn interpret(_call: IdpCall, reply: IdpReply<'_>, _paths: &ClaimPaths) -> Exchanged {
        exchange::interpret(reply)
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
    let answer = unsafe { (*ctx).exchange().answer() };
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
            // An open breaker's refusals are logged where it refused, once per interval.
            if !matches!(failure.call(), Some(CallFailure::BreakerOpen(_))) {
                ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            }
            match failure {
                ExchangeFailure::InvalidGrant => Outcome::Refuse(BearerError::InvalidToken),
                ExchangeFailure::NotPermitted(_) => {
                    Outcome::Refuse(BearerError::InsufficientScope(None))
                }
                _ => Outcome::failed(failure.status(), failure.call()),
            }
        }
        None => Outcome::Error,
    }
}
