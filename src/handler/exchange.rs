//! The exchange stage (RFC 8693): the client's token traded for one meant for
//! the upstream, through the cache flow; the issued token becomes the
//! upstream's `Authorization`.

use ngx::ffi::NGX_LOG_ERR;

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{Exchanged, Outcome, RequestCtx, Slot};
use crate::handler::flow::{self, Step};
use crate::handler::question::{IdpCall, Question};
use crate::handler::upstream;
use crate::nginx::req::Req;
use crate::oauth::cache::key::{exchange_key, policy, KeySecret};
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

    fn endpoint<'c>(conf: &'c LocationConf, _ctx: &RequestCtx) -> &'c Endpoint {
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

    fn read_inputs<'r>(req: &mut Req<'r>, conf: &'r LocationConf) -> Option<Self::Inputs<'r>> {
        let params = ExchangeParams {
            audience: req.evaluate(conf.audience)?,
            scope: req.evaluate(conf.scope)?,
            resource: req.evaluate(conf.resource)?,
            requested_token_type: conf.requested_token_type.as_deref().unwrap_or_default(),
        };
        Some((params, req.evaluate(conf.cache_vary)?))
    }

    fn key(
        _conf: &LocationConf,
        endpoint: &Endpoint,
        secret: &KeySecret,
        token: &[u8],
        (params, vary): &Self::Inputs<'_>,
    ) -> CacheKey {
        exchange_key(secret, &endpoint.key_scope, token, vary, params)
    }

    fn fleet_policy(
        _conf: &LocationConf,
        endpoint: &Endpoint,
        (params, vary): &Self::Inputs<'_>,
    ) -> Vec<u8> {
        let parts = [
            *vary,
            params.audience,
            params.scope,
            params.resource,
            params.requested_token_type,
        ];
        policy(&endpoint.tier_scope, &parts)
    }

    fn body(token: &[u8], (params, _vary): &Self::Inputs<'_>) -> Vec<u8> {
        exchange::request_body(token, params)
    }

    fn interpret(_call: IdpCall, reply: IdpReply<'_>, _paths: &ClaimPaths) -> Exchanged {
        exchange::interpret(reply)
    }
}

/// Moves the exchange on; once the token endpoint answered, the issued token
/// goes upstream, or the request is refused. `ctx` is the request's
/// context (`RequestCtx::of`).
#[inline(never)]
pub fn run<'r, 'c: 'r>(
    req: &mut Req<'r>,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    match flow::step::<Exchange>(req, conf, ctx) {
        Step::Answered => {}
        Step::Again => return Outcome::Again,
        Step::Error => return Outcome::Error,
    }
    // SAFETY: `ctx` is the request's context, in its pool; nothing below
    // runs variable getters (`authorize` evaluates no template), so the
    // shared reference is the only one while it is used.
    let answer = unsafe { (*ctx).exchange().answer() };
    match answer {
        Some(Ok(issued)) => match upstream::authorize(req, issued.access_token.as_bytes()) {
            Some(()) => Outcome::Pass,
            None => Outcome::Error,
        },
        Some(Err(failure)) => {
            let log = req.log();
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
