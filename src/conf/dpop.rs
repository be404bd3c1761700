//! `auth_oauth2_token_dpop_*`: what a location accepts of DPoP proofs
//! (RFC 9449) and where it remembers their `jti`, as plain data and the
//! rules that fail `nginx -t`. The checks themselves are `oauth/dpop/`.
//!
//! Bindings need no directive: a token whose verdict carries `cnf` is
//! checked wherever it comes. These settings only tune that check, and
//! `auth_oauth2_token_dpop_require on` refuses unbound tokens.

use crate::metrics::dpop::DpopIds;
use crate::oauth::dpop::binding::BindingPolicy;
use crate::oauth::dpop::client_cert::Cidr;
use crate::oauth::dpop::nonce::NonceKey;
use crate::oauth::dpop::proof::ProofPolicy;
use crate::oauth::jose::alg::{Alg, Algorithms};

use super::cache_args;

/// How old a proof may be when `auth_oauth2_token_dpop_window` is unset.
pub const DEFAULT_WINDOW_S: i64 = 60;
/// The longest window: every proof's `jti` is kept that long.
pub const MAX_WINDOW_S: i64 = 600;
/// The replay store's zone when `auth_oauth2_token_dpop_replay_zone` is unset.
pub const DEFAULT_REPLAY_ZONE: &str = "auth_oauth2_token_dpop_replay";
pub const DEFAULT_REPLAY_ZONE_SIZE: usize = 2 * 1024 * 1024;

/// A location's DPoP settings; `policy` is derived once merged.
#[derive(Debug, Default, Clone)]
pub struct DpopConf {
    /// `auth_oauth2_token_dpop_require`.
    pub require: Option<bool>,
    /// `auth_oauth2_token_dpop_algorithms`.
    pub algorithms: Option<Algorithms>,
    /// `auth_oauth2_token_dpop_window`, in seconds.
    pub window_s: Option<i64>,
    /// `auth_oauth2_token_dpop_origin`: the scheme and authority proofs name
    /// (normalised), instead of the connection's scheme and `Host`.
    pub origin: Option<String>,
    /// `auth_oauth2_token_client_cert_from`: the fronts whose `Client-Cert`
    /// header (RFC 9440) stands for the TLS client certificate.
    pub client_cert_from: Option<Vec<Cidr>>,
    /// `auth_oauth2_token_dpop_nonce_key_file`: server nonces (RFC 9449 §9).
    pub nonce_key: Option<NonceKey>,
    /// `auth_oauth2_token_dpop_replay_zone` (an nginx zone, opaque here),
    /// or the default zone the glue declares for a checking location.
    pub replay_zone: Option<*mut core::ffi::c_void>,
    /// Derived at merge.
    pub proof: ProofPolicy,
    pub binding: BindingPolicy,
    /// The `algs` of the `DPoP` challenge.
    pub algs_text: String,
    /// The series the proofs and bindings count in, once registered.
    pub metrics: Option<DpopIds>,
}

impl DpopConf {
    pub fn inherit(&mut self, prev: &DpopConf) {
        if self.require.is_none() {
            self.require = prev.require;
        }
        if self.algorithms.is_none() {
            self.algorithms = prev.algorithms;
        }
        if self.window_s.is_none() {
            self.window_s = prev.window_s;
        }
        if self.replay_zone.is_none() {
            self.replay_zone = prev.replay_zone;
        }
        if self.origin.is_none() {
            self.origin.clone_from(&prev.origin);
        }
        if self.client_cert_from.is_none() {
            self.client_cert_from.clone_from(&prev.client_cert_from);
        }
        if self.nonce_key.is_none() {
            self.nonce_key.clone_from(&prev.nonce_key);
        }
    }

    /// Derives the policies of a merged block.
    pub fn finish(&mut self) {
        self.proof = ProofPolicy {
            algorithms: self
                .algorithms
                .unwrap_or_else(ProofPolicy::default_algorithms),
            window_s: self.window_s.unwrap_or(DEFAULT_WINDOW_S),
        };
        self.binding = BindingPolicy {
            require_dpop: self.require == Some(true),
        };
        self.algs_text = self.proof.algs_text();
    }
}

