//! One IdP endpoint and what is asked of it: the internal location, its
//! cache, and what the configuration derives for it once the location is
//! merged (cache-key scopes, metric series, circuit-breaker state). Every
//! kind of IdP call a location makes (introspection, exchange, and the
//! kinds to come) is one of these.

use crate::metrics::{EndpointIds, ZoneIds};
use crate::oauth::cache::key::KeyScope;
use crate::oauth::cache::CachePolicy;

#[derive(Debug, Default, Clone)]
pub struct Endpoint {
    /// The internal location the call is POSTed to (its directive).
    pub uri: Option<Vec<u8>>,
    /// The shared-memory cache of the answers (its directive).
    pub cache: Option<CacheConf>,
    /// What this gateway's cache keys include besides the token: the
    /// server block, the endpoint, the client and its secret, the kind.
    pub key_scope: KeyScope,
    /// The same in the Redis tier, where the server is named by its
    /// `server_name`s only.
    pub tier_scope: KeyScope,
    /// The series of its calls in the metrics.
    pub metrics: EndpointIds,
    /// The first state slot of its circuit breaker, with `auth_oauth2_token_breaker`.
    pub breaker: Option<usize>,
}

/// An endpoint's cache (`auth_oauth2_token_introspect_cache`,
/// `_exchange_cache`): a shared zone and this block's policy for it.
#[derive(Debug, Clone, Copy)]
pub struct CacheConf {
    /// The zone's `ngx_shm_zone_t`, opaque to the plain-Rust side.
    pub zone: *mut core::ffi::c_void,
    pub policy: CachePolicy,
    /// The zone's series in the metrics.
    pub metrics: ZoneIds,
}

impl Endpoint {
    /// An endpoint at `uri`, nothing derived yet.
    pub fn at(uri: &[u8]) -> Endpoint {
        Endpoint {
            uri: Some(uri.to_vec()),
            ..Endpoint::default()
        }
    }

    pub fn uri(&self) -> &[u8] {
        self.uri.as_deref().unwrap_or_default()
    }

    /// Takes what the directives of the enclosing block set, unless this
    /// block sets it; the derived parts are derived again once merged.
    pub fn inherit(&mut self, prev: &Endpoint) {
        if self.uri.is_none() {
            self.uri.clone_from(&prev.uri);
        }
        if self.cache.is_none() {
            self.cache = prev.cache;
        }
    }
}

/// An internal location is addressed by URI: a path, or a bare name as in
/// Curity's configurations (`location curity { internal; … }`), which no
/// client can ask for since every request URI starts with '/'.
pub fn is_valid_endpoint(uri: &[u8]) -> bool {
    match uri.first() {
        Some(b'/') => !uri
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || *b == b'?'),
        Some(b) if b.is_ascii_alphanumeric() || *b == b'_' => uri
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherits_what_the_block_does_not_set() {
        let outer = Endpoint::at(b"/outer");
        let mut inner = Endpoint::default();
        inner.inherit(&outer);
        assert_eq!(inner.uri(), b"/outer");
        let mut own = Endpoint::at(b"/own");
        own.inherit(&outer);
        assert_eq!(own.uri(), b"/own");
        assert_eq!(Endpoint::default().uri(), b"");
    }
}
