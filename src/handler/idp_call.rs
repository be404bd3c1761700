//! Subrequests to the IdP (introspection and token exchange): a POST built
//! from scratch (no client header reaches the IdP), answered into memory,
//! and one callback per kind of question that turns nginx's view of the
//! answer into the question's answer.

use core::ffi::c_void;
use core::ptr;
use std::borrow::Cow;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_create_temp_buf, ngx_http_request_body_t,
    ngx_http_request_t, ngx_int_t, ngx_list_init, ngx_pfree, ngx_str_t, ngx_table_elt_t,
    ngx_uint_t, NGX_HTTP_POST, NGX_OK,
};

use std::time::Instant;

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{CallStart, RequestCtx};
use crate::handler::question::{IdpCall, Question};
use crate::handler::raw::{header_values, pool_str, push_header};
use crate::metrics::CallResult;
use crate::module::Module;
use crate::nginx::subrequest;
use crate::oauth::cache::flow::{self, Refreshing};
use crate::oauth::client_auth;
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::{ClaimPaths, MAX_PHANTOM_RESPONSE_BYTES};
use crate::oauth::trace_context;
use crate::resilience::breaker::{Breaker, Health, Transition, REFUSAL_LOG_INTERVAL_S};
use crate::shm::zone::ShmZone;
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

/// Why an IdP call could not be made; either way the request ends with
/// NGX_ERROR (500), as the gateway, not the IdP, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallNotMade {
    /// nginx could not allocate the subrequest or its parts.
    NoMemory,
    /// The client assertion could not be signed (logged where it failed).
    NoAssertion,
}

