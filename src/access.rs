//! The ACCESS phase handler: one small state machine around the
//! introspection subrequest.
//!
//! first call   -> no/malformed token: refuse; cached verdict: use it;
//!                 else start the subrequest, NGX_AGAIN
//! while waiting -> NGX_AGAIN (nginx calls again when the subrequest is done)
//! answer in    -> store it in the cache if it may be; then
//!                 active: NGX_OK; inactive: 401; IdP failure: 502/503/504

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO,
    NGX_OK,
};
use ngx::http::HttpModuleLocationConf;

use crate::cache::{CacheKey, CachedIntrospection};
use crate::challenge::{www_authenticate, BearerError};
use crate::conf::{CacheConf, LocationConf};
use crate::introspection::{IdpFailure, IntrospectionResult};
use crate::request::{create_ctx, ctx, header_values, pool_str};
use crate::state::zone::{self, Lookup};
use crate::subrequest::start_introspection;
use crate::token::{self, BearerToken};
use crate::Module;

/// Per-request state, in the main request's pool.
#[derive(Default)]
pub struct RequestCtx {
    /// `None` while the introspection subrequest runs.
    pub outcome: Option<Result<IntrospectionResult, IdpFailure>>,
    /// What the cache said, for `$oauth2_token_cache_status`.
    pub cache_status: Option<CacheStatus>,
    /// Set when the answer should be stored once it arrives.
    store_under: Option<CacheKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Expired,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request whose loc_conf
    // has our LocationConf.
    let conf = match unsafe { Module::location_conf(&*r) } {
        Some(conf) if conf.introspection_enabled() => conf,
        _ => return NGX_DECLINED as ngx_int_t,
    };
    // SAFETY: only this module stores a RequestCtx in its slot.
    match unsafe { ctx::<RequestCtx>(r) } {
        None => unsafe { begin(r, conf) },
        Some(RequestCtx { outcome: None, .. }) => NGX_AGAIN as ngx_int_t,
        Some(ctx) => unsafe { conclude(r, conf, ctx) },
    }
}

/// # Safety
/// `r` must be the live main request.
unsafe fn begin(r: *mut ngx_http_request_t, conf: &LocationConf) -> ngx_int_t {
    // SAFETY: headers_in.headers of a live request is an initialised list.
    let (values, count) = unsafe { header_values::<2>(&(*r).headers_in.headers, b"Authorization") };
    match token::from_authorization(&values[..count.min(2)]) {
        BearerToken::Missing => unsafe { refuse(r, conf, BearerError::NoToken) },
        BearerToken::Malformed(why) => unsafe {
            refuse(r, conf, BearerError::InvalidRequest(why.description()))
        },
        BearerToken::Present(token) => {
            let mut state = RequestCtx::default();
            if let Some(cache) = &conf.introspect_cache {
                // SAFETY: the zone was set up by the directive and initialised by nginx.
                unsafe { consult_cache(cache, conf, token, &mut state) };
            }
            // SAFETY: the ctx lives in r's pool, as the subrequest callback needs.
            let Some(ctx) = (unsafe { create_ctx(r, state) }) else {
                return NGX_ERROR as ngx_int_t;
            };
            if ctx.outcome.is_some() {
                return unsafe { conclude(r, conf, ctx) };
            }
            match unsafe { start_introspection(r, conf, token, ctx) } {
                Ok(()) => NGX_AGAIN as ngx_int_t,
                Err(()) => NGX_ERROR as ngx_int_t,
            }
        }
    }
}

/// Fills `state` from the cache: a verdict on a hit, otherwise the key to
/// store the coming answer under.
///
/// # Safety
/// `cache.zone` must be an initialised zone.
unsafe fn consult_cache(
    cache: &CacheConf,
    conf: &LocationConf,
    token: &[u8],
    state: &mut RequestCtx,
) {
    if !cache.policy.enabled() {
        state.cache_status = Some(CacheStatus::Bypass);
        return;
    }
    let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
    let client_id = conf.client_id.as_deref().unwrap_or_default();
    let key = CacheKey::new(endpoint, client_id, token);
    // SAFETY: guaranteed by the caller.
    match unsafe {
        zone::lookup(
            cache.zone.cast(),
            &key,
            now_ms(),
            CachedIntrospection::decode,
        )
    } {
        Lookup::Hit(result) => {
            state.cache_status = Some(CacheStatus::Hit);
            state.outcome = Some(Ok(result));
        }
        Lookup::Expired => {
            state.cache_status = Some(CacheStatus::Expired);
            state.store_under = Some(key);
        }
        Lookup::Miss => {
            state.cache_status = Some(CacheStatus::Miss);
            state.store_under = Some(key);
        }
    }
}

/// # Safety
/// `r` must be the live main request.
unsafe fn conclude(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: &mut RequestCtx,
) -> ngx_int_t {
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    if let (Some(key), Some(cache), Some(Ok(result))) =
        (ctx.store_under.take(), &conf.introspect_cache, &ctx.outcome)
    {
        let now = now_ms();
        if let Some(expires) = cache.policy.expires_at(result, now) {
            // SAFETY: the zone was set up by the directive and initialised by nginx.
            unsafe {
                zone::insert(
                    cache.zone.cast(),
                    &key,
                    &CachedIntrospection::encode(result),
                    expires,
                    now,
                )
            };
        }
    }
    let Some(outcome) = &ctx.outcome else {
        return NGX_ERROR as ngx_int_t;
    };
    match outcome {
        Ok(IntrospectionResult::Active(_)) => NGX_OK as ngx_int_t,
        Ok(IntrospectionResult::Inactive) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: token is not active");
            unsafe { refuse(r, conf, BearerError::InvalidToken) }
        }
        Err(failure) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            failure.status() as ngx_int_t
        }
    }
}

/// Answers with the RFC 6750 challenge and the status that goes with it.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn refuse(r: *mut ngx_http_request_t, conf: &LocationConf, error: BearerError) -> ngx_int_t {
    let challenge = www_authenticate(conf.realm(), error);
    // SAFETY: the header lives in r's pool and list, as nginx's own modules do it.
    unsafe {
        let Some(value) = pool_str(r, challenge.as_bytes()) else {
            return NGX_ERROR as ngx_int_t;
        };
        let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
        match crate::request::push_header(headers, b"WWW-Authenticate", b"www-authenticate", value)
        {
            Some(h) => (*r).headers_out.www_authenticate = h,
            None => return NGX_ERROR as ngx_int_t,
        }
    }
    error.status() as ngx_int_t
}
