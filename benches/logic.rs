//! Micro-benchmarks of the plain-Rust decision logic: `make bench-micro`.
//!
//! Built with the `logic-only` feature, which leaves the nginx glue out of the
//! library as the unit tests do: this executable has no nginx to resolve its
//! symbols against. Inputs are what a gateway sees on a typical request.

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};

use ngx_http_auth_oauth2_token_module::oauth::bearer::{self, BearerToken};
use ngx_http_auth_oauth2_token_module::oauth::cache::key::{
    introspection_key, KeyScope, KeySecret,
};
use ngx_http_auth_oauth2_token_module::oauth::cache::{CacheKey, CachedIntrospection};
use ngx_http_auth_oauth2_token_module::oauth::claim_rule::ClaimRule;
use ngx_http_auth_oauth2_token_module::oauth::introspection::{
    self, ClaimPaths, IntrospectionResult,
};
use ngx_http_auth_oauth2_token_module::oauth::jose::access_token::AccessTokenPolicy;
use ngx_http_auth_oauth2_token_module::oauth::jose::alg::Algorithms;
use ngx_http_auth_oauth2_token_module::oauth::jose::{jwk, verify};
use ngx_http_auth_oauth2_token_module::oauth::{carriers, claims, jwt, scope};

/// A Keycloak-style answer for an active access token (about 700 bytes);
/// Keycloak puts `active` last.
const ACTIVE_ANSWER: &str = concat!(
    r#"{"exp":1767229200,"iat":1767225600,"jti":"5f0c8a52-3c1e-4e0b-9a7d-2b8f6f0e9c41","#,
    r#""iss":"https://sso.example.com/realms/acme","aud":["orders-api","billing-api","account"],"#,
    r#""sub":"f4c3e2a1-7b6d-4c59-8e0f-1a2b3c4d5e6f","typ":"Bearer","azp":"web-shop","#,
    r#""sid":"0b1d6c2e-98a4-4f7e-b1c3-5d2e7f9a0c84","acr":"1","#,
    r#""allowed-origins":["https://shop.example.com"],"#,
    r#""realm_access":{"roles":["offline_access","uma_authorization","customer"]},"#,
    r#""resource_access":{"account":{"roles":["manage-account","view-profile"]}},"#,
    r#""scope":"openid profile email orders:read orders:write","email_verified":true,"#,
    r#""preferred_username":"alice","email":"alice@example.com","client_id":"web-shop","#,
    r#""username":"alice","token_type":"Bearer","active":true}"#,
);

const INACTIVE_ANSWER: &str = r#"{"active":false}"#;

/// Two `auth_oauth2_token_claim_set` paths.
const CLAIM_PATHS: [&str; 2] = ["realm_access.roles", "aud"];

const ENDPOINT: &[u8] = b"/_oauth2/introspect";
const CLIENT_ID: &[u8] = b"nginx-gateway";
/// An opaque reference token of 40 characters.
const OPAQUE_TOKEN: &[u8] = b"8xLOxBtZp8kq3vZ2mT9wQe1rYc7uN4sH6dJ0aF5g";

/// An RS256-shaped JWT of about 900 characters: header, claims and a
/// 256-byte signature, each base64url-encoded.
fn jwt() -> Vec<u8> {
    let header =
        r#"{"alg":"RS256","typ":"JWT","kid":"kNbV0xYq3pT7rLm2sWc9eZ4uA1hG6jD8fR5oI0yXbQ"}"#;
    let claims = concat!(
        r#"{"exp":1767229200,"iat":1767225600,"jti":"5f0c8a52-3c1e-4e0b-9a7d-2b8f6f0e9c41","#,
        r#""iss":"https://sso.example.com/realms/acme","aud":["orders-api","billing-api"],"#,
        r#""sub":"f4c3e2a1-7b6d-4c59-8e0f-1a2b3c4d5e6f","typ":"Bearer","azp":"web-shop","#,
        r#""scope":"openid profile email orders:read orders:write","#,
        r#""preferred_username":"alice","email":"alice@example.com"}"#,
    );
    let signature: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
    [
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature),
    ]
    .join(".")
    .into_bytes()
}

fn claim_paths() -> ClaimPaths {
    ClaimPaths {
        rendered: CLAIM_PATHS.iter().map(|p| p.to_string()).collect(),
        ..ClaimPaths::default()
    }
}

