//! Sender-constrained tokens, nginx side: the request's `DPoP` headers
//! (read once, kept across internal redirects, withheld from the
//! upstream), its URI as the proof must name it, the client certificate of
//! its connection (or a trusted front's `Client-Cert` header, withheld from
//! the upstream too), and the replay store; `oauth/dpop/binding.rs` decides.
//! Runs in the verdict stage, whatever gave the verdict (introspection, a
//! verified JWT, a cache hit), so a cached verdict is checked again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ngx::ffi::{
    ngx_http_request_t, ngx_pool_cleanup_add, ngx_ssl_get_raw_certificate, ngx_str_t, sockaddr_in,
    sockaddr_in6, AF_INET, AF_INET6, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{list_iterator, HttpModuleMainConf};
use sha2::{Digest, Sha256};

use crate::conf::LocationConf;
use crate::handler::ctx::{Outcome, RequestCtx};
use crate::handler::raw::{header_values, now_ms, pool_str, push_header, retain_headers};
use crate::metrics::{self, dpop::DpopIds};
use crate::module::Module;
use crate::oauth::bearer;
use crate::oauth::cache::CacheKey;
use crate::oauth::challenge::BearerError;
use crate::oauth::cnf::Confirmation;
use crate::oauth::dpop::binding::{self, BindingRefusal, Scheme};
use crate::oauth::dpop::client_cert;
use crate::oauth::dpop::htu;
use crate::oauth::dpop::proof::{self, ProofRequest};
use crate::shm::table::Remembered;
use crate::shm::zone;

/// The request's `DPoP` headers as the client sent them, and the proof this
/// request recorded in the replay store (so that the check after an
/// internal redirect does not take its own proof for a replay).
#[repr(C)]
struct SavedProof {
    tag: u64,
    /// How many `DPoP` headers the client sent.
    count: usize,
    /// The first one's value, in request memory.
    value: ngx_str_t,
    /// The `Client-Cert` headers (RFC 9440) the same way: how many, the first.
    cert_count: usize,
    cert_value: ngx_str_t,
    /// How the token was presented on the first pass: after an internal
    /// redirect the `Authorization` header may hold a phantom or exchanged
    /// token instead.
    scheme: Scheme,
    recorded: [u8; 32],
    has_recorded: bool,
}

const SAVED_PROOF_TAG: u64 = u64::from_be_bytes(*b"dpopprf1");

unsafe extern "C" fn saved_proof_marker(_data: *mut core::ffi::c_void) {}

fn is_marker(handler: ngx::ffi::ngx_pool_cleanup_pt) -> bool {
    handler.map(|h| h as usize) == Some(saved_proof_marker as *const () as usize)
}

/// The record of a main request that sent `DPoP` or `Client-Cert` headers,
/// made on its first pass (`token` given: `withhold`, before any check),
/// when they are read and removed from what goes upstream; later calls
/// (`token` None) only find it. `Ok(None)`: the request sent none (no
/// record is made, so a bearer request costs one walk of its headers);
/// `Err`: no memory.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn record(
    r: *mut ngx_http_request_t,
    token: Option<&[u8]>,
) -> Result<Option<*mut SavedProof>, ()> {
    // SAFETY: the cleanup list of a live pool is well formed; ours hold a
    // SavedProof written whole when it was added.
    unsafe {
        let mut c = (*(*r).pool).cleanup;
        while !c.is_null() {
            if is_marker((*c).handler) {
                let saved = (*c).data.cast::<SavedProof>();
                if (*saved).tag == SAVED_PROOF_TAG {
                    return Ok(Some(saved));
                }
            }
            c = (*c).next;
        }
        // Only the first pass (`withhold`, with the token) reads the headers.
        let Some(token) = token else {
            return Ok(None);
        };
        // One walk over the headers for both names.
        let (mut value, mut count, mut cert, mut cert_count) = (&[][..], 0, &[][..], 0);
        for (key, v) in list_iterator(&(*r).headers_in.headers) {
            let key = key.as_bytes();
            if key.eq_ignore_ascii_case(b"DPoP") {
                if count == 0 {
                    value = v.as_bytes();
                }
                count += 1;
            } else if key.eq_ignore_ascii_case(b"Client-Cert") {
                if cert_count == 0 {
                    cert = v.as_bytes();
                }
                cert_count += 1;
            }
        }
        if count == 0 && cert_count == 0 {
            return Ok(None);
        }
        // Header values live in request memory, which the new list does
        // not free: the values stay valid. A `Client-Cert` header never
        // reaches the upstream, whoever sent it.
        retain_headers(r, |h| {
            let key = h.key.as_bytes();
            !key.eq_ignore_ascii_case(b"DPoP") && !key.eq_ignore_ascii_case(b"Client-Cert")
        })
        .ok_or(())?;
        let scheme = header_scheme(r, token);
        let c = ngx_pool_cleanup_add((*r).pool, size_of::<SavedProof>());
        if c.is_null() {
            return Err(());
        }
        (*c).handler = Some(saved_proof_marker);
        let saved = (*c).data.cast::<SavedProof>();
        saved.write(SavedProof {
            tag: SAVED_PROOF_TAG,
            count,
            value: ngx_str_t {
                len: value.len(),
                data: value.as_ptr().cast_mut(),
            },
            cert_count,
            cert_value: ngx_str_t {
                len: cert.len(),
                data: cert.as_ptr().cast_mut(),
            },
            scheme,
            recorded: [0; 32],
            has_recorded: false,
        });
        Ok(Some(saved))
    }
}

