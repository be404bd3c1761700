//! RFC 7662 / RFC 9701 / phantom answers from the introspection endpoint.
//!
//! Input: a status digit (common::reply), a content-type digit, then the body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::cache::{CachePolicy, CachedIntrospection};
use ngx_http_auth_oauth2_token_module::oauth::introspection::{
    self, ClaimPaths, IdpFailure, IntrospectionResult, TokenClaims,
};
use ngx_http_auth_oauth2_token_module::oauth::jwt;
use ngx_http_auth_oauth2_token_module::oauth::{bearer, claims};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

#[path = "common.rs"]
mod common;

const CONTENT_TYPES: [&[u8]; 6] = [
    b"application/json",
    b"application/jwt",
    b"application/token-introspection+jwt",
    b"text/html",
    b"Application/Token-Introspection+JWT ; charset=utf-8",
    b"",
];

fn paths() -> ClaimPaths {
    ClaimPaths {
        marks: true,
        rendered: vec!["sub".into(), "realm_access.roles".into(), "aud".into()],
        checked: vec![
            "scope".into(),
            "resource_access.account.roles".into(),
            "a.b".into(),
        ],
    }
}

/// Findings of the first runs, kept in fuzz/regressions/introspection/ and
/// reported, not fixed here (the JSON-array one was, in 59a2009). Their inputs are left out of the assertions
/// they fail, so that the fuzzer can look past them; with FUZZ_STRICT set
/// in the environment they are asserted too. Remove each once src/ is fixed.
fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT").is_some())
}

/// Known: without claim paths, the members `parse` skips are not checked
/// the way serde_json checks a value it keeps: invalid UTF-8 in a string
/// (`{"active":true,"x":"\xff"}`), a number beyond f64 (`1e999`), ... An
/// answer with claim paths configured is refused (not JSON), without them read.
fn known_lenient_skip(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_err()
}

/// The member only the plain path looks at twice.
#[derive(Deserialize)]
#[allow(dead_code)]
struct PhantomOnly {
    jwt: Option<IgnoredAny>,
}

/// Known: `jwt` given twice (in a plain RFC 7662 answer, where it means
/// nothing) is accepted without claim paths and refused with them. (`sub`,
/// `scope`, `client_id` or `exp` twice, once known, is refused on both since
/// 59a2009.)
fn known_duplicate(body: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(body).is_ok()
        && serde_json::from_slice::<PhantomOnly>(body).is_err()
}

/// Every claim that can become variable text, so header text.
fn exposed(claims: &TokenClaims) -> impl Iterator<Item = &str> {
    claims
        .named
        .all()
        .into_iter()
        .chain(claims.extra.iter().map(Option::as_deref))
        .flatten()
}

