//! `auth_oauth2_token_resource_metadata`: a location that answers with the
//! RFC 9728 Protected Resource Metadata of a resource, made from the
//! configuration (values evaluated per request, so one configuration serves
//! many hosts) by `oauth/resource_metadata.rs`. Browser-based clients may
//! read it: `Access-Control-Allow-Origin: *`, and a CORS preflight is
//! answered.

use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_request_t, ngx_http_send_header, ngx_int_t, NGX_ERROR,
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED,
    NGX_HTTP_OPTIONS, NGX_LOG_ERR, NGX_OK,
};

use crate::conf::resource_metadata::cache_control;
use crate::nginx::req::Req;
use crate::oauth::resource_metadata::{document, Metadata};

const CONTENT_TYPE: &str = "application/json";
const ALLOW: &[u8] = b"GET, HEAD, OPTIONS";

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request
    // (ngx_http_core_content_phase).
    unsafe { Req::with(r, page) }
}

fn page(req: &mut Req<'_>) -> ngx_int_t {
    let method = req.method();
    // SAFETY: the request is live (`Req`), in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(req.as_ptr()) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let cors = b"Access-Control-Allow-Origin";
    if req
        .push_response_header(cors, b"access-control-allow-origin", b"*")
        .is_none()
    {
        return NGX_ERROR as ngx_int_t;
    }
    if method == NGX_HTTP_OPTIONS as usize {
        return preflight(req);
    }
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        if req
            .push_response_header(b"Allow", b"allow", ALLOW)
            .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let Some(location) = req.location_conf() else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(conf) = location.resource_metadata.as_ref() else {
        return NGX_ERROR as ngx_int_t;
    };
    let mut values = Vec::with_capacity(conf.authorization_servers.len() + 3);
    for template in [
        Some(conf.resource),
        conf.resource_name,
        conf.resource_documentation,
    ]
    .into_iter()
    .chain(conf.authorization_servers.iter().copied().map(Some))
    {
        match template {
            None => values.push(None),
            Some(t) => match req.evaluate(Some(t)) {
                Some(value) => values.push(Some(value)),
                None => return NGX_ERROR as ngx_int_t,
            },
        }
    }
    let metadata = Metadata {
        resource: values[0].unwrap_or_default(),
        resource_name: values[1],
        resource_documentation: values[2],
        authorization_servers: values[3..].iter().flatten().copied().collect(),
        scopes_supported: &conf.scopes_supported,
        bearer_methods_supported: &conf.bearer_methods_supported,
        dpop_algs: &location.dpop.algs_text,
        dpop_required: location.dpop.binding.require_dpop,
    };
    let json = match document(&metadata) {
        Ok(json) => json,
        Err(invalid) => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                req.log(),
                "auth_oauth2_token: resource metadata not served: {} {}",
                invalid.member,
                invalid.why
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    };
    let Some(value) = req.pool_copy(cache_control(conf.max_age).as_bytes()) else {
        return NGX_ERROR as ngx_int_t;
    };
    if req
        .push_response_header(b"Cache-Control", b"cache-control", value)
        .is_none()
    {
        return NGX_ERROR as ngx_int_t;
    }
    super::send(req, CONTENT_TYPE, json.as_bytes())
}

/// A CORS preflight: 204 naming the methods and any request header (a
/// client may send `MCP-Protocol-Version`), for a day.
fn preflight(req: &mut Req<'_>) -> ngx_int_t {
    let headers: [(&'static [u8], &'static [u8], &'static [u8]); 3] = [
        (
            b"Access-Control-Allow-Methods",
            b"access-control-allow-methods",
            ALLOW,
        ),
        (
            b"Access-Control-Allow-Headers",
            b"access-control-allow-headers",
            b"*",
        ),
        (
            b"Access-Control-Max-Age",
            b"access-control-max-age",
            b"86400",
        ),
    ];
    for (name, lowcase, value) in headers {
        if req.push_response_header(name, lowcase, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    req.set_response(204, 0, None);
    req.set_header_only();
    // SAFETY: the request is live (`Req`), its response not yet sent.
    unsafe { ngx_http_send_header(req.as_ptr()) }
}
