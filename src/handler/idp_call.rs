//! Subrequests to the IdP (introspection and token exchange): a POST built
//! from scratch (no client header reaches the IdP), answered into memory, and
//! the callbacks that turn nginx's view of the answer into a result.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_create_temp_buf, ngx_http_post_subrequest_t,
    ngx_http_request_body_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init,
    ngx_pfree, ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_AGAIN, NGX_HTTP_POST,
    NGX_HTTP_SUBREQUEST_BACKGROUND, NGX_HTTP_SUBREQUEST_IN_MEMORY, NGX_HTTP_SUBREQUEST_WAITED,
    NGX_OK,
};

use std::time::Instant;

use crate::conf::{LocationConf, MainConf};
use crate::handler::ctx::{CallStart, RequestCtx};
use crate::handler::raw::{header_values, pool_str, push_header};
use crate::metrics::CallResult;
use crate::module::Module;
use crate::oauth::cache::{CacheKey, CachePolicy, CachedExchange, CachedIntrospection};
use crate::oauth::client_auth;
use crate::oauth::exchange;
use crate::oauth::idp_reply::{IdpReply, MAX_RESPONSE_BYTES};
use crate::oauth::introspection::{
    self, ClaimPaths, IdpFailure, IntrospectionResult, MAX_PHANTOM_RESPONSE_BYTES,
};
use crate::resilience::breaker::{Health, Transition};
use crate::shm::zone;
use ngx::http::HttpModuleMainConf;

/// Which IdP call a subrequest makes; decides how its answer is read.
#[derive(Clone, Copy)]
pub enum IdpCall {
    Introspection,
    /// Introspection that asks for a JWT to forward (phantom token).
    PhantomIntrospection,
    Exchange,
}

impl IdpCall {
    /// The media types the call accepts, most wanted first.
    fn accept(self) -> &'static [u8] {
        match self {
            IdpCall::PhantomIntrospection => {
                b"application/token-introspection+jwt, application/jwt;q=0.9, application/json;q=0.1"
            }
            IdpCall::Introspection | IdpCall::Exchange => b"application/json",
        }
    }
}

/// Starts a POST of `body` to the internal location `endpoint`; the result
/// lands in `ctx` when the subrequest finishes.
///
/// # Safety
/// `r` must be a live request and `ctx` its context, allocated from
/// its pool; `endpoint` must live as long as the configuration.
unsafe fn start(
    r: *mut ngx_http_request_t,
    call: IdpCall,
    endpoint: &[u8],
    body: &[u8],
    authorization: &[u8],
    done: (PostSubrequest, *mut c_void),
    background: bool,
) -> Result<(), ()> {
    // SAFETY: every pointer below comes from the request pool or from the
    // configuration, both of which outlive the subrequest.
    unsafe {
        let pool = (*r).pool;
        let ps = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_post_subrequest_t>())
            .cast::<ngx_http_post_subrequest_t>();
        if ps.is_null() {
            return Err(());
        }
        (*ps).handler = Some(done.0);
        (*ps).data = done.1;

        let mut uri = ngx_str_t {
            len: endpoint.len(),
            data: endpoint.as_ptr().cast_mut(),
        };
        let mut sr: *mut ngx_http_request_t = ptr::null_mut();
        let mut flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
        if background {
            // After the client's request, as proxy_cache_background_update does.
            flags |= NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t;
        }
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags)
            != NGX_OK as ngx_int_t
        {
            return Err(());
        }
        make_post(sr, body, call.accept(), authorization)?;
        pass_trace_context(r, sr)?;
        if let IdpCall::PhantomIntrospection = call {
            give_room_for_jwt(sr)?;
        }
        Ok(())
    }
}

/// nginx reads an in-memory subrequest's answer into a buffer of
/// `subrequest_output_buffer_size` (4 or 8 KiB by default) and ends the
/// whole client request when it overflows. A phantom answer may carry a
/// 64 KiB JWT, so its buffer is sized for the largest answer we accept;
/// nginx fills a buffer it finds in place instead of allocating its own.
///
/// # Safety
/// `sr` must be a subrequest just returned by `ngx_http_subrequest`.
unsafe fn give_room_for_jwt(sr: *mut ngx_http_request_t) -> Result<(), ()> {
    // SAFETY: the buffer and the chain link live in the subrequest's pool.
    unsafe {
        let buf = ngx_create_temp_buf((*sr).pool, MAX_PHANTOM_RESPONSE_BYTES);
        let chain = ngx_alloc_chain_link((*sr).pool);
        if buf.is_null() || chain.is_null() {
            return Err(());
        }
        (*chain).buf = buf;
        (*chain).next = ptr::null_mut();
        (*sr).out = chain;
        Ok(())
    }
}

