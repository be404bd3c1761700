//! A JWK Set fetched from the issuer: what its endpoint's answer must be
//! to replace the set in hand, and how the keys zone keeps a set (the
//! answer's bytes, with when it was fetched and until when it is fresh) so
//! that every worker reads the same one and a new worker, or one started
//! after a reload, needs no fetch of its own.
//!
//! The answer is hostile input: anything but a `200` with a JWK Set of
//! public keys, of which at least one verifies an algorithm the issuer
//! accepts, is a failed fetch, and the set in hand stays.

use crate::oauth::call::CallFailure;
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jwk::{self, Jwk, JwkError, MAX_JWKS_BYTES};

/// A set as the zone keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSet<'a> {
    pub fetched_ms: i64,
    pub fresh_until_ms: i64,
    /// The endpoint's answer, as it came.
    pub body: &'a [u8],
}

const HEADER: usize = 16;

impl<'a> StoredSet<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut entry = Vec::with_capacity(HEADER + self.body.len());
        entry.extend_from_slice(&self.fetched_ms.to_be_bytes());
        entry.extend_from_slice(&self.fresh_until_ms.to_be_bytes());
        entry.extend_from_slice(self.body);
        entry
    }

    /// `None` for bytes `encode` did not make (too short).
    pub fn decode(entry: &'a [u8]) -> Option<StoredSet<'a>> {
        let (fetched, rest) = entry.split_first_chunk::<8>()?;
        let (fresh_until, body) = rest.split_first_chunk::<8>()?;
        Some(StoredSet {
            fetched_ms: i64::from_be_bytes(*fetched),
            fresh_until_ms: i64::from_be_bytes(*fresh_until),
            body,
        })
    }
}

/// Why a fetch brought no set to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    #[error("{}", .0.describe("JWK Set endpoint", "JWK Set"))]
    Call(CallFailure),
    #[error("JWK Set endpoint answered with status {0}")]
    Status(usize),
    #[error("JWK Set refused: {0}")]
    NotASet(JwkError),
    #[error("JWK Set holds no key for an algorithm the issuer accepts")]
    NoUsableKey,
}

/// The keys of a fetch's answer, for an issuer accepting `algorithms`.
pub fn keys_of(reply: &IdpReply<'_>, algorithms: Algorithms) -> Result<Vec<Jwk>, FetchFailure> {
    reply
        .transport(MAX_JWKS_BYTES)
        .map_err(|t| FetchFailure::Call(CallFailure::from_transport(t, MAX_JWKS_BYTES)))?;
    if reply.status != 200 {
        return Err(FetchFailure::Status(reply.status));
    }
    keys_of_body(reply.body, algorithms)
}

/// The keys of a set's bytes (an answer, or a set the zone kept).
pub fn keys_of_body(body: &[u8], algorithms: Algorithms) -> Result<Vec<Jwk>, FetchFailure> {
    let keys = jwk::parse_jwks(body).map_err(FetchFailure::NotASet)?;
    match keys
        .iter()
        .any(|key| algorithms.iter().any(|alg| key.verifies(alg)))
    {
        true => Ok(keys),
        false => Err(FetchFailure::NoUsableKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jose::alg::{Alg, KeyKind};
    use crate::oauth::jose::jwk::tests::jwk_json;
    use crate::oauth::jose::key::tests::pair;
    use proptest::prelude::*;

    fn set(extra: &str) -> String {
        let (ec, _) = pair(KeyKind::P256);
        format!(r#"{{"keys":[{}]}}"#, jwk_json(&ec, KeyKind::P256, extra))
    }

    fn reply(status: usize, body: &[u8]) -> IdpReply<'_> {
        IdpReply::new(0, status, body)
    }

    fn failure(reply: &IdpReply<'_>, algorithms: Algorithms) -> FetchFailure {
        keys_of(reply, algorithms).map(|_| ()).unwrap_err()
    }

    #[test]
    fn a_public_set_with_a_usable_key_is_taken() {
        let body = set(r#","kid":"k1""#);
        let keys = keys_of(&reply(200, body.as_bytes()), Algorithms::asymmetric()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("k1"));
    }

    #[test]
    fn anything_else_is_a_failed_fetch() {
        let body = set("");
        let es256_only = Algorithms::parse([&b"RS256"[..]]).unwrap();
        assert_eq!(
            failure(&reply(200, body.as_bytes()), es256_only),
            FetchFailure::NoUsableKey
        );
        assert_eq!(
            failure(&reply(404, body.as_bytes()), Algorithms::asymmetric()),
            FetchFailure::Status(404)
        );
        assert_eq!(
            failure(&reply(200, b"<html>"), Algorithms::asymmetric()),
            FetchFailure::NotASet(JwkError::NotASet)
        );
        assert_eq!(
            failure(&IdpReply::new(504, 0, b""), Algorithms::asymmetric()),
            FetchFailure::Call(CallFailure::Timeout)
        );
        assert_eq!(
            failure(&IdpReply::new(0, 0, b""), Algorithms::asymmetric()),
            FetchFailure::Call(CallFailure::Unreachable)
        );
        let private = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert_eq!(
            failure(&reply(200, private.as_bytes()), Algorithms::asymmetric()),
            FetchFailure::NotASet(JwkError::PrivateMember("k"))
        );
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(
            keys_of(&reply(200, &huge), Algorithms::asymmetric()),
            Err(FetchFailure::Call(CallFailure::TooLarge(..)))
        ));
        assert!(Alg::parse(b"ES256").is_some());
    }

    #[test]
    fn a_stored_set_reads_back_and_short_bytes_do_not() {
        assert_eq!(StoredSet::decode(&[0; 15]), None);
        let stored = StoredSet {
            fetched_ms: 5,
            fresh_until_ms: -7,
            body: b"",
        };
        assert_eq!(StoredSet::decode(&stored.encode()), Some(stored));
    }

    proptest! {
        #[test]
        fn any_stored_set_reads_back(fetched: i64, fresh: i64, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let stored = StoredSet { fetched_ms: fetched, fresh_until_ms: fresh, body: &body };
            let encoded = stored.encode();
            prop_assert_eq!(StoredSet::decode(&encoded), Some(stored));
        }

        #[test]
        fn any_answer_is_keys_or_a_failure(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Never a panic; a set of no key is never taken.
            if let Ok(keys) = keys_of(&reply(200, &body), Algorithms::asymmetric()) {
                prop_assert!(!keys.is_empty());
            }
        }
    }
}
