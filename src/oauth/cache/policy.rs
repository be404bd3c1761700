//! Which entries are stored, under which key, and for how long.

use crate::oauth::introspection::IntrospectionResult;

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