/// Reads and withholds the `DPoP` headers on a main request's first pass
/// (`begin`, with the `token` found), so that the upstream never gets them.
///
/// # Safety
/// `r` must be a live request; `token` is in its memory.
pub unsafe fn withhold(r: *mut ngx_http_request_t, token: &[u8]) -> Option<()> {
    // SAFETY: r is live; a subrequest's headers are its parent's.
    unsafe {
        match r == (*r).main {
            true => record(r, Some(token)).ok().map(|_| ()),
            false => Some(()),
        }
    }
}

/// How the client presented its token: as the first pass recorded it when
/// the request sent `DPoP` headers, else from its `Authorization` header.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn scheme(r: *mut ngx_http_request_t, token: &[u8]) -> Scheme {
    // SAFETY: r is live; the record lives in its pool.
    unsafe {
        let from_header = header_scheme(r, token);
        // The header may have changed since (phantom, exchange): the
        // record, when there is one, says what the client sent.
        if from_header != Scheme::Dpop && r == (*r).main {
            if let Ok(Some(saved)) = record(r, None) {
                return (*saved).scheme;
            }
        }
        from_header
    }
}

/// The scheme of the `Authorization` header, if that is where the token
/// came from.
///
/// # Safety
/// `r` must be a live request.
unsafe fn header_scheme(r: *mut ngx_http_request_t, token: &[u8]) -> Scheme {
    // SAFETY: the typed pointer is null or an element of r's header list.
    let authorization = unsafe { (*r).headers_in.authorization.as_ref() };
    match authorization {
        Some(h) if contains(h.value.as_bytes(), token) => {
            match bearer::is_dpop_scheme(h.value.as_bytes().trim_ascii_start()) {
                true => Scheme::Dpop,
                false => Scheme::Bearer,
            }
        }
        _ => Scheme::Other,
    }
}

/// Whether `token` is a slice of `value`'s memory (the token found there).
fn contains(value: &[u8], token: &[u8]) -> bool {
    let range = value.as_ptr_range();
    !token.is_empty() && range.contains(&token.as_ptr()) && token.len() <= value.len()
}

