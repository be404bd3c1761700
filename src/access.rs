//! The ACCESS phase handler: one small state machine around the
//! introspection subrequest.
//!
//! first call    -> no/malformed token: refuse; cached verdict: use it;
//!                  another request of this worker already asks the IdP for
//!                  this token: wait for it; else start the subrequest
//! while waiting -> NGX_AGAIN (nginx calls again when the subrequest is done
//!                  or the leading request wakes us)
//! answer in     -> store it if it may be cached, hand it to the waiters;
//!                  active: NGX_OK; inactive: 401; IdP failure: 502/503/504

use ngx::ffi::{
    ngx_delete_posted_event, ngx_event_t, ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED,
    NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::HttpModuleLocationConf;

use crate::cache::{CacheKey, CachedIntrospection};
use crate::challenge::{www_authenticate, BearerError};
use crate::conf::{CacheConf, LocationConf};
use crate::inflight::{self, Role};
use crate::introspection::{IdpFailure, IntrospectionResult};
use crate::request::{create_ctx, ctx, header_values, pool_str, push_header};
use crate::state::zone::{self, Lookup};
use crate::subrequest::start_introspection;
use crate::token::{self, BearerToken};
use crate::Module;

/// Per-request state, in the main request's pool.
pub struct RequestCtx {
    /// `None` until the verdict is known.
    pub outcome: Option<Result<IntrospectionResult, IdpFailure>>,
    /// What the cache said, for `$oauth2_token_cache_status`.
    pub cache_status: Option<CacheStatus>,
    /// The cache key of this request's token, when a cache is in use.
    key: Option<CacheKey>,
    /// Whether this request asks the IdP for others of its worker too.
    leads: bool,
    pub waiting: Waiting,
    /// Posted by the leading request to resume this one.
    pub wake: ngx_event_t,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    No,
    ForLeader,
    /// The leader went away without an answer: look again.
    Restart,
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

impl Drop for RequestCtx {
    fn drop(&mut self) {
        // SAFETY: the request pool is being destroyed; the event must not
        // fire and the in-flight table must not keep pointing at us.
        unsafe {
            if self.wake.posted() != 0 {
                ngx_delete_posted_event(&mut self.wake);
            }
            if let Some(key) = self.key {
                if self.leads || self.waiting == Waiting::ForLeader {
                    inflight::leave(&key, self, self.leads);
                }
            }
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
        Some(ctx) if ctx.outcome.is_some() => unsafe { conclude(r, conf, ctx) },
        Some(ctx) if ctx.waiting == Waiting::Restart => unsafe { look_up(r, conf, ctx) },
        Some(_) => NGX_AGAIN as ngx_int_t,
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
        BearerToken::Present(_) => {
            let state = RequestCtx {
                outcome: None,
                cache_status: None,
                key: None,
                leads: false,
                waiting: Waiting::No,
                // SAFETY: an all-zero event is nginx's idle state (ngx_pcalloc'd).
                wake: unsafe { core::mem::zeroed() },
            };
            // SAFETY: the ctx lives in r's pool, as the subrequest callback
            // and the wake event need.
            match unsafe { create_ctx(r, state) } {
                Some(ctx) => {
                    ctx.wake.handler = Some(inflight::resume);
                    ctx.wake.data = r.cast();
                    // SAFETY: r's connection log lives as long as r.
                    ctx.wake.log = unsafe { (*(*r).connection).log };
                    unsafe { look_up(r, conf, ctx) }
                }
                None => NGX_ERROR as ngx_int_t,
            }
        }
    }
}

/// Finds a verdict for the request's token: in the cache, from a request
/// already asking the IdP, or by asking it.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
unsafe fn look_up(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: &mut RequestCtx,
) -> ngx_int_t {
    ctx.waiting = Waiting::No;
    // SAFETY: as in `begin`; the token was well-formed there.
    let (values, _) = unsafe { header_values::<1>(&(*r).headers_in.headers, b"Authorization") };
    let BearerToken::Present(token) = token::from_authorization(&values) else {
        return NGX_ERROR as ngx_int_t;
    };
    if let Some(cache) = &conf.introspect_cache {
        // SAFETY: the zone was set up by the directive and initialised by nginx.
        unsafe { consult_cache(cache, conf, token, ctx) };
        if ctx.outcome.is_some() {
            return unsafe { conclude(r, conf, ctx) };
        }
        if let Some(key) = ctx.key {
            if let Role::Waiter = inflight::join(key, ctx) {
                ctx.waiting = Waiting::ForLeader;
                return NGX_AGAIN as ngx_int_t;
            }
            ctx.leads = true;
        }
    }
    match unsafe { start_introspection(r, conf, token, ctx) } {
        Ok(()) => NGX_AGAIN as ngx_int_t,
        Err(()) => NGX_ERROR as ngx_int_t,
    }
}

/// Fills `ctx` from the cache: a verdict on a hit, otherwise the key the
/// coming answer is stored under.
///
/// # Safety
/// `cache.zone` must be an initialised zone.
unsafe fn consult_cache(
    cache: &CacheConf,
    conf: &LocationConf,
    token: &[u8],
    ctx: &mut RequestCtx,
) {
    if !cache.policy.enabled() {
        ctx.cache_status = Some(CacheStatus::Bypass);
        return;
    }
    let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
    let client_id = conf.client_id.as_deref().unwrap_or_default();
    let key = CacheKey::new(endpoint, client_id, token);
    // SAFETY: guaranteed by the caller.
    let lookup = unsafe {
        zone::lookup(
            cache.zone.cast(),
            &key,
            now_ms(),
            CachedIntrospection::decode,
        )
    };
    // A request sent back by a vanished leader keeps its first status.
    let first = ctx.cache_status.is_none();
    let status = match lookup {
        Lookup::Hit(result) => {
            ctx.outcome = Some(Ok(result));
            CacheStatus::Hit
        }
        Lookup::Expired => CacheStatus::Expired,
        Lookup::Miss => CacheStatus::Miss,
    };
    if first || status == CacheStatus::Hit {
        ctx.cache_status = Some(status);
    }
    if ctx.outcome.is_none() {
        ctx.key = Some(key);
    }
}

/// # Safety
/// `r` must be the live main request and `ctx` its context, with an outcome.
unsafe fn conclude(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: &mut RequestCtx,
) -> ngx_int_t {
    if ctx.leads {
        ctx.leads = false;
        if let (Some(key), Some(cache), Some(Ok(result))) =
            (&ctx.key, &conf.introspect_cache, &ctx.outcome)
        {
            let now = now_ms();
            if let Some(expires) = cache.policy.expires_at(result, now) {
                let value = CachedIntrospection::encode(result);
                // SAFETY: the zone was set up by the directive and initialised by nginx.
                unsafe { zone::insert(cache.zone.cast(), key, &value, expires, now) };
            }
        }
        if let Some(key) = ctx.key {
            // SAFETY: the in-flight table only holds live contexts.
            unsafe { inflight::finish(&key, ctx) };
        }
    }
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    match &ctx.outcome {
        Some(Ok(IntrospectionResult::Active(_))) => NGX_OK as ngx_int_t,
        Some(Ok(IntrospectionResult::Inactive)) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: token is not active");
            unsafe { refuse(r, conf, BearerError::InvalidToken) }
        }
        Some(Err(failure)) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            failure.status() as ngx_int_t
        }
        None => NGX_ERROR as ngx_int_t,
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
        match push_header(headers, b"WWW-Authenticate", b"www-authenticate", value) {
            Some(h) => (*r).headers_out.www_authenticate = h,
            None => return NGX_ERROR as ngx_int_t,
        }
    }
    error.status() as ngx_int_t
}
