//! The JWS algorithms the module verifies (RFC 7518 §3, RFC 8037 §3.1) and
//! what kind of key each one needs. An algorithm names a key type and a
//! hash, never the other way round: a key is used only for the algorithms
//! of its own type, which is what keeps an RSA public key from being taken
//! for an HMAC secret.

/// A JWS `alg` the module can verify. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A shared secret the operator configured (never from a JWKS).
    Hmac,
    Rsa,
    /// An EC key on P-256.
    P256,
    /// An EC key on P-384.
    P384,
    Ed25519,
}

/// The hash an algorithm signs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
    /// EdDSA hashes inside the signature scheme.
    None,
}

impl Alg {
    pub const ALL: [Alg; 10] = [
        Alg::HS256,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The algorithm a header names; `alg` values are case-sensitive
    /// (RFC 7515 §4.1.1), so `rs256` is none of them.
    pub fn parse(name: &[u8]) -> Option<Alg> {
        Alg::ALL
            .into_iter()
            .find(|alg| alg.name().as_bytes() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::HS256 => KeyKind::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyKind::Rsa
            }
            Alg::ES256 => KeyKind::P256,
            Alg::ES384 => KeyKind::P384,
            Alg::EdDSA => KeyKind::Ed25519,
        }
    }

    pub fn hash(self) -> Hash {
        match self {
            Alg::HS256 | Alg::RS256 | Alg::PS256 | Alg::ES256 => Hash::Sha256,
            Alg::RS384 | Alg::PS384 | Alg::ES384 => Hash::Sha384,
            Alg::RS512 | Alg::PS512 => Hash::Sha512,
            Alg::EdDSA => Hash::None,
        }
    }

    /// RSASSA-PSS rather than PKCS #1 v1.5.
    pub fn is_pss(self) -> bool {
        matches!(self, Alg::PS256 | Alg::PS384 | Alg::PS512)
    }

    /// The exact length of a signature, where the algorithm fixes it:
    /// ECDSA's `r || s` (RFC 7518 §3.4), Ed25519 (RFC 8032 §5.1.6), HS256.
    pub fn signature_len(self) -> Option<usize> {
        match self {
            Alg::HS256 => Some(32),
            Alg::ES256 => Some(64),
            Alg::ES384 => Some(96),
            Alg::EdDSA => Some(64),
            _ => None,
        }
    }
}

/// An allow-list of algorithms: a token whose `alg` is not on it is refused
/// before any key is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms(u16);

impl Algorithms {
    /// The asymmetric algorithms: what a JWKS can verify. HS256 is added
    /// only with a configured secret.
    pub fn asymmetric() -> Algorithms {
        Alg::ALL
            .into_iter()
            .filter(|alg| *alg != Alg::HS256)
            .fold(Algorithms::none(), Algorithms::with)
    }

    pub fn none() -> Algorithms {
        Algorithms(0)
    }

    pub fn with(self, alg: Alg) -> Algorithms {
        Algorithms(self.0 | Algorithms::bit(alg))
    }

    pub fn allows(self, alg: Alg) -> bool {
        self.0 & Algorithms::bit(alg) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The list from names (`RS256 ES256 ...`); an unknown name is the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Result<Algorithms, String> {
        names.into_iter().try_fold(Algorithms::none(), |set, name| {
            Alg::parse(name).map(|alg| set.with(alg)).ok_or_else(|| {
                format!(
                    "has an unknown algorithm \"{}\"",
                    String::from_utf8_lossy(name)
                )
            })
        })
    }

    pub fn iter(self) -> impl Iterator<Item = Alg> {
        Alg::ALL.into_iter().filter(move |alg| self.allows(*alg))
    }

    fn bit(alg: Alg) -> u16 {
        1 << Alg::ALL.iter().position(|a| *a == alg).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.name().as_bytes()), Some(alg));
            assert_eq!(Alg::parse(alg.name().to_lowercase().as_bytes()), None);
        }
        for name in ["none", "None", "HS384", "ES512", "RSA-OAEP", "", "RS256 "] {
            assert_eq!(Alg::parse(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn each_algorithm_names_one_key_kind() {
        assert_eq!(Alg::HS256.key_kind(), KeyKind::Hmac);
        for alg in [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS512] {
            assert_eq!(alg.key_kind(), KeyKind::Rsa);
        }
        assert_eq!(Alg::ES256.key_kind(), KeyKind::P256);
        assert_eq!(Alg::ES384.key_kind(), KeyKind::P384);
        assert_eq!(Alg::EdDSA.key_kind(), KeyKind::Ed25519);
        assert!(Alg::PS384.is_pss() && !Alg::RS384.is_pss());
        assert_eq!(Alg::ES384.hash(), Hash::Sha384);
        assert_eq!(Alg::ES384.signature_len(), Some(96));
    }

    #[test]
    fn allow_lists() {
        let set = Algorithms::asymmetric();
        assert!(!set.allows(Alg::HS256));
        assert_eq!(set.iter().count(), 9);
        let set = Algorithms::parse([&b"RS256"[..], b"ES256"]).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![Alg::RS256, Alg::ES256]);
        assert!(!set.allows(Alg::PS256));
        assert!(Algorithms::none().is_empty());
        let err = Algorithms::parse([&b"RS256"[..], b"none"]).unwrap_err();
        assert!(err.contains("\"none\""), "{err}");
    }
}
