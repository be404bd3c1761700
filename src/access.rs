//! The ACCESS phase handler: one small state machine around the
//! introspection subrequest.
//!
//! first call   -> no/malformed token: refuse; else start the subrequest, NGX_AGAIN
//! while waiting -> NGX_AGAIN (nginx calls again when the subrequest is done)
//! answer in    -> active: NGX_OK; inactive: 401; IdP failure: 502/503/504

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO,
    NGX_OK,
};
use ngx::http::HttpModuleLocationConf;

use crate::challenge::{www_authenticate, BearerError};
use crate::conf::LocationConf;
use crate::introspection::{IdpFailure, IntrospectionResult};
use crate::request::{create_ctx, ctx, header_values, pool_str};
use crate::subrequest::start_introspection;
use crate::token::{self, BearerToken};
use crate::Module;

/// Per-request state, in the main request's pool.
#[derive(Default)]
pub struct RequestCtx {
    /// `None` while the introspection subrequest runs.
    pub outcome: Option<Result<IntrospectionResult, IdpFailure>>,
}

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request whose loc_conf
    // has our LocationConf.
    let conf = match unsafe { Module::location_conf(&*r) } {
        Some(conf) if conf.introspection_enabled() => conf,
        _ => return NGX_DECLINED as ngx_int_t,
    };
    // SAFETY: only this module stores a RequestCtx in its slot.
    match unsafe { ctx::<RequestCtx>(r) } {
        None => unsafe { begin(r, conf) },
        Some(RequestCtx { outcome: None }) => NGX_AGAIN as ngx_int_t,
        Some(RequestCtx {
            outcome: Some(outcome),
        }) => unsafe { conclude(r, conf, outcome) },
    }
}

/// # Safety
/// `r` must be the live main request.
unsafe fn begin(r: *mut ngx_http_request_t, conf: &LocationConf) -> ngx_int_t {
    // SAFETY: headers_in.headers of a live request is an initialised list.
    let (values, count) = unsafe { header_values::<2>(&(*r).headers_in.headers, b"Authorization") };
    match token::from_authorization(&values[..count.min(2)]) {
        BearerToken::Missing => unsafe { refuse(r, conf, BearerError::NoToken) },
        BearerToken::Malformed(why) => unsafe {
            refuse(r, conf, BearerError::InvalidRequest(why.description()))
        },
        BearerToken::Present(token) => {
            // SAFETY: the ctx lives in r's pool, as the subrequest callback needs.
            let started = unsafe {
                match create_ctx(r, RequestCtx::default()) {
                    Some(ctx) => start_introspection(r, conf, token, ctx),
                    None => Err(()),
                }
            };
            match started {
                Ok(()) => NGX_AGAIN as ngx_int_t,
                Err(()) => NGX_ERROR as ngx_int_t,
            }
        }
    }
}

/// # Safety
/// `r` must be the live main request.
unsafe fn conclude(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    outcome: &Result<IntrospectionResult, IdpFailure>,
) -> ngx_int_t {
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    match outcome {
        Ok(IntrospectionResult::Active(_)) => NGX_OK as ngx_int_t,
        Ok(IntrospectionResult::Inactive) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: token is not active");
            unsafe { refuse(r, conf, BearerError::InvalidToken) }
        }
        Err(failure) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "auth_oauth2_token: {failure}");
            failure.status() as ngx_int_t
        }
    }
}

/// Answers with the RFC 6750 challenge and the status that goes with it.
///
/// # Safety
/// `r` must be the live main request.
unsafe fn refuse(r: *mut ngx_http_request_t, conf: &LocationConf, error: BearerError) -> ngx_int_t {
    let challenge = www_authenticate(conf.realm(), error);
    // SAFETY: the header lives in r's pool and list, as nginx's own modules do it.
    unsafe {
        let Some(value) = pool_str(r, challenge.as_bytes()) else {
            return NGX_ERROR as ngx_int_t;
        };
        let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
        match crate::request::push_header(headers, b"WWW-Authenticate", b"www-authenticate", value)
        {
            Some(h) => (*r).headers_out.www_authenticate = h,
            None => return NGX_ERROR as ngx_int_t,
        }
    }
    error.status() as ngx_int_t
}
