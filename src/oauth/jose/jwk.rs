//! Public JSON Web Keys (RFC 7517) and key sets, made into ready
//! verification keys, and their RFC 7638 thumbprints.
//!
//! A key set is a public document: a member that only a private or
//! symmetric key has (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) means the
//! publisher leaked a secret or published the wrong file, and the whole set
//! is refused. A key of a type or curve the module does not implement, or
//! one not meant for signatures (`use` other than `sig`, `key_ops` without
//! `verify`, an `alg` that is no JWS algorithm), is skipped, as RFC 7517 §5
//! asks; a key of a known type that is malformed refuses the set.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::oauth::jose::alg::{Alg, KeyKind};
use crate::oauth::jose::jws::MAX_KID_BYTES;
use crate::oauth::jose::key::{KeyError, VerifyingKey};

/// The largest key set read: a few dozen RSA keys with certificates.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The most keys a set may hold (skipped ones count).
pub const MAX_KEYS: usize = 64;
/// The longest base64url member of a key (an 8192-bit modulus is 1366).
const MAX_MEMBER_BYTES: usize = 2048;

/// Members only a private or symmetric key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("key set larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON object with a \"keys\" array")]
    NotASet,
    #[error("more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("a key is not a JSON object, or has a member twice")]
    NotAnObject,
    /// The member's name only.
    #[error("member \"{0}\" is missing or malformed")]
    Malformed(&'static str),
    #[error("a public key set holds private or symmetric key material (member \"{0}\")")]
    PrivateMember(&'static str),
    #[error("key type or curve not supported")]
    Unsupported,
    #[error("not a key for verifying signatures")]
    NotForSignatures,
    #[error("\"alg\" names an algorithm for another type of key")]
    AlgMismatch,
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl JwkError {
    /// Whether a key set skips such a key rather than refusing the set.
    pub fn is_skipped(&self) -> bool {
        matches!(self, JwkError::Unsupported | JwkError::NotForSignatures)
    }
}

/// One public key, ready to verify.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`: the only algorithm it verifies, when present.
    pub alg: Option<Alg>,
    pub key: VerifyingKey,
    /// RFC 7638 thumbprint with SHA-256, base64url.
    pub thumbprint: String,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn verifies(&self, alg: Alg) -> bool {
        self.key.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// The operator's HS256 secret as a key (from the configuration only,
    /// never from a key set), for tokens with `kid` or none.
    pub fn secret(secret: &[u8], kid: Option<String>) -> Result<Jwk, KeyError> {
        let key = VerifyingKey::hmac(secret)?;
        let k = URL_SAFE_NO_PAD.encode(secret);
        Ok(Jwk {
            kid,
            alg: Some(Alg::HS256),
            key,
            thumbprint: thumbprint_of_members(&[("k", &k), ("kty", "oct")]),
        })
    }
}

/// The members read. serde refuses a struct member given twice, so a key
/// cannot say two things about itself; the private members are named so
/// that their presence is seen.
#[derive(Deserialize)]
struct WireJwk {
    kty: Option<Value>,
    #[serde(rename = "use")]
    use_: Option<Value>,
    key_ops: Option<Value>,
    alg: Option<Value>,
    kid: Option<Value>,
    n: Option<Value>,
    e: Option<Value>,
    crv: Option<Value>,
    x: Option<Value>,
    y: Option<Value>,
    d: Option<Value>,
    p: Option<Value>,
    q: Option<Value>,
    dp: Option<Value>,
    dq: Option<Value>,
    qi: Option<Value>,
    oth: Option<Value>,
    k: Option<Value>,
}

impl WireJwk {
    fn private_member(&self) -> Option<&'static str> {
        let present = [
            &self.d, &self.p, &self.q, &self.dp, &self.dq, &self.qi, &self.oth, &self.k,
        ];
        PRIVATE_MEMBERS
            .into_iter()
            .zip(present)
            .find_map(|(name, value)| value.is_some().then_some(name))
    }
}

/// A key set's `keys`, each kept as its text, so that a key's members are
/// read from what was sent (a member given twice is seen).
#[derive(Deserialize)]
struct WireSet<'a> {
    #[serde(borrow)]
    keys: Vec<&'a RawValue>,
}