/// Starts a POST of `body` to the internal location `endpoint`; `on_done`
/// gets the answer when the subrequest finishes.
///
/// # Safety
/// `r` must be a live request; `data` must live until `on_done` runs.
unsafe fn start(
    r: *mut ngx_http_request_t,
    call: IdpCall,
    endpoint: &[u8],
    body: &[u8],
    authorization: &[u8],
    (on_done, data): (subrequest::OnDone, *mut c_void),
    background: bool,
) -> Result<(), CallNotMade> {
    // SAFETY: r is live (this function's contract); sr is the subrequest
    // nginx just made of it.
    unsafe {
        let sr = subrequest::start(r, endpoint, background, on_done, data)
            .map_err(|()| CallNotMade::NoMemory)?;
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
unsafe fn give_room_for_jwt(sr: *mut ngx_http_request_t) -> Result<(), CallNotMade> {
    // SAFETY: the buffer and the chain link live in the subrequest's pool.
    unsafe {
        let buf = ngx_create_temp_buf((*sr).pool, MAX_PHANTOM_RESPONSE_BYTES);
        let chain = ngx_alloc_chain_link((*sr).pool);
        if buf.is_null() || chain.is_null() {
            return Err(CallNotMade::NoMemory);
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
) -> Result<(), CallNotMade> {
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
            return Err(CallNotMade::NoMemory);
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
        .ok_or(CallNotMade::NoMemory)?;
        push_header(headers, b"Accept", b"accept", static_value(accept))
            .ok_or(CallNotMade::NoMemory)?;
        // Empty with client_secret_post: the credentials are in the body.
        if !authorization.is_empty() {
            let value = pool_str(sr, authorization).ok_or(CallNotMade::NoMemory)?;
            push_header(headers, b"Authorization", b"authorization", value)
                .ok_or(CallNotMade::NoMemory)?;
        }

        let rb = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_request_body_t>())
            .cast::<ngx_http_request_body_t>();
        let buf = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let chain = ngx_alloc_chain_link(pool);
        let data = pool_str(sr, body).ok_or(CallNotMade::NoMemory)?;
        if rb.is_null() || buf.is_null() || chain.is_null() {
            return Err(CallNotMade::NoMemory);
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
/// IdP too, so a trace does not stop at the gateway, but only as far as
/// `oauth/trace_context.rs` finds it valid: one `traceparent` of the
/// grammar, and a `tracestate` of the grammar and size only with it (the
/// lines a client split it into joined into one). Whatever is not valid is
/// left out; the request goes on. Nothing else of the client's reaches the IdP.
///
/// # Safety
/// `r` must be the request that made `sr`, a subrequest just made a POST.
unsafe fn pass_trace_context(
    r: *mut ngx_http_request_t,
    sr: *mut ngx_http_request_t,
) -> Result<(), CallNotMade> {
    // More lines than a valid list can have are enough to refuse it.
    const LINES: usize = trace_context::MAX_TRACESTATE_MEMBERS + 1;
    // SAFETY: both header lists are initialised lists of live requests; the
    // client's values live in request memory shared by the two (one pool),
    // a joined tracestate is copied into that pool.
    unsafe {
        let client = &(*r).headers_in.headers;
        let (parents, parent_count) = header_values::<2>(client, b"traceparent");
        let (states, state_count) = header_values::<LINES>(client, b"tracestate");
        let forward = trace_context::to_forward(
            &parents[..parent_count.min(2)],
            &states[..state_count.min(LINES)],
        );
        let Some(forward) = forward else {
            return Ok(());
        };
        let headers = ptr::addr_of_mut!((*sr).headers_in.headers);
        let borrowed = |v: &[u8]| ngx_str_t {
            len: v.len(),
            data: v.as_ptr().cast_mut(),
        };
        push_header(
            headers,
            b"traceparent",
            b"traceparent",
            borrowed(forward.traceparent),
        )
        .ok_or(CallNotMade::NoMemory)?;
        let state = match forward.tracestate {
            None => return Ok(()),
            Some(Cow::Borrowed(value)) => borrowed(value),
            Some(Cow::Owned(joined)) => pool_str(sr, &joined).ok_or(CallNotMade::NoMemory)?,
        };
        push_header(headers, b"tracestate", b"tracestate", state).ok_or(CallNotMade::NoMemory)?;
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

/// The answer to a question of kind `Q` is in: read it into the slot.
///
/// # Safety
/// `data` must be the RequestCtx of the request that asked, in the main
/// request's pool; `sr` the finished subrequest.
unsafe fn done<Q: Question>(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t) {
    // SAFETY: `ask` registered `data` as the asking request's RequestCtx, in
    // the main request's pool, which outlives the finished subrequest `sr`.
    unsafe {
        let ctx = data.cast::<RequestCtx>();
        let main = Module::main_conf(&*sr);
        let no_paths = ClaimPaths::default();
        let paths = main.map_or(&no_paths, |m| &m.claims);
        let conf = Module::location_conf(&*(*sr).parent);
        let call = conf.map_or(IdpCall::Introspection, Q::call);
        let reply = reply_of(sr, rc);
        count_call(sr, &mut *ctx, main, &reply, call.limit());
        Q::slot(&mut *ctx).answered_once(|| Q::interpret(call, reply, paths));
        forget_jwt_room(sr, call);
    }
}

/// A phantom answer's 128 KiB need not stay with the request until it
/// ends: the answer was copied out of the buffer (the JWT into the context),
/// and nothing reads `sr->out` once it is null. The buffer is usually the
/// one give_room_for_jwt made, but need not be (nginx may have put its own
/// in place): ngx_pfree frees only a large allocation of this pool it
/// finds, and leaves anything else alone.
///
/// # Safety
/// `sr` must be a finished subrequest whose answer was read.
unsafe fn forget_jwt_room(sr: *mut ngx_http_request_t, call: IdpCall) {
    let IdpCall::PhantomIntrospection = call else {
        return;
    };
    // SAFETY: sr is a finished subrequest (this function's contract): its
    // `out` chain and pool are nginx's and still allocated.
    unsafe {
        let out = (*sr).out;
        if !out.is_null() && !(*out).buf.is_null() && !(*(*out).buf).start.is_null() {
            ngx_pfree((*sr).pool, (*(*out).buf).start.cast());
        }
        (*sr).out = ptr::null_mut();
    }
}

/// Counts the call that just ended, once, in the metrics, the variables and
/// the endpoint's circuit breaker.
///
/// # Safety
/// `sr` must be the finished subrequest of the call.
unsafe fn count_call(
    sr: *mut ngx_http_request_t,
    ctx: &mut RequestCtx,
    main: Option<&crate::conf::MainConf>,
    reply: &IdpReply<'_>,
    limit: usize,
) {
    let Some((call, micros)) = ctx.call_ended(reply.status) else {
        return;
    };
    let Some(main) = main else {
        return;
    };
    let result = CallResult::of(reply, limit);
    main.counters.idp_call(call.ids, result, micros);
    let Some((slot, conf)) = call.breaker else {
        return;
    };
    let Some(state) = main.counters.breaker(slot) else {
        return;
    };
    let answered = matches!(result, CallResult::Status(2..=4));
    // SAFETY: sr is the finished subrequest (this function's contract).
    let retry_after = unsafe { retry_after(sr) };
    let health = Health::of(answered, reply.status, retry_after);
    let now = u64::try_from(crate::handler::raw::now_ms()).unwrap_or(0);
    // SAFETY: as above; its connection log is valid for logging, its URI
    // (the internal location's) lives in its pool.
    let (log, uri) = unsafe { ((*(*sr).connection).log, (*sr).uri) };
    let uri = String::from_utf8_lossy(uri.as_bytes());
    match state.report(&conf, now, health) {
        Transition::Opened { for_ms } => {
            let seconds = for_ms / 1000;
            let why = match (health, retry_after) {
                (Health::Busy(_), Some(asked)) if asked.saturating_mul(1000) > for_ms => {
                    format!("503 with Retry-After: {asked}, capped at open")
                }
                (Health::Busy(_), _) => "503 with Retry-After".to_string(),
                _ => format!("{} failed calls in a row", conf.failures),
            };
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_WARN,
                log,
                "auth_oauth2_token: circuit breaker of the IdP endpoint opened for {seconds} s ({why}): \"{uri}\""
            );
        }
        Transition::Closed => {
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_NOTICE,
                log,
                "auth_oauth2_token: circuit breaker of the IdP endpoint closed: \"{uri}\""
            );
        }
        Transition::None => {}
    }
}

/// A request the open breaker of `endpoint` refused: one error-log line
/// per endpoint every `REFUSAL_LOG_INTERVAL_S`, whichever worker refuses
/// (the request's own refusal is not logged again by its verdict).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn note_refusal(
    r: *mut ngx_http_request_t,
    breaker: &Breaker<'_>,
    endpoint: &Endpoint,
    retry_after_s: u64,
) {
    let now_s = u64::try_from(crate::handler::raw::now_ms() / 1000).unwrap_or(0);
    if !breaker.may_log_refusal(now_s) {
        return;
    }
    // SAFETY: r is live (this function's contract); its connection log is
    // valid for logging.
    let log = unsafe { (*(*r).connection).log };
    let uri = String::from_utf8_lossy(endpoint.uri());
    ngx::ngx_log_error!(
        ngx::ffi::NGX_LOG_ERR,
        log,
        "auth_oauth2_token: IdP endpoint \"{uri}\" not asked: its circuit breaker is open (retry in {retry_after_s} s); such refusals are logged once per {REFUSAL_LOG_INTERVAL_S} s"
    );
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
) -> Result<(), CallNotMade> {
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
                return Err(CallNotMade::NoAssertion);
            }
        }
    }
    Ok(())
}

/// A cache entry refreshed in the background (`refresh`): what its
/// answer is stored as, and how the answer is read.
pub struct Refresh {
    pub refreshing: Refreshing<ShmZone>,
    pub call: IdpCall,
}

/// Asks the IdP again for an entry that is late in its life, after the
/// client's request (a background subrequest); the answer replaces the
/// entry, a failure leaves it as it is.
///
/// # Safety
/// `r` must be the live main request.
pub unsafe fn refresh<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    endpoint: &Endpoint,
    mut body: Vec<u8>,
    refresh: Refresh,
) -> Result<(), CallNotMade> {
    // SAFETY: r is live; the refresh's data lives in its pool, which the
    // background subrequest keeps alive until it is done.
    unsafe {
        add_client_credentials(r, conf, &mut body)?;
        let call = refresh.call;
        let data = ngx::ffi::ngx_palloc((*r).pool, size_of::<Refresh>()).cast::<Refresh>();
        if data.is_null() {
            return Err(CallNotMade::NoMemory);
        }
        data.write(refresh);
        let authorization = &conf.client_authorization;
        start(
            r,
            call,
            endpoint.uri(),
            &body,
            authorization,
            (refresh_done::<Q>, data.cast()),
            true,
        )
    }
}

