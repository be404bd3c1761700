//! The client's token in the request: found where `auth_oauth2_token_source`
//! says, kept from the upstream when it may come from a header other than
//! `Authorization`, a query parameter or a cookie, and remembered across
//! internal redirects.

use ngx::ffi::{ngx_http_request_t, ngx_pool_cleanup_add, ngx_str_t};
use ngx::http::list_iterator;

use crate::handler::raw::{header_values, pool_str, retain_headers};
use crate::oauth::bearer::{self, BearerToken, Malformed};
use crate::oauth::carriers::{self, TokenSource};

/// Where a token is looked for when the location does not say.
pub const DEFAULT_SOURCES: &[TokenSource] = &[TokenSource::Bearer];

/// The first token found in `sources`, and the source it came from. A
/// malformed value ends the search: the client did try to send a token.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn find<'r>(
    r: *mut ngx_http_request_t,
    sources: &[TokenSource],
) -> (BearerToken<'r>, Option<&TokenSource>) {
    for source in sources {
        // SAFETY: r is live (this function's contract).
        let found = unsafe { look_in(r, source) };
        if found != BearerToken::Missing {
            return (found, Some(source));
        }
    }
    (BearerToken::Missing, None)
}

/// # Safety
/// `r` must be a live request.
unsafe fn look_in<'r>(r: *mut ngx_http_request_t, source: &TokenSource) -> BearerToken<'r> {
    // SAFETY: the header list and args of a live request are initialised and
    // live in its pool, as does the decoded copy of a query value.
    unsafe {
        let headers = &(*r).headers_in.headers;
        match source {
            // nginx keeps its own pointer to the one Authorization header it
            // accepts (a second one is a 400 before any module runs): no
            // need to walk the header list on every request.
            TokenSource::Bearer => match (*r).headers_in.authorization.as_ref() {
                Some(h) => bearer::from_authorization(&[h.value.as_bytes()]),
                None => BearerToken::Missing,
            },
            TokenSource::Header(name) => match header_values::<1>(headers, name) {
                (_, 0) => BearerToken::Missing,
                ([value], 1) => carriers::raw_token(value),
                _ => BearerToken::Malformed(Malformed::DuplicateHeader),
            },
            TokenSource::Query(name) => {
                let args = (*r).args.as_bytes();
                match carriers::query_value(args, name) {
                    None => BearerToken::Missing,
                    Some(std::borrow::Cow::Borrowed(value)) => carriers::raw_token(value),
                    Some(std::borrow::Cow::Owned(decoded)) => match pool_str(r, &decoded) {
                        Some(copy) if copy.len > 0 => {
                            carriers::raw_token(core::slice::from_raw_parts(copy.data, copy.len))
                        }
                        _ => BearerToken::Missing,
                    },
                }
            }
            TokenSource::Cookie(name) => {
                for (key, value) in list_iterator(headers) {
                    if key.as_bytes().eq_ignore_ascii_case(b"Cookie") {
                        // An empty cookie is no token: a later header may carry one.
                        let found = carriers::cookie_value(value.as_bytes(), name)
                            .map_or(BearerToken::Missing, carriers::raw_token);
                        if found != BearerToken::Missing {
                            return found;
                        }
                    }
                }
                BearerToken::Missing
            }
        }
    }
}

/// Keeps every configured token carrier from the upstream: the header, the
/// query parameter (in `$args` and `$request_uri`, so whatever the upstream
/// is built from) and the cookie, whichever source the token came from, as
/// any of them may hold a token nobody checked. The `Authorization` header
/// stays when the token came from it (compatible with the C module;
/// exchange and phantom replace it); when `bearer` is configured but the
/// token came from elsewhere, it goes too.
///
/// # Safety
/// `r` must be a live request. Slices of the old values stay valid: new
/// values are written to fresh pool memory.
pub unsafe fn withhold(
    r: *mut ngx_http_request_t,
    sources: &[TokenSource],
    used: &TokenSource,
) -> Option<()> {
    let mut drop_authorization = false;
    let mut headers: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    for source in sources {
        match source {
            TokenSource::Bearer => drop_authorization = *used != TokenSource::Bearer,
            TokenSource::Header(name) => headers.push(name),
            // SAFETY: r is live (this function's contract).
            TokenSource::Query(name) => unsafe { drop_query_parameter(r, name)? },
            TokenSource::Cookie(name) => cookies.push(name),
        }
    }
    if drop_authorization {
        headers.push(b"Authorization");
        // nginx's own pointer to the header (`$remote_user`, and `find`)
        // must not outlive it in the list.
        // SAFETY: r is live (this function's contract).
        unsafe { (*r).headers_in.authorization = core::ptr::null_mut() };
    }
    if headers.is_empty() && cookies.is_empty() {
        return Some(());
    }
    let mut failed = false;
    // SAFETY: r is live; new values are copied into its pool.
    unsafe {
        retain_headers(r, |h| {
            let key = h.key.as_bytes();
            if headers.iter().any(|name| key.eq_ignore_ascii_case(name)) {
                return false;
            }
            if cookies.is_empty() || !key.eq_ignore_ascii_case(b"Cookie") {
                return true;
            }
            let mut rest = h.value.as_bytes().to_vec();
            for name in &cookies {
                rest = carriers::cookie_without(&rest, name);
            }
            if rest.len() != h.value.len {
                match pool_str(r, &rest) {
                    Some(value) => h.value = value,
                    None => failed = true,
                }
            }
            // An element left empty is dropped; its value is emptied too
            // for readers of nginx's own pointer to it.
            !rest.is_empty()
        })?;
    }
    (!failed).then_some(())
}

