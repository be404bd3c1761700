//! The token check (ACCESS phase, or PREACCESS with auth_oauth2_token_phase):
//! one small state machine around the IdP subrequests.
//!
//! first call    -> token from the configured sources, withheld from the
//!                  upstream unless it is the Authorization header;
//!                  no/malformed token: refuse; cached verdict: use it;
//!                  another request of this worker already asks the IdP for
//!                  this token: wait for it; else start the subrequest
//! while waiting -> NGX_AGAIN (nginx calls again when the subrequest is done
//!                  or the leading request wakes us)
//! answer in     -> store it if it may be cached, hand it to the waiters;
//!                  active: required scopes (403), require rules, required
//!                  claims (403); phantom: the JWT becomes the upstream's
//!                  Authorization; exchange the token if configured; NGX_OK;
//!                  inactive: 401; IdP failure: 502/503/504
//! exchange      -> cached token, or a subrequest to the token endpoint;
//!                  issued: it becomes the upstream's Authorization, NGX_OK;
//!                  invalid_grant: 401; invalid_target/scope: 403; else 502/504

pub mod credentials;
pub mod idp_call;
pub mod inflight;
pub mod raw;
pub mod variables;

use ngx::ffi::{
    ngx_delete_posted_event, ngx_event_t, ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_AGAIN,
    NGX_DECLINED, NGX_ERROR, NGX_HTTP_OPTIONS, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use crate::conf::{require_args, CacheConf, Challenge, LocationConf, Phase, Situation, Template};
use crate::handler::raw::{create_ctx, ctx, pool_str, push_header, set_authorization};
use crate::oauth::bearer::{BearerToken, Malformed};
use crate::oauth::cache::{CacheKey, CachedExchange, CachedIntrospection};
use crate::oauth::carriers::TokenSource;
use crate::oauth::challenge::{www_authenticate, BearerError};
use crate::oauth::exchange::{self, ExchangeFailure, ExchangeParams, IssuedToken};
use crate::oauth::form;
use crate::oauth::introspection::{IdpFailure, IntrospectionResult, TokenClaims};
use crate::oauth::scope;
use crate::shm::table::{self, Lookup};
use crate::Module;
use idp_call::IdpCall;
use inflight::Role;

/// Per-request state, in the main request's pool.
pub struct RequestCtx {
    /// The client's token, in request memory (header, args or pool copy).
    token: ngx_str_t,
    /// `None` until the verdict is known.
    pub outcome: Option<Result<IntrospectionResult, IdpFailure>>,
    /// What the cache said, for `$oauth2_token_cache_status`.
    pub cache_status: Option<CacheStatus>,
    /// The cache key of this request's token, when a cache is in use.
    key: Option<CacheKey>,
    /// Whether this request asks the IdP for others of its worker too.
    leads: bool,
    pub waiting: Waiting,
    /// Posted by the leading request to resume this one; made (in the
    /// request pool) only when this request waits, which few do.
    pub wake: *mut ngx_event_t,
    /// Set once the exchange stage has begun.
    exchanging: bool,
    /// `None` until the token endpoint's answer (or the cache's) is known.
    pub exchange: Option<Result<IssuedToken, ExchangeFailure>>,
    /// The exchange cache key the coming answer is stored under.
    exchange_key: Option<CacheKey>,
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
            if !self.wake.is_null() && (*self.wake).posted() != 0 {
                ngx_delete_posted_event(self.wake);
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

/// The ACCESS-phase entry point (the default phase).
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    unsafe { run_in(Phase::Access, r) }
}

/// The PREACCESS-phase entry point, for `auth_oauth2_token_phase preaccess`.
/// That phase's checker treats NGX_OK as "skip the rest of the phase", so a
/// pass is NGX_DECLINED here, letting limit_req and friends run after us.
/// Unlike ACCESS, PREACCESS also runs for subrequests: ours skip it.
pub unsafe extern "C" fn preaccess_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    unsafe {
        if r != (*r).main {
            return NGX_DECLINED as ngx_int_t;
        }
        match run_in(Phase::Preaccess, r) {
            rc if rc == NGX_OK as ngx_int_t => NGX_DECLINED as ngx_int_t,
            rc => rc,
        }
    }
}

/// # Safety
/// `r` must be a live main request whose loc_conf has our LocationConf.
unsafe fn run_in(phase: Phase, r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: guaranteed by the caller.
    let conf = match unsafe { Module::location_conf(&*r) } {
        Some(conf)
            if conf.phase() == phase
                && (conf.introspection_enabled() || conf.exchange_enabled()) =>
        {
            conf
        }
        _ => return NGX_DECLINED as ngx_int_t,
    };
    // SAFETY: nginx runs ACCESS handlers for the live main request only, and
    // only this module stores a RequestCtx in its slot; every function below
    // requires exactly that. The context is handled through a raw pointer:
    // variable getters read it while these functions run (`require` values,
    // templates), so no `&mut` to it may be held across those calls.
    unsafe {
        let Some(ctx) = ctx::<RequestCtx>(r).map(|c| c as *mut RequestCtx) else {
            return begin(r, conf);
        };
        if (*ctx).exchanging {
            return match (*ctx).exchange.is_some() {
                true => conclude_exchange(r, conf, ctx),
                false => NGX_AGAIN as ngx_int_t,
            };
        }
        if (*ctx).outcome.is_some() {
            return conclude(r, conf, ctx);
        }
        match (*ctx).waiting {
            Waiting::Restart => look_up(r, conf, ctx),
            _ => NGX_AGAIN as ngx_int_t,
        }
    }
}

/// # Safety
/// `r` must be the live main request.
unsafe fn begin(r: *mut ngx_http_request_t, conf: &LocationConf) -> ngx_int_t {
    let sources = conf
        .token_source
        .as_deref()
        .unwrap_or(credentials::DEFAULT_SOURCES);
    // After an internal redirect the check runs again, with the token the
    // first pass found: the request may no longer carry it.
    // SAFETY: r is the live main request.
    let (found, source, saved) = match unsafe { credentials::saved(r) } {
        Some(token) => (BearerToken::Present(token), None, true),
        None => {
            // SAFETY: as above.
            let (found, source) = unsafe { credentials::find(r, sources) };
            (found, source, false)
        }
    };
    // SAFETY: r is the live main request.
    let is_options = unsafe { (*r).method } == NGX_HTTP_OPTIONS as usize;
    let token = match found {
        BearerToken::Missing if conf.passes_preflight() && is_options => {
            return NGX_DECLINED as ngx_int_t;
        }
        // SAFETY: r is the live main request.
        BearerToken::Missing => return unsafe { refuse(r, conf, BearerError::NoToken) },
        BearerToken::Malformed(why) => {
            let error = match why {
                Malformed::DuplicateHeader => BearerError::InvalidRequest(why.description()),
                _ => BearerError::MalformedToken(why.description()),
            };
            // SAFETY: r is the live main request.
            return unsafe { refuse(r, conf, error) };
        }
        BearerToken::Present(token) => token,
    };
    let withholds = sources.iter().any(|s| *s != TokenSource::Bearer);
    if withholds {
        // After a redirect the carriers this location names go too; the
        // Authorization header stays as the first pass left it.
        let used = source.unwrap_or(&TokenSource::Bearer);
        // SAFETY: r is live; `token` points at memory withhold() leaves alone.
        if unsafe { credentials::withhold(r, sources, used) }.is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    // Remember the token when this pass changes what the request carries.
    let changes_request = withholds || conf.phantom_enabled() || conf.exchange_enabled();
    // SAFETY: r is live; `token` lives in request memory.
    if !saved && changes_request && unsafe { credentials::save(r, token) }.is_none() {
        return NGX_ERROR as ngx_int_t;
    }
    let state = RequestCtx {
        token: ngx_str_t {
            len: token.len(),
            data: token.as_ptr().cast_mut(),
        },
        outcome: None,
        cache_status: None,
        key: None,
        leads: false,
        waiting: Waiting::No,
        wake: core::ptr::null_mut(),
        exchanging: false,
        exchange: None,
        exchange_key: None,
    };
    // SAFETY: the ctx lives in r's pool, as the subrequest callback and the
    // wake event need.
    let Some(ctx) = (unsafe { create_ctx(r, state) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    let ctx: *mut RequestCtx = ctx;
    // SAFETY: r is the live main request and ctx its context.
    unsafe {
        match conf.introspection_enabled() {
            true => look_up(r, conf, ctx),
            false => start_exchange(r, conf, ctx),
        }
    }
}

impl RequestCtx {
    /// The client's token.
    fn token<'r>(&self) -> &'r [u8] {
        // SAFETY: `token` points at request memory that outlives the ctx.
        unsafe { core::slice::from_raw_parts(self.token.data, self.token.len) }
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
    ctx: *mut RequestCtx,
) -> ngx_int_t {
    (*ctx).waiting = Waiting::No;
    let token = (*ctx).token();
    if let Some(cache) = &conf.introspect_cache {
        // SAFETY: the zone was set up by the directive and initialised by nginx.
        unsafe { consult_cache(r, cache, conf, token, ctx) };
        if (*ctx).outcome.is_some() {
            // SAFETY: r is the live main request and ctx its context.
            return unsafe { conclude(r, conf, ctx) };
        }
        if let Some(key) = (*ctx).key {
            if let Role::Waiter = inflight::join(key, ctx) {
                (*ctx).waiting = Waiting::ForLeader;
                // SAFETY: r is the live main request and ctx its context.
                if unsafe { prepare_wake(r, ctx) }.is_none() {
                    // SAFETY: ctx was just registered as a waiter.
                    unsafe { inflight::leave(&key, ctx, false) };
                    (*ctx).waiting = Waiting::No;
                    return NGX_ERROR as ngx_int_t;
                }
                return NGX_AGAIN as ngx_int_t;
            }
            (*ctx).leads = true;
        }
    }
    let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
    let call = match conf.phantom_enabled() {
        true => IdpCall::PhantomIntrospection,
        false => IdpCall::Introspection,
    };
    // SAFETY: r is the live main request and ctx its context.
    unsafe {
        ask_idp(
            r,
            conf,
            call,
            endpoint,
            form::introspection_body(token),
            ctx,
        )
    }
}

/// Gives a waiting request the event its leader posts to resume it.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
unsafe fn prepare_wake(r: *mut ngx_http_request_t, ctx: *mut RequestCtx) -> Option<()> {
    if !(*ctx).wake.is_null() {
        return Some(());
    }
    // SAFETY: a zeroed event is nginx's idle state; it lives in r's pool,
    // as long as the context that points at it.
    unsafe {
        let wake = ngx::ffi::ngx_pcalloc((*r).pool, size_of::<ngx_event_t>()).cast::<ngx_event_t>();
        if wake.is_null() {
            return None;
        }
        (*wake).handler = Some(inflight::resume);
        (*wake).data = r.cast();
        (*wake).log = (*(*r).connection).log;
        (*ctx).wake = wake;
    }
    Some(())
}

/// Sends `body` to the IdP's internal location as this gateway's client:
/// credentials in the Authorization header (basic) or the body (post).
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
unsafe fn ask_idp(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    call: IdpCall,
    endpoint: &[u8],
    mut body: Vec<u8>,
    ctx: *mut RequestCtx,
) -> ngx_int_t {
    body.extend_from_slice(&conf.client_credentials_form);
    // SAFETY: the ctx lives in r's pool; the endpoint in the configuration.
    match unsafe { idp_call::start(r, call, endpoint, &body, &conf.client_authorization, ctx) } {
        Ok(()) => NGX_AGAIN as ngx_int_t,
        Err(()) => NGX_ERROR as ngx_int_t,
    }
}

/// Fills `ctx` from the cache: a verdict on a hit, otherwise the key the
/// coming answer is stored under.
///
/// # Safety
/// `r` must be a live request; `cache.zone` an initialised zone.
unsafe fn consult_cache(
    r: *mut ngx_http_request_t,
    cache: &CacheConf,
    conf: &LocationConf,
    token: &[u8],
    ctx: *mut RequestCtx,
) {
    if !cache.policy.enabled() {
        (*ctx).cache_status = Some(CacheStatus::Bypass);
        return;
    }
    let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
    let client_id = conf.client_id.as_deref().unwrap_or_default();
    // A phantom answer is another answer, and entries keep the configured
    // claims by position: neither may be shared across such differences.
    let kind: &[u8] = match conf.phantom_enabled() {
        true => b"phantom",
        false => b"",
    };
    // SAFETY: the main conf exists for every request of the http block.
    let claims = unsafe { Module::main_conf(&*r) }.map_or(&[][..], |m| &m.claims_fingerprint);
    let key = match (kind, claims) {
        ([], []) => CacheKey::new(endpoint, client_id, token),
        _ => CacheKey::from_parts(&[endpoint, client_id, token, kind, claims]),
    };
    // SAFETY: guaranteed by the caller.
    let lookup = unsafe {
        table::lookup(
            cache.zone.cast(),
            &key,
            now_ms(),
            CachedIntrospection::decode,
        )
    };
    // A request sent back by a vanished leader keeps its first status.
    let first = (*ctx).cache_status.is_none();
    let status = match lookup {
        Lookup::Hit(result) => {
            (*ctx).outcome = Some(Ok(result));
            CacheStatus::Hit
        }
        Lookup::Expired => CacheStatus::Expired,
        Lookup::Miss => CacheStatus::Miss,
    };
    if first || status == CacheStatus::Hit {
        (*ctx).cache_status = Some(status);
    }
    if (*ctx).outcome.is_none() {
        (*ctx).key = Some(key);
    }
}

/// # Safety
/// `r` must be the live main request and `ctx` its context, with an outcome.
unsafe fn conclude(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> ngx_int_t {
    if (*ctx).leads {
        (*ctx).leads = false;
        if let (Some(key), Some(cache), Some(Ok(result))) =
            (&(*ctx).key, &conf.introspect_cache, &(*ctx).outcome)
        {
            let now = now_ms();
            if let Some(expires) = cache.policy.expires_at(result, now) {
                let value = CachedIntrospection::encode(result);
                // SAFETY: the zone was set up by the directive and initialised by nginx.
                unsafe { table::insert(cache.zone.cast(), key, &value, expires, now) };
            }
        }
        if let Some(key) = (*ctx).key {
            // SAFETY: the in-flight table only holds live contexts.
            unsafe { inflight::finish(&key, &*ctx) };
        }
    }
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    if let Some(Ok(IntrospectionResult::Active(claims))) = &(*ctx).outcome {
        // The token is genuine; now what this location asks of it, in order.
        let scopes = conf.require_scope.as_deref().unwrap_or_default();
        if !scopes.is_empty() && !scope::grants_all(claims.scope.as_deref(), scopes) {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: token lacks a required scope"
            );
            let needed = Some(conf.required_scope_text.as_str());
            // SAFETY: r is the live main request (this function's contract).
            return unsafe { refuse(r, conf, BearerError::InsufficientScope(needed)) };
        }
        // SAFETY: as above.
        if let Some(status) = unsafe { unmet_requirement(r, conf) } {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: a required variable is empty or \"0\""
            );
            return status;
        }
        if let Some(check) = conf
            .require_claim
            .iter()
            .find(|check| !check.rule.is_met_by_json(claim_json(claims, check.index)))
        {
            // The claim's value may be personal data: only its name is logged.
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: claim \"{}\" does not meet the requirement",
                check.rule.path()
            );
            // SAFETY: as above.
            return unsafe { refuse(r, conf, BearerError::InsufficientScope(None)) };
        }
        if conf.phantom_enabled() {
            // SAFETY: as above.
            return unsafe { forward_phantom(r, conf, claims) };
        }
        if conf.exchange_enabled() {
            // SAFETY: as above.
            return unsafe { start_exchange(r, conf, ctx) };
        }
        return NGX_OK as ngx_int_t;
    }
    match &(*ctx).outcome {
        Some(Ok(IntrospectionResult::Active(_))) => NGX_OK as ngx_int_t,
        Some(Ok(IntrospectionResult::Inactive)) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: token is not active");
            // SAFETY: r is the live main request (this function's contract).
            unsafe { refuse(r, conf, BearerError::InvalidToken) }
        }
        Some(Err(failure)) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            let timeout = *failure == IdpFailure::Timeout;
            // SAFETY: r is the live main request (this function's contract).
            unsafe { fail(r, conf, timeout, failure.status()) }
        }
        None => NGX_ERROR as ngx_int_t,
    }
}

/// The JSON value of a `require_claim` path, if the token has that claim.
fn claim_json(claims: &TokenClaims, index: usize) -> Option<&str> {
    claims.checked.get(index).and_then(Option::as_deref)
}

/// Puts the IdP's JWT in place of the client's token.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn forward_phantom(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    claims: &TokenClaims,
) -> ngx_int_t {
    let Some(jwt) = &claims.phantom else {
        // interpret_phantom never yields an active token without one, and
        // phantom entries have their own cache keys: fail closed anyway.
        // SAFETY: r is the live main request (this function's contract).
        return unsafe { fail(r, conf, false, IdpFailure::NoJwt.status()) };
    };
    // SAFETY: as above.
    unsafe { authorize_upstream(r, jwt) }
}

