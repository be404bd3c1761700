//! The client's token in the request: found where `auth_oauth2_token_source`
//! says, and kept from the upstream when it came from a header other than
//! `Authorization`, a query parameter or a cookie.

use ngx::ffi::{ngx_http_request_t, ngx_str_t};
use ngx::http::list_iterator;

use crate::request::{header_values, pool_str, retain_headers};
use crate::token::{self, BearerToken, Malformed};
use crate::token_source::{self, TokenSource};

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
            TokenSource::Bearer => {
                let (values, count) = header_values::<2>(headers, b"Authorization");
                token::from_authorization(&values[..count.min(2)])
            }
            TokenSource::Header(name) => match header_values::<1>(headers, name) {
                (_, 0) => BearerToken::Missing,
                ([value], 1) => token_source::raw_token(value),
                _ => BearerToken::Malformed(Malformed::DuplicateHeader),
            },
            TokenSource::Query(name) => {
                let args = (*r).args.as_bytes();
                match token_source::query_value(args, name) {
                    None => BearerToken::Missing,
                    Some(std::borrow::Cow::Borrowed(value)) => token_source::raw_token(value),
                    Some(std::borrow::Cow::Owned(decoded)) => match pool_str(r, &decoded) {
                        Some(copy) if copy.len > 0 => token_source::raw_token(
                            core::slice::from_raw_parts(copy.data, copy.len),
                        ),
                        _ => BearerToken::Missing,
                    },
                }
            }
            TokenSource::Cookie(name) => {
                for (key, value) in list_iterator(headers) {
                    if key.as_bytes().eq_ignore_ascii_case(b"Cookie") {
                        if let Some(value) = token_source::cookie_value(value.as_bytes(), name) {
                            return token_source::raw_token(value);
                        }
                    }
                }
                BearerToken::Missing
            }
        }
    }
}

/// Removes the token from what the upstream receives: the header, the query
/// parameter (nginx then rebuilds the proxied URI from `$uri` and `$args`)
/// or the cookie. The `Authorization` header is left to the caller: it is
/// passed on, or replaced by an exchanged or phantom token.
///
/// # Safety
/// `r` must be a live request. Slices of the old values stay valid: new
/// values are written to fresh pool memory.
pub unsafe fn withhold(r: *mut ngx_http_request_t, source: &TokenSource) -> Option<()> {
    // SAFETY: r is live; new values are copied into its pool before use.
    unsafe {
        match source {
            TokenSource::Bearer => Some(()),
            TokenSource::Header(name) => {
                retain_headers(r, |h| !h.key.as_bytes().eq_ignore_ascii_case(name))
            }
            TokenSource::Query(name) => {
                let args = token_source::query_without((*r).args.as_bytes(), name);
                (*r).args = match args.is_empty() {
                    true => ngx_str_t::empty(),
                    false => pool_str(r, &args)?,
                };
                (*r).set_valid_unparsed_uri(0);
                Some(())
            }
            TokenSource::Cookie(name) => {
                let mut failed = false;
                retain_headers(r, |h| {
                    if !h.key.as_bytes().eq_ignore_ascii_case(b"Cookie") {
                        return true;
                    }
                    let rest = token_source::cookie_without(h.value.as_bytes(), name);
                    if rest.len() == h.value.len {
                        return true;
                    }
                    match pool_str(r, &rest) {
                        Some(value) => h.value = value,
                        None => failed = true,
                    }
                    // An element left empty is dropped; its value is
                    // emptied too for readers of the typed pointer.
                    !rest.is_empty()
                })?;
                (!failed).then_some(())
            }
        }
    }
}
