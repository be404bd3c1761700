//! `auth_oauth2_token_metrics`: a location that answers with the module's
//! metrics in Prometheus' text format (0.0.4), like `stub_status` does for
//! nginx's own counters. Counters come from the shared counters zone;
//! gauges are read from each cache zone when the page is asked for.

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_discard_request_body,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_str_t,
    NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::http::HttpModuleMainConf;

use crate::module::Module;
use crate::shm::zone;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request; the main
    // conf lives as long as the cycle; every zone in it was initialised.
    unsafe {
        if (*r).method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let Some(main) = Module::main_conf(&*r) else {
            return NGX_ERROR as ngx_int_t;
        };
        let gauges: Vec<_> = main
            .zones
            .iter()
            .map(|(name, z)| (name.clone(), zone::gauges(z.cast())))
            .collect();
        let text = main.metrics.render(|id| main.counters.get(id), &gauges);
        send(r, text.as_bytes())
    }
}

/// Sends `body` as the whole 200 answer.
///
/// # Safety
/// `r` must be a live request in its content phase.
unsafe fn send(r: *mut ngx_http_request_t, body: &[u8]) -> ngx_int_t {
    // SAFETY: the buffer and the chain live in r's pool, which outlives the
    // output filters' use of them.
    unsafe {
        (*r).headers_out.status = 200;
        (*r).headers_out.content_length_n = body.len() as i64;
        (*r).headers_out.content_type = ngx_str_t {
            len: CONTENT_TYPE.len(),
            data: CONTENT_TYPE.as_ptr().cast_mut(),
        };
        (*r).headers_out.content_type_len = CONTENT_TYPE.len();
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        let buf: *mut ngx_buf_t = ngx_create_temp_buf((*r).pool, body.len().max(1));
        if buf.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        core::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        (*buf).set_last_buf(1);
        (*buf).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf,
            next: core::ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}