/// Makes `Bearer <token>` the upstream's Authorization.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn authorize_upstream(r: *mut ngx_http_request_t, token: &[u8]) -> ngx_int_t {
    const SCHEME: &[u8] = b"Bearer ";
    // SAFETY: the value is built in r's pool, where the header lives too.
    unsafe {
        let len = SCHEME.len() + token.len();
        let data = ngx::ffi::ngx_pnalloc((*r).pool, len).cast::<u8>();
        if data.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        core::ptr::copy_nonoverlapping(SCHEME.as_ptr(), data, SCHEME.len());
        core::ptr::copy_nonoverlapping(token.as_ptr(), data.add(SCHEME.len()), token.len());
        match set_authorization(r, ngx_str_t { len, data }) {
            Some(()) => NGX_OK as ngx_int_t,
            None => NGX_ERROR as ngx_int_t,
        }
    }
}

/// Answers an IdP failure with its status, or the one the location chose.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn fail(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    timeout: bool,
    status: u16,
) -> ngx_int_t {
    let (situation, code) = match timeout {
        true => (Situation::IdpTimeout, "idp_timeout"),
        false => (Situation::IdpError, "idp_error"),
    };
    // SAFETY: r is live (this function's contract).
    unsafe { record_error(r, code) };
    conf.statuses.get(situation).unwrap_or(status) as ngx_int_t
}

