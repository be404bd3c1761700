//! A JWT access token checked locally, from the bytes the client sent to
//! the claims the location's policy reads: taken apart (`jws.rs`), its
//! algorithm on the allow-list, its `typ`, a key of the set for its `kid`
//! and algorithm, the signature, then RFC 9068 §4 (`access_token.rs`), and
//! the claims made into the module's `TokenClaims`, so that scopes,
//! `require` rules, claim variables, exchange and phantom tokens work on
//! it as on an introspection answer.
//!
//! The cheap refusals come before the signature check, so junk costs no
//! public-key operation; no claim is read before the signature holds.

use crate::oauth::cache::CacheKey;
use crate::oauth::introspection::{self, ClaimPaths, TokenClaims};
use crate::oauth::jose::access_token::{self, AccessTokenPolicy, Refusal};
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::jose::jws::{self, Header, Jws};

/// The most keys one token's signature is tried against (a token without
/// `kid`, a set with several keys of its algorithm): a bound on the work a
/// forged token can cause.
pub const MAX_KEYS_TRIED: usize = 4;

/// One issuer a location accepts: what its tokens must meet, its keys
/// (from a file, and the HS256 secret), the set it fetches from its
/// endpoint, if any, and what the gateway does with its tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub policy: AccessTokenPolicy,
    pub keys: Vec<Jwk>,
    pub fetch: Option<KeysFetch>,
    pub mode: Mode,
}

/// What the gateway does with an issuer's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Checked here only: revocation is not seen before `exp`.
    Jwt,
    /// Checked here, then introspected (the IdP sees revocation): junk
    /// never reaches the IdP.
    JwtIntrospect,
    /// Introspected only, as an opaque token is.
    Introspect,
}

impl Mode {
    pub fn parse(name: &[u8]) -> Option<Mode> {
        match name {
            b"jwt" => Some(Mode::Jwt),
            b"jwt+introspect" => Some(Mode::JwtIntrospect),
            b"introspect" => Some(Mode::Introspect),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Jwt => "jwt",
            Mode::JwtIntrospect => "jwt+introspect",
            Mode::Introspect => "introspect",
        }
    }
}

/// Where an issuer's JWK Set is fetched (an internal location), and the
/// names it and its fetches have in the keys zone (set once the server
/// block is known: the location's URI is the server's).
#[derive(Debug, Clone)]
pub struct KeysFetch {
    pub uri: String,
    pub set_key: CacheKey,
    /// A fetch under way (a mark), and when the last one started (an entry).
    pub fetching_key: CacheKey,
    pub attempt_key: CacheKey,
}

impl KeysFetch {
    pub fn at(uri: String) -> KeysFetch {
        KeysFetch {
            uri,
            set_key: CacheKey([0; 32]),
            fetching_key: CacheKey([0; 32]),
            attempt_key: CacheKey([0; 32]),
        }
    }

    /// Names the set of `issuer` fetched from this URI of the server block
    /// `server` (`oauth::cache::key::server_identity`).
    pub fn scope(&mut self, server: &[u8; 32], issuer: &str) {
        let parts: [&[u8]; 4] = [b"jwks", server, issuer.as_bytes(), self.uri.as_bytes()];
        self.set_key = CacheKey::from_parts(&parts);
        self.fetching_key = CacheKey::from_parts(&[b"jwks fetching", &self.set_key.0]);
        self.attempt_key = CacheKey::from_parts(&[b"jwks attempt", &self.set_key.0]);
    }
}

/// The issuer whose keys may verify `jws`: the only one, or the one its
/// (not yet verified) `iss` names, whose keys alone may then verify it (a
/// token cannot pick another issuer's keys by claiming its name: the keys
/// are that name's, and the signature must hold with them).
pub fn choose<'i>(jws: &Jws<'_>, issuers: &'i [Issuer]) -> Result<&'i Issuer, Refusal> {
    match issuers {
        [one] => Ok(one),
        many => {
            let claimed = claimed_issuer(&jws.payload)?;
            many.iter()
                .find(|issuer| issuer.policy.issuer == claimed)
                .ok_or(Refusal::WrongIssuer)
        }
    }
}

