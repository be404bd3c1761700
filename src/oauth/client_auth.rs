//! How the gateway authenticates to the IdP as an OAuth client (RFC 6749
//! §2.3, RFC 7523 §2.2, OpenID Connect Core §9, RFC 8705 §2): what a call's
//! form body and `Authorization` header carry for each method, and the
//! signed client assertions of `client_secret_jwt` and `private_key_jwt`.
//!
//! Cryptography goes through OpenSSL (the `openssl` crate): the library
//! nginx itself is linked with, so the module brings no second one.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};

use crate::oauth::form::append_encoded;

/// `auth_oauth2_token_client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `Authorization: Basic …` (client_secret_basic), the default.
    Basic,
    /// `client_id` and `client_secret` in the form body (client_secret_post).
    Post,
    /// A client assertion signed with the client secret (HS256).
    SecretJwt,
    /// A client assertion signed with the client's private key.
    PrivateKeyJwt,
    /// Mutual TLS with a certificate from a CA (`tls_client_auth`) ...
    TlsClientAuth,
    /// ... or a self-signed one registered with the IdP.
    SelfSignedTlsClientAuth,
}

impl Method {
    pub fn parse(arg: &[u8]) -> Option<Method> {
        Some(match arg {
            b"basic" | b"client_secret_basic" => Method::Basic,
            b"post" | b"client_secret_post" => Method::Post,
            b"client_secret_jwt" => Method::SecretJwt,
            b"private_key_jwt" => Method::PrivateKeyJwt,
            b"tls_client_auth" => Method::TlsClientAuth,
            b"self_signed_tls_client_auth" => Method::SelfSignedTlsClientAuth,
            _ => return None,
        })
    }

    /// Whether every call carries a freshly signed assertion.
    pub fn signs(self) -> bool {
        matches!(self, Method::SecretJwt | Method::PrivateKeyJwt)
    }
}

/// A JWS algorithm for client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub fn parse(arg: &[u8]) -> Option<Alg> {
        Some(match arg {
            b"HS256" => Alg::HS256,
            b"RS256" => Alg::RS256,
            b"PS256" => Alg::PS256,
            b"ES256" => Alg::ES256,
            b"EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

/// What signs a client's assertions: its secret (HS256) or private key.
/// The key material never leaves this value; `Debug` does not show it.
#[derive(Clone)]
pub struct AssertionKey {
    alg: Alg,
    key: PKey<Private>,
    kid: Option<String>,
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AssertionKey {
    /// A private key from PEM (PKCS#8, or traditional RSA/EC): RSA of at
    /// least 2048 bits for RS256 (default) or PS256, EC P-256 for ES256,
    /// Ed25519 for EdDSA. Errors say what is wrong, never the key.
    pub fn from_pem(
        pem: &[u8],
        alg: Option<Alg>,
        kid: Option<String>,
    ) -> Result<AssertionKey, String> {
        let key = PKey::private_key_from_pem(pem)
            .map_err(|_| "cannot read a PEM private key from the file".to_string())?;
        let alg = match (key.id(), alg) {
            (Id::RSA, None | Some(Alg::RS256)) => Alg::RS256,
            (Id::RSA, Some(Alg::PS256)) => Alg::PS256,
            (Id::EC, None | Some(Alg::ES256)) => Alg::ES256,
            (Id::ED25519, None | Some(Alg::EdDSA)) => Alg::EdDSA,
            (_, Some(alg)) => return Err(format!("holds a key that cannot sign {}", alg.name())),
            _ => {
                return Err(
                    "holds a key of an unsupported type: use RSA, EC P-256 or Ed25519".into(),
                )
            }
        };
        match key.id() {
            Id::RSA if key.bits() < 2048 => {
                return Err(format!(
                    "holds an RSA key of {} bits: at least 2048 are needed",
                    key.bits()
                ))
            }
            Id::EC => {
                let group = key.ec_key().map_err(|_| "holds an unreadable EC key")?;
                if group.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                    return Err("holds an EC key that is not on P-256 (ES256)".into());
                }
            }
            _ => {}
        }
        Ok(AssertionKey { alg, key, kid })
    }

    /// The client secret as an HS256 key (client_secret_jwt): at least
    /// [`MIN_HS256_SECRET_BYTES`] of it, as RFC 7518 §3.2 asks of an HMAC key
    /// (no shorter than the hash's output).
    pub fn from_secret(secret: &[u8]) -> Result<AssertionKey, String> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "is {} bytes: HS256 needs a key of at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 §3.2)",
                secret.len()
            ));
        }
        let key =
            PKey::hmac(secret).map_err(|_| "cannot use the client secret as a key".to_string())?;
        Ok(AssertionKey {
            alg: Alg::HS256,
            key,
            kid: None,
        })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// What names this key in the cache keys, with nothing secret in it:
    /// SHA-256 over the algorithm, the `kid` and the public half (DER);
    /// `None` for an HS256 key, which is the client secret (the keys hold
    /// that already).
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        if self.alg == Alg::HS256 {
            return None;
        }
        let public = self.key.public_key_to_der().ok()?;
        let mut hasher = Sha256::new();
        for part in [
            self.alg.name().as_bytes(),
            self.kid.as_deref().unwrap_or_default().as_bytes(),
            &public,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Some(hasher.finalize().into())
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let failed = |_| "cannot sign the client assertion".to_string();
        match self.alg {
            Alg::EdDSA => {
                let mut signer = Signer::new_without_digest(&self.key).map_err(failed)?;
                signer.sign_oneshot_to_vec(input).map_err(failed)
            }
            alg => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.key).map_err(failed)?;
                if alg == Alg::PS256 {
                    signer.set_rsa_padding(Padding::PKCS1_PSS).map_err(failed)?;
                    signer
                        .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                        .map_err(failed)?;
                }
                signer.update(input).map_err(failed)?;
                let signature = signer.sign_to_vec().map_err(failed)?;
                match alg {
                    // JWS wants ECDSA's r and s as two 32-byte numbers, not DER.
                    Alg::ES256 => {
                        let sig = EcdsaSig::from_der(&signature).map_err(failed)?;
                        let mut raw = sig.r().to_vec_padded(32).map_err(failed)?;
                        raw.extend(sig.s().to_vec_padded(32).map_err(failed)?);
                        Ok(raw)
                    }
                    _ => Ok(signature),
                }
            }
        }
    }
}