/// Sets `$oauth2_token_error`.
///
/// # Safety
/// `r` must be a live request.
unsafe fn record_error(r: *mut ngx_http_request_t, code: &'static str) {
    // SAFETY: the main conf exists for every request of an http block
    // where our directives are; the index was set at postconfiguration.
    unsafe {
        if let Some(main) = Module::main_conf(&*r) {
            if let Some(index) = main.error_variable {
                variables::set_error(r, index, code);
            }
        }
    }
}

/// The answer for the first `auth_oauth2_token_require` that does not hold:
/// its status, with the challenge that fits it; `None` when all hold.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn unmet_requirement(r: *mut ngx_http_request_t, conf: &LocationConf) -> Option<ngx_int_t> {
    for requirement in &conf.require {
        for variable in &requirement.variables {
            // SAFETY: r is live; the template was compiled by the directive.
            let holds =
                unsafe { evaluate(r, Some(*variable)) }.is_some_and(require_args::is_satisfied);
            if !holds {
                let error = match requirement.status {
                    401 => Some(BearerError::InvalidToken),
                    403 => Some(BearerError::InsufficientScope(None)),
                    _ => None,
                };
                // SAFETY: as above.
                return Some(unsafe {
                    match error {
                        Some(error) => refuse(r, conf, error),
                        None => {
                            record_error(r, "access_denied");
                            requirement.status as ngx_int_t
                        }
                    }
                });
            }
        }
    }
    None
}

