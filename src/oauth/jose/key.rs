//! A verification key made ready once (when the configuration or a key set
//! is read): an OpenSSL key object of one kind, which verifies only the
//! algorithms of that kind. A request's check is then one OpenSSL call,
//! with no key parsing or setup.
//!
//! The kind is fixed when the key is made, from what it is (an RSA modulus,
//! a curve point, a secret the operator configured), never from a token:
//! a token whose `alg` wants another kind is refused before OpenSSL sees
//! it. That is the whole defence against key confusion (an RSA public key
//! used as an HMAC secret, RFC 8725 §2.1).

use std::fmt;

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

use crate::oauth::jose::alg::{Alg, Hash, KeyKind};

/// RFC 7518 §3.3: RSA keys of 2048 bits or more.
pub const MIN_RSA_BITS: u32 = 2048;
/// Larger keys make every check slower for no gain: refused.
pub const MAX_RSA_BITS: u32 = 8192;
/// RFC 7518 §3.2: an HMAC key at least as long as the hash's output.
pub const MIN_HMAC_BYTES: usize = 32;

/// Why key material cannot be a verification key. Never shows the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "RSA modulus of {0} bits: at least {MIN_RSA_BITS} and at most {MAX_RSA_BITS} are accepted"
    )]
    RsaSize(u32),
    #[error("RSA public exponent is not an odd number of at most 64 bits above 1")]
    RsaExponent,
    #[error("EC coordinates of the wrong length for the curve")]
    EcCoordinateLength,
    #[error("EC point is not on the curve")]
    EcPointInvalid,
    #[error("Ed25519 public key is not 32 bytes")]
    Ed25519Length,
    #[error("HMAC secret of {0} bytes: at least {MIN_HMAC_BYTES} are needed (RFC 7518 §3.2)")]
    HmacTooShort(usize),
    #[error("OpenSSL cannot use the key")]
    Unusable,
}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The algorithm needs another kind of key than this one.
    #[error("the key cannot verify this algorithm")]
    WrongKeyKind,
    /// Wrong length, wrong value, or OpenSSL could not check it.
    #[error("signature does not verify")]
    Invalid,
}

#[derive(Clone)]
enum Material {
    Hmac(PKey<Private>),
    Rsa(PKey<Public>),
    Ec(EcKey<Public>),
    Ed25519(PKey<Public>),
}

/// A key ready to verify signatures of its kind's algorithms.
#[derive(Clone)]
pub struct VerifyingKey {
    kind: KeyKind,
    material: Material,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A shared secret for HS256, from the configuration only.
    pub fn hmac(secret: &[u8]) -> Result<VerifyingKey, KeyError> {
        if secret.len() < MIN_HMAC_BYTES {
            return Err(KeyError::HmacTooShort(secret.len()));
        }
        let key = PKey::hmac(secret).map_err(|_| KeyError::Unusable)?;
        Ok(VerifyingKey {
            kind: KeyKind::Hmac,
            material: Material::Hmac(key),
        })
    }