/// `auth_oauth2_token_dpop_algorithms`: asymmetric algorithms only (RFC
/// 9449 §4.2: never `none`, never a MAC).
pub fn parse_algorithms(args: &[&[u8]]) -> Result<Algorithms, String> {
    let algorithms = Algorithms::parse(args.iter().copied())?;
    if algorithms.allows(Alg::HS256) {
        return Err(
            "cannot accept HS256: a DPoP proof is signed with a private key (RFC 9449 §4.2)".into(),
        );
    }
    match algorithms.is_empty() {
        true => Err("needs at least one algorithm".into()),
        false => Ok(algorithms),
    }
}

/// `auth_oauth2_token_dpop_window`: a time of 1s to 600s.
pub fn parse_window(arg: &[u8]) -> Result<i64, String> {
    match cache_args::parse_time_ms(arg) {
        Some(ms) if (1000..=MAX_WINDOW_S * 1000).contains(&ms) => Ok(ms / 1000),
        _ => Err(format!("takes a time from 1s to {MAX_WINDOW_S}s")),
    }
}

/// `auth_oauth2_token_dpop_origin URL`.
pub fn parse_origin(arg: &[u8]) -> Result<String, String> {
    crate::oauth::dpop::htu::parse_origin(arg).ok_or_else(|| {
        "takes an http or https URL without path, query or fragment, such as https://api.example.com".into()
    })
}

/// `auth_oauth2_token_client_cert_from CIDR ...`.
pub fn parse_cert_fronts(args: &[&[u8]]) -> Result<Vec<Cidr>, String> {
    args.iter().map(|arg| Cidr::parse(arg)).collect()
}

/// `auth_oauth2_token_dpop_replay_zone NAME:SIZE`.
pub fn parse_replay_zone(arg: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let bad = || "takes NAME:SIZE (a zone of its own, such as dpop_replay:1m)".to_string();
    let colon = arg.iter().rposition(|&b| b == b':').ok_or_else(bad)?;
    let (name, size) = (&arg[..colon], &arg[colon + 1..]);
    if name.is_empty() {
        return Err(bad());
    }
    let size = cache_args::parse_size(size).ok_or_else(bad)?;
    Ok((name.to_vec(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_inheritance() {
        let mut conf = DpopConf::default();
        conf.finish();
        assert_eq!(conf.proof, ProofPolicy::default());
        assert!(!conf.binding.require_dpop);
        assert_eq!(conf.algs_text, "RS256 PS256 ES256 EdDSA");
        let outer = DpopConf {
            require: Some(true),
            window_s: Some(30),
            algorithms: Some(Algorithms::none().with(Alg::ES256)),
            ..DpopConf::default()
        };
        let mut inner = DpopConf::default();
        inner.inherit(&outer);
        inner.finish();
        assert!(inner.binding.require_dpop);
        assert_eq!(inner.proof.window_s, 30);
        assert_eq!(inner.algs_text, "ES256");
    }

    #[test]
    fn directive_arguments() {
        assert!(parse_algorithms(&[b"ES256", b"EdDSA"]).is_ok());
        assert!(parse_algorithms(&[b"ES256", b"HS256"])
            .unwrap_err()
            .contains("HS256"));
        assert!(parse_algorithms(&[b"none"]).is_err());
        assert_eq!(parse_window(b"90s"), Ok(90));
        assert_eq!(parse_window(b"2m"), Ok(120));
        assert!(parse_window(b"0").is_err() && parse_window(b"11m").is_err());
        assert_eq!(
            parse_replay_zone(b"replay:2m"),
            Ok((b"replay".to_vec(), 2 * 1024 * 1024))
        );
        assert!(parse_replay_zone(b"replay").is_err() && parse_replay_zone(b":1m").is_err());
        assert_eq!(
            parse_origin(b"https://API.example:443"),
            Ok("https://api.example".to_string())
        );
        assert!(parse_origin(b"https://api.example/v1").is_err());
    }
}
