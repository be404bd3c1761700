//! JWT access tokens checked at the gateway: a JWK Set (IdP bytes) and a
//! compact JWS (client bytes) taken apart, the token verified against the
//! set and RFC 9068's checks. Nothing panics; what comes apart holds its
//! promises; nothing unsigned or header-unsafe passes.
//!
//! Input: the key set (also read as a fetched set's answer) on the first
//! line, the token after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::introspection::ClaimPaths;
use ngx_http_auth_oauth2_token_module::oauth::jose::access_token::{self, AccessTokenPolicy};
use ngx_http_auth_oauth2_token_module::oauth::jose::alg::{Alg, Algorithms};
use ngx_http_auth_oauth2_token_module::oauth::jose::jws::{self, JwsError};
use ngx_http_auth_oauth2_token_module::oauth::jose::{fetched, jwk, verify};

#[path = "common.rs"]
mod common;

fn fits_a_challenge(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fuzz_target!(|data: &[u8]| {
    let (set, token) = common::first_line(data);

    let keys = match jwk::parse_jwks(set) {
        Ok(keys) => keys,
        Err(_) => Vec::new(),
    };
    assert!(keys.len() <= jwk::MAX_KEYS);
    for key in &keys {
        assert_eq!(key.thumbprint.len(), 43);
        assert!(key.alg.is_none_or(|alg| key.key.fits(alg)));
        assert!(!key.key.fits(Alg::HS256), "a key set gave an HMAC key");
    }
    let _ = jwk::parse_jwk(set);
    // The same bytes as a fetched set's answer, and as the keys zone keeps it.
    if let Ok(fetched) = fetched::keys_of_body(set, Algorithms::asymmetric()) {
        assert_eq!(fetched.len(), keys.len());
    }
    let stored = fetched::StoredSet { fetched_ms: 1, fresh_until_ms: 2, body: set };
    assert_eq!(fetched::StoredSet::decode(&stored.encode()), Some(stored));

    match jws::parse(token) {
        Ok(parsed) => {
            assert!(token.len() <= jws::MAX_JWS_BYTES);
            assert_eq!(token.iter().filter(|&&b| b == b'.').count(), 2);
            let last_dot = token.iter().rposition(|&b| b == b'.').unwrap();
            assert_eq!(parsed.signing_input, &token[..last_dot]);
            assert!(!parsed.signature.is_empty());
            assert!(parsed.header.kid.as_ref().is_none_or(|k| k.len() <= jws::MAX_KID_BYTES));
        }
        Err(e) => assert!(fits_a_challenge(e.description())),
    }

    let policy = AccessTokenPolicy {
        issuer: "https://idp.example".into(),
        audiences: vec!["api".into()],
        algorithms: Algorithms::asymmetric(),
        leeway_s: 30,
        typ_relaxed: token.first().is_some_and(|b| b & 1 == 1),
    };
    let paths = ClaimPaths {
        marks: true,
        rendered: vec!["sub".into(), "a.b".into()],
        checked: vec!["aud".into()],
    };
    // Two issuers, each with half of the keys: the token's iss picks one.
    let half = keys.len() / 2;
    let issuers = [
        verify::Issuer {
            policy: policy.clone(),
            keys: keys[..half].to_vec(),
            fetch: None,
            mode: verify::Mode::Jwt,
        },
        verify::Issuer {
            policy: AccessTokenPolicy { issuer: "https://other.example".into(), ..policy.clone() },
            keys: vec![],
            fetch: None,
            mode: verify::Mode::Jwt,
        },
    ];
    // The second issuer's keys as if fetched from its endpoint.
    let two = jws::parse(token).map_err(access_token::Refusal::from).and_then(|parsed| {
        let chosen = verify::choose(&parsed, &issuers)?;
        let fetched = if chosen.keys.is_empty() { &keys[half..] } else { &[][..] };
        verify::verify_chosen(&parsed, chosen, fetched, &paths, 1_800_000_000)
    });
    if let Err(refusal) = two {
        assert!(fits_a_challenge(refusal.description()));
    }

    match verify::verify(token, &keys, &policy, &paths, 1_800_000_000) {
        // Only a token signed with a key of the set gets here.
        Ok(claims) => {
            let parsed = jws::parse(token).unwrap();
            assert!(verify::verify_signature(&parsed, &[&keys]).is_ok());
            assert!(access_token::type_accepted(parsed.header.typ.as_deref(), policy.typ_relaxed));
            assert!(claims.exp.is_some());
        }
        Err(refusal) => {
            assert!(fits_a_challenge(refusal.description()));
            assert!(!matches!(refusal, access_token::Refusal::Malformed(JwsError::Unsigned))
                || token.ends_with(b"."));
        }
    }
});
