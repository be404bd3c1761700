//! A call of the Redis tier over TLS (`auth_oauth2_token_redis_ssl on`):
//! nginx's upstream does the handshake with the context of `redis/tls.rs`;
//! the call's output filter checks Redis' certificate on a new connection
//! before its first byte goes out, and a certificate that fails ends the
//! call as a `tls` failure (logged once per 10 s by `redis/call.rs`).

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_chain_t, ngx_chain_writer, ngx_chain_writer_ctx_t, ngx_http_request_t, ngx_http_upstream_t,
    ngx_int_t, NGX_ERROR,
};

use super::call::{self, Failure};
use super::tls::certificate_ok;
use crate::nginx::req::Req;

/// Makes the call of upstream `u` go over TLS: nginx does the handshake;
/// the module checks Redis' certificate before the first byte goes out.
///
/// # Safety
/// `u` must be the upstream the handler just made, not yet started.
pub(super) unsafe fn use_on(u: *mut ngx_http_upstream_t) {
    // SAFETY: `u` is a fresh upstream of the live request (the function's
    // contract); nginx keeps an output filter set before it starts, with
    // its context (ngx_http_upstream_init_request).
    unsafe {
        (*u).set_ssl(1);
        (*u).output.output_filter = Some(checked_writer);
        (*u).output.filter_ctx = ptr::addr_of_mut!((*u).writer).cast();
    }
}

/// The call's output: nginx's chain writer, after a check of Redis'
/// certificate on a new connection.
unsafe extern "C" fn checked_writer(ctx: *mut c_void, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls the output filter with the context `use_on` set,
    // the upstream's writer, whose connection is the upstream's (set in
    // ngx_http_upstream_connect, as its data is the subrequest).
    unsafe {
        let writer = ctx.cast::<ngx_chain_writer_ctx_t>();
        let c = (*writer).connection;
        if !c.is_null() && !(*c).ssl.is_null() {
            let r = (*c).data.cast::<ngx_http_request_t>();
            let u = (*r).upstream;
            // A connection from the keepalive cache was checked when it
            // was made; a new one is checked on each write of its call
            // (one, but for a send that must wait), before the bytes go.
            if (*u).peer.cached() == 0 {
                if let Err(why) = certificate_ok(c) {
                    Req::with(r, |req| {
                        if let Some(call) = call::of(req) {
                            (*call.as_ptr()).outcome = Some(Err(Failure::Tls(why)));
                        }
                    });
                    return NGX_ERROR as ngx_int_t;
                }
            }
        }
        ngx_chain_writer(ctx, chain)
    }
}
