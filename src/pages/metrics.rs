//! `auth_oauth2_token_metrics`: a location that answers with the module's
//! metrics in Prometheus' text format (0.0.4), like `stub_status` does for
//! nginx's own counters. Counters come from the shared counters zone;
//! gauges are read from each cache zone (and the size of the Shared Signals
//! receiver's revocation list) when the page is asked for.

use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, NGX_ERROR, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};

use crate::nginx::req::Req;
use crate::shm::{revocations, zone};

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
    if let Some(receiver) = &main.ssf {
        // SAFETY: the receiver's zone was declared by its directive and
        // initialised by nginx before any request ran.
        let held = unsafe { revocations::count(receiver.zone.cast()) };
        main.counters.set(receiver.metrics.revocations(), held);
    }
    let text = main.metrics.render(|id| main.counters.get(id), &gauges);
    super::send(req, CONTENT_TYPE, text.as_bytes())
}
