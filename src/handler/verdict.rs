//! The verdict stage: what the IdP said about the token and its binding
//! (`handler/dpop.rs`; the fleet's replay store, when asked, is a stage of
//! its own), then the requirements stage: what the location asks of an
//! active token (`oauth::verdict`), then where the request goes: upstream
//! as it is, with the phantom JWT, or on to the exchange.

use ngx::ffi::{NGX_LOG_ERR, NGX_LOG_INFO};

use crate::conf::{require_args, LocationConf};
use crate::handler::ctx::{CacheStatus, Outcome, RequestCtx, Stage};
use crate::handler::{dpop, upstream};
use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::key::token_tag;
use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::challenge::BearerError;
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
use crate::oauth::ssf::Marks;
use crate::oauth::verdict::{self, StepUpRules, Verdict};
use crate::shm::revocations;

/// `ctx` is the request's context (`RequestCtx::of`), whose introspection
/// answer is known.
pub fn run<'c>(req: &mut Req<'_>, conf: &'c LocationConf, ctx: *mut RequestCtx) -> Outcome<'c> {
    let log = req.log();
    // SAFETY: `ctx` is the request's context, in its pool, alive for this
    // call. Only shared references to it exist while `require` values are
    // evaluated, as the variable getters read it too.
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
    // Revoked by an event the IdP pushed: checked before anything else of
    // an active token, for every way the answer came (IdP, cache, Redis
    // tier, a JWT verified here).
    if revoked(req, ctx, &claims.marks) {
        return Outcome::Refuse(BearerError::InvalidToken);
    }
    // What the token is bound to, before what it grants: a token that is
    // not the client's grants nothing.
    let cnf = claims.cnf;
    // The check writes the context: `claims` is not used across it, and
    // the answer is read again after it.
    match dpop::check(req, conf, ctx, &cnf) {
        Ok(dpop::Checked::Held) => requirements(req, conf, ctx),
        Ok(dpop::Checked::AskFleet) => Outcome::Next(Stage::FleetReplay),
        Err(refused) => refused,
    }
}

/// The requirements stage: the token's binding held; what the location
/// asks of it, then where the request goes. `ctx` is the request's context
/// (`RequestCtx::of`), whose introspection answer is known.
pub fn requirements<'c>(
    req: &mut Req<'_>,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    let log = req.log();
    // SAFETY: `ctx` is the request's context, in its pool, alive for this
    // call; the `&mut` the binding check took of it has ended, and only
    // shared references to it exist from here on.
    let Some(Ok(IntrospectionResult::Active(claims))) =
        (unsafe { (*ctx).introspection().answer() })
    else {
        return Outcome::Error;
    };
    let resource = match conf.require_resource {
        Some((template, index)) => match req.evaluate(Some(template)) {
            Some(url) => Some((url, index)),
            None => return Outcome::Error,
        },
        None => None,
    };
    let scopes = conf.require_scope.as_deref().unwrap_or_default();
    let unmet = || unmet_requirement(req, conf);
    let audience = conf.require_audience.as_ref();
    let step_up = StepUpRules {
        acr: conf.require_acr.as_ref(),
        age: conf.max_auth_age.as_ref(),
        now_s: now_ms().div_euclid(1000),
    };
    match verdict::check(
        claims,
        audience,
        resource,
        scopes,
        &conf.require_claim,
        &step_up,
        unmet,
    ) {
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
        Verdict::StepUp(shortfall) => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: {}",
                shortfall.description()
            );
            return Outcome::Refuse(BearerError::InsufficientUserAuthentication {
                shortfall,
                acr_values: conf.require_acr.as_ref().map(|rule| rule.text.as_str()),
                max_age: conf.max_auth_age.map(|rule| rule.seconds),
            });
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
        return match upstream::authorize(req, jwt) {
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
fn unmet_requirement<'c>(req: &mut Req<'_>, conf: &LocationConf) -> Option<Outcome<'c>> {
    let failed = conf.require.iter().find(|requirement| {
        requirement.variables.iter().any(|variable| {
            !req.evaluate(Some(*variable))
                .is_some_and(require_args::is_satisfied)
        })
    })?;
    Some(match failed.status {
        401 => Outcome::Refuse(BearerError::InvalidToken),
        403 => Outcome::Refuse(BearerError::InsufficientScope(None)),
        status => Outcome::Deny(status),
    })
}

/// Whether the Shared Signals receiver's list refuses the token with
/// `marks` (logged and counted). An answer just stored in a cache zone
/// also has its list keys noted in the receiver's index here.
fn revoked(req: &Req<'_>, ctx: *mut RequestCtx, marks: &Marks) -> bool {
    let log = req.log();
    let Some((main, receiver)) = req.main_conf().and_then(|m| Some((m, m.ssf.as_ref()?))) else {
        return false;
    };
    // SAFETY: the receiver's zone was declared by its directive and
    // initialised by nginx before any request runs.
    if unsafe { revocations::revoked(receiver.zone.cast(), marks) } {
        ngx::ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "auth_oauth2_token: token revoked by a Shared Signals event"
        );
        main.counters.add(receiver.metrics.refused(), 1);
        return true;
    }
    // An answer just stored in a cache zone: its list keys are noted
    // in the index, which a revocation reads to drop its entries (not
    // on a hit: the miss that stored the entry noted them). Not for a
    // token without `iat`: its entry keeps when it was first seen,
    // which a new answer after the revocation would move.
    // SAFETY: `ctx` is the request's context, in its pool; its status
    // is copied out.
    let status = unsafe { (*ctx).cache_status() };
    if let (
        Some(index),
        Some(CacheStatus::Miss | CacheStatus::Expired | CacheStatus::HitShared),
        false,
    ) = (receiver.index_zone, status, marks.seen_now())
    {
        let now = now_ms();
        // SAFETY: `ctx` is the request's context, in its pool; the
        // token's bytes are the request's.
        let token_tag = token_tag(unsafe { (*ctx).token() });
        // SAFETY: the index zone was declared by the receiver's
        // directive and initialised by nginx before any request runs.
        unsafe {
            revocations::index(
                index.cast(),
                marks,
                &token_tag,
                now.saturating_add(receiver.token_lifetime_ms),
                now,
            )
        };
    }
    false
}
