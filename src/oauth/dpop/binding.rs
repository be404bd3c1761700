//! Whether the request holds what its token is bound to (the token's
//! `cnf`, `oauth/cnf.rs`), decided for every request, cache hits included:
//!
//! - `cnf.jkt` → the `DPoP` authorization scheme and a valid proof
//!   (`proof.rs`) whose key's thumbprint is the one bound (RFC 9449 §7.1);
//!   a bound token sent as `Bearer` (or from another carrier) is refused
//!   (§7.2);
//! - `cnf.x5t#S256` → this connection's client certificate, whose DER's
//!   SHA-256 is the one bound (RFC 8705 §3);
//! - a `DPoP`-scheme token whose verdict has no `cnf.jkt` is refused: the
//!   IdP did not bind it, and a client that believes it is bound must learn
//!   that it is not;
//! - a `cnf` that cannot be checked refuses the token;
//! - the location may require DPoP: an unbound token is refused.
//!
//! The proof is checked only when a binding asks for it (one signature
//! check per request of a DPoP-bound token, none for a bearer token).

use crate::oauth::cnf::Confirmation;
use crate::oauth::dpop::proof::{Proof, ProofError};

/// How the client presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP` (RFC 9449 §7.1).
    Dpop,
    /// Another carrier (`header=`, `cookie=`, `query=`): a bearer token.
    Other,
}

/// Why the request does not hold what its token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingRefusal {
    #[error("token bound to a DPoP key sent without the DPoP scheme")]
    BoundAsBearer,
    #[error("token sent with the DPoP scheme is not bound to a key")]
    NotDpopBound,
    #[error("location requires DPoP-bound tokens")]
    DpopRequired,
    #[error("DPoP proof refused: {0}")]
    Proof(ProofError),
    #[error("DPoP proof signed by another key than the token's")]
    KeyMismatch,
    #[error("token bound to a client certificate, none presented")]
    NoCertificate,
    #[error("client certificate is not the token's")]
    CertificateMismatch,
    #[error("token's cnf names a confirmation method the module cannot check")]
    Unverifiable,
}

impl BindingRefusal {
    /// The `error_description` of the 401.
    pub fn description(&self) -> &'static str {
        match self {
            BindingRefusal::BoundAsBearer => {
                "the token is bound to a DPoP key: send it with the DPoP scheme and a proof"
            }
            BindingRefusal::NotDpopBound => "the token is not bound to a DPoP key",
            BindingRefusal::DpopRequired => "this resource accepts DPoP-bound tokens only",
            BindingRefusal::Proof(error) => error.description(),
            BindingRefusal::KeyMismatch => "the DPoP proof's key is not the token's",
            BindingRefusal::NoCertificate => {
                "the token is bound to a client certificate and none was presented"
            }
            BindingRefusal::CertificateMismatch => {
                "the client certificate is not the one the token is bound to"
            }
            BindingRefusal::Unverifiable => "the token's confirmation method cannot be checked",
        }
    }

    /// Whether the refusal is about the proof (`invalid_dpop_proof`, RFC
    /// 9449 §7.1) rather than the token (`invalid_token`).
    pub fn is_proof_error(&self) -> bool {
        matches!(self, BindingRefusal::Proof(_) | BindingRefusal::KeyMismatch)
    }

    /// Whether the client should hear about it in the `DPoP` challenge.
    pub fn concerns_dpop(&self) -> bool {
        !matches!(
            self,
            BindingRefusal::NoCertificate
                | BindingRefusal::CertificateMismatch
                | BindingRefusal::Unverifiable
        )
    }
}

/// What the location asks beyond the token's own binding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindingPolicy {
    /// `auth_oauth2_token_dpop require`: unbound tokens are refused.
    pub require_dpop: bool,
}