/// The shortest client secret `client_secret_jwt` signs with: the output
/// size of SHA-256 (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// A fresh `jti`: 128 random bits.
pub fn new_jti() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).map_err(|_| "no random bytes for a jti".to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// How long an assertion is valid: at most 60 s, one call's lifetime.
pub const ASSERTION_LIFETIME_S: i64 = 60;

/// A client assertion (RFC 7523 §3): `iss` = `sub` = the client id, `aud`
/// the IdP, a unique `jti`, `iat` now and `exp` a minute later.
pub fn assertion(
    key: &AssertionKey,
    client_id: &str,
    audience: &str,
    jti: &str,
    now_s: i64,
) -> Result<String, String> {
    let mut header = serde_json::json!({"alg": key.alg.name(), "typ": "JWT"});
    if let Some(kid) = &key.kid {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti,
        "iat": now_s,
        "exp": now_s + ASSERTION_LIFETIME_S,
    });
    let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(jws.as_bytes())?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jws)
}

/// What a signed-assertion call appends to its form body.
pub fn assertion_form(client_id: &[u8], assertion: &str) -> Vec<u8> {
    let mut form = Vec::with_capacity(assertion.len() + 128);
    form.extend_from_slice(
        b"&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=",
    );
    form.extend_from_slice(assertion.as_bytes());
    form.extend_from_slice(b"&client_id=");
    append_encoded(&mut form, client_id);
    form
}

/// What a mutual-TLS call appends: only the client id (RFC 8705 §2).
pub fn client_id_form(client_id: &[u8]) -> Vec<u8> {
    let mut form = b"&client_id=".to_vec();
    append_encoded(&mut form, client_id);
    form
}

