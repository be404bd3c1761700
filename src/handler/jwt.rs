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

use std::rc::Rc;

use crate::conf::{LocationConf, MainConf};
use crate::handler::ctx::{CacheStatus, Outcome, RequestCtx, Stage};
use crate::handler::jwks::{self, Keys};
use crate::metrics::jwt::JwtResult;
use crate::metrics::LookupResult;
use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::key::introspection_key;
use crate::oauth::cache::CachedIntrospection;
use crate::oauth::challenge::BearerError;
use crate::oauth::introspection::IntrospectionResult;
use crate::oauth::jose::access_token::Refusal;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::jose::jws::{self, JwsError};
use crate::oauth::jose::verify::{self, Mode};
use crate::shm::table::{At, Lookup};
use crate::shm::zone::ShmZone;

/// Checks the request's JWT; `ctx` is the request's context
/// (`RequestCtx::of`).
#[inline(never)]
pub fn run<'c>(req: &mut Req<'_>, conf: &'c LocationConf, ctx: *mut RequestCtx) -> Outcome<'c> {
    let Some(main) = req.main_conf() else {
        return Outcome::Error;
    };
    let combined = conf.introspection_enabled();
    // Only the verdicts of issuers in mode=jwt are the gateway's to keep;
    // with introspection to follow, the verdict is the IdP's, cached as it is.
    let cache = conf
        .jwt
        .cache
        .filter(|c| c.policy.enabled() && conf.jwt.caches_verdicts());
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
    let jws = match jws::parse(token) {
        Ok(jws) => jws,
        // An opaque token: the IdP's to judge, where the location asks it.
        Err(JwsError::NotThreeParts) if combined => return Outcome::Next(Stage::Introspect),
        Err(e) => return refused(req, conf, main, Refusal::Malformed(e)),
    };
    let issuer = match verify::choose(&jws, &conf.jwt.issuers_ready) {
        Ok(issuer) => issuer,
        Err(refusal) => return refused(req, conf, main, refusal),
    };
    let issuers = &conf.jwt.issuers_ready;
    let place = issuers.iter().position(|i| core::ptr::eq(i, issuer));
    if issuer.mode == Mode::Introspect {
        return introspect(ctx, conf, place);
    }
    let fetched: Rc<[Jwk]> = match (&issuer.fetch, &conf.jwt.keys_cache) {
        (Some(fetch), Some(keys_cache)) => {
            let algorithms = issuer.policy.algorithms;
            let gauges = place.and_then(|p| conf.jwt.key_set_metrics.get(p).copied().flatten());
            let metrics = (conf.jwt.metrics, gauges);
            match jwks::keys(req, keys_cache, fetch, algorithms, &jws.header, metrics) {
                Keys::Ready(keys) => keys,
                Keys::Again => return Outcome::Again,
                Keys::Unknown => return refused(req, conf, main, Refusal::NoKey),
                Keys::Unavailable => {
                    count(conf, main, JwtResult::KeysUnavailable);
                    ngx::ngx_log_error!(
                        NGX_LOG_INFO,
                        req.log(),
                        "auth_oauth2_token: JWT not checked: no key set of its issuer can be had"
                    );
                    return Outcome::Fail {
                        timeout: false,
                        status: 503,
                        retry_after: None,
                    };
                }
                Keys::Error => return Outcome::Error,
            }
        }
        _ => Rc::from([]),
    };
    let claims = match verify::verify_chosen(&jws, issuer, &fetched, &main.claims, now / 1000) {
        Ok(_) if issuer.mode == Mode::JwtIntrospect => {
            count(conf, main, JwtResult::Verified);
            return introspect(ctx, conf, place);
        }
        Ok(claims) => claims,
        Err(refusal) => return refused(req, conf, main, refusal),
    };
    count(conf, main, JwtResult::Verified);
    let mut claims = claims;
    if cache.is_some() && key.is_some() && zone.is_some() {
        // A JWT without `iat` kept in the cache: issued, for the revocation
        // list, when the gateway first verified it (without a cache nothing
        // remembers that, and the list refuses it while a revocation lasts).
        claims.marks.first_seen(now.div_euclid(1000));
    }
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

/// On to introspection, at the endpoint of the issuer at `place`, if it
/// has one of its own.
fn introspect<'c>(ctx: *mut RequestCtx, conf: &LocationConf, place: Option<usize>) -> Outcome<'c> {
    let own = place.and_then(|p| conf.jwt.issuer_endpoint.get(p).copied().flatten());
    if let Some(own) = own {
        // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
        // lasts for the call, which runs no variable getter.
        unsafe { (*ctx).introspect_at(own) };
    }
    Outcome::Next(Stage::Introspect)
}

fn count(conf: &LocationConf, main: &MainConf, result: JwtResult) {
    if let Some(ids) = conf.jwt.metrics {
        main.counters.add(ids.result(result), 1);
    }
}

/// A JWT that failed a check: counted, logged (why, never the token or a
/// claim's value), and a 401 that says which check.
fn refused<'c>(
    req: &Req<'_>,
    conf: &LocationConf,
    main: &MainConf,
    refusal: Refusal,
) -> Outcome<'c> {
    count(conf, main, JwtResult::of(&refusal));
    ngx::ngx_log_error!(
        NGX_LOG_INFO,
        req.log(),
        "auth_oauth2_token: JWT refused: {refusal}"
    );
    Outcome::Refuse(BearerError::InvalidTokenBecause(refusal.description()))
}
