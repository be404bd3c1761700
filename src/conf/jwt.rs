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
use crate::oauth::jose::verify::Issuer;
use crate::oauth::verdict::AudienceRule;

/// The clock difference tolerated when `auth_oauth2_token_jwt_leeway` is unset.
pub const DEFAULT_LEEWAY_S: i64 = 30;

/// One `auth_oauth2_token_jwt_issuer ISSUER [keys=FILE] [algorithms=A,B]`.
#[derive(Debug, Clone)]
pub struct IssuerArgs {
    pub issuer: String,
    /// Its own key file (as named) and keys; else the block's.
    pub keys_file: Option<(String, Vec<Jwk>)>,
    /// Its own allow-list; else the block's.
    pub algorithms: Option<Algorithms>,
}

/// A location's JWT settings; `issuers_ready` is derived once merged.
#[derive(Debug, Default, Clone)]
pub struct JwtConf {
    /// `auth_oauth2_token_jwt`: turns the check on.
    pub on: Option<bool>,
    /// `auth_oauth2_token_jwt_issuer`, one or more.
    pub issuers: Vec<IssuerArgs>,
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
    /// Derived at merge: each issuer's policy and keys.
    pub issuers_ready: Vec<Issuer>,
    /// Derived once the server block is known: what the cache keys include
    /// besides the token.
    pub key_scope: KeyScope,
    /// The series the checks count in, once registered.
    pub metrics: Option<JwtIds>,
}

impl JwtConf {
    pub fn enabled(&self) -> bool {
        !self.issuers_ready.is_empty()
    }

    /// Adds an issuer of `auth_oauth2_token_jwt_issuer`; one named twice
    /// in a block is a mistake.
    pub fn add_issuer(&mut self, args: IssuerArgs) -> Result<(), String> {
        if self.issuers.iter().any(|i| i.issuer == args.issuer) {
            return Err(format!("names the issuer \"{}\" twice", args.issuer));
        }
        self.issuers.push(args);
        Ok(())
    }

    /// Takes what the enclosing block set, unless this block sets it (a
    /// block that names issuers replaces the outer list).
    pub fn inherit(&mut self, prev: &JwtConf) {
        fn take<T: Clone>(own: &mut Option<T>, outer: &Option<T>) {
            if own.is_none() {
                own.clone_from(outer);
            }
        }
        take(&mut self.on, &prev.on);
        if self.issuers.is_empty() {
            self.issuers.clone_from(&prev.issuers);
        }
        take(&mut self.keys_file, &prev.keys_file);
        take(&mut self.secret, &prev.secret);
        take(&mut self.algorithms, &prev.algorithms);
        take(&mut self.leeway_s, &prev.leeway_s);
        take(&mut self.typ_relaxed, &prev.typ_relaxed);
        if self.cache.is_none() {
            self.cache = prev.cache;
        }
    }

    /// Derives each issuer's policy and keys in a merged block, or says
    /// which directive is missing or at odds. `audience` is the block's
    /// `auth_oauth2_token_require_audience` (RFC 9068 §4: the audience
    /// must be checked).
    pub fn finish(&mut self, audience: Option<&AudienceRule>) -> Result<(), String> {
        self.issuers_ready.clear();
        if self.on != Some(true) {
            return Ok(());
        }
        if self.issuers.is_empty() {
            return Err(
                "\"auth_oauth2_token_jwt\" is on but \"auth_oauth2_token_jwt_issuer\" is not set"
                    .into(),
            );
        }
        let Some(audience) = audience else {
            return Err("\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_require_audience\": RFC 9068 §4 asks that a JWT access token's audience be checked".into());
        };
        match (&self.secret, self.algorithms.is_some_and(|a| a.allows(Alg::HS256))) {
            (Some(_), false) => return Err("\"auth_oauth2_token_jwt_secret_file\" is set but HS256 is not among \"auth_oauth2_token_jwt_algorithms\"".into()),
            (None, true) => return Err("HS256 in \"auth_oauth2_token_jwt_algorithms\" needs \"auth_oauth2_token_jwt_secret_file\": an HMAC key never comes from a key set".into()),
            _ => {}
        }
        let mut ready = Vec::with_capacity(self.issuers.len());
        for args in &self.issuers {
            ready.push(self.issuer(args, audience)?);
        }
        self.issuers_ready = ready;
        Ok(())
    }

