//! The client's token in the request: found where `auth_oauth2_token_source`
//! says, and remembered across internal redirects.

use ngx::ffi::{ngx_http_request_t, ngx_pool_cleanup_add, ngx_str_t};
use ngx::http::list_iterator;

use crate::handler::raw::{header_values, pool_str};
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