/// Evaluates a directive value for this request (empty when unset).
///
/// # Safety
/// `r` must be a live request; `template` a value compiled by the directive.
unsafe fn evaluate<'r>(r: *mut ngx_http_request_t, template: Option<Template>) -> Option<&'r [u8]> {
    let Some(Template(cv)) = template else {
        return Some(&[]);
    };
    let mut value = ngx::ffi::ngx_str_t::empty();
    // SAFETY: nginx evaluates the value into memory of r's pool.
    unsafe {
        if ngx::ffi::ngx_http_complex_value(r, cv.cast(), &mut value) != NGX_OK as ngx_int_t {
            return None;
        }
        Some(if value.len == 0 {
            &[]
        } else {
            core::slice::from_raw_parts(value.data, value.len)
        })
    }
}

/// Trades the client's token for one meant for the upstream: from the
/// exchange cache, or by asking the token endpoint.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
unsafe fn start_exchange(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> ngx_int_t {
    (*ctx).exchanging = true;
    let token = (*ctx).token();
    // SAFETY: r is the live main request; templates come from the directives.
    let (audience, scope, resource) = unsafe {
        match (
            evaluate(r, conf.audience),
            evaluate(r, conf.scope),
            evaluate(r, conf.resource),
        ) {
            (Some(a), Some(s), Some(res)) => (a, s, res),
            _ => return NGX_ERROR as ngx_int_t,
        }
    };
    let params = ExchangeParams {
        audience,
        scope,
        resource,
        requested_token_type: conf.requested_token_type.as_deref().unwrap_or_default(),
    };
    let endpoint = conf.token_endpoint.as_deref().unwrap_or_default();
    let only_exchange = !conf.introspection_enabled();
    if let Some(cache) = &conf.exchange_cache {
        let status = if cache.policy.enabled() {
            let client_id = conf.client_id.as_deref().unwrap_or_default();
            let key = CacheKey::from_parts(&[
                endpoint,
                client_id,
                token,
                params.audience,
                params.scope,
                params.resource,
                params.requested_token_type,
            ]);
            // SAFETY: the zone was set up by the directive and initialised by nginx.
            match unsafe {
                table::lookup(cache.zone.cast(), &key, now_ms(), CachedExchange::decode)
            } {
                Lookup::Hit(issued) => {
                    (*ctx).exchange = Some(Ok(issued));
                    CacheStatus::Hit
                }
                Lookup::Expired => {
                    (*ctx).exchange_key = Some(key);
                    CacheStatus::Expired
                }
                Lookup::Miss => {
                    (*ctx).exchange_key = Some(key);
                    CacheStatus::Miss
                }
            }
        } else {
            CacheStatus::Bypass
        };
        if only_exchange {
            (*ctx).cache_status = Some(status);
        }
        if (*ctx).exchange.is_some() {
            // SAFETY: r and ctx as this function requires.
            return unsafe { conclude_exchange(r, conf, ctx) };
        }
    }
    // SAFETY: r is the live main request and ctx its context.
    unsafe {
        ask_idp(
            r,
            conf,
            IdpCall::Exchange,
            endpoint,
            exchange::request_body(token, &params),
            ctx,
        )
    }
}

/// # Safety
/// `r` must be the live main request and `ctx` its context, with an exchange result.
unsafe fn conclude_exchange(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> ngx_int_t {
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    match &(*ctx).exchange {
        Some(Ok(issued)) => {
            if let (Some(key), Some(cache)) = ((*ctx).exchange_key.take(), &conf.exchange_cache) {
                let subject_exp = match &(*ctx).outcome {
                    Some(Ok(IntrospectionResult::Active(claims))) => claims.exp,
                    _ => None,
                };
                let now = now_ms();
                if let Some(expires) =
                    cache
                        .policy
                        .exchange_expires_at(issued.expires_in, subject_exp, now)
                {
                    // SAFETY: the zone was set up by the directive and initialised by nginx.
                    unsafe {
                        table::insert(
                            cache.zone.cast(),
                            &key,
                            &CachedExchange::encode(issued),
                            expires,
                            now,
                        )
                    };
                }
            }
            // SAFETY: r is the live main request (this function's contract).
            unsafe { authorize_upstream(r, issued.access_token.as_bytes()) }
        }
        Some(Err(failure)) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            let timeout = *failure == ExchangeFailure::Timeout;
            // SAFETY: r is the live main request (this function's contract).
            unsafe {
                match failure {
                    ExchangeFailure::InvalidGrant => refuse(r, conf, BearerError::InvalidToken),
                    ExchangeFailure::NotPermitted(_) => {
                        refuse(r, conf, BearerError::InsufficientScope(None))
                    }
                    _ => fail(r, conf, timeout, failure.status()),
                }
            }
        }
        None => NGX_ERROR as ngx_int_t,
    }
}

/// Answers with the status that goes with `error` and, unless the location
/// turned it off, a `WWW-Authenticate` challenge: ours (RFC 6750 §3) or the
/// operator's.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn refuse(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    error: BearerError<'_>,
) -> ngx_int_t {
    let situation = match error {
        BearerError::NoToken => Situation::Missing,
        BearerError::InvalidRequest(_)
        | BearerError::MalformedToken(_)
        | BearerError::InvalidToken => Situation::Invalid,
        BearerError::InsufficientScope(_) => Situation::Forbidden,
    };
    let status = conf.statuses.get(situation).unwrap_or(error.status()) as ngx_int_t;
    // SAFETY: r is live (this function's contract).
    unsafe { record_error(r, error.code()) };
    let value = match conf.www_authenticate.unwrap_or(Challenge::Standard) {
        Challenge::Off => return status,
        // SAFETY: r is live; the value is copied into its pool.
        Challenge::Standard => unsafe {
            pool_str(r, www_authenticate(conf.realm(), error).as_bytes())
        },
        // SAFETY: r is live; custom values are evaluated into its pool.
        Challenge::Custom(template) => unsafe {
            evaluate(r, Some(template)).map(|v| ngx::ffi::ngx_str_t {
                len: v.len(),
                data: v.as_ptr().cast_mut(),
            })
        },
    };
    let Some(value) = value else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the header lives in r's pool and list, as nginx's own modules do it.
    unsafe {
        let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
        match push_header(headers, b"WWW-Authenticate", b"www-authenticate", value) {
            Some(h) => (*r).headers_out.www_authenticate = h,
            None => return NGX_ERROR as ngx_int_t,
        }
    }
    status
}