    /// One issuer's policy and keys: its own key file and algorithms, else
    /// the block's; the HS256 secret is the block's.
    fn issuer(&self, args: &IssuerArgs, audience: &AudienceRule) -> Result<Issuer, String> {
        let algorithms = args
            .algorithms
            .or(self.algorithms)
            .unwrap_or_else(Algorithms::asymmetric);
        let file = args.keys_file.as_ref().or(self.keys_file.as_ref());
        let mut keys = file.map(|(_, keys)| keys.clone()).unwrap_or_default();
        if let (Some(secret), true) = (&self.secret, algorithms.allows(Alg::HS256)) {
            keys.push(secret.clone());
        }
        if !keys
            .iter()
            .any(|key| algorithms.iter().any(|alg| key.verifies(alg)))
        {
            return Err(match file {
                Some((name, _)) => format!("\"auth_oauth2_token_jwt\" has no key for \"{}\": none in \"{name}\" verifies an algorithm it accepts", args.issuer),
                None => format!("\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_jwt_keys_file\" (or keys= of the issuer \"{}\")", args.issuer),
            });
        }
        Ok(Issuer {
            policy: AccessTokenPolicy {
                issuer: args.issuer.clone(),
                audiences: audience.accepted.clone(),
                algorithms,
                leeway_s: self.leeway_s.unwrap_or(DEFAULT_LEEWAY_S),
                typ_relaxed: self.typ_relaxed.unwrap_or(false),
            },
            keys,
        })
    }

    /// What decides a verified token's verdict besides the token: each
    /// issuer's policy and keys (`kid`, `alg` and thumbprint), as a digest.
    /// A key file that changes, or another issuer or audience, never
    /// reads entries verified under the old ones.
    pub fn fingerprint(&self) -> [u8; 32] {
        if self.issuers_ready.is_empty() {
            return [0; 32];
        }
        let mut owned: Vec<Vec<u8>> = Vec::new();
        for Issuer { policy, keys } in &self.issuers_ready {
            owned.push(b"issuer".to_vec());
            owned.push(policy.issuer.as_bytes().to_vec());
            owned.push(policy.leeway_s.to_be_bytes().to_vec());
            owned.push(policy.algorithms.iter().map(|a| a as u8).collect());
            owned.push(match policy.typ_relaxed {
                true => b"relaxed".to_vec(),
                false => b"strict".to_vec(),
            });
            owned.push(b"audiences".to_vec());
            owned.extend(policy.audiences.iter().map(|a| a.as_bytes().to_vec()));
            owned.push(b"keys".to_vec());
            for key in keys {
                owned.push(key.kid.as_deref().unwrap_or_default().as_bytes().to_vec());
                owned.push(key.alg.map_or("", Alg::name).as_bytes().to_vec());
                owned.push(key.thumbprint.as_bytes().to_vec());
            }
        }
        let mut parts: Vec<&[u8]> = vec![b"jwt"];
        parts.extend(owned.iter().map(Vec::as_slice));
        CacheKey::from_parts(&parts).0
    }
}

