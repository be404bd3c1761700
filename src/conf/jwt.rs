//! `auth_oauth2_token_jwt_*`: JWT access tokens checked at the gateway
//! (RFC 9068) with keys from a local JWK Set file, as plain data and the
//! rules that fail `nginx -t`. The checks themselves are `oauth/jose/`.

use super::cache_args::{self, CacheArgs};
use super::endpoint::CacheConf;
use crate::metrics::jwt::JwtIds;
use crate::oauth::cache::key::{CacheKey, KeyScope};
use crate::oauth::jose::access_token::{AccessTokenPolicy, MAX_LEEWAY_S};
use crate::oauth::jose::alg::{Alg, Algorithms};
use crate::oauth::jose::jwk::{self, Jwk};
use crate::oauth::verdict::AudienceRule;

/// The clock difference tolerated when `auth_oauth2_token_jwt_leeway` is unset.
pub const DEFAULT_LEEWAY_S: i64 = 30;

/// A location's JWT settings; `policy` is derived once merged.
#[derive(Debug, Default, Clone)]
pub struct JwtConf {
    /// `auth_oauth2_token_jwt`: turns the check on.
    pub on: Option<bool>,
    /// `auth_oauth2_token_jwt_issuer`.
    pub issuer: Option<String>,
    /// `auth_oauth2_token_jwt_keys_file`: the file, as named, and its keys.
    pub keys_file: Option<(String, Vec<Jwk>)>,
    /// `auth_oauth2_token_jwt_secret_file`: the HS256 secret as a key.
    pub secret: Option<Jwk>,
    /// `auth_oauth2_token_jwt_algorithms`.
    pub algorithms: Option<Algorithms>,
    /// `auth_oauth2_token_jwt_leeway`, in seconds.
    pub leeway_s: Option<i64>,
    /// `auth_oauth2_token_jwt_typ relaxed`.
    pub typ_relaxed: Option<bool>,
    /// `auth_oauth2_token_jwt_cache`.
    pub cache: Option<CacheConf>,
    /// Derived at merge: what a token must meet, and the keys it is checked with.
    pub policy: Option<AccessTokenPolicy>,
    pub keys: Vec<Jwk>,
    /// Derived once the server block is known: what the cache keys include
    /// besides the token.
    pub key_scope: KeyScope,
    /// The series the checks count in, once registered.
    pub metrics: Option<JwtIds>,
}

impl JwtConf {
    pub fn enabled(&self) -> bool {
        self.policy.is_some()
    }

    /// Takes what the enclosing block set, unless this block sets it.
    pub fn inherit(&mut self, prev: &JwtConf) {
        fn take<T: Clone>(own: &mut Option<T>, outer: &Option<T>) {
            if own.is_none() {
                own.clone_from(outer);
            }
        }
        take(&mut self.on, &prev.on);
        take(&mut self.issuer, &prev.issuer);
        take(&mut self.keys_file, &prev.keys_file);
        take(&mut self.secret, &prev.secret);
        take(&mut self.algorithms, &prev.algorithms);
        take(&mut self.leeway_s, &prev.leeway_s);
        take(&mut self.typ_relaxed, &prev.typ_relaxed);
        if self.cache.is_none() {
            self.cache = prev.cache;
        }
    }

    /// Derives the policy and the key list of a merged block, or says which
    /// directive is missing or at odds. `audience` is the block's
    /// `auth_oauth2_token_require_audience` (RFC 9068 §4: the audience
    /// must be checked).
    pub fn finish(&mut self, audience: Option<&AudienceRule>) -> Result<(), String> {
        if self.on != Some(true) {
            return Ok(());
        }
        let Some(issuer) = &self.issuer else {
            return Err(
                "\"auth_oauth2_token_jwt\" is on but \"auth_oauth2_token_jwt_issuer\" is not set"
                    .into(),
            );
        };
        let Some(audience) = audience else {
            return Err("\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_require_audience\": RFC 9068 §4 asks that a JWT access token's audience be checked".into());
        };
        let algorithms = self.algorithms.unwrap_or_else(Algorithms::asymmetric);
        let mut keys = self
            .keys_file
            .as_ref()
            .map(|(_, keys)| keys.clone())
            .unwrap_or_default();
        match (&self.secret, algorithms.allows(Alg::HS256)) {
            (Some(secret), true) => keys.push(secret.clone()),
            (Some(_), false) => return Err("\"auth_oauth2_token_jwt_secret_file\" is set but HS256 is not among \"auth_oauth2_token_jwt_algorithms\"".into()),
            (None, true) => return Err("HS256 in \"auth_oauth2_token_jwt_algorithms\" needs \"auth_oauth2_token_jwt_secret_file\": an HMAC key never comes from a key set".into()),
            (None, false) => {}
        }
        if !keys
            .iter()
            .any(|key| algorithms.iter().any(|alg| key.verifies(alg)))
        {
            return Err(match &self.keys_file {
                Some((name, _)) => format!("\"auth_oauth2_token_jwt\" has no key: none in \"{name}\" verifies an algorithm of \"auth_oauth2_token_jwt_algorithms\""),
                None => "\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_jwt_keys_file\"".into(),
            });
        }
        self.policy = Some(AccessTokenPolicy {
            issuer: issuer.clone(),
            audiences: audience.accepted.clone(),
            algorithms,
            leeway_s: self.leeway_s.unwrap_or(DEFAULT_LEEWAY_S),
            typ_relaxed: self.typ_relaxed.unwrap_or(false),
        });
        self.keys = keys;
        Ok(())
    }

