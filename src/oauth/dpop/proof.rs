//! A DPoP proof (RFC 9449 §4) checked as §4.3 lists it, as a pure function
//! of the request's `DPoP` header values, method, URI, access token and
//! clock: exactly one header; a compact JWS (the JOSE module's strict
//! parser); `typ` `dpop+jwt`; an asymmetric algorithm of the allow-list
//! (never `none` or a MAC); a public `jwk` in the header with no private
//! member, which verifies the signature; then, once the signature holds,
//! `htm`, `htu` (`htu.rs`), `iat` inside the window, `ath`, and a `jti`.
//!
//! What comes back names the key (its RFC 7638 thumbprint, for `cnf.jkt`)
//! and the proof (a digest of key and `jti`, for the replay store), never
//! the proof's bytes. Every refusal's `description()` is the
//! `error_description` of the 401: constant words.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::oauth::cnf::sha256_b64u;
use crate::oauth::dpop::htu;
use crate::oauth::dpop::nonce::{NonceCheck, NonceKey};
use crate::oauth::jose::alg::{Alg, Algorithms};
use crate::oauth::jose::jwk::{self, JwkError};
use crate::oauth::jose::jws::{self, JwsError};

/// The largest proof read: a header with an RSA key of 4096 bits and a few
/// claims is under 2 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The longest `jti` accepted (RFC 9449 asks for 96 bits of randomness).
pub const MAX_JTI_BYTES: usize = 256;
/// How far ahead of the gateway's clock a client's `iat` may be.
pub const FUTURE_LEEWAY_S: i64 = 5;

/// What the location accepts of proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofPolicy {
    pub algorithms: Algorithms,
    /// How old a proof may be (`iat`), and so how long its `jti` is kept.
    pub window_s: i64,
}

impl ProofPolicy {
    /// RFC 9449's usual algorithms: ES256, PS256, RS256 and EdDSA.
    pub fn default_algorithms() -> Algorithms {
        [Alg::ES256, Alg::PS256, Alg::RS256, Alg::EdDSA]
            .into_iter()
            .fold(Algorithms::none(), Algorithms::with)
    }

    /// The `algs` of the `DPoP` challenge (RFC 9449 §7.1).
    pub fn algs_text(&self) -> String {
        self.algorithms
            .iter()
            .map(Alg::name)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Default for ProofPolicy {
    fn default() -> Self {
        ProofPolicy {
            algorithms: ProofPolicy::default_algorithms(),
            window_s: 60,
        }
    }
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// Every `DPoP` header value the request carries.
    pub headers: &'a [&'a [u8]],
    pub method: &'a [u8],
    /// The request's URI, normalised (`htu::request_uri`); `None` when it
    /// could not be made, which no proof matches.
    pub uri: Option<&'a str>,
    /// The access token the proof goes with.
    pub token: &'a [u8],
    pub now_s: i64,
    /// Server nonces (RFC 9449 §9), when the location asks for them.
    pub nonce_key: Option<&'a NonceKey>,
}

/// A proof that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// SHA-256 thumbprint of the proof's key (RFC 7638).
    pub jkt: [u8; 32],
    /// SHA-256 of the key's thumbprint and the `jti`: the replay store's
    /// name for this proof (a client's `jti` cannot collide with another key's).
    pub replay_id: [u8; 32],
    /// Until when (`iat` plus the window) a proof with this `jti` would be
    /// accepted: how long the replay store must remember it.
    pub remember_until_s: i64,
    /// Whether the client should get a fresh nonce with the answer (its
    /// nonce is of the slot before).
    pub nonce_stale: bool,
}

/// Why a proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("no DPoP header")]
    Missing,
    #[error("more than one DPoP header")]
    SeveralHeaders,
    #[error("proof larger than {MAX_PROOF_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Malformed(JwsError),
    #[error("typ is not dpop+jwt")]
    WrongType,
    #[error("algorithm not allowed for proofs")]
    AlgorithmNotAllowed,
    #[error("no jwk in the header")]
    NoKey,
    #[error("jwk holds private key material")]
    PrivateKey,
    #[error("jwk unusable: {0}")]
    BadKey(JwkError),
    #[error("signature does not verify")]
    BadSignature,
    #[error("payload is not a JSON object with well-typed claims")]
    BadClaims,
    #[error("claim {0} missing")]
    MissingClaim(&'static str),
    #[error("htm is not the request's method")]
    WrongMethod,
    #[error("htu is not the request's URI")]
    WrongUri,
    #[error("iat outside the accepted window")]
    Stale,
    #[error("iat in the future")]
    Future,
    #[error("ath is not the hash of the access token")]
    WrongAth,
    #[error("nonce missing, stale or not the server's")]
    UseNonce,
}

