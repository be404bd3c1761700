//! The JWT stage: a JWT access token checked at the gateway
//! (`oauth/jose/`), with no IdP call. Its verdict, the claims, goes where an
//! introspection answer goes, so the verdict stage, the variables and
//! exchange read it as they read the IdP's; `auth_oauth2_token_jwt_cache`
//! keeps it in a zone like an introspection answer (never past `exp`).
//!
//! A refused JWT is a 401 `invalid_token` whose `error_description` names
//! the check that failed. With `auth_oauth2_token_introspect on` as well, a
//! verified JWT goes on to introspection (which sees revocation) and a token
//! that is no JWS at all (an opaque token) too; no other refused JWT ever
//! reaches the IdP.

use ngx::ffi::NGX_LOG_INFO;

use crate::conf::LocationConf;
use crate::handler::ctx::{CacheStatus, Outcome, RequestCtx, Stage};
use crate::metrics::jwt::JwtResult;
use crate::metrics::LookupResult;
use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::key::introspection_key;
use crate::oauth::cache::CachedIntrospection;
use crate::oauth::challenge::BearerError;
use crate::oauth::introspection::IntrospectionResult;
use crate::oauth::jose::access_token::Refusal;
use crate::oauth::jose::jws::JwsError;
use crate::oauth::jose::verify;
use crate::shm::table::{At, Lookup};
use crate::shm::zone::ShmZone;

/// Checks the request's JWT; `ctx` is the request's context
/// (`RequestCtx::of`).
pub fn run<'c>(req: &mut Req<'_>, conf: &'c LocationConf, ctx: *mut RequestCtx) -> Outcome<'c> {
    let Some(main) = req.main_conf() else {
        return Outcome::Error;
    };
    let combined = conf.introspection_enabled();
    // With introspection to follow, the verdict is the IdP's, cached as it is.
    let cache = conf.jwt.cache.filter(|c| !combined && c.policy.enabled());
    // SAFETY: `ctx` is the request's context, in its pool; the token lives
    // in request memory, and no `&mut` to the context is held meanwhile.
    let token = unsafe { (*ctx).token() };
    // SAFETY: a cache conf's zone was added by its directive and
    // initialised by nginx before any request ran.
    let zone = cache.map(|cache| unsafe { ShmZone::new(cache.zone.cast()) });
    let key =
        zone.map(|zone| introspection_key(&zone.key_secret(), &conf.jwt.key_scope, token, None));
    let now = now_ms();
    if let (Some(cache), Some(key), Some(zone)) = (cache, key, zone) {
        let at = At::reading(&cache.policy, now, 0);
        let (found, _) = zone.lookup(&key, at, CachedIntrospection::decode);
        let (status, result) = match found {
            Lookup::Hit(value) | Lookup::Due(value) => (CacheStatus::Hit, Some(value)),
            Lookup::Expired | Lookup::Stale(..) => (CacheStatus::Expired, None),
            Lookup::Miss | Lookup::Pending => (CacheStatus::Miss, None),
        };
        let counted = match status {
            CacheStatus::Hit => LookupResult::Hit,
            CacheStatus::Expired => LookupResult::Expired,
            _ => LookupResult::Miss,
        };
        main.counters.add(cache.metrics.lookup(counted), 1);
        // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
        // lasts for these calls, which run no variable getter.
        unsafe {
            (*ctx).looked_up(status);
            if let Some(value) = result {
                (*ctx).introspection_mut().answered(Ok(value));
                return Outcome::Next(Stage::Verdict);
            }
        }
    }
    let verified = verify::verify_issuers(token, &conf.jwt.issuers_ready, &main.claims, now / 1000);
    if let Some(ids) = conf.jwt.metrics {
        let result = verified
            .as_ref()
            .map_or_else(JwtResult::of, |_| JwtResult::Verified);
        main.counters.add(ids.result(result), 1);
    }
    let claims = match verified {
        Ok(_) if combined => return Outcome::Next(Stage::Introspect),
        Err(Refusal::Malformed(JwsError::NotThreeParts)) if combined => {
            return Outcome::Next(Stage::Introspect)
        }
        Ok(claims) => claims,
        Err(refusal) => {
            // Why, never the token or a claim's value.
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                req.log(),
                "auth_oauth2_token: JWT refused: {refusal}"
            );
            return Outcome::Refuse(BearerError::InvalidTokenBecause(refusal.description()));
        }
    };
    let result = IntrospectionResult::Active(claims);
    if let (Some(cache), Some(key), Some(zone)) = (cache, key, zone) {
        if let Some(lifetime) = cache.policy.lifetime(&result, now) {
            let entry = CachedIntrospection::encode(&result);
            // A full zone evicts; a store that fails is a later miss.
            zone.insert(&key, &entry, lifetime, now, now);
        }
    }
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
    // lasts for the call, which runs no variable getter.
    unsafe { (*ctx).introspection_mut().answered(Ok(result)) };
    Outcome::Next(Stage::Verdict)
}