/// Checks `jws`, of `issuer`, with its keys and those `fetched` from its
/// endpoint.
pub fn verify_chosen(
    jws: &Jws<'_>,
    issuer: &Issuer,
    fetched: &[Jwk],
    paths: &ClaimPaths,
    now_s: i64,
) -> Result<TokenClaims, Refusal> {
    verify_parsed(jws, &[&issuer.keys, fetched], &issuer.policy, paths, now_s)
}

/// The `iss` a payload claims, read only to choose the keys.
fn claimed_issuer(payload: &[u8]) -> Result<String, Refusal> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<serde_json::Value>,
    }
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(Refusal::BadPayload);
    }
    let wire: Iss = serde_json::from_slice(payload).map_err(|_| Refusal::BadPayload)?;
    match wire.iss {
        Some(serde_json::Value::String(iss)) => Ok(iss),
        None | Some(serde_json::Value::Null) => Err(Refusal::NoIssuer),
        Some(_) => Err(Refusal::BadClaim("iss")),
    }
}

/// Checks `token` against `keys` and `policy` at `now_s`; on success, the
/// claims the policy and the variables read (`paths`: the configured ones).
pub fn verify(
    token: &[u8],
    keys: &[Jwk],
    policy: &AccessTokenPolicy,
    paths: &ClaimPaths,
    now_s: i64,
) -> Result<TokenClaims, Refusal> {
    verify_parsed(&jws::parse(token)?, &[keys], policy, paths, now_s)
}

fn verify_parsed(
    jws: &Jws<'_>,
    keys: &[&[Jwk]],
    policy: &AccessTokenPolicy,
    paths: &ClaimPaths,
    now_s: i64,
) -> Result<TokenClaims, Refusal> {
    if !policy.algorithms.allows(jws.header.alg) {
        return Err(Refusal::AlgorithmNotAllowed);
    }
    if !access_token::type_accepted(jws.header.typ.as_deref(), policy.typ_relaxed) {
        return Err(Refusal::WrongType);
    }
    verify_signature(jws, keys)?;
    let claims = access_token::claims_object(&jws.payload)?;
    access_token::check(jws.header.typ.as_deref(), &claims, policy, now_s)?;
    introspection::verified_claims(&claims, paths).map_err(Refusal::UnsafeClaim)
}

/// The key of `keys` (one or more sets) whose signature `jws` carries.
/// `NoKey` when no key fits the token's `kid` and algorithm (a key set
/// that may be out of date), `BadSignature` when keys fit and none verifies.
pub fn verify_signature<'k>(jws: &'k Jws<'_>, keys: &[&'k [Jwk]]) -> Result<&'k Jwk, Refusal> {
    let mut tried = false;
    let keys = keys.iter().flat_map(|set| candidates(set, &jws.header));
    for key in keys.take(MAX_KEYS_TRIED) {
        tried = true;
        if key
            .key
            .verify(jws.header.alg, jws.signing_input, &jws.signature)
            .is_ok()
        {
            return Ok(key);
        }
    }
    Err(match tried {
        true => Refusal::BadSignature,
        false => Refusal::NoKey,
    })
}

