//! Which entries are stored, under which key, and for how long.

use crate::oauth::introspection::IntrospectionResult;

/// `max_ttl` and `negative_ttl` of `auth_oauth2_token_introspect_cache`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_ttl_ms: i64,
    pub negative_ttl_ms: i64,
    /// How long past `max_ttl` an active answer may still be served when
    /// the IdP fails (`stale_if_error`); 0: never.
    pub stale_if_error_ms: i64,
    /// From what share of its fresh life (percent) a hit also refreshes the
    /// entry in the background (`refresh`); 0: never.
    pub refresh_pct: u8,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_ttl_ms: 300_000,
            negative_ttl_ms: 0,
            stale_if_error_ms: 0,
            refresh_pct: 0,
        }
    }
}

/// How long an entry lives: served as it is until `fresh_until`, and only
/// when the IdP fails until `stale_until` (equal when it may not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub fresh_until: i64,
    pub stale_until: i64,
}

impl CachePolicy {
    /// `max_ttl=0` turns the cache off for lookups and stores alike.
    pub fn enabled(&self) -> bool {
        self.max_ttl_ms > 0
    }

    /// Whether an answer the IdP gave at `obtained_ms`, which its writer
    /// keeps fresh until `fresh_until_ms`, is fresh for a reader with this
    /// policy: within the writer's time and within this `max_ttl` counted
    /// from the IdP's answer (an answer from the Redis tier gets no new
    /// `max_ttl` for having travelled).
    pub fn serves_fresh(&self, obtained_ms: i64, fresh_until_ms: i64, now_ms: i64) -> bool {
        self.enabled()
            && now_ms < fresh_until_ms
            && now_ms.saturating_sub(obtained_ms) < self.max_ttl_ms
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

    /// The lifetime of an introspection answer: [`expires_at`], and for an
    /// active answer whose entry ends by `max_ttl`, `stale_if_error` more,
    /// never past the token's own `exp`.
    pub fn lifetime(&self, result: &IntrospectionResult, now_ms: i64) -> Option<Lifetime> {
        let fresh_until = self.expires_at(result, now_ms)?;
        let stale_until = match result {
            IntrospectionResult::Inactive => fresh_until,
            IntrospectionResult::Active(claims) => {
                let hard = claims.exp.map_or(i64::MAX, |exp| exp.saturating_mul(1000));
                fresh_until
                    .saturating_add(self.stale_if_error_ms)
                    .min(hard)
                    .max(fresh_until)
            }
        };
        Some(Lifetime {
            fresh_until,
            stale_until,
        })
    }

    /// The lifetime of an exchanged token: [`exchange_expires_at`], and
    /// `stale_if_error` more, never past the issued token's `expires_in`
    /// nor the subject token's `exp`.
    pub fn exchange_lifetime(
        &self,
        expires_in: Option<u64>,
        subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<Lifetime> {
        let fresh_until = self.exchange_expires_at(expires_in, subject_exp, now_ms)?;
        let mut hard = i64::MAX;
        if let Some(seconds) = expires_in {
            let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
            hard = hard.min(now_ms.saturating_add(seconds.saturating_mul(1000)));
        }
        if let Some(exp) = subject_exp {
            hard = hard.min(exp.saturating_mul(1000));
        }
        let stale_until = fresh_until
            .saturating_add(self.stale_if_error_ms)
            .min(hard)
            .max(fresh_until);
        Some(Lifetime {
            fresh_until,
            stale_until,
        })
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

    #[test]
    fn the_readers_max_ttl_counts_from_the_idps_answer() {
        let strict = CachePolicy {
            max_ttl_ms: 2_000,
            ..CachePolicy::default()
        };
        // Written by a lenient writer: fresh for it until 300 s.
        assert!(strict.serves_fresh(1_000, 301_000, 2_999));
        assert!(!strict.serves_fresh(1_000, 301_000, 3_000));
        // Never past the writer's own time.
        assert!(!strict.serves_fresh(1_000, 2_000, 2_000));
        // An answer from a clock ahead of ours: still never past the writer's time.
        assert!(strict.serves_fresh(5_000, 6_000, 4_000));
        assert!(!strict.serves_fresh(5_000, 6_000, 6_000));
        let off = CachePolicy {
            max_ttl_ms: 0,
            ..CachePolicy::default()
        };
        assert!(!off.serves_fresh(0, i64::MAX, 1));
    }
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
            refresh_pct: 0,
            stale_if_error_ms: 0,
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
                refresh_pct: 0,
                stale_if_error_ms: 0,
                negative_ttl_ms: 0
            }
            .expires_at(&inactive, NOW),
            None
        );
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 300_000,
                refresh_pct: 0,
                stale_if_error_ms: 0,
                negative_ttl_ms: 5000
            }
            .expires_at(&inactive, NOW),
            Some(NOW + 5000)
        );
        assert_eq!(
            CachePolicy {
                max_ttl_ms: 3000,
                refresh_pct: 0,
                stale_if_error_ms: 0,
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
            refresh_pct: 0,
            stale_if_error_ms: 0,
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
                negative_ttl_ms: 0,
                refresh_pct: 0,
                stale_if_error_ms: 0,
            }
            .exchange_expires_at(Some(60), None, NOW),
            None
        );
    }

    #[test]
    fn stale_if_error_extends_only_active_answers_and_never_past_exp() {
        let p = CachePolicy {
            max_ttl_ms: 60_000,
            negative_ttl_ms: 10_000,
            refresh_pct: 0,
            stale_if_error_ms: 30_000,
        };
        let lt = p.lifetime(&active(None), NOW).unwrap();
        assert_eq!(
            (lt.fresh_until, lt.stale_until),
            (NOW + 60_000, NOW + 90_000)
        );
        // exp 70 s ahead: fresh until max_ttl, stale only until exp.
        let exp = (NOW + 70_000) / 1000;
        let lt = p.lifetime(&active(Some(exp)), NOW).unwrap();
        assert_eq!((lt.fresh_until, lt.stale_until), (NOW + 60_000, exp * 1000));
        // exp before max_ttl: the entry ends at exp, and is never stale.
        let exp = (NOW + 20_000) / 1000;
        let lt = p.lifetime(&active(Some(exp)), NOW).unwrap();
        assert_eq!(lt.fresh_until, lt.stale_until);
        let lt = p.lifetime(&IntrospectionResult::Inactive, NOW).unwrap();
        assert_eq!(
            lt.fresh_until, lt.stale_until,
            "inactive answers are never stale"
        );
        let lt = p.exchange_lifetime(Some(80), None, NOW).unwrap();
        assert_eq!(
            (lt.fresh_until, lt.stale_until),
            (NOW + 60_000, NOW + 80_000)
        );
        let off = CachePolicy {
            stale_if_error_ms: 0,
            ..p
        };
        let lt = off.lifetime(&active(None), NOW).unwrap();
        assert_eq!(lt.fresh_until, lt.stale_until);
    }

    #[test]
    fn max_ttl_zero_disables() {
        let p = CachePolicy {
            max_ttl_ms: 0,
            refresh_pct: 0,
            stale_if_error_ms: 0,
            negative_ttl_ms: 10_000,
        };
        assert!(!p.enabled());
        assert_eq!(p.expires_at(&active(None), NOW), None);
        assert_eq!(p.expires_at(&IntrospectionResult::Inactive, NOW), None);
    }
}
