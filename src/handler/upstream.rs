//! What the upstream gets: the carriers `oauth::carriers::Withheld` decides
//! to withhold, removed from the request, and the token that replaces the
//! client's in `Authorization` (phantom JWT or exchanged token).

use ngx::ffi::{ngx_http_request_t, ngx_str_t};

use crate::handler::raw::{pool_str, retain_headers, set_authorization};
use crate::oauth::carriers::{uri_with_args, HeaderEdit, TokenSource, Withheld};

/// Keeps every configured token carrier from the upstream (see `Withheld`):
/// the header, the query parameter (in `$args` and `$request_uri`, so
/// whatever the upstream is built from) and the cookie.
///
/// # Safety
/// `r` must be a live request. Slices of the old values stay valid: new
/// values are written to fresh pool memory.
pub unsafe fn withhold(
    r: *mut ngx_http_request_t,
    sources: &[TokenSource],
    used: &TokenSource,
) -> Option<()> {
    let withheld = Withheld::from_sources(sources, used);
    // SAFETY: args and unparsed_uri point into request memory; the new
    // values are fresh pool copies.
    unsafe {
        if let Some(kept) = withheld.query((*r).args.as_bytes()) {
            (*r).args = match kept.is_empty() {
                true => ngx_str_t::empty(),
                false => pool_str(r, &kept)?,
            };
            (*r).unparsed_uri = pool_str(r, &uri_with_args((*r).unparsed_uri.as_bytes(), &kept))?;
        }
    }
    // nginx's own pointer to the header (`$remote_user`, and the token
    // search) must not outlive it in the list.
    // SAFETY: r is live (this function's contract); the pointer is null or
    // points at an element of its header list.
    unsafe {
        let authorization = (*r).headers_in.authorization;
        if !authorization.is_null()
            && withheld.removes_authorization((*authorization).value.as_bytes())
        {
            (*r).headers_in.authorization = core::ptr::null_mut();
        }
    }
    if !withheld.touches_headers() {
        return Some(());
    }
    let mut failed = false;
    // SAFETY: r is live; new values are copied into its pool.
    unsafe {
        retain_headers(r, |h| {
            match withheld.edit_header(h.key.as_bytes(), h.value.as_bytes()) {
                HeaderEdit::Keep => true,
                HeaderEdit::Remove => false,
                // An element left empty is dropped; its value is emptied too
                // for readers of nginx's own pointer to it.
                HeaderEdit::Rewrite(rest) => {
                    match pool_str(r, &rest) {
                        Some(value) => h.value = value,
                        None => failed = true,
                    }
                    !rest.is_empty()
                }
            }
        })?;
    }
    (!failed).then_some(())
}

/// Makes `Bearer <token>` the upstream's Authorization.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn authorize(r: *mut ngx_http_request_t, token: &[u8]) -> Option<()> {
    const SCHEME: &[u8] = b"Bearer ";
    // SAFETY: the value is built in r's pool, where the header lives too.
    unsafe {
        let len = SCHEME.len() + token.len();
        let data = ngx::ffi::ngx_pnalloc((*r).pool, len).cast::<u8>();
        if data.is_null() {
            return None;
        }
        core::ptr::copy_nonoverlapping(SCHEME.as_ptr(), data, SCHEME.len());
        core::ptr::copy_nonoverlapping(token.as_ptr(), data.add(SCHEME.len()), token.len());
        set_authorization(r, ngx_str_t { len, data })
    }
}
