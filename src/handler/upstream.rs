//! What the upstream gets: the carriers `oauth::carriers::Withheld` decides
//! to withhold, removed from the request, and the token that replaces the
//! client's in `Authorization` (phantom JWT or exchanged token).

use crate::nginx::req::Req;
use crate::oauth::carriers::{uri_with_args, TokenSource, Withheld};

/// Keeps every configured token carrier from the upstream (see `Withheld`):
/// the header, the query parameter (in `$args` and `$request_uri`, so
/// whatever the upstream is built from) and the cookie. Slices of the old
/// values stay valid: new values are written to fresh pool memory.
pub fn withhold(req: &mut Req<'_>, sources: &[TokenSource], used: &TokenSource) -> Option<()> {
    let withheld = Withheld::from_sources(sources, used);
    if let Some(kept) = withheld.query(req.args()) {
        let args = req.pool_copy(&kept)?;
        let uri = req.pool_copy(&uri_with_args(req.unparsed_uri(), &kept))?;
        req.set_args(args);
        req.set_unparsed_uri(uri);
    }
    // nginx's own pointer to the header (`$remote_user`, and the token
    // search) must not outlive it in the list.
    if req
        .authorization()
        .is_some_and(|value| withheld.removes_authorization(value))
    {
        req.forget_authorization();
    }
    if !withheld.touches_headers() {
        return Some(());
    }
    req.edit_headers(|key, value| withheld.edit_header(key, value))
}

/// Makes `Bearer <token>` the upstream's Authorization.
pub fn authorize(req: &mut Req<'_>, token: &[u8]) -> Option<()> {
    let value = req.pool_concat(&[b"Bearer ", token])?;
    req.set_authorization(value)
}
