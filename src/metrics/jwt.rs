//! The series of JWT access tokens checked at the gateway: how many were
//! verified and, for the others, which check refused them (a counter per
//! result), and the fetches of issuers' key sets by result. They exist
//! only when a location has `auth_oauth2_token_jwt on`, which makes them
//! ([`Catalogue::jwt`]).

use std::fmt::Write as _;

use super::{label_value, Catalogue, Family, Series};
use crate::oauth::jose::access_token::Refusal;

/// The counters' names.
pub const CHECKS: &str = "oauth2_token_jwt_checks_total";
pub const FETCHES: &str = "oauth2_token_jwks_fetches_total";
pub const KEYS: &str = "oauth2_token_jwks_keys";
pub const FETCHED_AT: &str = "oauth2_token_jwks_fetched_timestamp_seconds";

/// The gauges of one issuer's fetched key set, as this worker last saw
/// it: its key count, and when it was fetched (seconds since the epoch:
/// its age is `time() - oauth2_token_jwks_fetched_timestamp_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySetIds {
    base: usize,
}

impl KeySetIds {
    pub fn keys(self) -> usize {
        self.base
    }

    pub fn fetched_at(self) -> usize {
        self.base + 1
    }
}

/// What became of a fetch of an issuer's key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Fetched,
    /// No answer, or not a `200`.
    Failed,
    /// An answer that is no usable key set.
    Refused,
}

impl FetchResult {
    pub const ALL: [FetchResult; 3] = [
        FetchResult::Fetched,
        FetchResult::Failed,
        FetchResult::Refused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FetchResult::Fetched => "fetched",
            FetchResult::Failed => "failed",
            FetchResult::Refused => "refused",
        }
    }
}

/// What became of a token the gateway checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtResult {
    Verified,
    /// Not a JWS the module checks (shape, header, `none`, `crit`), or an
    /// algorithm off the allow-list.
    Malformed,
    /// No key of the set for its `kid` and algorithm.
    NoKey,
    Signature,
    /// `typ`, `iss`, `aud`, a claim of the wrong type or unsafe in a header.
    Claims,
    /// `exp`, `nbf`, `iat`.
    Lifetime,
    /// Not checked: no key set could be had (503).
    KeysUnavailable,
}

impl JwtResult {
    pub const ALL: [JwtResult; 7] = [
        JwtResult::Verified,
        JwtResult::Malformed,
        JwtResult::NoKey,
        JwtResult::Signature,
        JwtResult::Claims,
        JwtResult::Lifetime,
        JwtResult::KeysUnavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JwtResult::Verified => "verified",
            JwtResult::Malformed => "malformed",
            JwtResult::NoKey => "no_key",
            JwtResult::Signature => "signature",
            JwtResult::Claims => "claims",
            JwtResult::Lifetime => "lifetime",
            JwtResult::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The result a refusal counts as.
    pub fn of(refusal: &Refusal) -> JwtResult {
        match refusal {
            Refusal::Malformed(_) | Refusal::AlgorithmNotAllowed | Refusal::BadPayload => {
                JwtResult::Malformed
            }
            Refusal::NoKey => JwtResult::NoKey,
            Refusal::BadSignature => JwtResult::Signature,
            Refusal::NoExpiry
            | Refusal::Expired
            | Refusal::NotYetValid
            | Refusal::IssuedInFuture => JwtResult::Lifetime,
            Refusal::WrongType
            | Refusal::NoIssuer
            | Refusal::WrongIssuer
            | Refusal::BadClaim(_)
            | Refusal::NoAudience
            | Refusal::WrongAudience
            | Refusal::UnsafeClaim(_) => JwtResult::Claims,
        }
    }
}

/// The series' ids: one counter per result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtIds {
    base: usize,
}

impl JwtIds {
    pub fn result(self, result: JwtResult) -> usize {
        self.base + result as usize
    }

    pub fn fetch(self, result: FetchResult) -> usize {
        self.base + JwtResult::ALL.len() + result as usize
    }
}

impl Catalogue {
    /// The JWT series, made on first use.
    pub fn jwt(&mut self) -> JwtIds {
        if let Some(ids) = self.jwt_ids() {
            return ids;
        }
        let base = self.series.len();
        let names = JwtResult::ALL.map(JwtResult::name).into_iter();
        for name in names.chain(FetchResult::ALL.map(FetchResult::name)) {
            self.series.push(Series {
                family: Family::Jwt,
                labels: format!("{{result=\"{name}\"}}"),
            });
        }
        JwtIds { base }
    }