    /// An RSA public key from its modulus and exponent (big-endian bytes).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<VerifyingKey, KeyError> {
        let e_bits = BigNum::from_slice(e).map_err(|_| KeyError::Unusable)?;
        if e_bits.num_bits() > 64 || e_bits.num_bits() < 2 || !e_bits.is_bit_set(0) {
            return Err(KeyError::RsaExponent);
        }
        let n = BigNum::from_slice(n).map_err(|_| KeyError::Unusable)?;
        let bits = u32::try_from(n.num_bits()).unwrap_or(0);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaSize(bits));
        }
        let rsa = Rsa::from_public_components(n, e_bits).map_err(|_| KeyError::Unusable)?;
        let key = PKey::from_rsa(rsa).map_err(|_| KeyError::Unusable)?;
        Ok(VerifyingKey {
            kind: KeyKind::Rsa,
            material: Material::Rsa(key),
        })
    }

    /// An EC public key on P-256 or P-384 from its affine coordinates, each
    /// exactly the curve's size (RFC 7518 §6.2.1.2), checked to be a point
    /// of the curve.
    pub fn ec(kind: KeyKind, x: &[u8], y: &[u8]) -> Result<VerifyingKey, KeyError> {
        let (nid, size) = match kind {
            KeyKind::P256 => (Nid::X9_62_PRIME256V1, 32),
            KeyKind::P384 => (Nid::SECP384R1, 48),
            _ => return Err(KeyError::Unusable),
        };
        if x.len() != size || y.len() != size {
            return Err(KeyError::EcCoordinateLength);
        }
        let group = EcGroup::from_curve_name(nid).map_err(|_| KeyError::Unusable)?;
        let x = BigNum::from_slice(x).map_err(|_| KeyError::Unusable)?;
        let y = BigNum::from_slice(y).map_err(|_| KeyError::Unusable)?;
        // OpenSSL refuses coordinates that are not a point of the group
        // (and coordinates of the field's size or more): setting them runs
        // its full key check (EC_KEY_check_key), which is not run twice.
        let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
            .map_err(|_| KeyError::EcPointInvalid)?;
        Ok(VerifyingKey {
            kind,
            material: Material::Ec(key),
        })
    }

    /// An Ed25519 public key (RFC 8037 §2: the 32 bytes of `x`).
    pub fn ed25519(x: &[u8]) -> Result<VerifyingKey, KeyError> {
        if x.len() != 32 {
            return Err(KeyError::Ed25519Length);
        }
        let key =
            PKey::public_key_from_raw_bytes(x, Id::ED25519).map_err(|_| KeyError::Unusable)?;
        Ok(VerifyingKey {
            kind: KeyKind::Ed25519,
            material: Material::Ed25519(key),
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this key can verify `alg` at all.
    pub fn fits(&self, alg: Alg) -> bool {
        alg.key_kind() == self.kind
    }

    /// Checks `signature` over `input` for `alg`. A key of another kind
    /// than `alg` needs is refused before OpenSSL is asked.
    pub fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        if !self.fits(alg) {
            return Err(SignatureError::WrongKeyKind);
        }
        if alg
            .signature_len()
            .is_some_and(|len| len != signature.len())
        {
            return Err(SignatureError::Invalid);
        }
        let ok = match &self.material {
            Material::Hmac(key) => hmac_matches(key, alg, input, signature),
            Material::Rsa(key) => rsa_verifies(key, alg, input, signature),
            Material::Ec(key) => ecdsa_verifies(key, alg, input, signature),
            Material::Ed25519(key) => Verifier::new_without_digest(key)
                .and_then(|mut v| v.verify_oneshot(signature, input))
                .unwrap_or(false),
        };
        match ok {
            true => Ok(()),
            false => Err(SignatureError::Invalid),
        }
    }
}

fn digest(alg: Alg) -> MessageDigest {
    match alg.hash() {
        Hash::Sha384 => MessageDigest::sha384(),
        Hash::Sha512 => MessageDigest::sha512(),
        Hash::Sha256 | Hash::None => MessageDigest::sha256(),
    }
}

/// HS256: the MAC computed again, compared in constant time.
fn hmac_matches(key: &PKey<Private>, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    let Ok(mut signer) = Signer::new(digest(alg), key) else {
        return false;
    };
    match signer.sign_oneshot_to_vec(input) {
        Ok(mac) => mac.len() == signature.len() && openssl::memcmp::eq(&mac, signature),
        Err(_) => false,
    }
}

/// RS* (PKCS #1 v1.5) and PS* (PSS, salt as long as the hash, MGF1 with
/// the same hash: RFC 7518 §3.5).
fn rsa_verifies(key: &PKey<Public>, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    let md = digest(alg);
    let verify = || -> Result<bool, openssl::error::ErrorStack> {
        let mut verifier = Verifier::new(md, key)?;
        if alg.is_pss() {
            verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
            verifier.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            verifier.set_rsa_mgf1_md(md)?;
        }
        verifier.verify_oneshot(signature, input)
    };
    verify().unwrap_or(false)
}

/// ES256/ES384: the JWS signature is `r || s`, two numbers of the curve's
/// size (RFC 7518 §3.4); OpenSSL checks them against the digest.
fn ecdsa_verifies(key: &EcKey<Public>, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    let half = signature.len() / 2;
    let verify = || -> Result<bool, openssl::error::ErrorStack> {
        let r = BigNum::from_slice(&signature[..half])?;
        let s = BigNum::from_slice(&signature[half..])?;
        let sig = EcdsaSig::from_private_components(r, s)?;
        let digest = openssl::hash::hash(digest(alg), input)?;
        sig.verify(&digest, key)
    };
    verify().unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::pkey::HasPublic;

    /// Signs `input` with `key` for `alg`, in JWS form (ECDSA as `r || s`).
    pub fn sign(key: &PKey<Private>, alg: Alg, input: &[u8]) -> Vec<u8> {
        if alg == Alg::EdDSA {
            let mut signer = Signer::new_without_digest(key).unwrap();
            return signer.sign_oneshot_to_vec(input).unwrap();
        }
        let mut signer = Signer::new(digest(alg), key).unwrap();
        if alg.is_pss() {
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            signer.set_rsa_mgf1_md(digest(alg)).unwrap();
        }
        let signature = signer.sign_oneshot_to_vec(input).unwrap();
        match alg.key_kind() {
            KeyKind::P256 | KeyKind::P384 => {
                let size = alg.signature_len().unwrap() / 2;
                let sig = EcdsaSig::from_der(&signature).unwrap();
                let mut raw = sig.r().to_vec_padded(size as i32).unwrap();
                raw.extend(sig.s().to_vec_padded(size as i32).unwrap());
                raw
            }
            _ => signature,
        }
    }

    /// A fresh private key of `kind` and its verifying half.
    pub fn pair(kind: KeyKind) -> (PKey<Private>, VerifyingKey) {
        let ec = |nid| {
            let key = EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap();
            PKey::from_ec_key(key).unwrap()
        };
        let private = match kind {
            KeyKind::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            KeyKind::P256 => ec(Nid::X9_62_PRIME256V1),
            KeyKind::P384 => ec(Nid::SECP384R1),
            KeyKind::Ed25519 => PKey::generate_ed25519().unwrap(),
            KeyKind::Hmac => PKey::hmac(&[7; 32]).unwrap(),
        };
        let public = public_of(&private, kind);
        (private, public)
    }

    /// The verifying key of `private`, made the way a JWK's members make it.
    pub fn public_of<T: HasPublic>(private: &PKey<T>, kind: KeyKind) -> VerifyingKey {
        match kind {
            KeyKind::Rsa => {
                let rsa = private.rsa().unwrap();
                VerifyingKey::rsa(&rsa.n().to_vec(), &rsa.e().to_vec()).unwrap()
            }
            KeyKind::P256 | KeyKind::P384 => {
                let ec = private.ec_key().unwrap();
                let mut ctx = openssl::bn::BigNumContext::new().unwrap();
                let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                    .unwrap();
                let size = if kind == KeyKind::P256 { 32 } else { 48 };
                VerifyingKey::ec(
                    kind,
                    &x.to_vec_padded(size).unwrap(),
                    &y.to_vec_padded(size).unwrap(),
                )
                .unwrap()
            }
            KeyKind::Ed25519 => VerifyingKey::ed25519(&private.raw_public_key().unwrap()).unwrap(),
            KeyKind::Hmac => VerifyingKey::hmac(&[7; 32]).unwrap(),
        }
    }

    #[test]
    fn every_algorithm_verifies_its_own_signatures_only() {
        let kinds = [
            KeyKind::Rsa,
            KeyKind::P256,
            KeyKind::P384,
            KeyKind::Ed25519,
            KeyKind::Hmac,
        ];
        let pairs: Vec<_> = kinds.iter().map(|k| (*k, pair(*k))).collect();
        for alg in Alg::ALL {
            let (_, (private, public)) = pairs.iter().find(|(k, _)| *k == alg.key_kind()).unwrap();
            let input = b"eyJhbGciOiJ4In0.eyJzdWIiOiJhIn0";
            let signature = sign(private, alg, input);
            assert_eq!(public.verify(alg, input, &signature), Ok(()), "{alg:?}");
            let mut flipped = signature.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert_eq!(
                public.verify(alg, input, &flipped),
                Err(SignatureError::Invalid),
                "{alg:?} flipped bit"
            );
            assert_eq!(
                public.verify(alg, b"eyJhbGciOiJ4In0.eyJzdWIiOiJiIn0", &signature),
                Err(SignatureError::Invalid),
                "{alg:?} other input"
            );
            assert_eq!(
                public.verify(alg, input, &signature[..signature.len() - 1]),
                Err(SignatureError::Invalid)
            );
            assert_eq!(public.verify(alg, input, &[]), Err(SignatureError::Invalid));
            for (kind, (_, other)) in &pairs {
                if *kind != alg.key_kind() {
                    assert_eq!(
                        other.verify(alg, input, &signature),
                        Err(SignatureError::WrongKeyKind),
                        "{alg:?} with a {kind:?} key"
                    );
                }
            }
        }
    }

    #[test]
    fn rs_and_ps_signatures_are_not_interchangeable() {
        let (private, public) = pair(KeyKind::Rsa);
        let input = b"a.b";
        let rs = sign(&private, Alg::RS256, input);
        assert_eq!(
            public.verify(Alg::PS256, input, &rs),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            public.verify(Alg::RS384, input, &rs),
            Err(SignatureError::Invalid)
        );
    }

    /// The classic confusion: a token signed with HMAC whose secret is the
    /// RSA public key's PEM, presented as HS256 to a verifier holding that
    /// public key. The RSA key never computes an HMAC.
    #[test]
    fn an_rsa_public_key_is_never_an_hmac_secret() {
        let (private, public) = pair(KeyKind::Rsa);
        let pem = private.public_key_to_pem().unwrap();
        let der = private.public_key_to_der().unwrap();
        for secret in [pem, der] {
            let hmac = PKey::hmac(&secret).unwrap();
            let input = b"eyJhbGciOiJIUzI1NiJ9.e30";
            let mac = sign(&hmac, Alg::HS256, input);
            assert_eq!(
                public.verify(Alg::HS256, input, &mac),
                Err(SignatureError::WrongKeyKind)
            );
        }
    }

    #[test]
    fn ecdsa_signatures_must_be_r_and_s_of_the_curve_size() {
        let (private, public) = pair(KeyKind::P256);
        let input = b"a.b";
        let raw = sign(&private, Alg::ES256, input);
        // The DER form OpenSSL produces is not a JWS signature.
        let der = EcdsaSig::from_private_components(
            BigNum::from_slice(&raw[..32]).unwrap(),
            BigNum::from_slice(&raw[32..]).unwrap(),
        )
        .unwrap()
        .to_der()
        .unwrap();
        assert_eq!(
            public.verify(Alg::ES256, input, &der),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            public.verify(Alg::ES256, input, &[0; 64]),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            public.verify(Alg::ES256, input, &[0xff; 64]),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn key_material_is_checked_when_made() {
        let small = Rsa::generate(1024).unwrap();
        assert_eq!(
            VerifyingKey::rsa(&small.n().to_vec(), &small.e().to_vec()).unwrap_err(),
            KeyError::RsaSize(1024)
        );
        let big = Rsa::generate(2048).unwrap();
        for e in [&[][..], &[1], &[2], &[1, 0, 0], &[1; 9]] {
            assert_eq!(
                VerifyingKey::rsa(&big.n().to_vec(), e).unwrap_err(),
                KeyError::RsaExponent,
                "{e:?}"
            );
        }
        assert_eq!(
            VerifyingKey::ec(KeyKind::P256, &[1; 32], &[2; 32]).unwrap_err(),
            KeyError::EcPointInvalid
        );
        assert_eq!(
            VerifyingKey::ec(KeyKind::P256, &[1; 31], &[2; 32]).unwrap_err(),
            KeyError::EcCoordinateLength
        );
        assert_eq!(
            VerifyingKey::ec(KeyKind::P384, &[1; 32], &[2; 32]).unwrap_err(),
            KeyError::EcCoordinateLength
        );
        // Coordinates past the field's prime are not reduced into a point.
        assert_eq!(
            VerifyingKey::ec(KeyKind::P256, &[0xff; 32], &[0xff; 32]).unwrap_err(),
            KeyError::EcPointInvalid
        );
        assert_eq!(
            VerifyingKey::ed25519(&[1; 31]).unwrap_err(),
            KeyError::Ed25519Length
        );
        assert_eq!(
            VerifyingKey::hmac(&[1; 31]).unwrap_err(),
            KeyError::HmacTooShort(31)
        );
        let debug = format!(
            "{:?}",
            VerifyingKey::hmac(b"0123456789abcdef0123456789abcdef").unwrap()
        );
        assert!(!debug.contains("0123"), "{debug}");
    }

    /// A P-256 point of another curve's key is refused: a P-384 key's x
    /// and y cut to 32 bytes is almost never a P-256 point.
    #[test]
    fn a_p256_key_does_not_verify_es384() {
        let (private, public) = pair(KeyKind::P256);
        let input = b"a.b";
        let mut signature = sign(&private, Alg::ES256, input);
        signature.extend([0; 32]);
        assert_eq!(
            public.verify(Alg::ES384, input, &signature),
            Err(SignatureError::WrongKeyKind)
        );
    }
}