fn introspection_answers(c: &mut Criterion) {
    let active = ACTIVE_ANSWER.as_bytes();
    let inactive = INACTIVE_ANSWER.as_bytes();
    let paths = claim_paths();

    // Measure the paths a gateway takes, not an error path.
    let Ok(IntrospectionResult::Active(claims)) = introspection::parse_with_extra(active, &paths)
    else {
        panic!("the active answer does not parse as active");
    };
    assert_eq!(claims.sub(), Some("f4c3e2a1-7b6d-4c59-8e0f-1a2b3c4d5e6f"));
    assert_eq!(
        claims.extra,
        [
            Some("offline_access,uma_authorization,customer".to_string()),
            Some("orders-api,billing-api,account".to_string()),
        ]
    );
    assert_eq!(
        introspection::parse(inactive, false),
        Ok(IntrospectionResult::Inactive)
    );

    let mut g = c.benchmark_group("introspection");
    g.bench_function("parse/active", |b| {
        b.iter(|| introspection::parse(black_box(active), false))
    });
    g.bench_function("parse_with_extra/active_2_claims", |b| {
        b.iter(|| introspection::parse_with_extra(black_box(active), black_box(&paths)))
    });
    g.bench_function("parse/inactive", |b| {
        b.iter(|| introspection::parse(black_box(inactive), false))
    });
    g.finish();

    // Phantom answers: the JWT's shape is checked and its payload parsed.
    let phantom = jwt();
    assert!(jwt::claims(&phantom).is_ok());
    c.bench_function(&format!("jwt/claims/jwt_{}B", phantom.len()), |b| {
        b.iter(|| jwt::claims(black_box(&phantom)))
    });

    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(ACTIVE_ANSWER).expect("a JSON object");
    c.bench_function("claims/lookup_render/realm_access.roles", |b| {
        b.iter(|| {
            claims::lookup(black_box(&map), black_box(CLAIM_PATHS[0])).and_then(claims::render)
        })
    });
}

fn cache(c: &mut Criterion) {
    let jwt = jwt();
    let mut g = c.benchmark_group("cache_key");
    g.bench_function("new/opaque_40B", |b| {
        b.iter(|| {
            CacheKey::from_parts(&[
                black_box(ENDPOINT),
                black_box(CLIENT_ID),
                black_box(OPAQUE_TOKEN),
            ])
            .bucket_hash()
        })
    });
    g.bench_function(format!("new/jwt_{}B", jwt.len()), |b| {
        b.iter(|| {
            CacheKey::from_parts(&[black_box(ENDPOINT), black_box(CLIENT_ID), black_box(&jwt)])
                .bucket_hash()
        })
    });
    // A request's zone key: the scope (hashed once per configuration, as
    // above) and the token under the zone's secret.
    let (secret, scope) = (KeySecret([1, 2]), KeyScope([7; 32]));
    g.bench_function("zone/opaque_40B", |b| {
        b.iter(|| introspection_key(&secret, &scope, black_box(OPAQUE_TOKEN), None).bucket_hash())
    });
    g.bench_function(format!("zone/jwt_{}B", jwt.len()), |b| {
        b.iter(|| introspection_key(&secret, &scope, black_box(&jwt), None).bucket_hash())
    });
    g.finish();

    let result = introspection::parse_with_extra(ACTIVE_ANSWER.as_bytes(), &claim_paths())
        .expect("an active answer");
    let bytes = CachedIntrospection::encode(&result);
    assert_eq!(CachedIntrospection::decode(&bytes).as_ref(), Some(&result));
    let mut g = c.benchmark_group("cache_entry");
    g.bench_function("encode/active_2_claims", |b| {
        b.iter(|| CachedIntrospection::encode(black_box(&result)))
    });
    g.bench_function("decode/active_2_claims", |b| {
        b.iter(|| CachedIntrospection::decode(black_box(&bytes)))
    });
    g.finish();
}