/// Turns the fresh subrequest into a POST with only our own headers.
///
/// # Safety
/// `sr` must be a subrequest just returned by `ngx_http_subrequest`.
unsafe fn make_post(
    sr: *mut ngx_http_request_t,
    body: &[u8],
    accept: &'static [u8],
    authorization: &[u8],
) -> Result<(), ()> {
    // SAFETY: `sr` and its pool are live; headers_in is a shallow copy of the
    // client's, which we replace wholesale instead of editing.
    unsafe {
        let pool = (*sr).pool;
        (*sr).method = NGX_HTTP_POST as ngx_uint_t;
        (*sr).method_name = ngx_str_t {
            len: 4,
            data: c"POST".as_ptr().cast::<u8>().cast_mut(),
        };

        ptr::write_bytes(ptr::addr_of_mut!((*sr).headers_in), 0, 1);
        let headers = ptr::addr_of_mut!((*sr).headers_in.headers);
        if ngx_list_init(headers, pool, 4, size_of::<ngx_table_elt_t>()) != NGX_OK as ngx_int_t {
            return Err(());
        }
        (*sr).headers_in.content_length_n = body.len() as i64;
        (*sr).headers_in.keep_alive_n = -1;

        let static_value = |v: &'static [u8]| ngx_str_t {
            len: v.len(),
            data: v.as_ptr().cast_mut(),
        };
        push_header(
            headers,
            b"Content-Type",
            b"content-type",
            static_value(b"application/x-www-form-urlencoded"),
        )
        .ok_or(())?;
        push_header(headers, b"Accept", b"accept", static_value(accept)).ok_or(())?;
        // Empty with client_secret_post: the credentials are in the body.
        if !authorization.is_empty() {
            let value = pool_str(sr, authorization).ok_or(())?;
            push_header(headers, b"Authorization", b"authorization", value).ok_or(())?;
        }

        let rb = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_request_body_t>())
            .cast::<ngx_http_request_body_t>();
        let buf = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let chain = ngx_alloc_chain_link(pool);
        let data = pool_str(sr, body).ok_or(())?;
        if rb.is_null() || buf.is_null() || chain.is_null() {
            return Err(());
        }
        (*buf).pos = data.data;
        (*buf).start = data.data;
        (*buf).last = data.data.add(data.len);
        (*buf).end = (*buf).last;
        (*buf).set_memory(1);
        (*buf).set_last_buf(1);
        (*chain).buf = buf;
        (*chain).next = ptr::null_mut();
        (*rb).bufs = chain;
        (*sr).request_body = rb;
        Ok(())
    }
}

/// The client's W3C trace context (`traceparent`, `tracestate`) goes to the
/// IdP too, so a trace does not stop at the gateway; a header the client
/// sent more than once is not valid there and is left out. Nothing else of
/// the client's reaches the IdP.
///
/// # Safety
/// `r` must be the request that made `sr`, a subrequest just made a POST.
unsafe fn pass_trace_context(
    r: *mut ngx_http_request_t,
    sr: *mut ngx_http_request_t,
) -> Result<(), ()> {
    const TRACE_HEADERS: [(&[u8], &[u8]); 2] = [
        (b"traceparent", b"traceparent"),
        (b"tracestate", b"tracestate"),
    ];
    // SAFETY: both header lists are initialised lists of live requests, and
    // the values live in request memory shared by the two (one pool).
    unsafe {
        for (name, lowcase) in TRACE_HEADERS {
            if let ([value], 1) = header_values::<1>(&(*r).headers_in.headers, name) {
                let value = ngx_str_t {
                    len: value.len(),
                    data: value.as_ptr().cast_mut(),
                };
                let headers = ptr::addr_of_mut!((*sr).headers_in.headers);
                push_header(headers, name, lowcase, value).ok_or(())?;
            }
        }
    }
    Ok(())
}

