//! Which entries are stored, under which key, and for how long.

use sha2::{Digest, Sha256};

use crate::oauth::introspection::IntrospectionResult;

/// SHA-256 over the token and the policy that validated it, so that a token
/// accepted for one endpoint or client is never accepted for another, and no
/// raw token is kept in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn new(endpoint: &[u8], client_id: &[u8], token: &[u8]) -> CacheKey {
        CacheKey::from_parts(&[endpoint, client_id, token])
    }

    /// The digest of every part that shapes the cached answer.
    pub fn from_parts(parts: &[&[u8]]) -> CacheKey {
        let mut hasher = Sha256::new();
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
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

/// `max_ttl` and `negative_ttl` of `auth_oauth2_token_introspect_cache`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_ttl_ms: i64,
    pub negative_ttl_ms: i64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_ttl_ms: 300_000,
            negative_ttl_ms: 0,
        }
    }
}

impl CachePolicy {
    /// `max_ttl=0` turns the cache off for lookups and stores alike.
    pub fn enabled(&self) -> bool {
        self.max_ttl_ms > 0
    }

    /// Until when (ms since the epoch) `result`, received at `now_ms`, may be
    /// served from the cache: never beyond `max_ttl`, never beyond the
    /// token's `exp`. `None` means do not store it.
    pub fn expires_at(&self, result: &IntrospectionResult, now_ms: i64) -> Option<i64> {
        if !self.enabled() {
            return None;
        }
        let limit = now_ms.saturating_add(self.max_ttl_ms);
        let expires = match result {
            IntrospectionResult::Inactive => now_ms.saturating_add(self.negative_ttl_ms).min(limit),
            IntrospectionResult::Active(claims) => match claims.exp {
                None => limit,
                Some(exp) => exp.saturating_mul(1000).min(limit),
            },
        };
        (expires > now_ms).then_some(expires)
    }

    /// Until when an exchanged token may be served: never beyond `max_ttl`,
    /// its `expires_in`, or the subject token's introspected `exp`.
    pub fn exchange_expires_at(
        &self,
        expires_in: Option<u64>,
        subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<i64> {
        if !self.enabled() {
            return None;
        }
        let mut expires = now_ms.saturating_add(self.max_ttl_ms);
        if let Some(seconds) = expires_in {
            expires = expires.min(
                now_ms.saturating_add(
                    i64::try_from(seconds)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1000),
                ),
            );
        }
        if let Some(exp) = subject_exp {
            expires = expires.min(exp.saturating_mul(1000));
        }
        (expires > now_ms).then_some(expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::introspection::TokenClaims;

    fn active(exp: Option<i64>) -> IntrospectionResult {
        IntrospectionResult::Active(TokenClaims {
            exp,
            ..Default::default()
        })
    }

    #[test]
    fn key_depends_on_token_endpoint_and_client() {
        let base = CacheKey::new(b"/introspect", b"gw", b"tok");
        assert_eq!(base, CacheKey::new(b"/introspect", b"gw", b"tok"));
        assert_ne!(base, CacheKey::new(b"/introspect", b"gw", b"tok2"));
        assert_ne!(base, CacheKey::new(b"/other", b"gw", b"tok"));
        assert_ne!(base, CacheKey::new(b"/introspect", b"gw2", b"tok"));
        assert_ne!(
            CacheKey::new(b"/a", b"bc", b"t"),
            CacheKey::new(b"/ab", b"c", b"t")
        );
    }

    #[test]
    fn key_does_not_contain_the_token() {
        let token = b"0123456789abcdef0123456789abcdef";
        let key = CacheKey::new(b"", b"", token);
        assert!(!key.0.windows(8).any(|w| token.windows(8).any(|t| t == w)));
    }

    const NOW: i64 = 1_000_000; // ms

    #[test]
    fn ttl_is_capped_by_max_ttl_and_exp() {
        let p = CachePolicy {
            max_ttl_ms: 300_000,
            negative_ttl_ms: 0,
        };
        assert_eq!(p.expires_at(&active(None), NOW), Some(NOW + 300_000));
        assert_eq!(p.expires_at(&active(Some(1002)), NOW), Some(1_002_000));
        assert_eq!(p.expires_at(&active(Some(5000)), NOW), Some(NOW + 300_000));
        // exp is whole seconds: the entry ends at exp exactly, not up to a second later.
        assert_eq!(
            p.expires_at(&active(Some(1001)), NOW + 999),
            Some(1_001_000)
        );
    }

    #[test]
    fn expired_tokens_are_not_cached() {
        let p = CachePolicy::default();
        assert_eq!(p.expires_at(&active(Some(1000)), NOW), None);
        assert_eq!(p.expires_at(&active(Some(1)), NOW), None);
        assert_eq!(p.expires_at(&active(Some(i64::MIN)), NOW), None);
    }

    #[test]
    fn inactive_only_with_negative_ttl_and_never_beyond_max_ttl() {
        let inactive = IntrospectionResult::Inactive;
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 300_000,
                negative_ttl_ms: 0
            }
            .expires_at(&inactive, NOW),
            None
        );
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 300_000,
                negative_ttl_ms: 5000
            }
            .expires_at(&inactive, NOW),
            Some(NOW + 5000)
        );
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 3000,
                negative_ttl_ms: 5000
            }
            .expires_at(&inactive, NOW),
            Some(NOW + 3000)
        );
    }

    #[test]
    fn exchanged_tokens_respect_expires_in_and_the_subject_exp() {
        let p = CachePolicy {
            max_ttl_ms: 300_000,
            negative_ttl_ms: 0,
        };
        assert_eq!(p.exchange_expires_at(None, None, NOW), Some(NOW + 300_000));
        assert_eq!(
            p.exchange_expires_at(Some(60), None, NOW),
            Some(NOW + 60_000)
        );
        assert_eq!(
            p.exchange_expires_at(Some(60), Some(1010), NOW),
            Some(1_010_000)
        );
        assert_eq!(p.exchange_expires_at(Some(0), None, NOW), None);
        assert_eq!(
            p.exchange_expires_at(Some(u64::MAX), None, NOW),
            Some(NOW + 300_000)
        );
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 0,
                negative_ttl_ms: 0
            }
            .exchange_expires_at(Some(60), None, NOW),
            None
        );
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
        assert_eq!(
            CacheKey::new(b"e", b"c", b"t"),
            CacheKey::from_parts(&[b"e", b"c", b"t"])
        );
    }

    #[test]
    fn max_ttl_zero_disables() {
        let p = CachePolicy {
            max_ttl_ms: 0,
            negative_ttl_ms: 10_000,
        };
        assert!(!p.enabled());
        assert_eq!(p.expires_at(&active(None), NOW), None);
        assert_eq!(p.expires_at(&IntrospectionResult::Inactive, NOW), None);
    }
}
