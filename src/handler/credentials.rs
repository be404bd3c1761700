//! The client's token in the request: found where `auth_oauth2_token_source`
//! says, and remembered across internal redirects.

use ngx::ffi::ngx_str_t;

use crate::nginx::req::{ngx_str, Req};
use crate::oauth::bearer::{self, BearerToken, Malformed};
use crate::oauth::carriers::{self, TokenSource};

/// Where a token is looked for when the location does not say.
pub const DEFAULT_SOURCES: &[TokenSource] = &[TokenSource::Bearer];

/// The first token found in `sources`, and the source it came from. A
/// malformed value ends the search: the client did try to send a token.
pub fn find<'r, 's>(
    req: &Req<'r>,
    sources: &'s [TokenSource],
) -> (BearerToken<'r>, Option<&'s TokenSource>) {
    for source in sources {
        let found = look_in(req, source);
        if found != BearerToken::Missing {
            return (found, Some(source));
        }
    }
    (BearerToken::Missing, None)
}

fn look_in<'r>(req: &Req<'r>, source: &TokenSource) -> BearerToken<'r> {
    match source {
        // nginx keeps its own pointer to the one Authorization header it
        // accepts (a second one is a 400 before any module runs): no
        // need to walk the header list on every request.
        TokenSource::Bearer => match req.authorization() {
            Some(value) => bearer::from_authorization(&[value]),
            None => BearerToken::Missing,
        },
        TokenSource::Header(name) => match req.header_values::<1>(name) {
            (_, 0) => BearerToken::Missing,
            ([value], 1) => carriers::raw_token(value),
            _ => BearerToken::Malformed(Malformed::DuplicateHeader),
        },
        TokenSource::Query(name) => match carriers::query_value(req.args(), name) {
            None => BearerToken::Missing,
            Some(std::borrow::Cow::Borrowed(value)) => carriers::raw_token(value),
            Some(std::borrow::Cow::Owned(decoded)) => match req.pool_copy(&decoded) {
                Some(copy) if !copy.is_empty() => carriers::raw_token(copy),
                _ => BearerToken::Missing,
            },
        },
        // An empty cookie is no token: a later header may carry one.
        TokenSource::Cookie(name) => req
            .find_header(b"Cookie", |value| {
                carriers::cookie_value(value, name)
                    .map(carriers::raw_token)
                    .filter(|found| *found != BearerToken::Missing)
            })
            .unwrap_or(BearerToken::Missing),
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

/// Remembers `token` (request memory) for the rest of the request.
pub fn save<'r>(req: &mut Req<'r>, token: &'r [u8]) -> Option<()> {
    let c = req.add_cleanup(size_of::<SavedToken>())?;
    let saved = SavedToken {
        tag: SAVED_TOKEN_TAG,
        token: ngx_str(token),
    };
    // SAFETY: `c` is the cleanup just added, whose data is room for a
    // SavedToken (nginx aligns pool data to a word).
    unsafe {
        (*c.as_ptr()).handler = Some(saved_token_marker);
        (*c.as_ptr()).data.cast::<SavedToken>().write(saved);
    }
    Some(())
}

/// The token [`save`] remembered, after an internal redirect.
pub fn saved<'r>(req: &Req<'r>) -> Option<&'r [u8]> {
    if !req.is_internal() {
        return None;
    }
    let saved = req
        .cleanup_data(Some(saved_token_marker))
        .map(|data| data.cast::<SavedToken>())
        // SAFETY: the request's cleanups with this handler's address are the
        // ones `save` added, whose data is a SavedToken: the module's other
        // cleanups run code (`Req::keep` registers none for a value that
        // needs no drop), which the empty marker cannot share. The tag is
        // checked all the same.
        .find(|&saved| unsafe { (*saved).tag } == SAVED_TOKEN_TAG)?;
    // SAFETY: `saved` is a SavedToken, whose token `save` took as `&'r` of
    // this request.
    Some(unsafe { core::slice::from_raw_parts((*saved).token.data, (*saved).token.len) })
}
