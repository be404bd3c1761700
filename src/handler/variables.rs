//! The `$oauth2_token_*` variables. They read the context of the request
//! that was checked (a subrequest checked on its own, else the main request), so
//! they are empty before the ACCESS phase has a verdict and wherever the
//! claim is absent.

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_get_variable_index, ngx_http_request_t,
    ngx_http_variable_t, ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_ERROR,
    NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::handler::ctx::RequestCtx;
use crate::nginx::req::Req;
use crate::oauth::introspection::{IntrospectionResult, TokenClaims};

/// How each variable is read from a finished introspection.
enum Claim {
    Active,
    Sub,
    Scope,
    ClientId,
    Exp,
    CacheStatus,
    NewToken,
    /// The token endpoint's `token_type` (`Bearer`), as the C module's variable.
    NewTokenType,
    IssuedTokenType,
    IdpDuration,
    IdpStatus,
    DpopJkt,
    CertThumbprint,
}

const VARIABLES: [(ngx_str_t, Claim); 13] = [
    (ngx_string!("oauth2_token_active"), Claim::Active),
    (ngx_string!("oauth2_token_sub"), Claim::Sub),
    (ngx_string!("oauth2_token_scope"), Claim::Scope),
    (ngx_string!("oauth2_token_client_id"), Claim::ClientId),
    (ngx_string!("oauth2_token_exp"), Claim::Exp),
    (ngx_string!("oauth2_token_cache_status"), Claim::CacheStatus),
    (ngx_string!("oauth2_token_new_token"), Claim::NewToken),
    (
        ngx_string!("oauth2_token_new_token_type"),
        Claim::NewTokenType,
    ),
    (
        ngx_string!("oauth2_token_issued_token_type"),
        Claim::IssuedTokenType,
    ),
    (ngx_string!("oauth2_token_idp_duration"), Claim::IdpDuration),
    (ngx_string!("oauth2_token_idp_status"), Claim::IdpStatus),
    (ngx_string!("oauth2_token_dpop_jkt"), Claim::DpopJkt),
    (
        ngx_string!("oauth2_token_cert_thumbprint"),
        Claim::CertThumbprint,
    ),
];

impl Claim {
    fn value(&self, result: &IntrospectionResult) -> Option<String> {
        let claims: &TokenClaims = match (self, result) {
            (Claim::Active, IntrospectionResult::Active(_)) => return Some("1".into()),
            (Claim::Active, IntrospectionResult::Inactive) => return Some("0".into()),
            (_, IntrospectionResult::Active(claims)) => claims,
            (_, IntrospectionResult::Inactive) => return None,
        };
        match self {
            Claim::Active
            | Claim::CacheStatus
            | Claim::NewToken
            | Claim::NewTokenType
            | Claim::IssuedTokenType
            | Claim::IdpDuration
            | Claim::IdpStatus
            | Claim::DpopJkt
            | Claim::CertThumbprint => None,
            Claim::Sub => claims.sub().map(str::to_owned),
            Claim::Scope => claims.scope().map(str::to_owned),
            Claim::ClientId => claims.client_id().map(str::to_owned),
            Claim::Exp => claims.exp.map(|e| e.to_string()),
        }
    }
}

/// `$oauth2_token_error`: why the module refused the request. Unlike the
/// others it is stored in the request's variable slots, not read from the
/// module context, so it survives the internal redirect of an `error_page`.
pub const ERROR_VARIABLE: ngx_str_t = ngx_string!("oauth2_token_error");

/// Registers the variables; called from preconfiguration.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (index, (name, _)) in VARIABLES.iter().enumerate() {
        let mut name = *name;
        // SAFETY: nginx copies the name; the returned variable is ours to fill.
        unsafe {
            let var = ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _);
            if var.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*var).get_handler = Some(get_variable);
            (*var).data = index;
        }
    }
    let mut name = ERROR_VARIABLE;
    // SAFETY: `cf` is the configuration being parsed (this function's
    // contract); nginx copies the name; the variable returned is ours to
    // fill. Its value is set by `Req::set_variable`, never computed.
    unsafe {
        let var = ngx_http_add_variable(cf, &mut name, 0);
        if var.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*var).get_handler = Some(get_unset);
    }
    NGX_OK as ngx_int_t
}

