//! A SET pushed to the Shared Signals receiver: a key set (configuration
//! bytes) and a body (the transmitter's bytes) verified into revocations,
//! any JSON read as a subject identifier, and the body read as a poll's
//! answer (RFC 8936). Nothing panics; every refusal is one of RFC 8935's
//! codes with a body that is JSON; unsigned bodies never pass; an answer
//! read has at most its bound of SETs, each under a usable `jti`, and a
//! poll request acknowledging them is JSON that lists them all.
//!
//! Input: the key set on the first line, the body after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::jose::jwk;
use ngx_http_auth_oauth2_token_module::oauth::ssf::set::{self, Stream, MAX_SET_BYTES};
use ngx_http_auth_oauth2_token_module::oauth::ssf::poll;
use ngx_http_auth_oauth2_token_module::oauth::ssf::subject;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (keys, body) = common::first_line(data);
    let keys = jwk::parse_jwks(keys).unwrap_or_default();
    let stream = Stream {
        issuer: "https://idp.example".into(),
        audience: "https://gw.example".into(),
        max_age_s: 300,
    };
    match set::verify(body, &keys, &stream, 1_800_000_000) {
        Ok(accepted) => {
            assert!(body.len() <= MAX_SET_BYTES);
            assert!(!keys.is_empty(), "a SET passed without a key");
            assert!(!accepted.jti.is_empty() && accepted.jti.len() <= set::MAX_JTI_BYTES);
            assert!(!accepted.events.is_empty() && accepted.events.len() <= set::MAX_EVENTS);
            assert!(accepted.revocations.iter().all(|r| r.at_s == accepted.iat_s));
        }
        Err(e) => {
            let parsed: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
            assert_eq!(parsed["err"], e.code.err());
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Ok(subject) = subject::parse(&value) {
            for target in subject.users.iter().chain(&subject.sessions) {
                assert!(!target.value.is_empty());
                assert!(target.value.len() <= subject::MAX_VALUE_BYTES);
            }
        }
    }
    if let Ok(answer) = poll::parse_answer(body) {
        assert!(answer.sets.len() <= poll::MAX_SETS);
        let acks: Vec<String> = answer.sets.iter().map(|(jti, _)| jti.clone()).collect();
        assert!(acks.iter().all(|j| !j.is_empty() && j.len() <= set::MAX_JTI_BYTES));
        let errs: Vec<(String, set::SetError)> =
            acks.iter().map(|j| (j.clone(), set::REPLAYED)).collect();
        let request = poll::PollRequest {
            max_events: 10,
            return_immediately: true,
            acks: &acks,
            errs: &errs,
        }
        .body();
        let parsed: serde_json::Value = serde_json::from_slice(&request).unwrap();
        assert_eq!(parsed["ack"].as_array().map_or(0, Vec::len), acks.len());
    }
});