/// A public JWK from its JSON text.
pub fn parse_jwk(json: &[u8]) -> Result<Jwk, JwkError> {
    if json.len() > MAX_JWKS_BYTES {
        return Err(JwkError::TooLarge);
    }
    from_text(std::str::from_utf8(json).map_err(|_| JwkError::NotAnObject)?)
}

/// The verification keys of a JWK Set (RFC 7517 §5), in their order;
/// skipped keys are left out.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<Jwk>, JwkError> {
    if json.len() > MAX_JWKS_BYTES {
        return Err(JwkError::TooLarge);
    }
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwkError::NotASet);
    }
    let set: WireSet = serde_json::from_slice(json).map_err(|_| JwkError::NotASet)?;
    if set.keys.len() > MAX_KEYS {
        return Err(JwkError::TooManyKeys);
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for raw in set.keys {
        match from_text(raw.get()) {
            Ok(jwk) => keys.push(jwk),
            Err(e) if e.is_skipped() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(keys)
}

fn from_text(json: &str) -> Result<Jwk, JwkError> {
    // serde reads a struct from a JSON array too, by position.
    if !json.trim_start().starts_with('{') {
        return Err(JwkError::NotAnObject);
    }
    let wire: WireJwk = serde_json::from_str(json).map_err(|_| JwkError::NotAnObject)?;
    if let Some(name) = wire.private_member() {
        return Err(JwkError::PrivateMember(name));
    }
    let kty = text(&wire.kty, "kty")?.ok_or(JwkError::Malformed("kty"))?;
    let kid = text(&wire.kid, "kid")?;
    if kid.is_some_and(|kid| kid.len() > MAX_KID_BYTES) {
        return Err(JwkError::Malformed("kid"));
    }
    check_use(&wire)?;
    let alg = match text(&wire.alg, "alg")? {
        None => None,
        Some(name) => Some(Alg::parse(name.as_bytes()).ok_or(JwkError::NotForSignatures)?),
    };
    // The key is made (and its checks run) once per worker for the same
    // members: the thumbprint names them.
    type Make = Box<dyn FnOnce() -> Result<VerifyingKey, KeyError>>;
    let (members, make): (Vec<(&str, &str)>, Make) = match kty {
        "RSA" => {
            let (n, e) = (b64(&wire.n, "n")?, b64(&wire.e, "e")?);
            let members = vec![("e", e.0), ("kty", kty), ("n", n.0)];
            (members, Box::new(move || VerifyingKey::rsa(&n.1, &e.1)))
        }
        "EC" => {
            let crv = text(&wire.crv, "crv")?.ok_or(JwkError::Malformed("crv"))?;
            let kind = match crv {
                "P-256" => KeyKind::P256,
                "P-384" => KeyKind::P384,
                _ => return Err(JwkError::Unsupported),
            };
            let (x, y) = (b64(&wire.x, "x")?, b64(&wire.y, "y")?);
            let members = vec![("crv", crv), ("kty", kty), ("x", x.0), ("y", y.0)];
            (
                members,
                Box::new(move || VerifyingKey::ec(kind, &x.1, &y.1)),
            )
        }
        "OKP" => {
            let crv = text(&wire.crv, "crv")?.ok_or(JwkError::Malformed("crv"))?;
            if crv != "Ed25519" {
                return Err(JwkError::Unsupported);
            }
            let x = b64(&wire.x, "x")?;
            let members = vec![("crv", crv), ("kty", kty), ("x", x.0)];
            (members, Box::new(move || VerifyingKey::ed25519(&x.1)))
        }
        _ => return Err(JwkError::Unsupported),
    };
    let thumbprint = thumbprint_of_members(&members);
    let key = ready_key(&thumbprint, make)?;
    if alg.is_some_and(|alg| !key.fits(alg)) {
        return Err(JwkError::AlgMismatch);
    }
    Ok(Jwk {
        kid: kid.map(str::to_string),
        alg,
        key,
        thumbprint,
    })
}

/// How many keys a worker keeps made: a DPoP client signs every proof with
/// the same key, whose checks when it is made (a point on the curve, an RSA
/// modulus) cost more than a signature check; a worker that sees more keys
/// starts over.
const READY_KEYS: usize = 512;

thread_local! {
    /// The keys made lately in this thread (a worker), by RFC 7638
    /// thumbprint: equal thumbprints are equal members (SHA-256), so equal keys.
    static READY: std::cell::RefCell<std::collections::HashMap<String, VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The key whose members have `thumbprint`: made lately, or by `make` now
/// (and kept, if its checks held).
fn ready_key(
    thumbprint: &str,
    make: impl FnOnce() -> Result<VerifyingKey, KeyError>,
) -> Result<VerifyingKey, JwkError> {
    if let Some(key) = READY.with_borrow(|ready| ready.get(thumbprint).cloned()) {
        return Ok(key);
    }
    let key = make()?;
    READY.with_borrow_mut(|ready| {
        if ready.len() >= READY_KEYS {
            ready.clear();
        }
        ready.insert(thumbprint.to_owned(), key.clone());
    });
    Ok(key)
}

/// `use` must be `sig` when present, and `key_ops` (a list of distinct
/// strings) must hold `verify` when present (RFC 7517 §4.2, §4.3).
fn check_use(wire: &WireJwk) -> Result<(), JwkError> {
    match text(&wire.use_, "use")? {
        None | Some("sig") => {}
        Some(_) => return Err(JwkError::NotForSignatures),
    }
    let Some(ops) = &wire.key_ops else {
        return Ok(());
    };
    let Value::Array(ops) = ops else {
        return Err(JwkError::Malformed("key_ops"));
    };
    for (i, op) in ops.iter().enumerate() {
        if !op.is_string() || ops[..i].contains(op) {
            return Err(JwkError::Malformed("key_ops"));
        }
    }
    match ops.iter().any(|op| op == "verify") {
        true => Ok(()),
        false => Err(JwkError::NotForSignatures),
    }
}

fn text<'v>(value: &'v Option<Value>, name: &'static str) -> Result<Option<&'v str>, JwkError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::Malformed(name)),
    }
}

