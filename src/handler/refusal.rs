//! What the client gets when the check fails: the status (the module's, or
//! the one `auth_oauth2_token_status` chose), the `WWW-Authenticate`
//! challenge, and the reason in `$oauth2_token_error`.

use ngx::ffi::{ngx_int_t, NGX_ERROR, NGX_LOG_ERR};

use crate::conf::{Challenge, LocationConf, Situation};
use crate::handler::credentials;
use crate::nginx::req::Req;
use crate::oauth::bearer::is_dpop_scheme;
use crate::oauth::carriers::TokenSource;
use crate::oauth::challenge::{announces_dpop, challenges, BearerError, Offer, Quoted};
use crate::oauth::resource_metadata::check_url;

/// Answers with the status that goes with `error` and, unless the location
/// turned it off, a `WWW-Authenticate` challenge: ours (RFC 6750 §3) or the
/// operator's.
pub fn refuse(req: &mut Req<'_>, conf: &LocationConf, error: BearerError<'_>) -> ngx_int_t {
    let situation = match error {
        BearerError::NoToken => Situation::Missing,
        BearerError::InvalidRequest(_)
        | BearerError::InvalidTokenBecause(_)
        | BearerError::InvalidToken
        | BearerError::WrongAudience
        | BearerError::InvalidDpopProof(_)
        | BearerError::InvalidTokenForDpop(_)
        | BearerError::UseDpopNonce(_)
        | BearerError::InsufficientUserAuthentication { .. } => Situation::Invalid,
        BearerError::InsufficientScope(_) => Situation::Forbidden,
    };
    let status = conf.statuses.get(situation).unwrap_or(error.status()) as ngx_int_t;
    record_error(req, error.code());
    let value = match conf.www_authenticate.unwrap_or(Challenge::Standard) {
        Challenge::Off => return status,
        Challenge::Standard => return standard(req, conf, error, status),
        Challenge::Custom(template) => req.evaluate(Some(template)),
    };
    let Some(value) = value else {
        return NGX_ERROR as ngx_int_t;
    };
    // An operator's value whose variables came out empty sends no header,
    // as the C module does, rather than an empty one.
    if value.is_empty() {
        return status;
    }
    match req.set_www_authenticate(value) {
        Some(()) => status,
        None => NGX_ERROR as ngx_int_t,
    }
}

/// The location's `auth_oauth2_token_resource_metadata_url` for this
/// request, quoted for the challenge: `Some(None)` without one, or when its
/// value is no URL (logged, and the challenge goes without it); `None` when
/// nginx could not evaluate it.
fn metadata_url(req: &mut Req<'_>, conf: &LocationConf) -> Option<Option<Quoted>> {
    let Some(template) = conf.resource_metadata_url() else {
        return Some(None);
    };
    let url = req.evaluate(Some(template))?;
    let quoted = check_url(url).ok().and_then(|()| Quoted::new(url));
    if quoted.is_none() {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            req.log(),
            "auth_oauth2_token: auth_oauth2_token_resource_metadata_url is not a URL here: left out of the challenge"
        );
    }
    Some(quoted)
}

/// The module's own challenges (RFC 6750 §3; RFC 9449 §7.1 beside it where
/// the `Authorization` header may carry a DPoP-bound token): one
/// `WWW-Authenticate` header per scheme.
fn standard(
    req: &mut Req<'_>,
    conf: &LocationConf,
    error: BearerError<'_>,
    status: ngx_int_t,
) -> ngx_int_t {
    let sources = conf
        .token_source
        .as_deref()
        .unwrap_or(credentials::DEFAULT_SOURCES);
    let used_dpop = req
        .authorization()
        .is_some_and(|value| is_dpop_scheme(value.trim_ascii_start()));
    let requires = conf.dpop.binding.require_dpop;
    let reads_authorization = sources.contains(&TokenSource::Bearer);
    let offer = Offer {
        bearer: !requires,
        dpop_algs: announces_dpop(reads_authorization, requires, used_dpop, error)
            .then_some(conf.dpop.algs_text.as_str()),
    };
    let Some(metadata) = metadata_url(req, conf) else {
        return NGX_ERROR as ngx_int_t;
    };
    let values = challenges(
        conf.realm(),
        conf.announced_scopes(),
        metadata.as_ref(),
        offer,
        used_dpop,
        error,
    );
    for (i, text) in values.iter().enumerate() {
        let Some(value) = req.pool_copy(text.as_bytes()) else {
            return NGX_ERROR as ngx_int_t;
        };
        // The first is the one nginx knows by name.
        let pushed = match i {
            0 => req.set_www_authenticate(value),
            _ => req
                .push_response_header(b"WWW-Authenticate", b"www-authenticate", value)
                .map(|_| ()),
        };
        if pushed.is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    status
}

/// Answers an IdP failure with its status, or the one the location chose.
pub fn fail(
    req: &mut Req<'_>,
    conf: &LocationConf,
    timeout: bool,
    status: u16,
    retry_after: Option<u64>,
) -> ngx_int_t {
    let (situation, code) = match timeout {
        true => (Situation::IdpTimeout, "idp_timeout"),
        false => (Situation::IdpError, "idp_error"),
    };
    record_error(req, code);
    if let Some(seconds) = retry_after {
        let Some(value) = req.pool_copy(seconds.to_string().as_bytes()) else {
            return NGX_ERROR as ngx_int_t;
        };
        if req
            .push_response_header(b"Retry-After", b"retry-after", value)
            .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
    }
    conf.statuses.get(situation).unwrap_or(status) as ngx_int_t
}

/// Answers with the status of an `auth_oauth2_token_require` rule.
pub fn deny(req: &mut Req<'_>, status: u16) -> ngx_int_t {
    record_error(req, "access_denied");
    status as ngx_int_t
}

/// Sets `$oauth2_token_error`, when some directive refers to it (the
/// index was set at postconfiguration).
fn record_error(req: &mut Req<'_>, code: &'static str) {
    if let Some(index) = req.main_conf().and_then(|main| main.error_variable) {
        req.set_variable(index, code);
    }
}
