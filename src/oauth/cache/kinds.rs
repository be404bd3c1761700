//! The kinds of IdP question the cache keeps answers to, as the cache flow
//! sees them (`flow::Kind`): how an answer becomes an entry and back, and
//! which answer says the token is no good. Their nginx side (what is asked,
//! where the answer goes) is `handler/question.rs`'s `Question`.

use crate::oauth::cache::flow::Kind;
use crate::oauth::cache::{CachePolicy, CachedExchange, CachedIntrospection, Lifetime};
use crate::oauth::exchange::{ExchangeFailure, IssuedToken};
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};

/// Token introspection (RFC 7662, or a phantom token's JWT).
pub struct Introspection;

/// Token exchange (RFC 8693).
pub struct Exchange;

impl Kind for Introspection {
    type Value = IntrospectionResult;
    type Failure = IdpFailure;

    fn entry(
        policy: &CachePolicy,
        result: &IntrospectionResult,
        _subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)> {
        let lifetime = policy.lifetime(result, now_ms)?;
        Some((CachedIntrospection::encode(result), lifetime))
    }

    fn says_revoked(answer: &Result<IntrospectionResult, IdpFailure>) -> bool {
        matches!(answer, Ok(IntrospectionResult::Inactive))
    }

    fn decode(entry: &[u8]) -> Option<IntrospectionResult> {
        CachedIntrospection::decode(entry)
    }

    fn decode_foreign(entry: &[u8]) -> Option<IntrospectionResult> {
        CachedIntrospection::decode_checked(entry)
    }
}

impl Kind for Exchange {
    type Value = IssuedToken;
    type Failure = ExchangeFailure;

    fn entry(
        policy: &CachePolicy,
        issued: &IssuedToken,
        subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)> {
        let lifetime = policy.exchange_lifetime(issued.expires_in, subject_exp, now_ms)?;
        Some((CachedExchange::encode(issued), lifetime))
    }

    fn says_revoked(answer: &Result<IssuedToken, ExchangeFailure>) -> bool {
        matches!(answer, Err(ExchangeFailure::InvalidGrant))
    }

    fn decode(entry: &[u8]) -> Option<IssuedToken> {
        CachedExchange::decode(entry)
    }

    fn decode_foreign(entry: &[u8]) -> Option<IssuedToken> {
        CachedExchange::decode_checked(entry)
    }
}