fn request_checks(c: &mut Criterion) {
    let granted = "openid profile email orders:read orders:write offline_access";
    let required = vec!["orders:read".to_string(), "orders:write".to_string()];
    assert!(scope::grants_all(Some(granted), &required));
    c.bench_function("scope/grants_all/2_of_6", |b| {
        b.iter(|| scope::grants_all(black_box(Some(granted)), black_box(&required)))
    });

    let opaque = [b"Bearer ".as_slice(), OPAQUE_TOKEN].concat();
    let jwt = jwt();
    let jwt_name = format!("jwt_{}B", jwt.len());
    let jwt = [b"Bearer ".as_slice(), &jwt].concat();
    let mut g = c.benchmark_group("token/from_authorization");
    for (name, header) in [("opaque_40B", &opaque), (jwt_name.as_str(), &jwt)] {
        assert!(matches!(
            bearer::from_authorization(&[header]),
            BearerToken::Present(_)
        ));
        g.bench_function(name, |b| {
            b.iter(|| bearer::from_authorization(black_box(&[header.as_slice()])))
        });
    }
    g.finish();

    // `auth_oauth2_token_require_claim`, checked against the compact JSON the
    // cache keeps for the claim.
    let roles = r#"["offline_access","uma_authorization","customer"]"#;
    let mut g = c.benchmark_group("claim_rule/is_met_by_json");
    for (name, args, claim) in [
        (
            "array_1_of_3",
            [b"realm_access.roles".as_slice(), b"array", b"customer"],
            roles,
        ),
        (
            "string",
            [b"azp".as_slice(), b"string", b"web-shop"],
            r#""web-shop""#,
        ),
    ] {
        let rule = ClaimRule::parse(&args).expect("a valid rule");
        assert!(rule.is_met_by_json(Some(claim)));
        g.bench_function(name, |b| {
            b.iter(|| black_box(&rule).is_met_by_json(black_box(Some(claim))))
        });
    }
    g.finish();

    // The token in the query string or in a cookie (auth_oauth2_token_source).
    let query = [
        b"page=2&size=50&sort=created_at&access_token=".as_slice(),
        OPAQUE_TOKEN,
        b"&lang=en",
    ]
    .concat();
    let cookie = [
        b"_ga=GA1.2.1234567890.1700000000; theme=dark; ".as_slice(),
        b"session=0b1d6c2e98a44f7eb1c35d2e7f9a0c84; access_token=",
        OPAQUE_TOKEN,
        b"; consent=yes",
    ]
    .concat();
    assert_eq!(
        carriers::query_value(&query, b"access_token").as_deref(),
        Some(OPAQUE_TOKEN)
    );
    assert_eq!(
        carriers::cookie_value(&cookie, b"access_token"),
        Some(OPAQUE_TOKEN)
    );
    let mut g = c.benchmark_group("token_source");
    g.bench_function("query_value/4th_of_5", |b| {
        b.iter(|| carriers::query_value(black_box(&query), black_box(b"access_token")))
    });
    g.bench_function("cookie_value/4th_of_5", |b| {
        b.iter(|| carriers::cookie_value(black_box(&cookie), black_box(b"access_token")))
    });
    g.finish();
}

/// A JWT access token checked at the gateway, from its bytes to its claims:
/// RS256 (2048-bit key) and ES256, about 800 bytes each, with a key set of
/// two keys made ready once, as the configuration makes them.
fn jwt_verification(c: &mut Criterion) {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;

    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let rsa = PKey::from_rsa(Rsa::generate(2048).expect("an RSA key")).expect("a key");
    let ec = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256"))
        .expect("an EC key");
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().expect("bn"),
        openssl::bn::BigNum::new().expect("bn"),
    );
    let mut ctx = openssl::bn::BigNumContext::new().expect("ctx");
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .expect("coordinates");
    let set = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{}","e":"{}"}},{{"kty":"EC","kid":"e","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
        b64(&rsa.rsa().expect("rsa").n().to_vec()),
        b64(&rsa.rsa().expect("rsa").e().to_vec()),
        b64(&x.to_vec_padded(32).expect("x")),
        b64(&y.to_vec_padded(32).expect("y")),
    );
    let keys = jwk::parse_jwks(set.as_bytes()).expect("a key set");
    let ec = PKey::from_ec_key(ec).expect("a key");
    let policy = AccessTokenPolicy {
        issuer: "https://sso.example.com/realms/acme".into(),
        audiences: vec!["orders-api".into()],
        algorithms: Algorithms::asymmetric(),
        leeway_s: 30,
        typ_relaxed: false,
    };
    let claims = concat!(
        r#"{"exp":1767229200,"iat":1767225600,"jti":"5f0c8a52-3c1e-4e0b-9a7d-2b8f6f0e9c41","#,
        r#""iss":"https://sso.example.com/realms/acme","aud":["orders-api","billing-api"],"#,
        r#""sub":"f4c3e2a1-7b6d-4c59-8e0f-1a2b3c4d5e6f","client_id":"web-shop","#,
        r#""scope":"openid profile email orders:read orders:write"}"#,
    );
    let paths = claim_paths();
    let mut g = c.benchmark_group("jwt_verify");
    for (alg, kid, key) in [("RS256", "r", &rsa), ("ES256", "e", &ec)] {
        let input = format!(
            "{}.{}",
            b64(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#).as_bytes()),
            b64(claims.as_bytes())
        );
        let mut signer = Signer::new(MessageDigest::sha256(), key).expect("a signer");
        let mut signature = signer
            .sign_oneshot_to_vec(input.as_bytes())
            .expect("signed");
        if alg == "ES256" {
            let sig = EcdsaSig::from_der(&signature).expect("DER");
            signature = sig.r().to_vec_padded(32).expect("r");
            signature.extend(sig.s().to_vec_padded(32).expect("s"));
        }
        let token = format!("{input}.{}", b64(&signature));
        let now = 1_767_227_000;
        assert!(verify::verify(token.as_bytes(), &keys, &policy, &paths, now).is_ok());
        g.bench_function(format!("{alg}_{}B", token.len()), |b| {
            b.iter(|| {
                verify::verify(
                    black_box(token.as_bytes()),
                    &keys,
                    &policy,
                    black_box(&paths),
                    now,
                )
            })
        });
    }
    g.finish();
}

/// About 2 s a benchmark, so the whole suite stays under a minute.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = introspection_answers, cache, request_checks, jwt_verification
}
criterion_main!(benches);
