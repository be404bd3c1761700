//! Content handlers of other locations (nginx glue): pages the module
//! answers itself instead of checking a token.

pub mod metrics;
pub mod purge;
pub mod resource_metadata;
pub mod ssf_apply;
pub mod ssf_keys;
pub mod ssf_poll;
pub mod ssf_poll_answer;
pub mod ssf_poll_fleet;
pub mod ssf_poll_keys;
pub mod ssf_poll_state;
pub mod ssf_push;

use ngx::ffi::{
    ngx_chain_t, ngx_create_temp_buf, ngx_http_client_body_handler_pt, ngx_http_output_filter,
    ngx_http_read_client_request_body, ngx_http_send_header, ngx_http_send_special, ngx_int_t,
    ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_LAST, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_POST,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_OK,
};

use crate::nginx::req::Req;

/// A page that takes only `POST`: `405` with `Allow: POST` to any other
/// method; else the body is read in one buffer and `body_read` called
/// with the request once it is in.
fn read_post_body(req: &mut Req<'_>, body_read: ngx_http_client_body_handler_pt) -> ngx_int_t {
    if req.method() != NGX_HTTP_POST as usize {
        if req
            .push_response_header(b"Allow", b"allow", b"POST")
            .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    req.want_body_in_one_buffer();
    // SAFETY: the request is live; nginx calls `body_read` with it once the
    // body is in.
    let rc = unsafe { ngx_http_read_client_request_body(req.as_ptr(), body_read) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// Sends `body` as the whole 200 answer (the request is in its content phase).
fn send(req: &mut Req<'_>, content_type: &'static str, body: &[u8]) -> ngx_int_t {
    send_status(req, 200, content_type, body)
}

/// Sends `body` as the whole answer with `status`.
fn send_status(
    req: &mut Req<'_>,
    status: usize,
    content_type: &'static str,
    body: &[u8],
) -> ngx_int_t {
    req.set_response(status, body.len(), Some(content_type));
    if body.is_empty() {
        req.set_header_only();
    }
    // SAFETY: the request is live (`Req`), its response not yet sent.
    let rc = unsafe { ngx_http_send_header(req.as_ptr()) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        return rc;
    }
    if req.is_header_only() {
        // SAFETY: the request is live (`Req`), its header sent just above.
        return unsafe { ngx_http_send_special(req.as_ptr(), NGX_HTTP_LAST as ngx_uint_t) };
    }
    // SAFETY: the pool is the live request's.
    let buf = unsafe { ngx_create_temp_buf(req.pool(), body.len().max(1)) };
    if buf.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `buf` is a fresh buffer of at least `body.len()` bytes in the
    // request's pool, which outlives the output filters' use of it.
    unsafe {
        core::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        (*buf).set_last_buf(1);
        (*buf).set_last_in_chain(1);
    }
    let mut out = ngx_chain_t {
        buf,
        next: core::ptr::null_mut(),
    };
    // SAFETY: the request is live, its header sent; `out` outlives the call
    // (the filters copy what they keep of the chain).
    unsafe { ngx_http_output_filter(req.as_ptr(), &mut out) }
}
