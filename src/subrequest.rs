//! Subrequests to the IdP (introspection and token exchange): a POST built
//! from scratch (no client header reaches the IdP), answered into memory, and
//! the callbacks that turn nginx's view of the answer into a result.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_post_subrequest_t, ngx_http_request_body_t,
    ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init, ngx_str_t, ngx_table_elt_t,
    ngx_uint_t, NGX_AGAIN, NGX_HTTP_POST, NGX_HTTP_SUBREQUEST_IN_MEMORY,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_OK,
};

use crate::access::RequestCtx;
use crate::exchange;
use crate::introspection::{self, IdpReply};
use crate::request::{pool_str, push_header};
use crate::Module;
use ngx::http::HttpModuleMainConf;

/// Which IdP call a subrequest makes; decides how its answer is read.
#[derive(Clone, Copy)]
pub enum IdpCall {
    Introspection,
    Exchange,
}

/// Starts a POST of `body` to the internal location `endpoint`; the result
/// lands in `ctx` when the subrequest finishes.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context, allocated from
/// its pool; `endpoint` must live as long as the configuration.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    call: IdpCall,
    endpoint: &[u8],
    body: &[u8],
    authorization: &[u8],
    ctx: *mut RequestCtx,
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
        (*ps).handler = Some(match call {
            IdpCall::Introspection => introspection_done,
            IdpCall::Exchange => exchange_done,
        });
        (*ps).data = ctx.cast();

        let mut uri = ngx_str_t {
            len: endpoint.len(),
            data: endpoint.as_ptr().cast_mut(),
        };
        let mut sr: *mut ngx_http_request_t = ptr::null_mut();
        let flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags)
            != NGX_OK as ngx_int_t
        {
            return Err(());
        }
        make_post(sr, body, authorization)
    }
}

/// Turns the fresh subrequest into a POST with only our own headers.
///
/// # Safety
/// `sr` must be a subrequest just returned by `ngx_http_subrequest`.
unsafe fn make_post(
    sr: *mut ngx_http_request_t,
    body: &[u8],
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
        push_header(
            headers,
            b"Accept",
            b"accept",
            static_value(b"application/json"),
        )
        .ok_or(())?;
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

/// What nginx saw of the IdP's answer: the finalize code, the status and the
/// in-memory body (one buffer in sr->out).
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
        IdpReply::new(rc, (*sr).headers_out.status, body)
    }
}

/// Called by nginx when a subrequest is finalized, possibly more than once
/// (again after an error page): only the first call is recorded.
unsafe extern "C" fn introspection_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the RequestCtx we registered, living in the main
    // request's pool; `sr` is the finished subrequest.
    unsafe {
        let ctx = &mut *data.cast::<RequestCtx>();
        if ctx.outcome.is_none() && rc != NGX_AGAIN as ngx_int_t {
            let paths = Module::main_conf(&*sr).map_or(&[][..], |m| &m.claim_paths[..]);
            ctx.outcome = Some(introspection::interpret(reply_of(sr, rc), paths));
        }
    }
    rc
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
            ctx.exchange = Some(exchange::interpret(reply_of(sr, rc)));
        }
    }
    rc
}
