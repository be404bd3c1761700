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

use ngx::ffi::{ngx_http_request_t, NGX_LOG_INFO};
use ngx::http::HttpModuleMainConf;

use crate::conf::LocationConf;
use crate::handler::ctx::{CacheStatus, Outcome, RequestCtx, Stage};
use crate::handler::raw::now_ms;
use crate::metrics::jwt::JwtResult;
use crate::metrics::LookupResult;
use crate::module::Module;
use crate::oauth::cache::key::introspection_key;
use crate::oauth::cache::CachedIntrospection;
use crate::oauth::challenge::BearerError;
use crate::oauth::introspection::IntrospectionResult;
use crate::oauth::jose::access_token::Refusal;
use crate::oauth::jose::jws::JwsError;
use crate::oauth::jose::verify;
use crate::shm::table::{At, Lookup};
use crate::shm::zone;

/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn run<'c>(
    r: *mut ngx_http_request_t,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    // SAFETY: r is a live request of this module's location.
    let Some(main) = (unsafe { Module::main_conf(&*r) }) else {
        return Outcome::Error;
    };
    let combined = conf.introspection_enabled();
    // With introspection to follow, the verdict is the IdP's, cached as it is.
    let cache = conf.jwt.cache.filter(|c| !combined && c.policy.enabled());
    // SAFETY: ctx is r's context; the token lives in request memory, and no
    // `&mut` to the context is held across a call that runs variable getters.
    let token = unsafe { (*ctx).token() };
    let key = cache.map(|_| introspection_key(&conf.jwt.key_scope, token, None));
    let now = now_ms();
    if let (Some(cache), Some(key)) = (cache, key) {
        let at = At::reading(&cache.policy, now, 0);
        // SAFETY: the zone was set up by the directive and initialised by nginx.
        let found =
            unsafe { zone::lookup(cache.zone.cast(), &key, at, CachedIntrospection::decode) };
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
        // SAFETY: as above.
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
            // SAFETY: r is live; its connection log is valid for logging.
            let log = unsafe { (*(*r).connection).log };
            // Why, never the token or a claim's value.
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: JWT refused: {refusal}"
            );
            return Outcome::Refuse(BearerError::InvalidTokenBecause(refusal.description()));
        }
    };
    let result = IntrospectionResult::Active(claims);
    if let (Some(cache), Some(key)) = (cache, key) {
        if let Some(lifetime) = cache.policy.lifetime(&result, now) {
            let entry = CachedIntrospection::encode(&result);
            // SAFETY: as above. A full zone evicts; a store that fails is a later miss.
            unsafe { zone::insert(cache.zone.cast(), &key, &entry, lifetime, now, now) };
        }
    }
    // SAFETY: as above.
    unsafe { (*ctx).introspection_mut().answered(Ok(result)) };
    Outcome::Next(Stage::Verdict)
}