/// A required base64url member: its text (for the thumbprint) and bytes.
fn b64<'v>(value: &'v Option<Value>, name: &'static str) -> Result<(&'v str, Vec<u8>), JwkError> {
    let text = text(value, name)?.ok_or(JwkError::Malformed(name))?;
    if text.is_empty() || text.len() > MAX_MEMBER_BYTES {
        return Err(JwkError::Malformed(name));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::Malformed(name))?;
    Ok((text, bytes))
}

/// RFC 7638 §3: the required members, ordered by name, as JSON without
/// whitespace; SHA-256 of its UTF-8; base64url.
fn thumbprint_of_members(members: &[(&str, &str)]) -> String {
    let mut json = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        // Names and values are JSON strings; serde escapes what needs it.
        json.push_str(&Value::from(*name).to_string());
        json.push(':');
        json.push_str(&Value::from(*value).to_string());
    }
    json.push('}');
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::jose::key::tests::{pair, sign};
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::pkey::{HasPublic, PKey};

    /// RFC 7638 §3.1's example key (RFC 7517 Appendix A.1's), and the
    /// thumbprint the RFC gives for it.
    const RFC7638_N: &str = concat!(
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP",
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY",
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f",
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    );
    const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    #[test]
    fn a_key_is_made_once_per_thumbprint_and_a_failed_one_not_kept() {
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok(pair(KeyKind::P256).1)
        };
        let name = "ready-key-test-thumbprint";
        ready_key(name, make).unwrap();
        ready_key(name, make).unwrap();
        assert_eq!(made.get(), 1, "made once");
        let failing = "ready-key-test-failing";
        let fails = || {
            made.set(made.get() + 1);
            Err(KeyError::EcPointInvalid)
        };
        assert!(ready_key(failing, fails).is_err());
        assert!(ready_key(failing, fails).is_err());
        assert_eq!(
            made.get(),
            3,
            "a key whose checks failed is made again, never kept"
        );
        // The same members parse into the same key; other members, another.
        let (ec, _) = pair(KeyKind::P256);
        let json = jwk_json(&ec, KeyKind::P256, "");
        let (a, b) = (
            parse_jwk(json.as_bytes()).unwrap(),
            parse_jwk(json.as_bytes()).unwrap(),
        );
        assert_eq!(a.thumbprint, b.thumbprint);
        let other =
            parse_jwk(jwk_json(&pair(KeyKind::P256).0, KeyKind::P256, "").as_bytes()).unwrap();
        assert_ne!(a.thumbprint, other.thumbprint);
    }

    fn b64u(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The public JWK of a key, as an IdP would publish it.
    pub fn jwk_json<T: HasPublic>(key: &PKey<T>, kind: KeyKind, extra: &str) -> String {
        let members = match kind {
            KeyKind::Rsa => {
                let rsa = key.rsa().unwrap();
                format!(
                    r#""kty":"RSA","n":"{}","e":"{}""#,
                    b64u(&rsa.n().to_vec()),
                    b64u(&rsa.e().to_vec())
                )
            }
            KeyKind::P256 | KeyKind::P384 => {
                let ec = key.ec_key().unwrap();
                let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
                ec.public_key()
                    .affine_coordinates(
                        ec.group(),
                        &mut x,
                        &mut y,
                        &mut BigNumContext::new().unwrap(),
                    )
                    .unwrap();
                let (crv, size) = match kind {
                    KeyKind::P256 => ("P-256", 32),
                    _ => ("P-384", 48),
                };
                format!(
                    r#""kty":"EC","crv":"{crv}","x":"{}","y":"{}""#,
                    b64u(&x.to_vec_padded(size).unwrap()),
                    b64u(&y.to_vec_padded(size).unwrap())
                )
            }
            KeyKind::Ed25519 => format!(
                r#""kty":"OKP","crv":"Ed25519","x":"{}""#,
                b64u(&key.raw_public_key().unwrap())
            ),
            KeyKind::Hmac => r#""kty":"oct","k":"AAAA""#.to_string(),
        };
        format!("{{{members}{extra}}}")
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        let json = format!(
            r#"{{"kty":"RSA","n":"{RFC7638_N}","e":"AQAB","alg":"RS256","kid":"2011-04-29"}}"#
        );
        let jwk = parse_jwk(json.as_bytes()).unwrap();
        assert_eq!(jwk.thumbprint, RFC7638_THUMBPRINT);
        assert_eq!(jwk.kid.as_deref(), Some("2011-04-29"));
        assert_eq!(jwk.alg, Some(Alg::RS256));
        // Member order and optional members do not change it.
        let json = format!(r#"{{"e":"AQAB","use":"sig","n":"{RFC7638_N}","kty":"RSA"}}"#);
        assert_eq!(
            parse_jwk(json.as_bytes()).unwrap().thumbprint,
            RFC7638_THUMBPRINT
        );
    }

    #[test]
    fn every_key_type_verifies_what_its_private_half_signed() {
        for (kind, alg) in [
            (KeyKind::Rsa, Alg::PS384),
            (KeyKind::P256, Alg::ES256),
            (KeyKind::P384, Alg::ES384),
            (KeyKind::Ed25519, Alg::EdDSA),
        ] {
            let (private, _) = pair(kind);
            let jwk = parse_jwk(jwk_json(&private, kind, r#","kid":"a""#).as_bytes()).unwrap();
            let signature = sign(&private, alg, b"x.y");
            assert!(jwk.verifies(alg));
            assert_eq!(jwk.key.verify(alg, b"x.y", &signature), Ok(()), "{kind:?}");
            assert_eq!(jwk.thumbprint.len(), 43);
        }
    }

    #[test]
    fn a_keys_own_alg_restricts_it() {
        let (private, _) = pair(KeyKind::Rsa);
        let jwk =
            parse_jwk(jwk_json(&private, KeyKind::Rsa, r#","alg":"PS256""#).as_bytes()).unwrap();
        assert!(jwk.verifies(Alg::PS256));
        assert!(!jwk.verifies(Alg::RS256));
        assert!(!jwk.verifies(Alg::HS256));
        assert_eq!(
            parse_jwk(jwk_json(&private, KeyKind::Rsa, r#","alg":"ES256""#).as_bytes())
                .unwrap_err(),
            JwkError::AlgMismatch
        );
        assert_eq!(
            parse_jwk(jwk_json(&private, KeyKind::Rsa, r#","alg":"HS256""#).as_bytes())
                .unwrap_err(),
            JwkError::AlgMismatch
        );
    }

    #[test]
    fn private_members_refuse_the_key() {
        let (private, _) = pair(KeyKind::P256);
        for member in PRIVATE_MEMBERS {
            let json = jwk_json(&private, KeyKind::P256, &format!(r#","{member}":"AAAA""#));
            assert_eq!(
                parse_jwk(json.as_bytes()).unwrap_err(),
                JwkError::PrivateMember(member)
            );
            let set = format!(r#"{{"keys":[{json}]}}"#);
            assert_eq!(
                parse_jwks(set.as_bytes()).unwrap_err(),
                JwkError::PrivateMember(member)
            );
        }
        assert_eq!(
            parse_jwk(br#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap_err(),
            JwkError::PrivateMember("k")
        );
    }

    #[test]
    fn use_and_key_ops() {
        let (private, _) = pair(KeyKind::Ed25519);
        let with = |extra: &str| parse_jwk(jwk_json(&private, KeyKind::Ed25519, extra).as_bytes());
        assert!(with(r#","use":"sig""#).is_ok());
        assert!(with(r#","key_ops":["verify"]"#).is_ok());
        assert!(with(r#","key_ops":["sign","verify"]"#).is_ok());
        for extra in [
            r#","use":"enc""#,
            r#","key_ops":["encrypt"]"#,
            r#","key_ops":[]"#,
            r#","alg":"RSA-OAEP""#,
        ] {
            assert_eq!(
                with(extra).unwrap_err(),
                JwkError::NotForSignatures,
                "{extra}"
            );
        }
        for (extra, member) in [
            (r#","use":1"#, "use"),
            (r#","key_ops":"verify""#, "key_ops"),
            (r#","key_ops":["verify","verify"]"#, "key_ops"),
            (r#","key_ops":[1]"#, "key_ops"),
            (r#","kid":5"#, "kid"),
        ] {
            assert_eq!(
                with(extra).unwrap_err(),
                JwkError::Malformed(member),
                "{extra}"
            );
        }
        assert_eq!(
            with(r#","kty":"OKP""#).unwrap_err(),
            JwkError::NotAnObject,
            "a member given twice"
        );
    }

    #[test]
    fn malformed_members() {
        let n = RFC7638_N;
        for (json, error) in [
            (
                r#"{"n":"AQAB","e":"AQAB"}"#.to_string(),
                JwkError::Malformed("kty"),
            ),
            (
                r#"{"kty":"RSA","e":"AQAB"}"#.to_string(),
                JwkError::Malformed("n"),
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB="}}"#),
                JwkError::Malformed("e"),
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{n}","e":""}}"#),
                JwkError::Malformed("e"),
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{n}+","e":"AQAB"}}"#),
                JwkError::Malformed("n"),
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA"}"#.to_string(),
                JwkError::Malformed("y"),
            ),
            (
                r#"{"kty":"EC","x":"AA","y":"AA"}"#.to_string(),
                JwkError::Malformed("crv"),
            ),
            (
                r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#.to_string(),
                JwkError::Unsupported,
            ),
            (
                r#"{"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}"#.to_string(),
                JwkError::Unsupported,
            ),
            (
                r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#.to_string(),
                JwkError::Unsupported,
            ),
            (
                r#"{"kty":"OKP","crv":"Ed448","x":"AA"}"#.to_string(),
                JwkError::Unsupported,
            ),
            (r#"{"kty":"oct"}"#.to_string(), JwkError::Unsupported),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#.to_string(),
                JwkError::Key(KeyError::EcCoordinateLength),
            ),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#.to_string(),
                JwkError::Key(KeyError::Ed25519Length),
            ),
            (
                r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#.to_string(),
                JwkError::Key(KeyError::RsaSize(17)),
            ),
            ("[]".to_string(), JwkError::NotAnObject),
            ("{".to_string(), JwkError::NotAnObject),
        ] {
            assert_eq!(parse_jwk(json.as_bytes()).unwrap_err(), error, "{json}");
        }
    }

    #[test]
    fn key_sets_skip_keys_they_cannot_use_and_refuse_broken_ones() {
        let (rsa, _) = pair(KeyKind::Rsa);
        let (ec, _) = pair(KeyKind::P256);
        let set = format!(
            r#"{{"keys":[{},{},{},{},{}],"other":1}}"#,
            jwk_json(&rsa, KeyKind::Rsa, r#","kid":"r1","use":"sig""#),
            jwk_json(&ec, KeyKind::P256, r#","kid":"e-enc","use":"enc""#),
            r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"p521"}"#,
            r#"{"kty":"RSA-PQ","kid":"future"}"#,
            jwk_json(&ec, KeyKind::P256, r#","kid":"e1""#),
        );
        let keys = parse_jwks(set.as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["r1", "e1"]);
        assert_eq!(parse_jwks(br#"{"keys":[]}"#).unwrap().len(), 0);
        let broken = format!(
            r#"{{"keys":[{},{{"kty":"EC","crv":"P-256","x":"A","y":"A"}}]}}"#,
            jwk_json(&rsa, KeyKind::Rsa, "")
        );
        assert_eq!(
            parse_jwks(broken.as_bytes()).unwrap_err(),
            JwkError::Malformed("x")
        );
        for json in [
            &b"[]"[..],
            b"{}",
            br#"{"keys":{}}"#,
            br#"{"keys":[1]}"#,
            b"nope",
        ] {
            assert!(
                parse_jwks(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            vec!["{\"kty\":\"x\"}"; MAX_KEYS + 1].join(",")
        );
        assert_eq!(
            parse_jwks(many.as_bytes()).unwrap_err(),
            JwkError::TooManyKeys
        );
        let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
        assert_eq!(parse_jwks(huge.as_bytes()).unwrap_err(), JwkError::TooLarge);
    }

    /// A P-521 key (the curve of RFC 7520 §3.1's example) is not
    /// implemented: skipped in a set, refused alone, before its members are read.
    #[test]
    fn p521_keys_are_skipped() {
        let ec = br#"{"kty":"EC","kid":"bilbo","use":"sig","crv":"P-521","x":"AHKZ","y":"Adym"}"#;
        assert_eq!(parse_jwk(ec).unwrap_err(), JwkError::Unsupported);
        let set = format!(r#"{{"keys":[{}]}}"#, String::from_utf8_lossy(ec));
        assert!(parse_jwks(set.as_bytes()).unwrap().is_empty());
    }
}
