//! Properties of the JOSE parsers and checks over generated input: tokens
//! and key sets are client and IdP bytes, so no input may panic; what is
//! taken apart is what was put together; a signature holds for exactly
//! the bytes it was made over.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::oauth::introspection::ClaimPaths;
use crate::oauth::jose::access_token::{self, AccessTokenPolicy, Refusal};
use crate::oauth::jose::alg::{Alg, Algorithms, KeyKind};
use crate::oauth::jose::jwk::{self, Jwk};
use crate::oauth::jose::jws;
use crate::oauth::jose::key::tests::{pair, sign};
use crate::oauth::jose::verify::verify;

const NOW: i64 = 1_800_000_000;

fn policy() -> AccessTokenPolicy {
    AccessTokenPolicy {
        issuer: "iss".into(),
        audiences: vec!["api".into()],
        algorithms: Algorithms::asymmetric().with(Alg::HS256),
        leeway_s: 10,
        typ_relaxed: false,
    }
}

/// Bytes that look like a compact JWS often: base64url characters, dots,
/// and now and then something else.
fn token_like() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            20 => proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
            2 => Just(b'.'),
            1 => any::<u8>(),
        ],
        0..300,
    )
}

/// A JSON value of a few levels, to stand for claims and header members.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z+/ ]{0,8}".prop_map(Value::from),
        Just(Value::from("at+jwt")),
        Just(Value::from("iss")),
        Just(Value::from("api")),
        (NOW - 100..NOW + 100).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,3}|iss|exp|nbf|iat|aud|sub", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A claims object with the deciding claims present or not, right or wrong.
fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let member =
        |name: &'static str| proptest::option::of(json_value()).prop_map(move |v| (name, v));
    (
        member("iss"),
        member("exp"),
        member("nbf"),
        member("iat"),
        member("aud"),
        member("sub"),
    )
        .prop_map(|members| {
            let (a, b, c, d, e, f) = members;
            [a, b, c, d, e, f]
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_string(), value?)))
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = jws::parse(&bytes);
        let _ = jwk::parse_jwk(&bytes);
        let _ = jwk::parse_jwks(&bytes);
        let _ = access_token::claims_object(&bytes);
    }

    #[test]
    fn token_like_bytes_never_panic_nor_pass(token in token_like()) {
        let keys = jwk::parse_jwks(br#"{"keys":[]}"#).unwrap();
        let result = verify(&token, &keys, &policy(), &ClaimPaths::default(), NOW);
        prop_assert!(result.is_err());
        if let Ok(parsed) = jws::parse(&token) {
            // What the signature covers is the token up to its last dot.
            let last_dot = token.iter().rposition(|&b| b == b'.').unwrap();
            prop_assert_eq!(parsed.signing_input, &token[..last_dot]);
        }
    }

    #[test]
    fn compact_serialization_round_trips(
        header in json_value(),
        alg in proptest::sample::select(Alg::ALL.to_vec()),
        kid in proptest::option::of("[ -~]{0,20}"),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        signature in proptest::collection::vec(any::<u8>(), 1..100),
    ) {
        let mut header = match header {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        header.remove("crit");
        header.insert("alg".into(), alg.name().into());
        match &kid {
            Some(kid) => header.insert("kid".into(), kid.clone().into()),
            None => header.remove("kid"),
        };
        let typ = match header.get("typ") {
            Some(Value::String(typ)) => Some(typ.clone()),
            Some(_) => { header.remove("typ"); None }
            None => None,
        };
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&signature)
        );
        match jws::parse(token.as_bytes()) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.header.alg, alg);
                prop_assert_eq!(parsed.header.kid, kid);
                prop_assert_eq!(parsed.header.typ, typ);
                prop_assert_eq!(parsed.payload, payload);
                prop_assert_eq!(parsed.signature, signature);
            }
            Err(e) => prop_assert!(
                token.len() > jws::MAX_JWS_BYTES || e == jws::JwsError::HeaderTooLarge,
                "{:?}", e
            ),
        }
    }

    #[test]
    fn claim_checks_take_any_claims(claims in claims(), typ in proptest::option::of("[a-z+/]{0,12}"), now in any::<i64>()) {
        let result = access_token::check(typ.as_deref(), &claims, &policy(), now);
        if result.is_ok() {
            // A pass had each deciding claim right.
            prop_assert_eq!(claims.get("iss"), Some(&Value::from("iss")));
            prop_assert!(access_token::type_accepted(typ.as_deref(), false));
            prop_assert!(claims.get("exp").is_some_and(Value::is_number));
        }
    }

    #[test]
    fn a_signature_holds_for_its_bytes_only(
        alg in proptest::sample::select(vec![Alg::ES256, Alg::EdDSA, Alg::HS256]),
        position in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let (private, _) = pair(alg.key_kind());
        let keys = [match alg.key_kind() {
            KeyKind::Hmac => Jwk::secret(&[7; 32], None).unwrap(),
            kind => jwk::parse_jwk(jwk::tests::jwk_json(&private, kind, "").as_bytes()).unwrap(),
        }];
        let claims = json!({"iss": "iss", "aud": "api", "exp": NOW + 60, "sub": "s"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": alg.name(), "typ": "at+jwt"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(&private, alg, input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));
        let paths = ClaimPaths::default();
        prop_assert!(verify(token.as_bytes(), &keys, &policy(), &paths, NOW).is_ok());
        let mut forged = token.into_bytes();
        let at = position.index(forged.len());
        forged[at] ^= 1 << bit;
        prop_assert!(verify(&forged, &keys, &policy(), &paths, NOW).is_err());
    }
}

#[test]
fn a_refused_token_says_why_in_words_a_challenge_carries() {
    let keys = jwk::parse_jwks(br#"{"keys":[]}"#).unwrap();
    let refusal = verify(b"x", &keys, &policy(), &ClaimPaths::default(), NOW).unwrap_err();
    assert_eq!(refusal, Refusal::Malformed(jws::JwsError::NotThreeParts));
    assert_eq!(refusal.description(), "the token is not a compact JWS");
}
