//! What the client gets when the check fails: the status (the module's, or
//! the one `auth_oauth2_token_status` chose), the `WWW-Authenticate`
//! challenge, and the reason in `$oauth2_token_error`.

use ngx::ffi::{ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_ERROR};
use ngx::http::HttpModuleMainConf;

use crate::conf::{Challenge, LocationConf, Situation};
use crate::handler::credentials;
use crate::handler::raw::{evaluate, pool_str, push_header};
use crate::handler::variables;
use crate::module::Module;
use crate::oauth::bearer::is_dpop_scheme;
use crate::oauth::carriers::TokenSource;
use crate::oauth::challenge::{announces_dpop, challenges, BearerError, Offer};

/// Answers with the status that goes with `error` and, unless the location
/// turned it off, a `WWW-Authenticate` challenge: ours (RFC 6750 §3) or the
/// operator's.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn refuse(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    error: BearerError<'_>,
) -> ngx_int_t {
    let situation = match error {
        BearerError::NoToken => Situation::Missing,
        BearerError::InvalidRequest(_)
        | BearerError::InvalidTokenBecause(_)
        | BearerError::InvalidToken
        | BearerError::WrongAudience
        | BearerError::InvalidDpopProof(_)
        | BearerError::InvalidTokenForDpop(_)
        | BearerError::UseDpopNonce(_) => Situation::Invalid,
        BearerError::InsufficientScope(_) => Situation::Forbidden,
    };
    let status = conf.statuses.get(situation).unwrap_or(error.status()) as ngx_int_t;
    // SAFETY: r is live (this function's contract).
    unsafe { record_error(r, error.code()) };
    let value = match conf.www_authenticate.unwrap_or(Challenge::Standard) {
        Challenge::Off => return status,
        // SAFETY: r is live (this function's contract).
        Challenge::Standard => return unsafe { standard(r, conf, error, status) },
        // SAFETY: r is live; custom values are evaluated into its pool.
        Challenge::Custom(template) => unsafe {
            evaluate(r, Some(template)).map(|v| ngx_str_t {
                len: v.len(),
                data: v.as_ptr().cast_mut(),
            })
        },
    };
    let Some(value) = value else {
        return NGX_ERROR as ngx_int_t;
    };
    // An operator's value whose variables came out empty sends no header,
    // as the C module does, rather than an empty one.
    if value.len == 0 {
        return status;
    }
    // SAFETY: the header lives in r's pool and list, as nginx's own modules do it.
    unsafe {
        let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
        match push_header(headers, b"WWW-Authenticate", b"www-authenticate", value) {
            Some(h) => (*r).headers_out.www_authenticate = h,
            None => return NGX_ERROR as ngx_int_t,
        }
    }
    status
}

/// The module's own challenges (RFC 6750 §3; RFC 9449 §7.1 beside it where
/// the `Authorization` header may carry a DPoP-bound token): one
/// `WWW-Authenticate` header per scheme.
///
/// # Safety
/// `r` must be a live request.
unsafe fn standard(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    error: BearerError<'_>,
    status: ngx_int_t,
) -> ngx_int_t {
    let sources = conf
        .token_source
        .as_deref()
        .unwrap_or(credentials::DEFAULT_SOURCES);
    // SAFETY: the typed pointer is null or an element of r's header list.
    let used_dpop = unsafe { (*r).headers_in.authorization.as_ref() }
        .is_some_and(|h| is_dpop_scheme(h.value.as_bytes().trim_ascii_start()));
    let requires = conf.dpop.binding.require_dpop;
    let reads_authorization = sources.contains(&TokenSource::Bearer);
    let offer = Offer {
        bearer: !requires,
        dpop_algs: announces_dpop(reads_authorization, requires, used_dpop, error)
            .then_some(conf.dpop.algs_text.as_str()),
    };
    let values = challenges(
        conf.realm(),
        conf.announced_scopes(),
        offer,
        used_dpop,
        error,
    );
    for (i, text) in values.iter().enumerate() {
        // SAFETY: the value and the header live in r's pool and list, as
        // nginx's own modules do it.
        unsafe {
            let Some(value) = pool_str(r, text.as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
            match push_header(headers, b"WWW-Authenticate", b"www-authenticate", value) {
                Some(h) if i == 0 => (*r).headers_out.www_authenticate = h,
                Some(_) => {}
                None => return NGX_ERROR as ngx_int_t,
            }
        }
    }
    status
}

/// Answers an IdP failure with its status, or the one the location chose.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn fail(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    timeout: bool,
    status: u16,
    retry_after: Option<u64>,
) -> ngx_int_t {
    let (situation, code) = match timeout {
        true => (Situation::IdpTimeout, "idp_timeout"),
        false => (Situation::IdpError, "idp_error"),
    };
    // SAFETY: r is live (this function's contract).
    unsafe { record_error(r, code) };
    if let Some(seconds) = retry_after {
        // SAFETY: as above; the value is copied into r's pool, the header
        // pushed on its own list.
        unsafe {
            let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
            let Some(value) = pool_str(r, seconds.to_string().as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            if push_header(headers, b"Retry-After", b"retry-after", value).is_none() {
                return NGX_ERROR as ngx_int_t;
            }
        }
    }
    conf.statuses.get(situation).unwrap_or(status) as ngx_int_t
}

/// Answers with the status of an `auth_oauth2_token_require` rule.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn deny(r: *mut ngx_http_request_t, status: u16) -> ngx_int_t {
    // SAFETY: r is live (this function's contract).
    unsafe { record_error(r, "access_denied") };
    status as ngx_int_t
}

/// Sets `$oauth2_token_error`.
///
/// # Safety
/// `r` must be a live request.
unsafe fn record_error(r: *mut ngx_http_request_t, code: &'static str) {
    // SAFETY: the main conf exists for every request of an http block
    // where our directives are; the index was set at postconfiguration.
    unsafe {
        if let Some(main) = Module::main_conf(&*r) {
            if let Some(index) = main.error_variable {
                variables::set_error(r, index, code);
            }
        }
    }
}