/// What every answer that came out of `interpret*` must satisfy.
fn check_common(result: &Result<IntrospectionResult, IdpFailure>, status: usize, rc: isize) {
    match result {
        Ok(verdict) => {
            assert_eq!(rc, 0, "a verdict from an answer that did not arrive whole");
            if let IntrospectionResult::Active(claims) = verdict {
                for value in exposed(claims) {
                    assert!(claims::is_header_safe(value), "exposed claim {value:?}");
                }
            }
            assert!(
                status == 200 || status == 204,
                "a verdict from status {status}"
            );
            // Cached never beyond max_ttl, nor beyond the token's exp; served
            // stale (stale_if_error) at most that much longer, never past exp.
            let policy = CachePolicy {
                max_ttl_ms: 300_000,
                negative_ttl_ms: 10_000,
                stale_if_error_ms: 600_000,
                ..CachePolicy::default()
            };
            let now = 1_700_000_000_000;
            let exp = match verdict {
                IntrospectionResult::Active(claims) => claims.exp,
                IntrospectionResult::Inactive => None,
            };
            let until = policy.expires_at(verdict, now);
            if let Some(until) = until {
                assert!(
                    until > now && until <= now + policy.max_ttl_ms,
                    "cached until {until}"
                );
                assert!(
                    exp.is_none_or(|exp| until <= exp.saturating_mul(1000)),
                    "cached past exp"
                );
            }
            let lifetime = policy.lifetime(verdict, now);
            assert_eq!(lifetime.map(|l| l.fresh_until), until);
            if let Some(l) = lifetime {
                assert!(l.fresh_until <= l.stale_until);
                assert!(l.stale_until <= l.fresh_until + policy.stale_if_error_ms);
                assert!(
                    exp.is_none_or(|exp| l.stale_until <= exp.saturating_mul(1000)),
                    "stale past exp"
                );
                if *verdict == IntrospectionResult::Inactive {
                    assert_eq!(
                        l.stale_until, l.fresh_until,
                        "an inactive answer served stale"
                    );
                }
            }
            let bytes = CachedIntrospection::encode(verdict);
            assert_eq!(
                CachedIntrospection::decode(&bytes).as_ref(),
                Some(verdict),
                "cache entry does not round-trip"
            );
        }
        Err(failure) => {
            let line = failure.to_string();
            assert!(common::is_printable_ascii(&line), "log line {line:?}");
            assert!(matches!(failure.status(), 502..=504));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [status_digit, type_digit, body @ ..] = data else {
        return;
    };
    let content_type = CONTENT_TYPES[common::pick(*type_digit, CONTENT_TYPES.len())];
    let reply = common::reply(*status_digit, body).with_content_type(content_type);
    let (status, rc) = (reply.status, reply.finalize_rc);
    let paths = paths();

    let plain = introspection::interpret(reply, &ClaimPaths::default());
    let extra = introspection::interpret(reply, &paths);
    let phantom = introspection::interpret_phantom(reply, &paths);
    for result in [&plain, &extra, &phantom] {
        check_common(result, status, rc);
    }

    // RFC 7662: a verdict only from a 200 whose body is a JSON object.
    if extra.is_ok() {
        assert!(serde_json::from_slice::<Map<String, Value>>(body).is_ok());
    }
    if plain.is_ok() {
        let object = body.trim_ascii_start().starts_with(b"{");
        assert!(object, "a verdict from a body that is not a JSON object");
        if strict() || !known_lenient_skip(body) {
            assert!(
                serde_json::from_slice::<Value>(body).is_ok(),
                "a verdict from a body that is not JSON"
            );
        }
    }
    let known = !strict() && (known_lenient_skip(body) || known_duplicate(body));
    if let Ok(IntrospectionResult::Active(claims)) = &plain {
        assert!(claims.extra.is_empty() && claims.checked.is_empty() && claims.phantom.is_none());
    }
    if let Ok(IntrospectionResult::Active(claims)) = &extra {
        assert_eq!(claims.extra.len(), paths.rendered.len());
        assert_eq!(claims.checked.len(), paths.checked.len());
        assert!(claims.phantom.is_none());
        for text in claims.checked.iter().flatten() {
            let value: Value = serde_json::from_str(text).expect("a checked claim is JSON text");
            assert!(!value.is_null());
        }
    }
    // With or without configured claims, the same answer gets the same verdict.
    match (&plain, &extra) {
        (Ok(IntrospectionResult::Active(a)), Ok(IntrospectionResult::Active(b))) => {
            assert_eq!(
                (&a.named, a.exp),
                (&b.named, b.exp),
                "the usual claims depend on whether claim paths are configured"
            );
        }
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the verdict depends on claim paths"),
        // A configured claim that could split a header refuses the answer.
        (Ok(IntrospectionResult::Active(_)), Err(IdpFailure::UnsafeClaim(path)))
            if paths.rendered.contains(path) => {}
        (Ok(_), Err(_)) | (Err(_), Ok(_)) if known => {}
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            panic!("verdict with claim paths {extra:?}, without {plain:?}")
        }
        (Err(_), Err(_)) => {}
    }

    // Phantom: an active token always carries a JWT fit for a header.
    match &phantom {
        Ok(IntrospectionResult::Active(claims)) => {
            assert_eq!(status, 200);
            let token = claims
                .phantom
                .as_deref()
                .expect("phantom token without a JWT");
            assert!(bearer::is_b64token(token), "phantom JWT {token:?}");
            assert!(jwt::payload(token).is_ok());
            assert_eq!(claims.extra.len(), paths.rendered.len());
            assert_eq!(claims.checked.len(), paths.checked.len());
        }
        Ok(IntrospectionResult::Inactive) => {}
        Err(_) => assert!(status != 204 || rc != 0),
    }
});