/// The IdP's `Retry-After`, when it gave one in seconds.
///
/// # Safety
/// `sr` must be a finished subrequest.
unsafe fn retry_after(sr: *mut ngx_http_request_t) -> Option<u64> {
    // SAFETY: the answer's header list is nginx's, initialised.
    let (values, count) = unsafe { header_values::<1>(&(*sr).headers_out.headers, b"Retry-After") };
    match count {
        1 => std::str::from_utf8(values[0]).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// What nginx saw of the IdP's answer: the finalize code, the status, the
/// content type and the in-memory body (one buffer in sr->out).
///
/// # Safety
/// `sr` must be a finished in-memory subrequest.
unsafe fn reply_of<'a>(sr: *mut ngx_http_request_t, rc: ngx_int_t) -> IdpReply<'a> {
    // SAFETY: the buffer lives in the request pool.
    unsafe {
        let out = (*sr).out;
        let body: &[u8] = if out.is_null() || (*out).buf.is_null() || (*(*out).buf).pos.is_null() {
            &[]
        } else {
            let b = (*out).buf;
            core::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize)
        };
        let content_type = (*sr).headers_out.content_type;
        let content_type = match content_type.len {
            0 => &[][..],
            len => core::slice::from_raw_parts(content_type.data, len),
        };
        IdpReply::new(rc, (*sr).headers_out.status, body).with_content_type(content_type)
    }
}

/// Called by nginx when a subrequest is finalized, possibly more than once
/// (again after an error page): only the first call is recorded.
unsafe extern "C" fn introspection_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: as for record_introspection.
    unsafe { record_introspection(sr, data, rc, introspection::interpret, MAX_RESPONSE_BYTES) }
}

unsafe extern "C" fn phantom_introspection_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: as for record_introspection. The answer was copied out of the
    // buffer (the JWT into the context), and nothing reads `sr->out` once
    // it is null. The buffer is usually the one give_room_for_jwt made, but
    // need not be (nginx may have put its own in place): ngx_pfree frees
    // only a large allocation of this pool it finds, and leaves anything
    // else alone.
    unsafe {
        let rc = record_introspection(
            sr,
            data,
            rc,
            introspection::interpret_phantom,
            MAX_PHANTOM_RESPONSE_BYTES,
        );
        let out = (*sr).out;
        if (*data.cast::<RequestCtx>()).introspection.is_some() && !out.is_null() {
            // 128 KiB need not stay with the request until it ends.
            let buf = (*out).buf;
            if !buf.is_null() && !(*buf).start.is_null() {
                ngx_pfree((*sr).pool, (*buf).start.cast());
            }
            (*sr).out = ptr::null_mut();
        }
        rc
    }
}

type Interpret = fn(IdpReply<'_>, &ClaimPaths) -> Result<IntrospectionResult, IdpFailure>;

/// # Safety
/// `data` must be the RequestCtx registered with the subrequest, living in
/// the main request's pool; `sr` the finished subrequest.
unsafe fn record_introspection(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
    interpret: Interpret,
    limit: usize,
) -> ngx_int_t {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let ctx = &mut *data.cast::<RequestCtx>();
        if ctx.introspection.is_none() && rc != NGX_AGAIN as ngx_int_t {
            let no_paths = ClaimPaths::default();
            let main = Module::main_conf(&*sr);
            let paths = main.map_or(&no_paths, |m| &m.claims);
            let reply = reply_of(sr, rc);
            count_call(sr, ctx, main, &reply, limit);
            ctx.introspection = Some(interpret(reply, paths));
        }
    }
    rc
}

