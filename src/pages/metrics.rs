//! `auth_oauth2_token_metrics`: a location that answers with the module's
//! metrics in Prometheus' text format (0.0.4), like `stub_status` does for
//! nginx's own counters. Counters come from the shared counters zone;
//! gauges are read from each cache zone when the page is asked for.

use ngx::ffi::{
    ngx_chain_t, ngx_create_temp_buf, ngx_http_discard_request_body, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_NOT_ALLOWED, NGX_OK,
};

use crate::nginx::req::Req;
use crate::shm::zone;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request
    // (ngx_http_core_content_phase).
    unsafe { Req::with(r, page) }
}

fn page(req: &mut Req<'_>) -> ngx_int_t {
    if req.method() & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: the request is live (`Req`), in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(req.as_ptr()) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let Some(main) = req.main_conf() else {
        return NGX_ERROR as ngx_int_t;
    };
    let gauges: Vec<_> = main
        .zones
        .iter()
        // SAFETY: every zone of the main conf was declared by its
        // directive and initialised by nginx before any request ran.
        .map(|(name, z)| (name.clone(), unsafe { zone::gauges(z.cast()) }))
        .collect();
    let text = main.metrics.render(|id| main.counters.get(id), &gauges);
    send(req, text.as_bytes())
}

/// Sends `body` as the whole 200 answer (the request is in its content phase).
fn send(req: &mut Req<'_>, body: &[u8]) -> ngx_int_t {
    req.set_response(200, body.len(), Some(CONTENT_TYPE));
    // SAFETY: the request is live (`Req`), its response not yet sent.
    let rc = unsafe { ngx_http_send_header(req.as_ptr()) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || req.is_header_only() {
        return rc;
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