impl ProofError {
    /// The `error_description` of the 401.
    pub fn description(&self) -> &'static str {
        match self {
            ProofError::Missing => "a DPoP proof is required",
            ProofError::SeveralHeaders => "more than one DPoP header",
            ProofError::TooLarge => "the DPoP proof is too large",
            ProofError::Malformed(JwsError::Unsecured) => {
                "unsecured proofs (alg none) are not accepted"
            }
            ProofError::Malformed(_) => "the DPoP proof is not a well-formed JWS",
            ProofError::WrongType => "the DPoP proof's typ is not dpop+jwt",
            ProofError::AlgorithmNotAllowed => "the DPoP proof's algorithm is not accepted",
            ProofError::NoKey => "the DPoP proof has no jwk header",
            ProofError::PrivateKey => "the DPoP proof's jwk holds a private key",
            ProofError::BadKey(_) => "the DPoP proof's jwk is not a usable public key",
            ProofError::BadSignature => "the DPoP proof's signature does not verify",
            ProofError::BadClaims => "the DPoP proof's claims are malformed",
            ProofError::MissingClaim(_) => "the DPoP proof lacks a required claim",
            ProofError::WrongMethod => "the DPoP proof is for another method",
            ProofError::WrongUri => "the DPoP proof is for another URI",
            ProofError::Stale => "the DPoP proof is too old",
            ProofError::Future => "the DPoP proof is issued in the future",
            ProofError::WrongAth => "the DPoP proof is for another access token",
            ProofError::UseNonce => "a DPoP proof with the server's nonce is required",
        }
    }

    /// The metric's result name.
    pub fn result(&self) -> &'static str {
        match self {
            ProofError::Missing => "missing",
            ProofError::SeveralHeaders
            | ProofError::TooLarge
            | ProofError::Malformed(_)
            | ProofError::WrongType
            | ProofError::NoKey
            | ProofError::BadClaims
            | ProofError::MissingClaim(_) => "malformed",
            ProofError::AlgorithmNotAllowed | ProofError::PrivateKey | ProofError::BadKey(_) => {
                "bad_key"
            }
            ProofError::BadSignature => "bad_signature",
            ProofError::WrongMethod | ProofError::WrongUri => "htm_htu_mismatch",
            ProofError::Stale | ProofError::Future => "stale",
            ProofError::WrongAth => "ath_mismatch",
            ProofError::UseNonce => "nonce_required",
        }
    }
}

/// The header member read beyond what `jws::parse` reads; a member given
/// twice is refused by serde.
#[derive(Deserialize)]
struct WireHeader<'a> {
    #[serde(borrow)]
    jwk: Option<&'a RawValue>,
}

/// The claims read; given twice, refused.
#[derive(Deserialize)]
struct WireClaims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