/// Stores a background refresh's answer when it is one to keep.
///
/// # Safety
/// `data` must be the Refresh `refresh` made for the finished subrequest
/// `sr`, in the main request's pool.
unsafe fn refresh_done<Q: Question>(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t) {
    // SAFETY: `refresh` wrote `data` as a Refresh in the main request's pool,
    // alive until the background subrequest `sr` is done; its zone was
    // initialised by nginx before any request ran.
    unsafe {
        let refresh = &*data.cast::<Refresh>();
        let no_paths = ClaimPaths::default();
        let paths = Module::main_conf(&*sr).map_or(&no_paths, |m| &m.claims);
        let answer = Q::interpret(refresh.call, reply_of(sr, rc), paths);
        flow::refreshed::<Q, _>(&refresh.refreshing, answer, crate::handler::raw::now_ms());
        forget_jwt_room(sr, refresh.call);
    }
}

/// Sends `body` to the IdP's internal location as this gateway's client:
/// credentials in the Authorization header (basic) or the body (post).
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn ask<Q: Question>(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    endpoint: &Endpoint,
    mut body: Vec<u8>,
    ctx: *mut RequestCtx,
) -> Result<(), CallNotMade> {
    // SAFETY: r is live (this function's contract).
    unsafe { add_client_credentials(r, conf, &mut body)? };
    // SAFETY: the ctx lives in r's pool; the endpoint in the configuration.
    unsafe {
        (*ctx).call_started(CallStart {
            ids: endpoint.metrics,
            started: Instant::now(),
            breaker: endpoint.breaker.zip(conf.breaker),
        });
        start(
            r,
            Q::call(conf),
            endpoint.uri(),
            &body,
            &conf.client_authorization,
            (done::<Q>, ctx.cast()),
            false,
        )
    }
}