/// Decides the request: `Ok(Some(proof))` when a proof was checked (its
/// `jti` goes to the replay store next), `Ok(None)` when none was needed.
/// `certificate` is the SHA-256 of the client certificate's DER, when the
/// connection has one; `proof` checks the request's proof when called.
pub fn decide(
    cnf: &Confirmation,
    scheme: Scheme,
    policy: BindingPolicy,
    certificate: Option<&[u8; 32]>,
    proof: impl FnOnce() -> Result<Proof, ProofError>,
) -> Result<Option<Proof>, BindingRefusal> {
    if *cnf == Confirmation::Unverifiable {
        return Err(BindingRefusal::Unverifiable);
    }
    let jkt = cnf.jkt();
    match (jkt, scheme) {
        (None, Scheme::Dpop) => return Err(BindingRefusal::NotDpopBound),
        (None, _) if policy.require_dpop => return Err(BindingRefusal::DpopRequired),
        (Some(_), Scheme::Bearer | Scheme::Other) => return Err(BindingRefusal::BoundAsBearer),
        _ => {}
    }
    if let Some(bound) = cnf.x5t_s256() {
        match certificate {
            None => return Err(BindingRefusal::NoCertificate),
            Some(presented) if !openssl::memcmp::eq(presented, bound) => {
                return Err(BindingRefusal::CertificateMismatch)
            }
            Some(_) => {}
        }
    }
    let Some(jkt) = jkt else {
        return Ok(None);
    };
    let proof = proof().map_err(BindingRefusal::Proof)?;
    match proof.jkt == *jkt {
        true => Ok(Some(proof)),
        false => Err(BindingRefusal::KeyMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [1; 32];
    const CERT: [u8; 32] = [2; 32];

    fn proof(jkt: [u8; 32]) -> Proof {
        Proof {
            jkt,
            replay_id: [9; 32],
            remember_until_s: 60,
            nonce_stale: false,
        }
    }

    fn jkt() -> Confirmation {
        Confirmation::Bound {
            jkt: Some(KEY),
            x5t_s256: None,
        }
    }

    fn x5t() -> Confirmation {
        Confirmation::Bound {
            jkt: None,
            x5t_s256: Some(CERT),
        }
    }

    fn unreachable_proof() -> Result<Proof, ProofError> {
        panic!("no proof is checked here")
    }

    #[test]
    fn bearer_tokens_pass_as_before() {
        for scheme in [Scheme::Bearer, Scheme::Other] {
            assert_eq!(
                decide(
                    &Confirmation::Unbound,
                    scheme,
                    BindingPolicy::default(),
                    None,
                    unreachable_proof
                ),
                Ok(None)
            );
        }
        let required = BindingPolicy { require_dpop: true };
        assert_eq!(
            decide(
                &Confirmation::Unbound,
                Scheme::Bearer,
                required,
                None,
                unreachable_proof
            ),
            Err(BindingRefusal::DpopRequired)
        );
    }

    #[test]
    fn dpop_bound_tokens_need_their_key() {
        let p = BindingPolicy::default();
        assert_eq!(
            decide(&jkt(), Scheme::Dpop, p, None, || Ok(proof(KEY))),
            Ok(Some(proof(KEY)))
        );
        assert_eq!(
            decide(&jkt(), Scheme::Dpop, p, None, || Ok(proof([3; 32]))),
            Err(BindingRefusal::KeyMismatch)
        );
        assert_eq!(
            decide(&jkt(), Scheme::Dpop, p, None, || Err(ProofError::Missing)),
            Err(BindingRefusal::Proof(ProofError::Missing))
        );
        for scheme in [Scheme::Bearer, Scheme::Other] {
            assert_eq!(
                decide(&jkt(), scheme, p, None, unreachable_proof),
                Err(BindingRefusal::BoundAsBearer)
            );
        }
        for cnf in [Confirmation::Unbound, x5t()] {
            assert_eq!(
                decide(&cnf, Scheme::Dpop, p, Some(&CERT), unreachable_proof),
                Err(BindingRefusal::NotDpopBound)
            );
        }
    }

    #[test]
    fn certificate_bound_tokens_need_their_certificate() {
        let p = BindingPolicy::default();
        assert_eq!(
            decide(&x5t(), Scheme::Bearer, p, Some(&CERT), unreachable_proof),
            Ok(None)
        );
        assert_eq!(
            decide(&x5t(), Scheme::Bearer, p, None, unreachable_proof),
            Err(BindingRefusal::NoCertificate)
        );
        assert_eq!(
            decide(&x5t(), Scheme::Other, p, Some(&KEY), unreachable_proof),
            Err(BindingRefusal::CertificateMismatch)
        );
        let both = Confirmation::Bound {
            jkt: Some(KEY),
            x5t_s256: Some(CERT),
        };
        assert_eq!(
            decide(&both, Scheme::Dpop, p, None, unreachable_proof),
            Err(BindingRefusal::NoCertificate)
        );
        assert_eq!(
            decide(&both, Scheme::Dpop, p, Some(&CERT), || Ok(proof(KEY))),
            Ok(Some(proof(KEY)))
        );
    }

    #[test]
    fn what_cannot_be_checked_is_refused() {
        for scheme in [Scheme::Bearer, Scheme::Dpop, Scheme::Other] {
            assert_eq!(
                decide(
                    &Confirmation::Unverifiable,
                    scheme,
                    BindingPolicy::default(),
                    Some(&CERT),
                    unreachable_proof
                ),
                Err(BindingRefusal::Unverifiable)
            );
        }
    }

    #[test]
    fn descriptions_fit_in_a_challenge() {
        for refusal in [
            BindingRefusal::BoundAsBearer,
            BindingRefusal::NotDpopBound,
            BindingRefusal::DpopRequired,
            BindingRefusal::Proof(ProofError::Stale),
            BindingRefusal::KeyMismatch,
            BindingRefusal::NoCertificate,
            BindingRefusal::CertificateMismatch,
            BindingRefusal::Unverifiable,
        ] {
            let text = refusal.description();
            assert!(
                text.bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{text}"
            );
        }
        assert!(BindingRefusal::KeyMismatch.is_proof_error());
        assert!(!BindingRefusal::BoundAsBearer.is_proof_error());
        assert!(!BindingRefusal::NoCertificate.concerns_dpop());
    }
}
