//! Proptests over what the client sends for DPoP: any bytes as a proof or
//! a URI never panic; a valid proof with one byte changed is refused;
//! normalised URIs are fixed points.

use proptest::prelude::*;

use crate::oauth::dpop::htu;
use crate::oauth::dpop::proof::tests::{claims, es256_proof, NOW, TOKEN, URI};
use crate::oauth::dpop::proof::{check, ProofPolicy, ProofRequest};
use crate::oauth::jose::alg::KeyKind;
use crate::oauth::jose::key::tests::pair;

fn request<'a>(headers: &'a [&'a [u8]]) -> ProofRequest<'a> {
    ProofRequest {
        headers,
        method: b"GET",
        uri: Some(URI),
        token: TOKEN,
        now_s: NOW,
        nonce_key: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let headers = [&bytes[..]];
        prop_assert!(check(&request(&headers), &ProofPolicy::default()).is_err());
    }

    #[test]
    fn a_changed_byte_refuses_the_proof(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let (key, _) = pair(KeyKind::P256);
        let proof = es256_proof(&key, claims("p"));
        let headers = [proof.as_bytes()];
        prop_assert!(check(&request(&headers), &ProofPolicy::default()).is_ok());
        let mut changed = proof.into_bytes();
        let i = at.index(changed.len());
        prop_assume!(changed[i] != to && !(i == 0 && to.is_ascii_whitespace()));
        changed[i] = to;
        let headers = [changed.trim_ascii()];
        prop_assert!(check(&request(&headers), &ProofPolicy::default()).is_err());
    }

    #[test]
    fn normalised_uris_are_fixed_points(uri in "(https?|HTTP|ftp)://[a-zA-Z0-9.%:\\[\\]@-]{0,12}(/[a-zA-Z0-9.%~_-]{0,6}){0,4}([?#].{0,5})?") {
        if let Some(normalised) = htu::normalise(uri.as_bytes()) {
            let again = htu::normalise(normalised.as_bytes());
            prop_assert_eq!(again.as_deref(), Some(normalised.as_str()));
            prop_assert!(htu::matches(uri.as_bytes(), &normalised));
        }
    }
}