    /// The gauges of the key set of `issuer` (locations sharing an issuer
    /// share them), made on first use: two series in a row.
    pub fn key_set(&mut self, issuer: &str) -> KeySetIds {
        let labels = format!("{{issuer=\"{}\"}}", label_value(issuer));
        let known = self
            .series
            .iter()
            .position(|s| s.family == Family::KeySetKeys && s.labels == labels);
        if let Some(base) = known {
            return KeySetIds { base };
        }
        let base = self.series.len();
        for family in [Family::KeySetKeys, Family::KeySetFetchedAt] {
            self.series.push(Series {
                family,
                labels: labels.clone(),
            });
        }
        KeySetIds { base }
    }

    /// The key sets' gauges in the Prometheus text, when there are any.
    pub(super) fn render_key_sets(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let families = [
            (
                KEYS,
                "Keys in the issuer's fetched JWK Set.",
                Family::KeySetKeys,
            ),
            (
                FETCHED_AT,
                "When the issuer's JWK Set was last fetched, in seconds since the epoch.",
                Family::KeySetFetchedAt,
            ),
        ];
        for (name, help, family) in families {
            let mut ids = (0..self.series.len())
                .filter(|&id| self.series[id].family == family)
                .peekable();
            if ids.peek().is_none() {
                return;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for id in ids {
                let _ = writeln!(out, "{name}{} {}", self.series[id].labels, value(id));
            }
        }
    }

    fn jwt_ids(&self) -> Option<JwtIds> {
        let base = self.series.iter().position(|s| s.family == Family::Jwt)?;
        Some(JwtIds { base })
    }

    /// The JWT family in the Prometheus text, when the configuration has it.
    pub(super) fn render_jwt(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let Some(ids) = self.jwt_ids() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {CHECKS} JWT access tokens checked at the gateway, by result.\n# TYPE {CHECKS} counter"
        );
        for result in JwtResult::ALL {
            let id = ids.result(result);
            let _ = writeln!(out, "{CHECKS}{} {}", self.series[id].labels, value(id));
        }
        let _ = writeln!(
            out,
            "# HELP {FETCHES} Fetches of issuers' JWK Sets, by result.\n# TYPE {FETCHES} counter"
        );
        for result in FetchResult::ALL {
            let id = ids.fetch(result);
            let _ = writeln!(out, "{FETCHES}{} {}", self.series[id].labels, value(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jose::jws::JwsError;

    #[test]
    fn the_series_exist_only_when_made_and_render() {
        let mut c = Catalogue::new();
        assert!(!c.render(|_| 0, &[]).contains(CHECKS));
        let ids = c.jwt();
        assert_eq!(c.jwt(), ids, "made once");
        let text = c.render(
            |id| (id == ids.result(JwtResult::Signature)) as u64 * 7,
            &[],
        );
        assert!(
            text.contains("# TYPE oauth2_token_jwt_checks_total counter"),
            "{text}"
        );
        assert!(
            text.contains("oauth2_token_jwt_checks_total{result=\"signature\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("oauth2_token_jwt_checks_total{result=\"verified\"} 0"),
            "{text}"
        );
        let set = c.key_set("https://idp.\"x\"");
        assert_eq!(c.key_set("https://idp.\"x\""), set, "one per issuer");
        let other = c.key_set("https://other");
        let text = c.render(
            |id| match id {
                id if id == set.keys() => 4,
                id if id == other.fetched_at() => 1_800_000_000,
                id => (id == ids.fetch(FetchResult::Refused)) as u64 * 3,
            },
            &[],
        );
        assert!(
            text.contains("# TYPE oauth2_token_jwks_keys gauge\noauth2_token_jwks_keys{issuer=\"https://idp.\\\"x\\\"\"} 4\noauth2_token_jwks_keys{issuer=\"https://other\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "oauth2_token_jwks_fetched_timestamp_seconds{issuer=\"https://other\"} 1800000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("oauth2_token_jwks_fetches_total{result=\"refused\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("oauth2_token_jwks_fetches_total{result=\"fetched\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn refusals_count_by_the_check_that_failed() {
        assert_eq!(
            JwtResult::of(&Refusal::Malformed(JwsError::Unsecured)),
            JwtResult::Malformed
        );
        assert_eq!(
            JwtResult::of(&Refusal::AlgorithmNotAllowed),
            JwtResult::Malformed
        );
        assert_eq!(JwtResult::of(&Refusal::NoKey), JwtResult::NoKey);
        assert_eq!(JwtResult::of(&Refusal::BadSignature), JwtResult::Signature);
        assert_eq!(JwtResult::of(&Refusal::Expired), JwtResult::Lifetime);
        assert_eq!(JwtResult::of(&Refusal::WrongAudience), JwtResult::Claims);
    }
}