/// Counts the call that just ended, once, in the metrics, the variables and
/// the endpoint's circuit breaker.
///
/// # Safety
/// `sr` must be the finished subrequest of the call.
unsafe fn count_call(
    sr: *mut ngx_http_request_t,
    ctx: &mut RequestCtx,
    main: Option<&MainConf>,
    reply: &IdpReply<'_>,
    limit: usize,
) {
    let Some(call) = ctx.call.take() else {
        return;
    };
    let micros = u64::try_from(call.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let result = CallResult::of(reply, limit);
    if let Some(main) = main {
        main.counters.idp_call(call.ids, result, micros);
        if let Some((slot, conf)) = call.breaker {
            // SAFETY: sr is the finished subrequest (this function's contract).
            let retry_after = unsafe { retry_after(sr) };
            let health = match (result, reply.status, retry_after) {
                (CallResult::Status(2..=4), 429, None) => Health::Down,
                (_, 429 | 503, Some(seconds)) => Health::Busy(seconds),
                (CallResult::Status(2..=4), _, _) => Health::Up,
                _ => Health::Down,
            };
            if let Some(state) = main.counters.breaker(slot) {
                let now = u64::try_from(crate::handler::flow::now_ms()).unwrap_or(0);
                // SAFETY: as above; its connection log is valid for logging.
                let log = unsafe { (*(*sr).connection).log };
                match state.report(&conf, now, health) {
                    Transition::Opened { for_ms } => {
                        let seconds = for_ms / 1000;
                        ngx::ngx_log_error!(
                            ngx::ffi::NGX_LOG_WARN,
                            log,
                            "auth_oauth2_token: circuit breaker of the IdP endpoint opened for {seconds} s"
                        );
                    }
                    Transition::Closed => {
                        ngx::ngx_log_error!(
                            ngx::ffi::NGX_LOG_NOTICE,
                            log,
                            "auth_oauth2_token: circuit breaker of the IdP endpoint closed"
                        );
                    }
                    Transition::None => {}
                }
            }
        }
    }
    ctx.idp_micros = Some(ctx.idp_micros.unwrap_or(0).saturating_add(micros));
    if reply.status != 0 {
        ctx.idp_status = u16::try_from(reply.status).ok();
    }
}

unsafe extern "C" fn exchange_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: as for introspection_done.
    unsafe {
        let ctx = &mut *data.cast::<RequestCtx>();
        if ctx.exchange.is_none() && rc != NGX_AGAIN as ngx_int_t {
            let reply = reply_of(sr, rc);
            count_call(sr, ctx, Module::main_conf(&*sr), &reply, MAX_RESPONSE_BYTES);
            ctx.exchange = Some(exchange::interpret(reply));
        }
    }
    rc
}

/// Appends this gateway's client credentials to an IdP request body: the
/// static form of post and mutual TLS, or a freshly signed assertion.
///
/// # Safety
/// `r` must be a live request.
unsafe fn add_client_credentials(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    body: &mut Vec<u8>,
) -> Result<(), ()> {
    body.extend_from_slice(&conf.client_credentials_form);
    if let Some(key) = &conf.assertion_key {
        // A fresh assertion for every call: its jti is never sent twice.
        let client_id = conf.client_id.as_deref().unwrap_or_default();
        let audience = conf.assertion_audience.as_deref().unwrap_or_default();
        let now = ngx::ffi::ngx_timeofday().sec;
        let signed = client_auth::new_jti().and_then(|jti| {
            client_auth::assertion(
                key,
                &String::from_utf8_lossy(client_id),
                audience,
                &jti,
                now,
            )
        });
        match signed {
            Ok(assertion) => body.extend(client_auth::assertion_form(client_id, &assertion)),
            Err(e) => {
                // SAFETY: r is live; its connection log is valid for logging.
                let log = unsafe { (*(*r).connection).log };
                ngx::ngx_log_error!(ngx::ffi::NGX_LOG_ERR, log, "auth_oauth2_token: {e}");
                return Err(());
            }
        }
    }
    Ok(())
}

/// A cache entry refreshed in the background (`refresh`): what its
/// answer is stored as, once the IdP gave one.
pub struct Refresh {
    pub zone: *mut c_void,
    pub key: CacheKey,
    pub policy: CachePolicy,
    pub call: IdpCall,
    /// The subject token's `exp`, which bounds an exchanged token.
    pub subject_exp: Option<i64>,
}

/// Asks the IdP again for an entry that is late in its life, after the
/// client's request (a background subrequest); the answer replaces the
/// entry, a failure leaves it as it is.
///
/// # Safety
/// `r` must be the live main request.
pub unsafe fn refresh(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    endpoint: &[u8],
    mut body: Vec<u8>,
    refresh: Refresh,
) -> Result<(), ()> {
    // SAFETY: r is live; the refresh's data lives in its pool, which the
    // background subrequest keeps alive until it is done.
    unsafe {
        add_client_credentials(r, conf, &mut body)?;
        let call = refresh.call;
        let data = ngx::ffi::ngx_palloc((*r).pool, size_of::<Refresh>()).cast::<Refresh>();
        if data.is_null() {
            return Err(());
        }
        data.write(refresh);
        let authorization = &conf.client_authorization;
        start(
            r,
            call,
            endpoint,
            &body,
            authorization,
            (refresh_done, data.cast()),
            true,
        )
    }
}