/// The index of `$oauth2_token_error` if some directive refers to it. An
/// unused variable gets no index: every request's variable array would grow
/// for nothing.
///
/// # Safety
/// `cf` must be the http configuration, fully parsed (postconfiguration).
pub unsafe fn error_variable_index(cf: *mut ngx_conf_t) -> Option<usize> {
    // SAFETY: the core main conf's `variables` array holds the
    // ngx_http_variable_t of every variable some directive indexed.
    unsafe {
        let cmcf = NgxHttpCoreModule::main_conf(&*cf)?;
        let indexed = core::slice::from_raw_parts(
            cmcf.variables.elts.cast::<ngx_http_variable_t>(),
            cmcf.variables.nelts,
        );
        let wanted = ERROR_VARIABLE.as_bytes();
        if !indexed.iter().any(|v| v.name.as_bytes() == wanted) {
            return None;
        }
        let mut name = ERROR_VARIABLE;
        usize::try_from(ngx_http_get_variable_index(cf, &mut name)).ok()
    }
}

/// Getter of `$oauth2_token_error` before (or without) a refusal.
unsafe extern "C" fn get_unset(
    _r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a value slot to fill.
    unsafe { (*v).set_not_found(1) };
    NGX_OK as ngx_int_t
}

/// The context of the check that concerns `req`: its own when the module
/// checked this (sub)request, else the main request's.
fn checked_ctx<'a>(req: &'a Req<'_>) -> Option<&'a RequestCtx> {
    let ctx = RequestCtx::of(req).or_else(|| RequestCtx::of(&req.main()))?;
    // SAFETY: the context lives in the pool of the request, or of its main
    // request, which outlives it. A stage that runs while nginx calls a
    // getter holds no `&mut` to the context across that call.
    Some(unsafe { &*ctx })
}

unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls a variable getter with a live request and `v`,
    // the value slot to fill (ngx_http_get_indexed_variable and friends).
    unsafe { Req::with(r, |req| fill(req, &mut *v, variable(req, data))) }
}

/// The value of the variable registered with index `data`.
fn variable(req: &Req<'_>, data: usize) -> Option<String> {
    let state = checked_ctx(req);
    let issued = state.and_then(|s| s.exchange().answer()?.as_ref().ok());
    let introspected = state.and_then(|s| s.introspection().answer()?.as_ref().ok());
    match (state, VARIABLES.get(data)) {
        (_, Some((_, Claim::NewToken))) => issued.map(|i| i.access_token.clone()),
        (_, Some((_, Claim::NewTokenType))) => issued.and_then(|i| i.token_type.clone()),
        (_, Some((_, Claim::IssuedTokenType))) => issued.map(|i| i.issued_token_type.clone()),
        (Some(state), Some((_, Claim::CacheStatus))) => {
            state.cache_status().map(|s| s.as_str().to_string())
        }
        // Seconds with millisecond resolution, as $upstream_response_time.
        (Some(state), Some((_, Claim::IdpDuration))) => state
            .idp_micros()
            .map(|us| format!("{}.{:03}", us / 1_000_000, us / 1_000 % 1_000)),
        (Some(state), Some((_, Claim::IdpStatus))) => state.idp_status().map(|s| s.to_string()),
        // Thumbprints as `cnf` has them: base64url of the SHA-256.
        (Some(state), Some((_, Claim::DpopJkt))) => state.proof_jkt().map(b64u),
        (Some(state), Some((_, Claim::CertThumbprint))) => state.certificate().map(b64u),
        (
            None,
            Some((
                _,
                Claim::IdpDuration | Claim::IdpStatus | Claim::DpopJkt | Claim::CertThumbprint,
            )),
        ) => None,
        (_, Some((_, claim))) => introspected.and_then(|result| claim.value(result)),
        _ => None,
    }
}

fn b64u(digest: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Fills `v` with `value` copied into the request pool, or marks it not found.
fn fill(req: &Req<'_>, v: &mut ngx_http_variable_value_t, value: Option<String>) -> ngx_int_t {
    match value.and_then(|text| req.pool_copy(text.as_bytes())) {
        Some(copy) => {
            v.set_len(copy.len() as u32);
            v.data = copy.as_ptr().cast_mut();
            v.set_valid(1);
            v.set_no_cacheable(0);
            v.set_not_found(0);
        }
        None => v.set_not_found(1),
    }
    NGX_OK as ngx_int_t
}

/// Getter of the variables `auth_oauth2_token_claim_set` defines; `data` is
/// the claim's index in the http-level list.
pub unsafe extern "C" fn get_claim(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls a variable getter with a live request and `v`,
    // the value slot to fill (ngx_http_get_indexed_variable and friends).
    unsafe { Req::with(r, |req| fill(req, &mut *v, claim(req, data))) }
}

/// The value of the claim at index `data`, when the token is active.
fn claim(req: &Req<'_>, data: usize) -> Option<String> {
    checked_ctx(req)
        .and_then(RequestCtx::active_claims)
        .and_then(|claims| claims.extra.get(data).cloned().flatten())
}