/// Checks the binding of the token whose verdict is `cnf`; `Err` is the
/// answer when it does not hold.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn check<'c>(
    r: *mut ngx_http_request_t,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
    cnf: &Confirmation,
) -> Result<(), Outcome<'c>> {
    if *cnf == Confirmation::Unbound && !conf.dpop.binding.require_dpop {
        // SAFETY: r is live; ctx is its context.
        let dpop = unsafe { scheme(r, (*ctx).token()) } == Scheme::Dpop;
        if !dpop {
            return Ok(());
        }
    }
    // SAFETY: r is live; ctx is its context.
    let (scheme, certificate) = unsafe {
        let certificate = match cnf.x5t_s256() {
            Some(_) => match &conf.dpop.client_cert_from {
                Some(fronts) if peer(r).is_some_and(|ip| client_cert::trusted(fronts, &ip)) => {
                    forwarded_certificate(r)
                }
                _ => client_certificate(r),
            },
            None => None,
        };
        (scheme(r, (*ctx).token()), certificate)
    };
    if let Some(sha) = certificate {
        // SAFETY: ctx is r's context; no reference to it is held.
        unsafe { (*ctx).certificate_presented(sha) };
    }
    // SAFETY: r is live, ctx its context.
    let proof = || unsafe { check_proof(r, conf, ctx) };
    let decided = binding::decide(cnf, scheme, conf.dpop.binding, certificate.as_ref(), proof);
    // SAFETY: r is live; its connection log is valid for logging.
    let log = unsafe { (*(*r).connection).log };
    let proof = match decided {
        Ok(None) => return Ok(()),
        Ok(Some(proof)) => proof,
        Err(refusal) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: {refusal}");
            // SAFETY: r is live.
            unsafe {
                count(r, conf, |ids| match metrics::dpop::counted_as(&refusal) {
                    Ok(result) => ids.proof(result),
                    Err(reason) => ids.binding(reason),
                })
            };
            if refusal == BindingRefusal::Proof(proof::ProofError::UseNonce) {
                // SAFETY: r is live.
                if unsafe { send_nonce(r, conf) }.is_none() {
                    return Err(Outcome::Error);
                }
            }
            return Err(Outcome::Refuse(challenge_error(&refusal)));
        }
    };
    // A nonce of the slot before passes; the client gets the current one.
    // SAFETY: r is live.
    if proof.nonce_stale && unsafe { send_nonce(r, conf) }.is_none() {
        return Err(Outcome::Error);
    }
    // SAFETY: ctx is r's context.
    unsafe { (*ctx).proof_held(proof.jkt) };
    // SAFETY: r is live; the zone was declared for this location.
    let remembered = unsafe { remember(r, conf, &proof.replay_id, proof.remember_until_s) };
    let result = match remembered {
        Remembered::New => "valid",
        Remembered::Seen => "replayed",
        Remembered::Full => "store_full",
    };
    // SAFETY: r is live.
    unsafe { count(r, conf, |ids| ids.proof(result)) };
    match remembered {
        Remembered::New => Ok(()),
        Remembered::Seen => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: DPoP proof refused: its jti was used before"
            );
            Err(Outcome::Refuse(BearerError::InvalidDpopProof(
                "the DPoP proof was used before",
            )))
        }
        Remembered::Full => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "auth_oauth2_token: the DPoP replay store is full: proof refused (503); make auth_oauth2_token_dpop_replay_zone larger or the window shorter"
            );
            Err(Outcome::Fail {
                timeout: false,
                status: 503,
                retry_after: Some(conf.dpop.proof.window_s.unsigned_abs()),
            })
        }
    }
}

/// Adds one to the series `pick` names, when the location has the series.
///
/// # Safety
/// `r` must be a live request.
unsafe fn count(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    pick: impl FnOnce(DpopIds) -> Option<usize>,
) {
    let Some(id) = conf.dpop.metrics.and_then(pick) else {
        return;
    };
    // SAFETY: r is live; the main conf exists for every request of an http
    // block where our directives are.
    if let Some(main) = unsafe { Module::main_conf(&*r) } {
        main.counters.add(id, 1);
    }
}

/// Adds `DPoP-Nonce` with the current nonce to the answer (RFC 9449 §9),
/// whether the request passes or is refused.
///
/// # Safety
/// `r` must be a live request.
unsafe fn send_nonce(r: *mut ngx_http_request_t, conf: &LocationConf) -> Option<()> {
    let key = conf.dpop.nonce_key.as_ref()?;
    let nonce = key.issue(now_ms() / 1000);
    // SAFETY: r is live; the value and the header live in its pool and list.
    unsafe {
        let value = pool_str(r, nonce.as_bytes())?;
        let headers = core::ptr::addr_of_mut!((*r).headers_out.headers);
        push_header(headers, b"DPoP-Nonce", b"dpop-nonce", value).map(|_| ())
    }
}

/// The refusal as the client is told it.
fn challenge_error(refusal: &BindingRefusal) -> BearerError<'static> {
    if *refusal == BindingRefusal::Proof(proof::ProofError::UseNonce) {
        return BearerError::UseDpopNonce(refusal.description());
    }
    match (refusal.is_proof_error(), refusal.concerns_dpop()) {
        (true, _) => BearerError::InvalidDpopProof(refusal.description()),
        (false, true) => BearerError::InvalidTokenForDpop(refusal.description()),
        (false, false) => BearerError::InvalidTokenBecause(refusal.description()),
    }
}

