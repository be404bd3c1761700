//! Cache keys: a SHA-256 digest over everything that shapes a cached answer,
//! so that an answer obtained for one endpoint, client or set of exchange
//! parameters is never served for another, and no raw token is kept in
//! shared memory.

use sha2::{Digest, Sha256};

use crate::oauth::exchange::ExchangeParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The digest of `parts`, each length-prefixed so that ("ab", "c") and
    /// ("a", "bc") stay apart.
    pub fn from_parts(parts: &[&[u8]]) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        CacheKey(hasher.finalize().into())
    }

    /// A well-mixed 64-bit slice of the digest for bucket selection.
    pub fn bucket_hash(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// What an introspection answer depends on.
#[derive(Debug, Clone, Copy)]
pub struct IntrospectionKey<'a> {
    /// The internal location the question goes to.
    pub endpoint: &'a [u8],
    pub client_id: &'a [u8],
    pub token: &'a [u8],
    /// A phantom answer (a JWT to forward) is another answer.
    pub phantom: bool,
    /// `ClaimPaths::fingerprint`: entries keep the configured claims by
    /// position, so another list must not read them.
    pub claims: &'a [u8],
}

impl IntrospectionKey<'_> {
    pub fn digest(&self) -> CacheKey {
        let kind: &[u8] = match self.phantom {
            true => b"phantom",
            false => b"",
        };
        match (kind, self.claims) {
            // The key of a plain answer without extra claims is the one
            // earlier versions used, so their entries stay valid.
            ([], []) => CacheKey::from_parts(&[self.endpoint, self.client_id, self.token]),
            _ => CacheKey::from_parts(&[
                self.endpoint,
                self.client_id,
                self.token,
                kind,
                self.claims,
            ]),
        }
    }
}

/// What a token exchange's answer depends on: every parameter that shapes
/// the issued token.
pub fn exchange_key(
    endpoint: &[u8],
    client_id: &[u8],
    token: &[u8],
    params: &ExchangeParams<'_>,
) -> CacheKey {
    CacheKey::from_parts(&[
        endpoint,
        client_id,
        token,
        params.audience,
        params.scope,
        params.resource,
        params.requested_token_type,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain<'a>(endpoint: &'a [u8], client_id: &'a [u8], token: &'a [u8]) -> IntrospectionKey<'a> {
        IntrospectionKey {
            endpoint,
            client_id,
            token,
            phantom: false,
            claims: b"",
        }
    }

    #[test]
    fn introspection_key_depends_on_token_endpoint_and_client() {
        let base = plain(b"/introspect", b"gw", b"tok").digest();
        assert_eq!(base, plain(b"/introspect", b"gw", b"tok").digest());
        assert_ne!(base, plain(b"/introspect", b"gw", b"tok2").digest());
        assert_ne!(base, plain(b"/other", b"gw", b"tok").digest());
        assert_ne!(base, plain(b"/introspect", b"gw2", b"tok").digest());
        assert_ne!(
            plain(b"/a", b"bc", b"t").digest(),
            plain(b"/ab", b"c", b"t").digest()
        );
    }

    #[test]
    fn phantom_and_claim_lists_get_keys_of_their_own() {
        let base = plain(b"/i", b"gw", b"tok");
        let phantom = IntrospectionKey {
            phantom: true,
            ..base
        };
        let claims = IntrospectionKey {
            claims: b"fingerprint",
            ..base
        };
        let both = IntrospectionKey {
            phantom: true,
            claims: b"fingerprint",
            ..base
        };
        let keys = [
            base.digest(),
            phantom.digest(),
            claims.digest(),
            both.digest(),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Unchanged from the three-part key of plain answers.
        assert_eq!(base.digest(), CacheKey::from_parts(&[b"/i", b"gw", b"tok"]));
    }

    #[test]
    fn exchange_key_depends_on_every_parameter() {
        let params = ExchangeParams {
            audience: b"orders",
            scope: b"read",
            resource: b"https://orders",
            requested_token_type: b"",
        };
        let base = exchange_key(b"/t", b"gw", b"tok", &params);
        assert_eq!(base, exchange_key(b"/t", b"gw", b"tok", &params));
        for other in [
            ExchangeParams {
                audience: b"billing",
                ..params
            },
            ExchangeParams {
                scope: b"write",
                ..params
            },
            ExchangeParams {
                resource: b"https://billing",
                ..params
            },
            ExchangeParams {
                requested_token_type: b"urn:x",
                ..params
            },
        ] {
            assert_ne!(base, exchange_key(b"/t", b"gw", b"tok", &other));
        }
        assert_ne!(base, exchange_key(b"/t", b"gw", b"tok2", &params));
        assert_ne!(base, exchange_key(b"/t2", b"gw", b"tok", &params));
        assert_ne!(base, exchange_key(b"/t", b"gw2", b"tok", &params));
        // Moving bytes between parameters makes another key.
        let shifted = ExchangeParams {
            audience: b"orders",
            scope: b"",
            resource: b"readhttps://orders",
            requested_token_type: b"",
        };
        assert_ne!(base, exchange_key(b"/t", b"gw", b"tok", &shifted));
    }

    #[test]
    fn key_parts_are_length_delimited() {
        assert_ne!(
            CacheKey::from_parts(&[b"a", b"bc"]),
            CacheKey::from_parts(&[b"ab", b"c"])
        );
        assert_ne!(
            CacheKey::from_parts(&[b"a", b""]),
            CacheKey::from_parts(&[b"a"])
        );
    }

    #[test]
    fn keys_do_not_contain_the_token() {
        let token = b"0123456789abcdef0123456789abcdef";
        let key = plain(b"", b"", token).digest();
        assert!(!key.0.windows(8).any(|w| token.windows(8).any(|t| t == w)));
    }
}
