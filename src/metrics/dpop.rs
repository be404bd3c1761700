//! The series of sender-constrained tokens: DPoP proofs by result, and the
//! bindings refused for another reason than the proof (a counter each).
//! They exist once a location checks tokens (introspection or
//! `auth_oauth2_token_jwt on`), which makes them ([`Catalogue::dpop`]).

use std::fmt::Write as _;

use super::{Catalogue, Family, Series};
use crate::oauth::dpop::binding::BindingRefusal;

/// The counters' names.
pub const PROOFS: &str = "oauth2_token_dpop_proofs_total";
pub const BINDINGS: &str = "oauth2_token_bindings_refused_total";

/// What became of a DPoP proof the gateway checked.
pub const PROOF_RESULTS: [&str; 14] = [
    "valid",
    "missing",
    "malformed",
    "bad_key",
    "bad_signature",
    "htm_htu_mismatch",
    "stale",
    "ath_mismatch",
    "nonce_required",
    "key_mismatch",
    "replayed",
    "store_full",
    // The fleet's store (Redis): refused, another gateway accepted the
    // proof before; accepted by this gateway's store alone, Redis failed.
    "replayed_fleet",
    "valid_local_only",
];

/// Why a binding refused a token, when not for its proof.
pub const BINDING_REASONS: [&str; 6] = [
    "bearer_scheme",
    "not_dpop_bound",
    "dpop_required",
    "no_certificate",
    "certificate_mismatch",
    "unverifiable",
];

/// The series a refusal counts in: `(proof result)` or `(binding reason)`.
pub fn counted_as(refusal: &BindingRefusal) -> Result<&'static str, &'static str> {
    match refusal {
        BindingRefusal::Proof(error) => Ok(error.result()),
        BindingRefusal::KeyMismatch => Ok("key_mismatch"),
        BindingRefusal::BoundAsBearer => Err("bearer_scheme"),
        BindingRefusal::NotDpopBound => Err("not_dpop_bound"),
        BindingRefusal::DpopRequired => Err("dpop_required"),
        BindingRefusal::NoCertificate => Err("no_certificate"),
        BindingRefusal::CertificateMismatch => Err("certificate_mismatch"),
        BindingRefusal::Unverifiable => Err("unverifiable"),
    }
}

/// The series' ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpopIds {
    base: usize,
}

impl DpopIds {
    /// The proof counter of `result` (one of [`PROOF_RESULTS`]).
    pub fn proof(self, result: &str) -> Option<usize> {
        let i = PROOF_RESULTS.iter().position(|r| *r == result)?;
        Some(self.base + i)
    }

    /// The binding counter of `reason` (one of [`BINDING_REASONS`]).
    pub fn binding(self, reason: &str) -> Option<usize> {
        let i = BINDING_REASONS.iter().position(|r| *r == reason)?;
        Some(self.base + PROOF_RESULTS.len() + i)
    }
}

impl Catalogue {
    /// The DPoP series, made on first use.
    pub fn dpop(&mut self) -> DpopIds {
        if let Some(ids) = self.dpop_ids() {
            return ids;
        }
        let base = self.series.len();
        for result in PROOF_RESULTS {
            self.series.push(Series {
                family: Family::Dpop,
                labels: format!("{{result=\"{result}\"}}"),
            });
        }
        for reason in BINDING_REASONS {
            self.series.push(Series {
                family: Family::Dpop,
                labels: format!("{{reason=\"{reason}\"}}"),
            });
        }
        DpopIds { base }
    }

    fn dpop_ids(&self) -> Option<DpopIds> {
        let base = self.series.iter().position(|s| s.family == Family::Dpop)?;
        Some(DpopIds { base })
    }

    /// The DPoP families in the Prometheus text, when the configuration has them.
    pub(super) fn render_dpop(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let Some(ids) = self.dpop_ids() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {PROOFS} DPoP proofs checked for DPoP-bound tokens, by result.\n# TYPE {PROOFS} counter"
        );
        for result in PROOF_RESULTS {
            let id = ids.proof(result).unwrap_or(0);
            let _ = writeln!(out, "{PROOFS}{} {}", self.series[id].labels, value(id));
        }
        let _ = writeln!(
            out,
            "# HELP {BINDINGS} Bound tokens refused for another reason than their proof, by reason.\n# TYPE {BINDINGS} counter"
        );
        for reason in BINDING_REASONS {
            let id = ids.binding(reason).unwrap_or(0);
            let _ = writeln!(out, "{BINDINGS}{} {}", self.series[id].labels, value(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::dpop::proof::ProofError;

    #[test]
    fn every_refusal_has_a_series() {
        let mut catalogue = Catalogue::default();
        let ids = catalogue.dpop();
        assert_eq!(catalogue.dpop(), ids);
        for refusal in [
            BindingRefusal::Proof(ProofError::Missing),
            BindingRefusal::Proof(ProofError::Stale),
            BindingRefusal::Proof(ProofError::WrongAth),
            BindingRefusal::KeyMismatch,
            BindingRefusal::BoundAsBearer,
            BindingRefusal::NotDpopBound,
            BindingRefusal::DpopRequired,
            BindingRefusal::NoCertificate,
            BindingRefusal::CertificateMismatch,
            BindingRefusal::Unverifiable,
        ] {
            match counted_as(&refusal) {
                Ok(result) => assert!(ids.proof(result).is_some(), "{refusal:?}"),
                Err(reason) => assert!(ids.binding(reason).is_some(), "{refusal:?}"),
            }
        }
        let mut text = String::new();
        catalogue.render_dpop(&mut text, &|id| id as u64);
        let replayed = ids.proof("replayed").unwrap();
        let unverifiable = ids.binding("unverifiable").unwrap();
        assert_eq!(unverifiable, replayed + 9);
        assert_eq!(ids.proof("replayed_fleet"), Some(replayed + 2));
        assert!(ids.proof("valid_local_only").is_some());
        assert!(ids.proof("nonce_required").is_some());
        assert!(text.contains(&format!(
            "oauth2_token_dpop_proofs_total{{result=\"replayed\"}} {replayed}\n"
        )));
        assert!(text.contains(&format!(
            "oauth2_token_bindings_refused_total{{reason=\"unverifiable\"}} {unverifiable}\n"
        )));
    }
}