/// Used by the tests, and by anyone checking an assertion: the public
/// half's check of `jws`.
#[cfg(test)]
fn verify(jws: &str, public_pem: &[u8], alg: Alg) -> bool {
    use openssl::bn::BigNum;
    use openssl::sign::Verifier;
    let (input, signature) = jws.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let key = PKey::public_key_from_pem(public_pem).unwrap();
    match alg {
        Alg::EdDSA => {
            let mut v = Verifier::new_without_digest(&key).unwrap();
            v.verify_oneshot(&signature, input.as_bytes()).unwrap()
        }
        Alg::ES256 => {
            let r = BigNum::from_slice(&signature[..32]).unwrap();
            let s = BigNum::from_slice(&signature[32..]).unwrap();
            let der = EcdsaSig::from_private_components(r, s)
                .unwrap()
                .to_der()
                .unwrap();
            let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
            v.update(input.as_bytes()).unwrap();
            v.verify(&der).unwrap()
        }
        alg => {
            let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
            if alg == Alg::PS256 {
                v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            }
            v.update(input.as_bytes()).unwrap();
            v.verify(&signature).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;

    const SECRET_32: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn keys() -> Vec<(PKey<Private>, Option<Alg>, Alg)> {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let ec =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let ec = PKey::from_ec_key(ec).unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        vec![
            (rsa.clone(), None, Alg::RS256),
            (rsa, Some(Alg::PS256), Alg::PS256),
            (ec, None, Alg::ES256),
            (ed, None, Alg::EdDSA),
        ]
    }

    #[test]
    fn assertions_carry_the_claims_and_verify_with_the_public_key() {
        for (key, asked, alg) in keys() {
            let pem = key.private_key_to_pem_pkcs8().unwrap();
            let signer = AssertionKey::from_pem(&pem, asked, Some("k1".into())).unwrap();
            assert_eq!(signer.alg(), alg);
            let jws = assertion(
                &signer,
                "gw",
                "https://idp.example/token",
                "j-1",
                1_700_000_000,
            )
            .unwrap();
            let parts: Vec<&str> = jws.split('.').collect();
            assert_eq!(parts.len(), 3);
            assert_eq!(
                decode(parts[0]),
                serde_json::json!({"alg": alg.name(), "typ": "JWT", "kid": "k1"})
            );
            assert_eq!(
                decode(parts[1]),
                serde_json::json!({"iss": "gw", "sub": "gw", "aud": "https://idp.example/token",
                    "jti": "j-1", "iat": 1_700_000_000, "exp": 1_700_000_060})
            );
            let public = key.public_key_to_pem().unwrap();
            assert!(verify(&jws, &public, alg), "{alg:?} verifies");
            let tampered = jws.replacen(parts[1], &URL_SAFE_NO_PAD.encode(b"{}"), 1);
            assert!(
                !verify(&tampered, &public, alg),
                "{alg:?} rejects a changed payload"
            );
        }
    }

    #[test]
    fn client_secret_jwt_is_hs256_over_the_secret() {
        let key = AssertionKey::from_secret(SECRET_32).unwrap();
        let jws = assertion(&key, "gw", "aud", "j", 10).unwrap();
        let (input, signature) = jws.rsplit_once('.').unwrap();
        let hmac = PKey::hmac(SECRET_32).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &hmac).unwrap();
        signer.update(input.as_bytes()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
            signer.sign_to_vec().unwrap()
        );
        assert_eq!(decode(input.split('.').next().unwrap())["alg"], "HS256");
    }

    #[test]
    fn keys_are_checked_when_loaded() {
        let small = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let err = AssertionKey::from_pem(&small.private_key_to_pem_pkcs8().unwrap(), None, None)
            .unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
        let k384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        let k384 = PKey::from_ec_key(k384).unwrap();
        let err = AssertionKey::from_pem(&k384.private_key_to_pem_pkcs8().unwrap(), None, None)
            .unwrap_err();
        assert!(err.contains("P-256"), "{err}");
        let ed = PKey::generate_ed25519().unwrap();
        let err = AssertionKey::from_pem(
            &ed.private_key_to_pem_pkcs8().unwrap(),
            Some(Alg::RS256),
            None,
        )
        .unwrap_err();
        assert!(err.contains("cannot sign RS256"), "{err}");
        let err =
            AssertionKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n", None, None).unwrap_err();
        assert_eq!(err, "cannot read a PEM private key from the file");
        let debug = format!("{:?}", AssertionKey::from_secret(SECRET_32).unwrap());
        assert!(!debug.contains("0123456789abcdef"));
    }

    #[test]
    fn hs256_secrets_shorter_than_the_hash_are_refused() {
        let err = AssertionKey::from_secret(&SECRET_32[..31]).unwrap_err();
        assert!(
            err.contains("31 bytes") && err.contains("at least 32"),
            "{err}"
        );
        assert!(!err.contains("0123456789"), "{err}");
        assert!(AssertionKey::from_secret(b"").is_err());
        assert!(AssertionKey::from_secret(SECRET_32).is_ok());
    }

    #[test]
    fn fingerprints_name_the_public_key_and_kid_never_a_secret() {
        let mut seen = Vec::new();
        for (key, asked, _) in keys() {
            let pem = key.private_key_to_pem_pkcs8().unwrap();
            let a = AssertionKey::from_pem(&pem, asked, Some("k1".into())).unwrap();
            let again = AssertionKey::from_pem(&pem, asked, Some("k1".into())).unwrap();
            let other_kid = AssertionKey::from_pem(&pem, asked, Some("k2".into())).unwrap();
            let fp = a.fingerprint().unwrap();
            assert_eq!(Some(fp), again.fingerprint(), "stable across loads");
            assert_ne!(Some(fp), other_kid.fingerprint());
            assert_ne!(
                Some(fp),
                AssertionKey::from_pem(&pem, asked, None)
                    .unwrap()
                    .fingerprint()
            );
            seen.push(fp);
        }
        // RS256 and PS256 share the RSA key: the algorithm tells them apart.
        for (i, a) in seen.iter().enumerate() {
            assert!(!seen[i + 1..].contains(a), "fingerprint {i}");
        }
        assert_eq!(
            AssertionKey::from_secret(SECRET_32).unwrap().fingerprint(),
            None
        );
    }

    #[test]
    fn every_assertion_has_its_own_jti() {
        let a = new_jti().unwrap();
        let b = new_jti().unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn forms_carry_what_each_method_sends() {
        assert_eq!(
            assertion_form(b"my gw", "a.b.c"),
            b"&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c&client_id=my+gw".to_vec()
        );
        assert_eq!(client_id_form(b"gw"), b"&client_id=gw".to_vec());
        for (arg, method) in [
            (&b"basic"[..], Method::Basic),
            (b"post", Method::Post),
            (b"client_secret_basic", Method::Basic),
            (b"private_key_jwt", Method::PrivateKeyJwt),
            (b"tls_client_auth", Method::TlsClientAuth),
        ] {
            assert_eq!(Method::parse(arg), Some(method));
        }
        assert_eq!(Method::parse(b"none"), None);
    }
}