/// The keys that may have signed a token with `header`: of the kind its
/// algorithm needs (and that algorithm, if the key names one), with its
/// `kid` when it names one.
pub fn candidates<'k>(keys: &'k [Jwk], header: &'k Header) -> impl Iterator<Item = &'k Jwk> {
    let (alg, kid) = (header.alg, header.kid.as_deref());
    keys.iter().filter(move |key| {
        key.verifies(alg) && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jose::alg::{Alg, Algorithms, KeyKind};
    use crate::oauth::jose::jwk::parse_jwks;
    use crate::oauth::jose::jwk::tests::jwk_json;
    use crate::oauth::jose::jws::JwsError;
    use crate::oauth::jose::key::tests::sign;
    use crate::oauth::named_claims::NamedClaims;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use openssl::pkey::{PKey, Private};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        rsa: PKey<Private>,
        ec: PKey<Private>,
        keys: Vec<Jwk>,
    }

    fn issuer() -> Fixture {
        let rsa = crate::oauth::jose::key::tests::pair(KeyKind::Rsa).0;
        let ec = crate::oauth::jose::key::tests::pair(KeyKind::P256).0;
        let set = format!(
            r#"{{"keys":[{},{}]}}"#,
            jwk_json(&rsa, KeyKind::Rsa, r#","kid":"r1","use":"sig""#),
            jwk_json(&ec, KeyKind::P256, r#","kid":"e1","alg":"ES256""#)
        );
        Fixture {
            keys: parse_jwks(set.as_bytes()).unwrap(),
            rsa,
            ec,
        }
    }

    fn policy() -> AccessTokenPolicy {
        AccessTokenPolicy {
            issuer: "https://idp.example".into(),
            audiences: vec!["api".into()],
            algorithms: Algorithms::asymmetric(),
            leeway_s: 0,
            typ_relaxed: false,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://idp.example", "aud": ["api"], "exp": NOW + 300, "iat": NOW,
               "sub": "alice", "scope": "read write", "client_id": "app", "jti": "j1",
               "tenant": {"tier": "gold"}})
    }

    fn token(key: &PKey<Private>, header: serde_json::Value, claims: serde_json::Value) -> String {
        let alg = Alg::parse(header["alg"].as_str().unwrap().as_bytes()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(key, alg, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn check(issuer: &Fixture, token: &str) -> Result<TokenClaims, Refusal> {
        verify(
            token.as_bytes(),
            &issuer.keys,
            &policy(),
            &ClaimPaths::default(),
            NOW,
        )
    }

    #[test]
    fn a_signed_access_token_yields_the_claims_policy_reads() {
        let i = issuer();
        let t = token(
            &i.rsa,
            json!({"alg": "RS256", "typ": "at+jwt", "kid": "r1"}),
            claims(),
        );
        let paths = ClaimPaths {
            marks: true,
            rendered: vec!["tenant.tier".into()],
            checked: vec!["aud".into()],
        };
        let verified = verify(t.as_bytes(), &i.keys, &policy(), &paths, NOW).unwrap();
        assert_eq!(
            verified,
            TokenClaims {
                named: NamedClaims::new(Some("alice"), Some("read write"), Some("app")),
                exp: Some(NOW + 300),
                extra: vec![Some("gold".into())],
                checked: vec![Some(r#"["api"]"#.into())],
                phantom: None,
                cnf: Default::default(),
                marks: crate::oauth::ssf::Marks::of(claims().as_object().unwrap()),
            }
        );
        let t = token(
            &i.ec,
            json!({"alg": "ES256", "typ": "application/at+jwt", "kid": "e1"}),
            claims(),
        );
        assert!(check(&i, &t).is_ok());
        // Without kid, the keys of the algorithm are tried.
        let t = token(&i.rsa, json!({"alg": "PS512", "typ": "at+jwt"}), claims());
        assert!(check(&i, &t).is_ok());
    }

    #[test]
    fn every_refusal_on_the_way() {
        let i = issuer();
        let rs =
            |header: serde_json::Value, claims: serde_json::Value| token(&i.rsa, header, claims);
        let h = json!({"alg": "RS256", "typ": "at+jwt", "kid": "r1"});
        let with = |name: &str, value: serde_json::Value| {
            let mut c = claims();
            c[name] = value;
            c
        };
        for (t, refusal) in [
            (
                "a.b".to_string(),
                Refusal::Malformed(JwsError::NotThreeParts),
            ),
            (
                jws::compact(
                    r#"{"alg":"none","typ":"at+jwt"}"#,
                    &claims().to_string(),
                    b"",
                ),
                Refusal::Malformed(JwsError::Unsecured),
            ),
            (
                rs(json!({"alg": "RS256", "kid": "r1"}), claims()),
                Refusal::WrongType,
            ),
            (
                rs(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": "r2"}),
                    claims(),
                ),
                Refusal::NoKey,
            ),
            (
                rs(h.clone(), with("iss", json!("https://evil.example"))),
                Refusal::WrongIssuer,
            ),
            (rs(h.clone(), with("exp", json!(NOW))), Refusal::Expired),
            (
                rs(h.clone(), with("nbf", json!(NOW + 1))),
                Refusal::NotYetValid,
            ),
            (
                rs(h.clone(), with("aud", json!("web"))),
                Refusal::WrongAudience,
            ),
            (
                rs(h.clone(), with("sub", json!("a\r\nX-Admin: 1"))),
                Refusal::UnsafeClaim("sub".into()),
            ),
            // The EC key names ES256 only.
            (
                token(
                    &i.ec,
                    json!({"alg": "ES384", "typ": "at+jwt", "kid": "e1"}),
                    claims(),
                ),
                Refusal::NoKey,
            ),
            // A key of the wrong kind for the kid.
            (
                rs(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": "e1"}),
                    claims(),
                ),
                Refusal::NoKey,
            ),
        ] {
            assert_eq!(check(&i, &t), Err(refusal.clone()), "{refusal:?}");
        }
        let only_es = AccessTokenPolicy {
            algorithms: Algorithms::none().with(Alg::ES256),
            ..policy()
        };
        let t = rs(h.clone(), claims());
        assert_eq!(
            verify(t.as_bytes(), &i.keys, &only_es, &ClaimPaths::default(), NOW),
            Err(Refusal::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let i = issuer();
        let t = token(
            &i.ec,
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "e1"}),
            claims(),
        );
        let (input, signature) = t.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        for bit in [0, 100, 511] {
            raw[bit / 8] ^= 1 << (bit % 8);
            let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(check(&i, &forged), Err(Refusal::BadSignature), "bit {bit}");
            raw[bit / 8] ^= 1 << (bit % 8);
        }
        let other = claims().to_string().replace("alice", "admin");
        let forged = format!(
            "{}.{}.{signature}",
            input.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(other)
        );
        assert_eq!(check(&i, &forged), Err(Refusal::BadSignature));
    }

    /// RFC 8725 §2.1: a token "signed" with HS256 using the RSA public key
    /// (PEM or DER) as the HMAC secret, against a set holding that key.
    /// Refused by the allow-list, and by the key kind even when HS256 is
    /// allowed.
    #[test]
    fn hs256_over_the_rsa_public_key_is_refused() {
        let i = issuer();
        let allow_hs = AccessTokenPolicy {
            algorithms: Algorithms::asymmetric().with(Alg::HS256),
            ..policy()
        };
        for secret in [
            i.rsa.public_key_to_pem().unwrap(),
            i.rsa.public_key_to_der().unwrap(),
        ] {
            let hmac = PKey::hmac(&secret).unwrap();
            for header in [
                json!({"alg": "HS256", "typ": "at+jwt", "kid": "r1"}),
                json!({"alg": "HS256", "typ": "at+jwt"}),
            ] {
                let t = token(&hmac, header, claims());
                assert_eq!(check(&i, &t), Err(Refusal::AlgorithmNotAllowed));
                assert_eq!(
                    verify(
                        t.as_bytes(),
                        &i.keys,
                        &allow_hs,
                        &ClaimPaths::default(),
                        NOW
                    ),
                    Err(Refusal::NoKey)
                );
            }
        }
    }

    #[test]
    fn hs256_with_a_configured_secret() {
        let secret = b"a shared secret of 32 bytes or more";
        let mut keys = issuer().keys;
        keys.push(Jwk::secret(secret, None).unwrap());
        let policy = AccessTokenPolicy {
            algorithms: Algorithms::none().with(Alg::HS256),
            ..policy()
        };
        let hmac = PKey::hmac(secret).unwrap();
        let t = token(&hmac, json!({"alg": "HS256", "typ": "at+jwt"}), claims());
        assert!(verify(t.as_bytes(), &keys, &policy, &ClaimPaths::default(), NOW).is_ok());
        let wrong = PKey::hmac(b"another shared secret of 32 bytes!").unwrap();
        let t = token(&wrong, json!({"alg": "HS256", "typ": "at+jwt"}), claims());
        assert_eq!(
            verify(t.as_bytes(), &keys, &policy, &ClaimPaths::default(), NOW),
            Err(Refusal::BadSignature)
        );
    }

    /// Two issuers, each with its own key: a token is checked with the keys
    /// of the issuer it names, never with the other's.
    #[test]
    fn several_issuers_each_with_its_keys() {
        let a = issuer();
        let b = issuer();
        let with_iss = |iss: &str| {
            let mut c = claims();
            c["iss"] = json!(iss);
            c
        };
        let issuers = [
            Issuer {
                policy: policy(),
                keys: a.keys.clone(),
                fetch: None,
                mode: Mode::Jwt,
            },
            Issuer {
                policy: AccessTokenPolicy {
                    issuer: "https://other.example".into(),
                    ..policy()
                },
                keys: b.keys.clone(),
                fetch: None,
                mode: Mode::Jwt,
            },
        ];
        let paths = ClaimPaths::default();
        let check_among = |issuers: &[Issuer], t: &str| {
            let jws = jws::parse(t.as_bytes())?;
            verify_chosen(&jws, choose(&jws, issuers)?, &[], &paths, NOW)
        };
        let check = |t: &str| check_among(&issuers, t);
        let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": "e1"});
        assert!(check(&token(&a.ec, h.clone(), claims())).is_ok());
        assert!(check(&token(&b.ec, h.clone(), with_iss("https://other.example"))).is_ok());
        // B's key claiming A's name, and the reverse.
        assert_eq!(
            check(&token(&b.ec, h.clone(), claims())),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(&token(&a.ec, h.clone(), with_iss("https://other.example"))),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(&token(
                &a.ec,
                h.clone(),
                with_iss("https://unknown.example")
            )),
            Err(Refusal::WrongIssuer)
        );
        let mut no_iss = claims();
        no_iss.as_object_mut().unwrap().remove("iss");
        assert_eq!(
            check(&token(&a.ec, h.clone(), no_iss)),
            Err(Refusal::NoIssuer)
        );
        assert_eq!(
            check(&token(&a.ec, h.clone(), json!({"iss": 1}))),
            Err(Refusal::BadClaim("iss"))
        );
        assert_eq!(
            check("a.b"),
            Err(Refusal::Malformed(JwsError::NotThreeParts))
        );
        // One issuer: no choice made before the checks.
        let one = &issuers[..1];
        let t = token(&a.ec, h, with_iss("https://unknown.example"));
        assert_eq!(check_among(one, &t), Err(Refusal::WrongIssuer));
    }

    #[test]
    fn keys_tried_are_bounded() {
        let (private, _) = crate::oauth::jose::key::tests::pair(KeyKind::Ed25519);
        let other = |_| crate::oauth::jose::key::tests::pair(KeyKind::Ed25519).0;
        let mut members: Vec<String> = (0..MAX_KEYS_TRIED)
            .map(other)
            .map(|k| jwk_json(&k, KeyKind::Ed25519, ""))
            .collect();
        members.push(jwk_json(&private, KeyKind::Ed25519, ""));
        let keys = parse_jwks(format!(r#"{{"keys":[{}]}}"#, members.join(",")).as_bytes()).unwrap();
        let t = token(&private, json!({"alg": "EdDSA", "typ": "at+jwt"}), claims());
        let jws = jws::parse(t.as_bytes()).unwrap();
        assert_eq!(
            verify_signature(&jws, &[&keys]).unwrap_err(),
            Refusal::BadSignature
        );
        assert!(verify_signature(&jws, &[&keys[1..]]).is_ok());
    }
}
