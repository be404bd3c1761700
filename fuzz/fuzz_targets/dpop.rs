//! DPoP proofs (client bytes) checked against a request, and the `htu`
//! normalisation: nothing panics; a proof that holds carries a typed,
//! signed `dpop+jwt` whose `ath` is the token's; normalised URIs are fixed
//! points; every refusal's description fits in a challenge.
//!
//! Input: the request's URI on the first line, the proof after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::dpop::htu;
use ngx_http_auth_oauth2_token_module::oauth::dpop::proof::{self, ProofPolicy, ProofRequest};
use ngx_http_auth_oauth2_token_module::oauth::jose::jws;

#[path = "common.rs"]
mod common;

fn fits_a_challenge(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fuzz_target!(|data: &[u8]| {
    let (uri, proof_bytes) = common::first_line(data);

    if let Some(normalised) = htu::normalise(uri) {
        assert_eq!(htu::normalise(normalised.as_bytes()).as_deref(), Some(normalised.as_str()));
        assert!(htu::matches(uri, &normalised));
        assert!(normalised.is_ascii() && !normalised.contains(['?', '#', ' ']));
    }

    let request_uri = htu::request_uri("https", b"api.example", b"/orders");
    let headers = [proof_bytes];
    let request = ProofRequest {
        headers: &headers,
        method: b"GET",
        uri: request_uri.as_deref(),
        token: b"token",
        now_s: 1_800_000_000,
        nonce_key: None,
    };
    match proof::check(&request, &ProofPolicy::default()) {
        Ok(checked) => {
            let parsed = jws::parse(proof_bytes.trim_ascii()).unwrap();
            assert!(parsed.header.typ.unwrap().eq_ignore_ascii_case("dpop+jwt"));
            assert!(ProofPolicy::default().algorithms.allows(parsed.header.alg));
            assert!(checked.remember_until_s >= request.now_s);
        }
        Err(error) => assert!(fits_a_challenge(error.description())),
    }
});