    /// What decides a verified token's verdict besides the token: the
    /// policy and each key (its `kid`, `alg` and thumbprint), as a digest.
    /// A key file that changes, or another issuer or audience, never
    /// reads entries verified under the old ones.
    pub fn fingerprint(&self) -> [u8; 32] {
        let Some(policy) = &self.policy else {
            return [0; 32];
        };
        let leeway = policy.leeway_s.to_be_bytes();
        let algorithms: Vec<u8> = policy.algorithms.iter().map(|a| a as u8).collect();
        let mut parts: Vec<&[u8]> = vec![
            b"jwt",
            policy.issuer.as_bytes(),
            &leeway,
            &algorithms,
            if policy.typ_relaxed {
                b"relaxed"
            } else {
                b"strict"
            },
            b"audiences",
        ];
        parts.extend(policy.audiences.iter().map(|a| a.as_bytes()));
        parts.push(b"keys");
        for key in &self.keys {
            parts.push(key.kid.as_deref().unwrap_or_default().as_bytes());
            parts.push(key.alg.map_or("", Alg::name).as_bytes());
            parts.push(key.thumbprint.as_bytes());
        }
        CacheKey::from_parts(&parts).0
    }
}

/// `auth_oauth2_token_jwt_keys_file`'s contents: a JWK Set of public keys.
pub fn keys_from_file(contents: &[u8]) -> Result<Vec<Jwk>, String> {
    let keys = jwk::parse_jwks(contents).map_err(|e| format!("is not a usable JWK Set: {e}"))?;
    match keys.is_empty() {
        true => Err("holds no key the module can verify with".into()),
        false => Ok(keys),
    }
}

/// `auth_oauth2_token_jwt_leeway TIME`: whole seconds, at most 10 minutes.
pub fn parse_leeway(ms: Option<i64>) -> Result<i64, String> {
    match ms {
        Some(ms) if ms % 1000 == 0 && ms / 1000 <= MAX_LEEWAY_S => Ok(ms / 1000),
        _ => Err(format!(
            "needs a time in whole seconds, at most {MAX_LEEWAY_S}s"
        )),
    }
}