/// Removes `name` from `$args` and from the request URI that proxy_pass
/// without a URI part, fastcgi's REQUEST_URI and `$request_uri` use. The
/// path keeps its exact encoding.
///
/// # Safety
/// `r` must be a live request.
unsafe fn drop_query_parameter(r: *mut ngx_http_request_t, name: &[u8]) -> Option<()> {
    // SAFETY: args and unparsed_uri point into request memory; the new
    // values are fresh pool copies.
    unsafe {
        let args = (*r).args.as_bytes();
        if carriers::query_value(args, name).is_none() {
            return Some(());
        }
        let kept = carriers::query_without(args, name);
        (*r).args = match kept.is_empty() {
            true => ngx_str_t::empty(),
            false => pool_str(r, &kept)?,
        };
        let unparsed = (*r).unparsed_uri.as_bytes();
        let path_end = unparsed
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(unparsed.len());
        let mut uri = unparsed[..path_end].to_vec();
        if !kept.is_empty() {
            uri.push(b'?');
            uri.extend_from_slice(&kept);
        }
        (*r).unparsed_uri = pool_str(r, &uri)?;
        Some(())
    }
}

/// Marks the pool cleanup that remembers the client's token, so that the
/// check after an internal redirect (index, try_files, error_page) uses it:
/// by then the request no longer carries it, or carries the token that
/// replaced it.
unsafe extern "C" fn saved_token_marker(_data: *mut core::ffi::c_void) {}

/// The cleanup's data: a tag on top of the handler's identity, as nothing
/// guarantees that a function address is unique.
#[repr(C)]
struct SavedToken {
    tag: u64,
    token: ngx_str_t,
}

const SAVED_TOKEN_TAG: u64 = u64::from_be_bytes(*b"oauth2tk");

fn is_marker(handler: ngx::ffi::ngx_pool_cleanup_pt) -> bool {
    handler.map(|h| h as usize) == Some(saved_token_marker as *const () as usize)
}

/// Remembers `token` for the rest of the request.
///
/// # Safety
/// `r` must be a live request; `token` must live in request memory.
pub unsafe fn save(r: *mut ngx_http_request_t, token: &[u8]) -> Option<()> {
    // SAFETY: the cleanup and its data live in r's pool.
    unsafe {
        let c = ngx_pool_cleanup_add((*r).pool, size_of::<SavedToken>());
        if c.is_null() {
            return None;
        }
        (*c).handler = Some(saved_token_marker);
        (*c).data.cast::<SavedToken>().write(SavedToken {
            tag: SAVED_TOKEN_TAG,
            token: ngx_str_t {
                len: token.len(),
                data: token.as_ptr().cast_mut(),
            },
        });
        Some(())
    }
}

/// The token [`save`] remembered, after an internal redirect.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn saved<'r>(r: *mut ngx_http_request_t) -> Option<&'r [u8]> {
    // SAFETY: the cleanup list of a live pool is well formed; ours hold an
    // ngx_str_t pointing into request memory.
    unsafe {
        if (*r).internal() == 0 {
            return None;
        }
        let mut c = (*(*r).pool).cleanup;
        while !c.is_null() {
            if is_marker((*c).handler) {
                let saved = &*(*c).data.cast::<SavedToken>();
                if saved.tag == SAVED_TOKEN_TAG {
                    return Some(core::slice::from_raw_parts(
                        saved.token.data,
                        saved.token.len,
                    ));
                }
            }
            c = (*c).next;
        }
        None
    }
}
