//! The introspection subrequest: a POST built from scratch (no client
//! header reaches the IdP), answered into memory, and the callback that turns
//! nginx's view of the answer into a verdict.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_post_subrequest_t, ngx_http_request_body_t,
    ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init, ngx_str_t, ngx_table_elt_t,
    ngx_uint_t, NGX_AGAIN, NGX_HTTP_POST, NGX_HTTP_SUBREQUEST_IN_MEMORY,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_OK,
};

use crate::access::RequestCtx;
use crate::conf::LocationConf;
use crate::form;
use crate::introspection::{self, IdpReply};
use crate::request::{pool_str, push_header};

/// Starts the introspection subrequest for `token`; the result lands in `ctx`.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context, allocated from
/// its pool.
pub unsafe fn start_introspection(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    token: &[u8],
    ctx: *mut RequestCtx,
) -> Result<(), ()> {
    let endpoint = conf.introspect_endpoint.as_deref().ok_or(())?;
    // SAFETY: every pointer below comes from the request pool or from the
    // configuration, both of which outlive the subrequest.
    unsafe {
        let pool = (*r).pool;
        let ps = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_post_subrequest_t>())
            .cast::<ngx_http_post_subrequest_t>();
        if ps.is_null() {
            return Err(());
        }
        (*ps).handler = Some(introspection_done);
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
        make_post(
            sr,
            &form::introspection_body(token),
            &conf.client_authorization,
        )
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
        push_header(
            headers,
            b"Authorization",
            b"authorization",
            pool_str(sr, authorization).ok_or(())?,
        )
        .ok_or(())?;

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

/// Called by nginx when the subrequest is finalized, possibly more than once
/// (again after an error page): only the first call is recorded.
unsafe extern "C" fn introspection_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the RequestCtx we registered, living in the main
    // request's pool; `sr` is the finished subrequest whose in-memory body is
    // one buffer in sr->out.
    unsafe {
        let ctx = &mut *data.cast::<RequestCtx>();
        if ctx.outcome.is_some() || rc == NGX_AGAIN as ngx_int_t {
            return rc;
        }
        let out = (*sr).out;
        let body: &[u8] = if out.is_null() || (*out).buf.is_null() || (*(*out).buf).pos.is_null() {
            &[]
        } else {
            let b = (*out).buf;
            core::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize)
        };
        let reply = IdpReply {
            finalize_rc: rc,
            status: (*sr).headers_out.status,
            body,
        };
        ctx.outcome = Some(introspection::interpret(reply));
    }
    rc
}