/// Stores a background refresh's answer when it is one to keep.
unsafe extern "C" fn refresh_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the Refresh `refresh` made for this subrequest, in
    // the main request's pool; the zone was initialised by nginx.
    unsafe {
        if rc == NGX_AGAIN as ngx_int_t {
            return rc;
        }
        let refresh = &*data.cast::<Refresh>();
        let now = crate::handler::flow::now_ms();
        let reply = reply_of(sr, rc);
        let entry = match refresh.call {
            IdpCall::Exchange => match exchange::interpret(reply) {
                Ok(issued) => refresh
                    .policy
                    .exchange_lifetime(issued.expires_in, refresh.subject_exp, now)
                    .map(|lifetime| (CachedExchange::encode(&issued), lifetime)),
                Err(_) => None,
            },
            call => {
                let no_paths = ClaimPaths::default();
                let paths = Module::main_conf(&*sr).map_or(&no_paths, |m| &m.claims);
                let answer = match call {
                    IdpCall::PhantomIntrospection => introspection::interpret_phantom(reply, paths),
                    _ => introspection::interpret(reply, paths),
                };
                match answer {
                    Ok(result) => refresh
                        .policy
                        .lifetime(&result, now)
                        .map(|lifetime| (CachedIntrospection::encode(&result), lifetime)),
                    Err(_) => None,
                }
            }
        };
        if let Some((entry, lifetime)) = entry {
            zone::insert(refresh.zone.cast(), &refresh.key, &entry, lifetime, now);
        }
        let out = (*sr).out;
        if let IdpCall::PhantomIntrospection = refresh.call {
            if !out.is_null() && !(*out).buf.is_null() && !(*(*out).buf).start.is_null() {
                ngx_pfree((*sr).pool, (*(*out).buf).start.cast());
            }
            (*sr).out = ptr::null_mut();
        }
        rc
    }
}

/// Whether `r` is one of the module's own IdP subrequests, which are never
/// checked themselves.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn is_idp_call(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: a subrequest's post_subrequest is null or nginx's copy of the
    // handler its creator gave.
    let ps = unsafe { (*r).post_subrequest };
    // SAFETY: as above.
    let Some(handler) = (!ps.is_null()).then(|| unsafe { (*ps).handler }).flatten() else {
        return false;
    };
    let ours: [PostSubrequest; 4] = [
        refresh_done,
        introspection_done,
        phantom_introspection_done,
        exchange_done,
    ];
    ours.iter().any(|f| *f as usize == handler as usize)
}

type PostSubrequest =
    unsafe extern "C" fn(*mut ngx_http_request_t, *mut c_void, ngx_int_t) -> ngx_int_t;

/// Sends `body` to the IdP's internal location as this gateway's client:
/// credentials in the Authorization header (basic) or the body (post).
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn ask(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    call: IdpCall,
    endpoint: &[u8],
    mut body: Vec<u8>,
    ctx: *mut RequestCtx,
) -> Result<(), ()> {
    // SAFETY: r is live (this function's contract).
    unsafe { add_client_credentials(r, conf, &mut body)? };
    let (ids, breaker) = match call {
        IdpCall::Exchange => (conf.exchange_metrics, conf.exchange_breaker),
        IdpCall::Introspection | IdpCall::PhantomIntrospection => {
            (conf.introspection_metrics, conf.introspection_breaker)
        }
    };
    let breaker = breaker.zip(conf.breaker);
    // SAFETY: the ctx lives in r's pool; the endpoint in the configuration.
    unsafe {
        (*ctx).call = Some(CallStart {
            ids,
            started: Instant::now(),
            breaker,
        });
        let done: PostSubrequest = match call {
            IdpCall::Introspection => introspection_done,
            IdpCall::PhantomIntrospection => phantom_introspection_done,
            IdpCall::Exchange => exchange_done,
        };
        let client_authorization = &conf.client_authorization;
        start(
            r,
            call,
            endpoint,
            &body,
            client_authorization,
            (done, ctx.cast()),
            false,
        )
    }
}