/// The request's proof checked against the request.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
unsafe fn check_proof(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Result<proof::Proof, proof::ProofError> {
    // SAFETY: r is live; header values, the method name, the host and the
    // URI live in request memory; ctx is its context.
    unsafe {
        let (values, count) = match r == (*r).main {
            // No memory for the record: no proof, refused.
            true => match record(r, None) {
                Ok(Some(saved)) => ((*saved).value.as_bytes(), (*saved).count),
                Ok(None) | Err(()) => (&[][..], 0),
            },
            false => {
                let (values, count) = header_values::<1>(&(*r).headers_in.headers, b"DPoP");
                (values[0], count)
            }
        };
        let headers: Vec<&[u8]> = match count {
            0 => Vec::new(),
            1 => vec![values],
            _ => vec![values, values],
        };
        let uri = match &conf.dpop.origin {
            Some(origin) => htu::request_uri_at(origin, (*r).unparsed_uri.as_bytes()),
            None => request_uri(r),
        };
        let request = ProofRequest {
            headers: &headers,
            method: (*r).method_name.as_bytes(),
            uri: uri.as_deref(),
            token: (*ctx).token(),
            now_s: now_ms() / 1000,
            nonce_key: conf.dpop.nonce_key.as_ref(),
        };
        proof::check(&request, &conf.dpop.proof)
    }
}

/// The request's URI as a proof's `htu` must name it, without a configured
/// origin: the scheme of the connection, the `Host` the client sent (else
/// the server's name), the request target as sent.
///
/// # Safety
/// `r` must be a live request.
unsafe fn request_uri(r: *mut ngx_http_request_t) -> Option<String> {
    // SAFETY: r is live; its connection, host and URI are request memory.
    unsafe {
        let scheme = match (*(*r).connection).ssl.is_null() {
            true => "http",
            false => "https",
        };
        let host = match (*r).headers_in.host.as_ref() {
            Some(h) => h.value.as_bytes(),
            None => (*r).headers_in.server.as_bytes(),
        };
        htu::request_uri(scheme, host, (*r).unparsed_uri.as_bytes())
    }
}

/// The peer's address, for the trusted fronts.
///
/// # Safety
/// `r` must be a live request.
unsafe fn peer(r: *mut ngx_http_request_t) -> Option<IpAddr> {
    // SAFETY: a live connection's sockaddr is a socket address of the
    // family it names, of at least that family's size.
    unsafe {
        let sa = (*(*r).connection).sockaddr;
        if sa.is_null() {
            return None;
        }
        match u32::from((*sa).sa_family) {
            AF_INET => {
                let sin = &*sa.cast::<sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            AF_INET6 => {
                let sin6 = &*sa.cast::<sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(
                    sin6.sin6_addr.__in6_u.__u6_addr8,
                )))
            }
            _ => None,
        }
    }
}

/// The SHA-256 of the certificate a trusted front forwarded (RFC 9440
/// `Client-Cert`), when it forwarded exactly one.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn forwarded_certificate(r: *mut ngx_http_request_t) -> Option<[u8; 32]> {
    // SAFETY: r is live; the record and the values live in its memory.
    unsafe {
        if r != (*r).main {
            return None;
        }
        let saved = record(r, None).ok().flatten()?;
        let value = (*saved).cert_value.as_bytes();
        match (*saved).cert_count {
            1 => client_cert::from_header(&[value]),
            _ => None,
        }
    }
}

/// The SHA-256 of this connection's client certificate (DER), when the
/// client sent one over TLS.
///
/// # Safety
/// `r` must be a live request.
unsafe fn client_certificate(r: *mut ngx_http_request_t) -> Option<[u8; 32]> {
    let mut pem = ngx_str_t::empty();
    // SAFETY: r is live; nginx writes the PEM into r's pool, or nothing.
    unsafe {
        let c = (*r).connection;
        if (*c).ssl.is_null() {
            return None;
        }
        if ngx_ssl_get_raw_certificate(c, (*r).pool, &mut pem) != NGX_OK as isize {
            return None;
        }
    }
    if pem.len == 0 {
        return None;
    }
    // A non-empty value points at pem.len bytes of r's pool.
    let pem = pem.as_bytes();
    let der = openssl::x509::X509::from_pem(pem).ok()?.to_der().ok()?;
    Some(Sha256::digest(der).into())
}

/// Records the proof in the location's replay store; a proof this request
/// recorded itself (before an internal redirect) is not a replay.
///
/// # Safety
/// `r` must be a live request.
unsafe fn remember(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    replay_id: &[u8; 32],
    until_s: i64,
) -> Remembered {
    let Some(store) = conf.dpop.replay_zone else {
        // A location that checks tokens always has a store: fail closed.
        return Remembered::Full;
    };
    // SAFETY: r is live.
    let saved = unsafe {
        match r == (*r).main {
            true => record(r, None).ok().flatten(),
            false => None,
        }
    };
    // SAFETY: the record lives in r's pool.
    let recorded_here = saved
        .is_some_and(|saved| unsafe { (*saved).has_recorded && (*saved).recorded == *replay_id });
    if recorded_here {
        return Remembered::New;
    }
    // SAFETY: the zone was declared by the configuration and initialised
    // with the cycle.
    let found = unsafe {
        zone::remember(
            store.cast(),
            &CacheKey(*replay_id),
            until_s.saturating_mul(1000),
            now_ms(),
        )
    };
    if let (Remembered::New, Some(saved)) = (found, saved) {
        // SAFETY: as above.
        unsafe {
            (*saved).recorded = *replay_id;
            (*saved).has_recorded = true;
        }
    }
    found
}