/// Checks the proof of `request` against `policy`.
pub fn check(request: &ProofRequest<'_>, policy: &ProofPolicy) -> Result<Proof, ProofError> {
    let proof = match request.headers {
        [] => return Err(ProofError::Missing),
        [one] => one.trim_ascii(),
        _ => return Err(ProofError::SeveralHeaders),
    };
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge);
    }
    let parsed = jws::parse(proof).map_err(ProofError::Malformed)?;
    let typ_ok = parsed
        .header
        .typ
        .as_deref()
        .is_some_and(|typ| typ.eq_ignore_ascii_case("dpop+jwt"));
    if !typ_ok {
        return Err(ProofError::WrongType);
    }
    let alg = parsed.header.alg;
    if !policy.algorithms.allows(alg) || alg == Alg::HS256 {
        return Err(ProofError::AlgorithmNotAllowed);
    }
    // jws::parse decoded the header already; its jwk is read from the same bytes.
    let header_part = &proof[..proof.iter().position(|&b| b == b'.').unwrap_or(0)];
    let header = jws::decode(header_part).map_err(ProofError::Malformed)?;
    let wire: WireHeader =
        serde_json::from_slice(&header).map_err(|_| ProofError::Malformed(JwsError::BadHeader))?;
    let raw_key = wire.jwk.ok_or(ProofError::NoKey)?;
    let key = jwk::parse_jwk(raw_key.get().as_bytes()).map_err(|e| match e {
        JwkError::PrivateMember(_) => ProofError::PrivateKey,
        e => ProofError::BadKey(e),
    })?;
    if !key.verifies(alg) {
        return Err(ProofError::AlgorithmNotAllowed);
    }
    key.key
        .verify(alg, parsed.signing_input, &parsed.signature)
        .map_err(|_| ProofError::BadSignature)?;
    let jkt = sha256_b64u(&key.thumbprint).ok_or(ProofError::BadSignature)?;
    check_claims(&parsed.payload, request, policy, &jkt)
}

fn check_claims(
    payload: &[u8],
    request: &ProofRequest<'_>,
    policy: &ProofPolicy,
    jkt: &[u8; 32],
) -> Result<Proof, ProofError> {
    // serde reads a struct from a JSON array too, by position.
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(ProofError::BadClaims);
    }
    let claims: WireClaims = serde_json::from_slice(payload).map_err(|_| ProofError::BadClaims)?;
    let text = |value: Option<Value>, name| match value {
        None => Err(ProofError::MissingClaim(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ProofError::BadClaims),
    };
    let jti = text(claims.jti, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(ProofError::BadClaims);
    }
    if text(claims.htm, "htm")?.as_bytes() != request.method {
        return Err(ProofError::WrongMethod);
    }
    let htu = text(claims.htu, "htu")?;
    if !request
        .uri
        .is_some_and(|uri| htu::matches(htu.as_bytes(), uri))
    {
        return Err(ProofError::WrongUri);
    }
    let iat = match claims.iat {
        None => return Err(ProofError::MissingClaim("iat")),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or(ProofError::BadClaims)?,
        Some(_) => return Err(ProofError::BadClaims),
    };
    if iat > request.now_s.saturating_add(FUTURE_LEEWAY_S) {
        return Err(ProofError::Future);
    }
    let remember_until_s = iat.saturating_add(policy.window_s);
    if remember_until_s < request.now_s {
        return Err(ProofError::Stale);
    }
    if text(claims.ath, "ath")? != ath_of(request.token) {
        return Err(ProofError::WrongAth);
    }
    // Last, so that a client's first proof fails for the nonce only.
    let nonce_stale = match request.nonce_key {
        None => false,
        Some(key) => {
            let nonce = match claims.nonce {
                Some(Value::String(nonce)) => Some(nonce),
                _ => None,
            };
            match key.check(nonce.as_deref(), request.now_s) {
                NonceCheck::Current => false,
                NonceCheck::Previous => true,
                NonceCheck::Refused => return Err(ProofError::UseNonce),
            }
        }
    };
    let replay_id: [u8; 32] = Sha256::new()
        .chain_update(jkt)
        .chain_update(jti.as_bytes())
        .finalize()
        .into();
    Ok(Proof {
        jkt: *jkt,
        replay_id,
        remember_until_s,
        nonce_stale,
    })
}

