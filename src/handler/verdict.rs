//! The verdict stage: what the IdP said about the token, then what the
//! location asks of an active one (`oauth::verdict`), then where the request
//! goes: upstream as it is, with the phantom JWT, or on to the exchange.

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR, NGX_LOG_INFO};

use crate::conf::{require_args, LocationConf};
use crate::handler::ctx::{Outcome, RequestCtx, Stage};
use crate::handler::raw::evaluate;
use crate::handler::{dpop, upstream};
use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::challenge::BearerError;
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
use crate::oauth::verdict::{self, Verdict};

/// # Safety
/// `r` must be a live request and `ctx` its context, whose
/// introspection answer is known.
pub unsafe fn run<'c>(
    r: *mut ngx_http_request_t,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    // SAFETY: ctx is r's context. Only shared references to it exist while
    // `require` values are evaluated, as the variable getters read it too.
    let answer = unsafe { (*ctx).introspection().answer() };
    let claims = match answer {
        Some(Ok(IntrospectionResult::Active(claims))) => claims,
        Some(Ok(IntrospectionResult::Inactive)) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: token is not active");
            return Outcome::Refuse(BearerError::InvalidToken);
        }
        Some(Err(failure)) => {
            // An open breaker's refusals are logged where it refused, once per interval.
            if !matches!(failure.call(), Some(CallFailure::BreakerOpen(_))) {
                ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            }
            return Outcome::failed(failure.status(), failure.call());
        }
        None => return Outcome::Error,
    };
    // What the token is bound to, before what it grants: a token that is
    // not the client's grants nothing.
    let cnf = claims.cnf;
    // SAFETY: r is live and ctx its context, which the check writes: the
    // answer is read again after it.
    if let Err(refused) = unsafe { dpop::check(r, conf, ctx, &cnf) } {
        return refused;
    }
    // SAFETY: as above.
    let Some(Ok(IntrospectionResult::Active(claims))) =
        (unsafe { (*ctx).introspection().answer() })
    else {
        return Outcome::Error;
    };
    let scopes = conf.require_scope.as_deref().unwrap_or_default();
    // SAFETY: r is a live request.
    let unmet = || unsafe { unmet_requirement(r, conf) };
    let audience = conf.require_audience.as_ref();
    match verdict::check(claims, audience, scopes, &conf.require_claim, unmet) {
        Verdict::Pass => {}
        Verdict::WrongAudience => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: token is not meant for this audience"
            );
            return Outcome::Refuse(BearerError::WrongAudience);
        }
        Verdict::MissingScope => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: token lacks a required scope"
            );
            let needed = Some(conf.required_scope_text.as_str());
            return Outcome::Refuse(BearerError::InsufficientScope(needed));
        }
        Verdict::Unmet(outcome) => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: a required variable is empty or \"0\""
            );
            return outcome;
        }
        Verdict::Claim(path) => {
            // The claim's value may be personal data: only its name is logged.
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: claim \"{path}\" does not meet the requirement"
            );
            return Outcome::Refuse(BearerError::InsufficientScope(None));
        }
    }
    if conf.phantom_enabled() {
        // interpret_phantom never yields an active token without a JWT, and
        // phantom entries have their own cache keys: fail closed anyway.
        let Some(jwt) = &claims.phantom else {
            return Outcome::Fail {
                timeout: false,
                status: IdpFailure::NoJwt.status(),
                retry_after: None,
            };
        };
        // SAFETY: r is a live request.
        return match unsafe { upstream::authorize(r, jwt) } {
            Some(()) => Outcome::Pass,
            None => Outcome::Error,
        };
    }
    match conf.exchange_enabled() {
        true => Outcome::Next(Stage::Exchange),
        false => Outcome::Pass,
    }
}

/// The answer for the first `auth_oauth2_token_require` that does not hold,
/// with the challenge that fits its status; `None` when all hold.
///
/// # Safety
/// `r` must be a live request.
unsafe fn unmet_requirement<'c>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
) -> Option<Outcome<'c>> {
    let failed = conf.require.iter().find(|requirement| {
        requirement.variables.iter().any(|variable| {
            // SAFETY: r is live; the template was compiled by the directive.
            !unsafe { evaluate(r, Some(*variable)) }.is_some_and(require_args::is_satisfied)
        })
    })?;
    Some(match failed.status {
        401 => Outcome::Refuse(BearerError::InvalidToken),
        403 => Outcome::Refuse(BearerError::InsufficientScope(None)),
        status => Outcome::Deny(status),
    })
}
