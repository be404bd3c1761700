//! RFC 8693 answers from the token endpoint.
//!
//! Input: a status digit (common::reply), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::cache::{CachePolicy, CachedExchange};
use ngx_http_auth_oauth2_token_module::oauth::exchange::{self, ExchangeFailure};
use ngx_http_auth_oauth2_token_module::oauth::{bearer, claims};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let [status_digit, body @ ..] = data else {
        return;
    };
    let reply = common::reply(*status_digit, body);
    match exchange::interpret(reply) {
        Ok(token) => {
            assert_eq!((reply.finalize_rc, reply.status), (0, 200));
            // It goes into the upstream's Authorization header as it is.
            assert!(
                bearer::is_b64token(token.access_token.as_bytes()),
                "issued token {:?}",
                token.access_token
            );
            assert!(!token.issued_token_type.is_empty());
            // Both may reach headers and logs.
            assert!(claims::is_header_safe(&token.issued_token_type));
            assert!(token
                .token_type
                .as_deref()
                .is_none_or(claims::is_header_safe));
            // Cached never beyond max_ttl, expires_in, or the subject's exp;
            // served stale (stale_if_error) never past the last two either.
            let policy = CachePolicy {
                max_ttl_ms: 300_000,
                negative_ttl_ms: 0,
                stale_if_error_ms: 600_000,
                ..CachePolicy::default()
            };
            let (now, subject_exp): (i64, i64) = (1_700_000_000_000, 1_700_000_100);
            let hard_limit = |subject: Option<i64>| {
                let mut hard = i64::MAX;
                if let Some(seconds) = token.expires_in {
                    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
                    hard = hard.min(now.saturating_add(seconds.saturating_mul(1000)));
                }
                if let Some(exp) = subject {
                    hard = hard.min(exp * 1000);
                }
                hard
            };
            for subject in [None, Some(subject_exp)] {
                let until = policy.exchange_expires_at(token.expires_in, subject, now);
                if let Some(until) = until {
                    assert!(
                        until > now && until <= now + policy.max_ttl_ms,
                        "cached until {until}"
                    );
                    assert!(
                        until <= hard_limit(subject),
                        "cached past expires_in or exp"
                    );
                }
                let lifetime = policy.exchange_lifetime(token.expires_in, subject, now);
                assert_eq!(lifetime.map(|l| l.fresh_until), until);
                if let Some(l) = lifetime {
                    assert!(l.fresh_until <= l.stale_until);
                    assert!(l.stale_until <= l.fresh_until + policy.stale_if_error_ms);
                    assert!(
                        l.stale_until <= hard_limit(subject),
                        "stale past expires_in or exp"
                    );
                }
            }
            let entry = CachedExchange::encode(&token);
            assert_eq!(
                CachedExchange::decode(&entry),
                Some(token),
                "cache entry does not round-trip"
            );
        }
        Err(failure) => {
            // The log line: printable, and only a vetted error code from the body.
            let line = failure.to_string();
            assert!(common::is_printable_ascii(&line), "log line {line:?}");
            match &failure {
                ExchangeFailure::InvalidGrant | ExchangeFailure::NotPermitted(_) => {
                    assert_eq!(reply.status, 400)
                }
                ExchangeFailure::ErrorStatus { status, error } => {
                    assert_ne!(*status, 200);
                    if let Some(code) = error {
                        assert!(!code.is_empty() && code.len() <= 64);
                        assert!(!code.contains(['"', '\\']));
                    }
                }
                _ => {}
            }
            assert!(matches!(failure.status(), 401 | 403 | 502 | 504));
        }
    }
});