/// `ath` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII.
pub fn ath_of(token: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.encode(Sha256::digest(token))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::jose::alg::KeyKind;
    use crate::oauth::jose::jwk::tests::jwk_json;
    use crate::oauth::jose::key::tests::{pair, sign};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use openssl::pkey::{PKey, Private};
    use serde_json::json;

    /// RFC 9449 §7.1's request to a protected resource: its access token,
    /// its proof (made by the key of §4.1's example), its URI and time.
    const RFC_TOKEN: &[u8] = b"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    const RFC_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0",
        "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10",
        "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.",
        "eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFt",
        "cGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNF",
        "c05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.",
        "2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
    );
    const RFC_URI: &str = "https://resource.example.org/protectedresource";
    const RFC_IAT: i64 = 1_562_262_618;

    pub const NOW: i64 = 1_800_000_000;
    pub const URI: &str = "https://api.example/orders";
    pub const TOKEN: &[u8] = b"opaque-token-1";

    fn request<'a>(headers: &'a [&'a [u8]], method: &'a [u8], now_s: i64) -> ProofRequest<'a> {
        ProofRequest {
            headers,
            method,
            uri: Some(URI),
            token: TOKEN,
            now_s,
            nonce_key: None,
        }
    }

    /// A proof signed by `key` with `header` (its jwk added unless it has
    /// one) and `claims`.
    pub fn proof_with(
        key: &PKey<Private>,
        kind: KeyKind,
        mut header: serde_json::Value,
        claims: serde_json::Value,
    ) -> String {
        if header.get("jwk").is_none() {
            let jwk: serde_json::Value = serde_json::from_str(&jwk_json(key, kind, "")).unwrap();
            header["jwk"] = jwk;
        }
        let alg = Alg::parse(header["alg"].as_str().unwrap().as_bytes()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(key, alg, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    pub fn claims(jti: &str) -> serde_json::Value {
        json!({"jti": jti, "htm": "GET", "htu": URI, "iat": NOW, "ath": ath_of(TOKEN)})
    }

    pub fn es256_proof(key: &PKey<Private>, claims: serde_json::Value) -> String {
        proof_with(
            key,
            KeyKind::P256,
            json!({"typ": "dpop+jwt", "alg": "ES256"}),
            claims,
        )
    }

    #[test]
    fn rfc9449_resource_request_example() {
        let headers = [RFC_PROOF.as_bytes()];
        let request = ProofRequest {
            headers: &headers,
            method: b"GET",
            uri: Some(RFC_URI),
            token: RFC_TOKEN,
            now_s: RFC_IAT + 10,
            nonce_key: None,
        };
        let proof = check(&request, &ProofPolicy::default()).unwrap();
        // RFC 7638 of the example key, computed by the JOSE module.
        let jwk = jwk::parse_jwk(
            br#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#,
        )
        .unwrap();
        assert_eq!(proof.jkt, sha256_b64u(&jwk.thumbprint).unwrap());
        assert_eq!(proof.remember_until_s, RFC_IAT + 60);
        assert_eq!(
            ath_of(RFC_TOKEN),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
        for (request, error) in [
            (
                ProofRequest {
                    method: b"POST",
                    ..request
                },
                ProofError::WrongMethod,
            ),
            (
                ProofRequest {
                    uri: Some("https://resource.example.org/other"),
                    ..request
                },
                ProofError::WrongUri,
            ),
            (
                ProofRequest {
                    token: b"another token",
                    ..request
                },
                ProofError::WrongAth,
            ),
            (
                ProofRequest {
                    now_s: RFC_IAT + 61,
                    ..request
                },
                ProofError::Stale,
            ),
            (
                ProofRequest {
                    now_s: RFC_IAT - 6,
                    ..request
                },
                ProofError::Future,
            ),
        ] {
            assert_eq!(check(&request, &ProofPolicy::default()), Err(error));
        }
    }

    #[test]
    fn every_allowed_algorithm_and_key_type() {
        for (kind, alg) in [
            (KeyKind::P256, "ES256"),
            (KeyKind::Rsa, "PS256"),
            (KeyKind::Rsa, "RS256"),
            (KeyKind::Ed25519, "EdDSA"),
        ] {
            let (key, _) = pair(kind);
            let proof = proof_with(
                &key,
                kind,
                json!({"typ": "dpop+jwt", "alg": alg}),
                claims("a"),
            );
            let headers = [proof.as_bytes()];
            let checked = check(&request(&headers, b"GET", NOW), &ProofPolicy::default());
            assert!(checked.is_ok(), "{alg}: {checked:?}");
        }
        // ES384 is not on the default list.
        let (key, _) = pair(KeyKind::P384);
        let proof = proof_with(
            &key,
            KeyKind::P384,
            json!({"typ": "dpop+jwt", "alg": "ES384"}),
            claims("a"),
        );
        let headers = [proof.as_bytes()];
        assert_eq!(
            check(&request(&headers, b"GET", NOW), &ProofPolicy::default()),
            Err(ProofError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn the_proof_names_its_key_and_its_jti() {
        let (key, _) = pair(KeyKind::P256);
        let (other, _) = pair(KeyKind::P256);
        let check_one = |proof: &str| {
            let headers = [proof.as_bytes()];
            check(&request(&headers, b"GET", NOW), &ProofPolicy::default()).unwrap()
        };
        let a = check_one(&es256_proof(&key, claims("a")));
        let a_again = check_one(&es256_proof(&key, claims("a")));
        let b = check_one(&es256_proof(&key, claims("b")));
        let other_a = check_one(&es256_proof(&other, claims("a")));
        assert_eq!(a.replay_id, a_again.replay_id);
        assert_ne!(a.replay_id, b.replay_id);
        assert_ne!(a.replay_id, other_a.replay_id);
        assert_eq!(a.jkt, b.jkt);
        assert_ne!(a.jkt, other_a.jkt);
        let thumbprint = jwk::parse_jwk(jwk_json(&key, KeyKind::P256, "").as_bytes())
            .unwrap()
            .thumbprint;
        assert_eq!(URL_SAFE_NO_PAD.encode(a.jkt), thumbprint);
    }

    #[test]
    fn every_refusal() {
        let (key, _) = pair(KeyKind::P256);
        let (other, _) = pair(KeyKind::P256);
        let good = es256_proof(&key, claims("a"));
        let with = |name: &str, value: serde_json::Value| {
            let mut c = claims("a");
            match value {
                serde_json::Value::Null => {
                    c.as_object_mut().unwrap().remove(name);
                }
                value => c[name] = value,
            }
            es256_proof(&key, c)
        };
        let header =
            |header: serde_json::Value| proof_with(&key, KeyKind::P256, header, claims("a"));
        let mut private_jwk: serde_json::Value =
            serde_json::from_str(&jwk_json(&key, KeyKind::P256, "")).unwrap();
        private_jwk["d"] = json!("AAAA");
        let other_jwk: serde_json::Value =
            serde_json::from_str(&jwk_json(&other, KeyKind::P256, "")).unwrap();
        let (parts, _) = good.rsplit_once('.').unwrap();
        let hs256 = {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(
                    json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}})
                        .to_string()
                ),
                URL_SAFE_NO_PAD.encode(claims("a").to_string())
            );
            format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]))
        };
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"dpop+jwt","alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims("a").to_string())
        );
        let cases: Vec<(String, ProofError)> = vec![
            ("a.b".into(), ProofError::Malformed(JwsError::NotThreeParts)),
            (none, ProofError::Malformed(JwsError::Unsecured)),
            (hs256, ProofError::AlgorithmNotAllowed),
            ("x".repeat(MAX_PROOF_BYTES + 1), ProofError::TooLarge),
            (header(json!({"alg": "ES256"})), ProofError::WrongType),
            (
                header(json!({"typ": "JWT", "alg": "ES256"})),
                ProofError::WrongType,
            ),
            (
                header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private_jwk})),
                ProofError::PrivateKey,
            ),
            (
                header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": other_jwk})),
                ProofError::BadSignature,
            ),
            (
                header(
                    json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}),
                ),
                ProofError::BadKey(JwkError::Key(
                    crate::oauth::jose::key::KeyError::EcCoordinateLength,
                )),
            ),
            (
                header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": "key"})),
                ProofError::BadKey(JwkError::NotAnObject),
            ),
            (
                format!("{parts}.{}", URL_SAFE_NO_PAD.encode([1u8; 64])),
                ProofError::BadSignature,
            ),
            (with("htm", json!("POST")), ProofError::WrongMethod),
            (with("htm", json!("get")), ProofError::WrongMethod),
            (with("htm", json!(["GET"])), ProofError::BadClaims),
            (
                with("htm", serde_json::Value::Null),
                ProofError::MissingClaim("htm"),
            ),
            (
                with("htu", json!("https://api.example/other")),
                ProofError::WrongUri,
            ),
            (
                with("htu", json!("https://evil.example/orders")),
                ProofError::WrongUri,
            ),
            (
                with("htu", json!("http://api.example/orders")),
                ProofError::WrongUri,
            ),
            (
                with("htu", serde_json::Value::Null),
                ProofError::MissingClaim("htu"),
            ),
            (with("iat", json!(NOW - 61)), ProofError::Stale),
            (with("iat", json!(NOW + 6)), ProofError::Future),
            (with("iat", json!("1800000000")), ProofError::BadClaims),
            (
                with("iat", serde_json::Value::Null),
                ProofError::MissingClaim("iat"),
            ),
            (with("ath", json!(ath_of(b"another"))), ProofError::WrongAth),
            (
                with("ath", serde_json::Value::Null),
                ProofError::MissingClaim("ath"),
            ),
            (with("jti", json!("")), ProofError::BadClaims),
            (
                with("jti", json!("j".repeat(MAX_JTI_BYTES + 1))),
                ProofError::BadClaims,
            ),
            (
                with("jti", serde_json::Value::Null),
                ProofError::MissingClaim("jti"),
            ),
        ];
        for (proof, error) in cases {
            let headers = [proof.as_bytes()];
            assert_eq!(
                check(&request(&headers, b"GET", NOW), &ProofPolicy::default()),
                Err(error.clone()),
                "{error:?}"
            );
            assert!(error
                .description()
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"'));
        }
        // Header count.
        assert_eq!(
            check(&request(&[], b"GET", NOW), &ProofPolicy::default()),
            Err(ProofError::Missing)
        );
        let two = [good.as_bytes(), good.as_bytes()];
        assert_eq!(
            check(&request(&two, b"GET", NOW), &ProofPolicy::default()),
            Err(ProofError::SeveralHeaders)
        );
        // The window's edges, and the query of htu ignored.
        for (iat, ok) in [(NOW - 60, true), (NOW + 5, true)] {
            let headers_proof = with("iat", json!(iat));
            let headers = [headers_proof.as_bytes()];
            assert_eq!(
                check(&request(&headers, b"GET", NOW), &ProofPolicy::default()).is_ok(),
                ok
            );
        }
        let query = with("htu", json!(format!("{URI}?page=2")));
        let headers = [query.as_bytes()];
        assert!(check(&request(&headers, b"GET", NOW), &ProofPolicy::default()).is_ok());
        // A claim given twice.
        let twice = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": serde_json::from_str::<serde_json::Value>(&jwk_json(&key, KeyKind::P256, "")).unwrap()}).to_string()),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"jti":"a","jti":"b","htm":"GET","htu":"{URI}","iat":{NOW},"ath":"{}"}}"#, ath_of(TOKEN)))
        );
        let signed = format!(
            "{twice}.{}",
            URL_SAFE_NO_PAD.encode(sign(&key, Alg::ES256, twice.as_bytes()))
        );
        let headers = [signed.as_bytes()];
        assert_eq!(
            check(&request(&headers, b"GET", NOW), &ProofPolicy::default()),
            Err(ProofError::BadClaims)
        );
    }

    #[test]
    fn server_nonces() {
        let (key, _) = pair(KeyKind::P256);
        let nonces = NonceKey::new(&[5; 32]).unwrap();
        let with_nonce = |nonce: Option<String>| {
            let mut c = claims("n");
            if let Some(nonce) = nonce {
                c["nonce"] = json!(nonce);
            }
            es256_proof(&key, c)
        };
        let at = |proof: &str, now_s| {
            let headers = [proof.as_bytes()];
            let request = ProofRequest {
                nonce_key: Some(&nonces),
                ..request(&headers, b"GET", now_s)
            };
            check(&request, &ProofPolicy::default())
        };
        assert_eq!(at(&with_nonce(None), NOW), Err(ProofError::UseNonce));
        assert_eq!(
            at(&with_nonce(Some("made-up".into())), NOW),
            Err(ProofError::UseNonce)
        );
        let fresh = with_nonce(Some(nonces.issue(NOW)));
        assert!(!at(&fresh, NOW).unwrap().nonce_stale);
        let old = with_nonce(Some(nonces.issue(NOW - 300)));
        let slot_start = NOW - NOW.rem_euclid(300);
        assert!(at(&old, slot_start).unwrap().nonce_stale);
        assert_eq!(ProofError::UseNonce.result(), "nonce_required");
    }

    #[test]
    fn the_challenge_lists_the_algorithms() {
        assert_eq!(
            ProofPolicy::default().algs_text(),
            "RS256 PS256 ES256 EdDSA"
        );
    }
}