/// `auth_oauth2_token_jwt_cache zone=NAME:SIZE [max_ttl=TIME]`: a verified
/// token needs no IdP, so nothing is served stale, refreshed or cached
/// negative.
pub fn parse_cache(args: &[&[u8]]) -> Result<CacheArgs, String> {
    let other = [&b"negative_ttl="[..], b"stale_if_error=", b"refresh="];
    if let Some(arg) = args.iter().find(|a| other.iter().any(|p| a.starts_with(p))) {
        return Err(format!(
            "has an unknown parameter \"{}\"",
            String::from_utf8_lossy(arg)
        ));
    }
    cache_args::parse(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jose::alg::KeyKind;
    use crate::oauth::jose::jwk::tests::jwk_json;
    use crate::oauth::jose::key::tests::pair;

    fn keys(extra: &str) -> Vec<Jwk> {
        let (ec, _) = pair(KeyKind::P256);
        let set = format!(r#"{{"keys":[{}]}}"#, jwk_json(&ec, KeyKind::P256, extra));
        keys_from_file(set.as_bytes()).unwrap()
    }

    fn audience() -> AudienceRule {
        AudienceRule {
            accepted: vec!["api".into()],
            index: 0,
        }
    }

    fn configured() -> JwtConf {
        JwtConf {
            on: Some(true),
            issuer: Some("https://idp.example".into()),
            keys_file: Some(("jwks.json".into(), keys(r#","kid":"k1""#))),
            ..JwtConf::default()
        }
    }

    #[test]
    fn a_configured_issuer_gets_a_policy() {
        let mut conf = configured();
        conf.finish(Some(&audience())).unwrap();
        assert!(conf.enabled());
        let policy = conf.policy.as_ref().unwrap();
        assert_eq!(policy.audiences, ["api"]);
        assert_eq!(policy.leeway_s, DEFAULT_LEEWAY_S);
        assert!(!policy.algorithms.allows(Alg::HS256));
        assert!(!policy.typ_relaxed);
        assert_eq!(conf.keys.len(), 1);
        let mut off = JwtConf::default();
        off.finish(None).unwrap();
        assert!(!off.enabled());
    }

    #[test]
    fn mistakes_fail_nginx_t() {
        let err =
            |mut conf: JwtConf, audience: Option<&AudienceRule>| conf.finish(audience).unwrap_err();
        assert!(err(configured(), None).contains("auth_oauth2_token_require_audience"));
        let no_issuer = JwtConf {
            issuer: None,
            ..configured()
        };
        assert!(err(no_issuer, Some(&audience()))
            .contains("\"auth_oauth2_token_jwt_issuer\" is not set"));
        // Off, nothing is asked of the rest (set at http level for others).
        let mut off = JwtConf {
            on: Some(false),
            ..configured()
        };
        off.finish(None).unwrap();
        assert!(!off.enabled());
        let no_keys = JwtConf {
            keys_file: None,
            ..configured()
        };
        assert!(
            err(no_keys, Some(&audience())).contains("needs \"auth_oauth2_token_jwt_keys_file\"")
        );
        let only_rsa = JwtConf {
            algorithms: Some(Algorithms::none().with(Alg::RS256)),
            ..configured()
        };
        assert!(err(only_rsa, Some(&audience())).contains("none in \"jwks.json\" verifies"));
        let hs_without_secret = JwtConf {
            algorithms: Some(Algorithms::none().with(Alg::HS256)),
            ..configured()
        };
        assert!(err(hs_without_secret, Some(&audience()))
            .contains("needs \"auth_oauth2_token_jwt_secret_file\""));
        let secret = Jwk::secret(&[1; 32], None).unwrap();
        let unused_secret = JwtConf {
            secret: Some(secret.clone()),
            ..configured()
        };
        assert!(err(unused_secret, Some(&audience())).contains("HS256 is not among"));
        let mut with_secret = JwtConf {
            secret: Some(secret),
            algorithms: Some(Algorithms::asymmetric().with(Alg::HS256)),
            ..configured()
        };
        with_secret.finish(Some(&audience())).unwrap();
        assert_eq!(with_secret.keys.len(), 2);
    }

    #[test]
    fn inheritance() {
        let outer = configured();
        let mut inner = JwtConf {
            leeway_s: Some(5),
            ..JwtConf::default()
        };
        inner.inherit(&outer);
        inner.finish(Some(&audience())).unwrap();
        assert_eq!(inner.issuer, outer.issuer);
        assert_eq!(inner.policy.unwrap().leeway_s, 5);
    }

    #[test]
    fn fingerprints_follow_policy_and_keys() {
        let finished = |conf: JwtConf, aud: &str| {
            let mut conf = conf;
            let rule = AudienceRule {
                accepted: vec![aud.into()],
                index: 0,
            };
            conf.finish(Some(&rule)).unwrap();
            conf
        };
        let base = finished(configured(), "api");
        assert_eq!(base.fingerprint(), base.clone().fingerprint());
        let other_aud = finished(configured(), "web");
        let other_keys = finished(configured(), "api");
        let relaxed = finished(
            JwtConf {
                typ_relaxed: Some(true),
                ..base.clone()
            },
            "api",
        );
        let issuer = finished(
            JwtConf {
                issuer: Some("https://other".into()),
                ..base.clone()
            },
            "api",
        );
        let prints = [
            base.fingerprint(),
            other_aud.fingerprint(),
            other_keys.fingerprint(),
            relaxed.fingerprint(),
            issuer.fingerprint(),
        ];
        for (i, a) in prints.iter().enumerate() {
            assert!(!prints[i + 1..].contains(a), "{i}");
        }
        assert_eq!(JwtConf::default().fingerprint(), [0; 32]);
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_leeway(Some(30_000)), Ok(30));
        assert_eq!(parse_leeway(Some(0)), Ok(0));
        assert!(parse_leeway(Some(1_500)).is_err());
        assert!(parse_leeway(Some(601_000)).is_err());
        assert!(parse_leeway(None).is_err());
        assert!(parse_cache(&[b"zone=jwt:1m", b"max_ttl=60s"]).is_ok());
        for bad in [
            &b"negative_ttl=5s"[..],
            b"stale_if_error=1m",
            b"refresh=50%",
        ] {
            let err = parse_cache(&[b"zone=jwt:1m", bad]).unwrap_err();
            assert!(err.contains("unknown parameter"), "{err}");
        }
        assert!(keys_from_file(br#"{"keys":[]}"#)
            .unwrap_err()
            .contains("no key"));
        assert!(keys_from_file(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#)
            .unwrap_err()
            .contains("private or symmetric"));
    }
}