/// The arguments of `auth_oauth2_token_jwt_issuer ISSUER [keys=FILE]
/// [algorithms=ALG,...]`; `read_keys` reads a key file (the glue's).
pub fn parse_issuer(
    args: &[&[u8]],
    read_keys: impl Fn(&[u8]) -> Result<(String, Vec<Jwk>), String>,
) -> Result<IssuerArgs, String> {
    let (issuer, params) = args.split_first().ok_or("needs an issuer")?;
    if issuer.is_empty() || issuer.iter().any(|b| b.is_ascii_control()) {
        return Err("needs an issuer identifier without control characters".into());
    }
    let issuer = String::from_utf8(issuer.to_vec()).map_err(|_| "value is not valid UTF-8")?;
    let mut parsed = IssuerArgs {
        issuer,
        keys_file: None,
        algorithms: None,
    };
    for param in params {
        if let Some(file) = param.strip_prefix(b"keys=") {
            if parsed.keys_file.is_some() {
                return Err("has \"keys=\" twice".into());
            }
            parsed.keys_file = Some(read_keys(file)?);
        } else if let Some(names) = param.strip_prefix(b"algorithms=") {
            if parsed.algorithms.is_some() {
                return Err("has \"algorithms=\" twice".into());
            }
            let algorithms = Algorithms::parse(names.split(|&b| b == b','))?;
            if algorithms.allows(Alg::HS256) {
                return Err("cannot list HS256 for one issuer: an HS256 secret is the block's (\"auth_oauth2_token_jwt_secret_file\" and \"auth_oauth2_token_jwt_algorithms\")".into());
            }
            parsed.algorithms = Some(algorithms);
        } else {
            return Err(format!(
                "has an unknown parameter \"{}\"",
                String::from_utf8_lossy(param)
            ));
        }
    }
    Ok(parsed)
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

    fn named(issuer: &str) -> IssuerArgs {
        IssuerArgs {
            issuer: issuer.into(),
            keys_file: None,
            algorithms: None,
        }
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
            issuers: vec![named("https://idp.example")],
            keys_file: Some(("jwks.json".into(), keys(r#","kid":"k1""#))),
            ..JwtConf::default()
        }
    }

    #[test]
    fn a_configured_issuer_gets_a_policy() {
        let mut conf = configured();
        conf.finish(Some(&audience())).unwrap();
        assert!(conf.enabled());
        let policy = &conf.issuers_ready[0].policy;
        assert_eq!(policy.audiences, ["api"]);
        assert_eq!(policy.leeway_s, DEFAULT_LEEWAY_S);
        assert!(!policy.algorithms.allows(Alg::HS256));
        assert!(!policy.typ_relaxed);
        assert_eq!(conf.issuers_ready[0].keys.len(), 1);
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
            issuers: vec![],
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
        assert_eq!(with_secret.issuers_ready[0].keys.len(), 2);
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
        assert_eq!(inner.issuers_ready[0].policy.issuer, "https://idp.example");
        assert_eq!(inner.issuers_ready[0].policy.leeway_s, 5);
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
                issuers: vec![named("https://other")],
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

    #[test]
    fn several_issuers_with_their_own_keys_and_algorithms() {
        let mut conf = JwtConf {
            on: Some(true),
            keys_file: Some(("block.json".into(), keys(""))),
            ..JwtConf::default()
        };
        conf.add_issuer(named("https://a")).unwrap();
        let own = IssuerArgs {
            issuer: "https://b".into(),
            keys_file: Some(("b.json".into(), keys(r#","kid":"b""#))),
            algorithms: Some(Algorithms::none().with(Alg::ES256)),
        };
        conf.add_issuer(own).unwrap();
        assert!(conf
            .add_issuer(named("https://a"))
            .unwrap_err()
            .contains("twice"));
        conf.finish(Some(&audience())).unwrap();
        let [a, b] = &conf.issuers_ready[..] else {
            panic!("two issuers")
        };
        assert_eq!(a.policy.issuer, "https://a");
        assert_eq!(a.policy.algorithms, Algorithms::asymmetric());
        assert_eq!(b.keys[0].kid.as_deref(), Some("b"));
        assert_eq!(b.policy.algorithms.iter().collect::<Vec<_>>(), [Alg::ES256]);
        assert_ne!(a.keys[0].thumbprint, b.keys[0].thumbprint);
        // A block naming issuers replaces the outer list.
        let mut inner = JwtConf {
            issuers: vec![named("https://c")],
            ..JwtConf::default()
        };
        inner.inherit(&conf);
        inner.finish(Some(&audience())).unwrap();
        assert_eq!(inner.issuers_ready.len(), 1);
        assert_eq!(inner.issuers_ready[0].policy.issuer, "https://c");
        let only_rsa = IssuerArgs {
            algorithms: Some(Algorithms::none().with(Alg::RS256)),
            ..named("https://d")
        };
        let mut wrong = JwtConf {
            issuers: vec![only_rsa],
            ..conf.clone()
        };
        let err = wrong.finish(Some(&audience())).unwrap_err();
        assert!(err.contains("no key for \"https://d\""), "{err}");
    }

    #[test]
    fn issuer_arguments() {
        let read = |file: &[u8]| match file {
            b"k.json" => Ok(("k.json".to_string(), keys(""))),
            _ => Err("cannot read".to_string()),
        };
        let parsed = parse_issuer(
            &[b"https://a", b"keys=k.json", b"algorithms=ES256,RS256"],
            read,
        )
        .unwrap();
        assert_eq!(parsed.issuer, "https://a");
        assert_eq!(parsed.keys_file.unwrap().0, "k.json");
        assert_eq!(
            parsed.algorithms.unwrap().iter().collect::<Vec<_>>(),
            [Alg::RS256, Alg::ES256]
        );
        assert!(parse_issuer(&[b"https://a"], read)
            .unwrap()
            .keys_file
            .is_none());
        for (args, error) in [
            (&[&b"https://a"[..], b"keys=nope.json"][..], "cannot read"),
            (&[b"https://a", b"algorithms=HS256"], "cannot list HS256"),
            (&[b"https://a", b"algorithms=none"], "unknown algorithm"),
            (
                &[b"https://a", b"algorithms=ES256", b"algorithms=RS256"],
                "twice",
            ),
            (&[b"https://a", b"keys=k.json", b"keys=k.json"], "twice"),
            (&[b"https://a", b"audience=x"], "unknown parameter"),
            (&[b"https://a\n"], "control characters"),
            (&[b""], "control characters"),
        ] {
            let err = parse_issuer(args, read).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
    }
}
