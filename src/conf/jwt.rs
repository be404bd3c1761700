//! `auth_oauth2_token_jwt_*`: JWT access tokens checked at the gateway
//! (RFC 9068) with keys from a local JWK Set file or fetched from the
//! issuer, as plain data and the rules that fail `nginx -t`. The checks
//! themselves are `oauth/jose/`.

use super::cache_args::{self, CacheArgs};
use super::endpoint::CacheConf;
use crate::metrics::jwt::{JwtIds, KeySetIds};
use crate::oauth::cache::key::{CacheKey, KeyScope};
use crate::oauth::jose::access_token::{AccessTokenPolicy, MAX_LEEWAY_S};
use crate::oauth::jose::alg::{Alg, Algorithms};
use crate::oauth::jose::jwk::{self, Jwk};
use crate::oauth::jose::refresh::RefreshPolicy;
use crate::oauth::jose::verify::{Issuer, KeysFetch, Mode};
use crate::oauth::verdict::AudienceRule;

/// The clock difference tolerated when `auth_oauth2_token_jwt_leeway` is unset.
pub const DEFAULT_LEEWAY_S: i64 = 30;

/// One `auth_oauth2_token_jwt_issuer ISSUER [keys=FILE | keys_request=URI]
/// [algorithms=A,B] [audience=AUD,...] [mode=MODE] [introspect=URI]`.
#[derive(Debug, Clone, Default)]
pub struct IssuerArgs {
    pub issuer: String,
    /// Its own key file (as named) and keys; else the block's.
    pub keys_file: Option<(String, Vec<Jwk>)>,
    /// Its own internal location serving its JWK Set; else the block's.
    pub keys_request: Option<String>,
    /// Its own allow-list; else the block's.
    pub algorithms: Option<Algorithms>,
    /// The audiences its tokens must name; else the block's
    /// `auth_oauth2_token_require_audience`.
    pub audiences: Option<Vec<String>>,
    /// Its own introspection endpoint; else the location's.
    pub introspect: Option<String>,
    /// What the gateway does with its tokens; else `jwt+introspect` where
    /// the location introspects, `jwt` where it does not.
    pub mode: Option<Mode>,
}

/// `auth_oauth2_token_jwt_keys_cache`: the zone fetched key sets are kept
/// in, and when they are fetched again.
#[derive(Debug, Clone, Copy)]
pub struct KeysCache {
    pub zone: CacheConf,
    pub refresh: RefreshPolicy,
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
    /// `auth_oauth2_token_jwt_keys_request`: the internal location of the
    /// issuer's JWK Set.
    pub keys_request: Option<String>,
    /// `auth_oauth2_token_jwt_keys_cache`.
    pub keys_cache: Option<KeysCache>,
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
    /// Derived once merged: where each issuer's own introspection endpoint
    /// is in `LocationConf::issuer_endpoints`, by its place in `issuers_ready`.
    pub issuer_endpoint: Vec<Option<usize>>,
    /// The gauges of each issuer's fetched key set, by its place in
    /// `issuers_ready`, once registered.
    pub key_set_metrics: Vec<Option<KeySetIds>>,
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
        take(&mut self.keys_request, &prev.keys_request);
        if self.keys_cache.is_none() {
            self.keys_cache = prev.keys_cache;
        }
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
    /// must be checked); `introspects`: whether the block introspects.
    pub fn finish(
        &mut self,
        audience: Option<&AudienceRule>,
        introspects: bool,
    ) -> Result<(), String> {
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
        match (&self.secret, self.algorithms.is_some_and(|a| a.allows(Alg::HS256))) {
            (Some(_), false) => return Err("\"auth_oauth2_token_jwt_secret_file\" is set but HS256 is not among \"auth_oauth2_token_jwt_algorithms\"".into()),
            (None, true) => return Err("HS256 in \"auth_oauth2_token_jwt_algorithms\" needs \"auth_oauth2_token_jwt_secret_file\": an HMAC key never comes from a key set".into()),
            _ => {}
        }
        if self.keys_file.is_some() && self.keys_request.is_some() {
            return Err("\"auth_oauth2_token_jwt_keys_file\" and \"auth_oauth2_token_jwt_keys_request\" are both set: an issuer's keys come from one of them (give an issuer its own with keys= or keys_request=)".into());
        }
        let mut ready = Vec::with_capacity(self.issuers.len());
        for args in &self.issuers {
            let issuer = self.issuer(args, audience, introspects)?;
            if args.introspect.is_some() && issuer.mode == Mode::Jwt {
                return Err(format!("\"auth_oauth2_token_jwt_issuer\" \"{}\" has introspect= but its tokens are not introspected (mode=jwt)", args.issuer));
            }
            ready.push(issuer);
        }
        self.issuers_ready = ready;
        Ok(())
    }

    /// One issuer's policy and keys: its own key file (or key set request)
    /// and algorithms, else the block's; the HS256 secret is the block's.
    fn issuer(
        &self,
        args: &IssuerArgs,
        audience: Option<&AudienceRule>,
        introspects: bool,
    ) -> Result<Issuer, String> {
        let name = &args.issuer;
        let audiences = match (&args.audiences, audience) {
            (Some(own), _) => own.clone(),
            (None, Some(block)) => block.accepted.clone(),
            (None, None) => return Err(format!("\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_require_audience\" (or audience= of the issuer \"{name}\"): RFC 9068 §4 asks that a JWT access token's audience be checked")),
        };
        let mode = args.mode.unwrap_or(match introspects {
            true => Mode::JwtIntrospect,
            false => Mode::Jwt,
        });
        if mode != Mode::Jwt && !introspects {
            return Err(format!("\"auth_oauth2_token_jwt_issuer\" \"{name}\" has mode={} but the location does not introspect (\"auth_oauth2_token_introspect on\")", mode.name()));
        }
        let algorithms = args
            .algorithms
            .or(self.algorithms)
            .unwrap_or_else(Algorithms::asymmetric);
        let own = args.keys_file.is_some() || args.keys_request.is_some();
        let file = args
            .keys_file
            .as_ref()
            .or(self.keys_file.as_ref().filter(|_| !own));
        let request = args
            .keys_request
            .as_ref()
            .or(self.keys_request.as_ref().filter(|_| !own));
        let fetch = request.map(|uri| KeysFetch::at(uri.clone()));
        if fetch.is_some() && self.keys_cache.is_none() {
            return Err(format!("the keys of the issuer \"{name}\" are fetched (\"auth_oauth2_token_jwt_keys_request\" or keys_request=), which needs \"auth_oauth2_token_jwt_keys_cache\": the set is kept in shared memory"));
        }
        let mut keys = file.map(|(_, keys)| keys.clone()).unwrap_or_default();
        if let (Some(secret), true) = (&self.secret, algorithms.allows(Alg::HS256)) {
            keys.push(secret.clone());
        }
        let verifiable = keys
            .iter()
            .any(|key| algorithms.iter().any(|alg| key.verifies(alg)));
        if !verifiable && fetch.is_none() && mode != Mode::Introspect {
            return Err(match file {
                Some((file, _)) => format!("\"auth_oauth2_token_jwt\" has no key for \"{name}\": none in \"{file}\" verifies an algorithm it accepts"),
                None => format!("\"auth_oauth2_token_jwt\" needs \"auth_oauth2_token_jwt_keys_file\" or \"auth_oauth2_token_jwt_keys_request\" (or keys= or keys_request= of the issuer \"{name}\")"),
            });
        }
        Ok(Issuer {
            policy: AccessTokenPolicy {
                issuer: args.issuer.clone(),
                audiences,
                algorithms,
                leeway_s: self.leeway_s.unwrap_or(DEFAULT_LEEWAY_S),
                typ_relaxed: self.typ_relaxed.unwrap_or(false),
            },
            keys,
            fetch,
            mode,
        })
    }

    /// Names each fetched key set in the keys zone, once the server block
    /// is known (`server`: its identity).
    pub fn scope_key_sets(&mut self, server: &[u8; 32]) {
        for issuer in &mut self.issuers_ready {
            if let Some(fetch) = &mut issuer.fetch {
                fetch.scope(server, &issuer.policy.issuer);
            }
        }
    }

    /// Whether some issuer's tokens are checked here and not introspected,
    /// the only verdicts `auth_oauth2_token_jwt_cache` keeps.
    pub fn caches_verdicts(&self) -> bool {
        self.issuers_ready.iter().any(|i| i.mode == Mode::Jwt)
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
        for Issuer {
            policy,
            keys,
            fetch,
            mode,
        } in &self.issuers_ready
        {
            owned.push(b"issuer".to_vec());
            owned.push(policy.issuer.as_bytes().to_vec());
            owned.push(mode.name().as_bytes().to_vec());
            // A fetched set changes without a reload: named by where it
            // comes from, not by its keys.
            owned.push(
                fetch
                    .as_ref()
                    .map_or(&b""[..], |f| f.uri.as_bytes())
                    .to_vec(),
            );
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
        ..IssuerArgs::default()
    };
    for param in params {
        if let Some(file) = param.strip_prefix(b"keys=") {
            if parsed.keys_file.is_some() || parsed.keys_request.is_some() {
                return Err("takes one of \"keys=\" and \"keys_request=\", once".into());
            }
            parsed.keys_file = Some(read_keys(file)?);
        } else if let Some(uri) = param.strip_prefix(b"keys_request=") {
            if parsed.keys_file.is_some() || parsed.keys_request.is_some() {
                return Err("takes one of \"keys=\" and \"keys_request=\", once".into());
            }
            parsed.keys_request = Some(parse_keys_request(uri)?);
        } else if let Some(uri) = param.strip_prefix(b"introspect=") {
            if parsed.introspect.is_some() {
                return Err("has \"introspect=\" twice".into());
            }
            parsed.introspect = Some(parse_keys_request(uri)?);
        } else if let Some(list) = param.strip_prefix(b"audience=") {
            if parsed.audiences.is_some() {
                return Err("has \"audience=\" twice".into());
            }
            let audiences: Vec<String> = list
                .split(|&b| b == b',')
                .map(
                    |a| match a.is_empty() || a.iter().any(|b| !b.is_ascii_graphic()) {
                        true => Err("needs audience=AUD[,AUD...] with no empty or blank audience"),
                        false => Ok(String::from_utf8_lossy(a).into_owned()),
                    },
                )
                .collect::<Result<_, _>>()?;
            parsed.audiences = Some(audiences);
        } else if let Some(name) = param.strip_prefix(b"mode=") {
            if parsed.mode.is_some() {
                return Err("has \"mode=\" twice".into());
            }
            let mode = Mode::parse(name)
                .ok_or("takes mode=jwt, mode=jwt+introspect or mode=introspect")?;
            parsed.mode = Some(mode);
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

/// `auth_oauth2_token_jwt_keys_request URI` (or `keys_request=`, or an
/// issuer's `introspect=`): the URI of an internal location.
pub fn parse_keys_request(uri: &[u8]) -> Result<String, String> {
    // A path only: a bare name (Curity's style of internal location) is
    // for the introspection endpoint's compatibility alone.
    let valid = uri.first() == Some(&b'/') && super::endpoint::is_valid_endpoint(uri);
    match (valid, std::str::from_utf8(uri)) {
        (true, Ok(uri)) => Ok(uri.to_owned()),
        _ => Err("needs the URI of an internal location, like /_jwks".into()),
    }
}

/// `auth_oauth2_token_jwt_keys_cache zone=NAME:SIZE [max_age=TIME]
/// [min_age=TIME] [default_age=TIME] [stale=TIME] [unknown_kid_interval=TIME]`:
/// the zone, and the set's lifetime bounds (`Cache-Control: max-age`
/// within `min_age`..`max_age`, `default_age` without it), how long past
/// it the set still verifies while fetches fail, and how often a token
/// with an unknown `kid` may fetch the set again.
pub fn parse_keys_cache(args: &[&[u8]]) -> Result<(CacheArgs, RefreshPolicy), String> {
    let mut refresh = RefreshPolicy::default();
    let mut zone = Vec::new();
    for arg in args {
        let (name, value) = match arg.iter().position(|&b| b == b'=') {
            Some(eq) => (&arg[..eq], &arg[eq + 1..]),
            None => (&arg[..], &b""[..]),
        };
        let field = match name {
            b"zone" => {
                zone.push(*arg);
                continue;
            }
            b"max_age" => &mut refresh.max_ttl_ms,
            b"min_age" => &mut refresh.min_ttl_ms,
            b"default_age" => &mut refresh.default_ttl_ms,
            b"stale" => &mut refresh.stale_ms,
            b"unknown_kid_interval" => &mut refresh.unknown_kid_interval_ms,
            _ => {
                return Err(format!(
                    "has an unknown parameter \"{}\"",
                    String::from_utf8_lossy(arg)
                ))
            }
        };
        *field = cache_args::parse_time_ms(value).ok_or_else(|| {
            format!(
                "has an invalid time in \"{}\"",
                String::from_utf8_lossy(arg)
            )
        })?;
    }
    if zone.is_empty() {
        return Err("needs \"zone=NAME:SIZE\"".into());
    }
    if refresh.min_ttl_ms > refresh.max_ttl_ms {
        return Err("has min_age above max_age".into());
    }
    if refresh.min_ttl_ms < 1000 {
        return Err(
            "needs min_age of at least 1s: a key set fetched more often is a load on the IdP"
                .into(),
        );
    }
    Ok((cache_args::parse(&zone)?, refresh))
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
            ..IssuerArgs::default()
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
        conf.finish(Some(&audience()), false).unwrap();
        assert!(conf.enabled());
        let policy = &conf.issuers_ready[0].policy;
        assert_eq!(policy.audiences, ["api"]);
        assert_eq!(policy.leeway_s, DEFAULT_LEEWAY_S);
        assert!(!policy.algorithms.allows(Alg::HS256));
        assert!(!policy.typ_relaxed);
        assert_eq!(conf.issuers_ready[0].keys.len(), 1);
        let mut off = JwtConf::default();
        off.finish(None, false).unwrap();
        assert!(!off.enabled());
    }

    #[test]
    fn mistakes_fail_nginx_t() {
        let err = |mut conf: JwtConf, audience: Option<&AudienceRule>| {
            conf.finish(audience, false).unwrap_err()
        };
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
        off.finish(None, false).unwrap();
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
        with_secret.finish(Some(&audience()), false).unwrap();
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
        inner.finish(Some(&audience()), false).unwrap();
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
            conf.finish(Some(&rule), false).unwrap();
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
            ..IssuerArgs::default()
        };
        conf.add_issuer(own).unwrap();
        assert!(conf
            .add_issuer(named("https://a"))
            .unwrap_err()
            .contains("twice"));
        conf.finish(Some(&audience()), false).unwrap();
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
        inner.finish(Some(&audience()), false).unwrap();
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
        let err = wrong.finish(Some(&audience()), false).unwrap_err();
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
            (&[b"https://a", b"keys=k.json", b"keys=k.json"], "once"),
            (&[b"https://a", b"keys=k.json", b"keys_request=/j"], "once"),
            (&[b"https://a", b"keys_request=jwks"], "internal location"),
            (&[b"https://a", b"mode=both"], "mode=jwt"),
            (&[b"https://a", b"mode=jwt", b"mode=jwt"], "twice"),
            (&[b"https://a", b"audience=a,,b"], "no empty or blank"),
            (&[b"https://a", b"audience=a", b"audience=b"], "twice"),
            (&[b"https://a", b"issuer=x"], "unknown parameter"),
            (&[b"https://a\n"], "control characters"),
            (&[b""], "control characters"),
        ] {
            let err = parse_issuer(args, read).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
    }

    #[test]
    fn an_issuer_may_fetch_its_keys_and_choose_a_mode() {
        let read = |_: &[u8]| -> Result<(String, Vec<Jwk>), String> { Err("no files".into()) };
        let args = [
            &b"https://a"[..],
            b"keys_request=/_jwks",
            b"mode=jwt+introspect",
        ];
        let parsed = parse_issuer(&args, read).unwrap();
        assert_eq!(parsed.keys_request.as_deref(), Some("/_jwks"));
        assert_eq!(parsed.mode, Some(Mode::JwtIntrospect));
        let keys_cache = || {
            let (_, refresh) = parse_keys_cache(&[b"zone=jwks:1m"]).unwrap();
            let zone = CacheConf {
                zone: core::ptr::null_mut(),
                policy: crate::oauth::cache::CachePolicy::default(),
                metrics: Default::default(),
            };
            Some(KeysCache { zone, refresh })
        };
        let fetching = || JwtConf {
            on: Some(true),
            issuers: vec![named("https://a")],
            keys_request: Some("/_jwks".into()),
            keys_cache: keys_cache(),
            ..JwtConf::default()
        };
        // No key at hand is no mistake when the set is fetched.
        let mut conf = fetching();
        conf.finish(Some(&audience()), false).unwrap();
        let issuer = &conf.issuers_ready[0];
        assert_eq!(issuer.fetch.as_ref().unwrap().uri, "/_jwks");
        assert_eq!(issuer.mode, Mode::Jwt);
        assert!(conf.caches_verdicts());
        // Named by the server block: the same URI in another server is another set.
        let mut other = conf.clone();
        conf.scope_key_sets(&[1; 32]);
        other.scope_key_sets(&[2; 32]);
        let key = |c: &JwtConf| c.issuers_ready[0].fetch.as_ref().unwrap().set_key;
        assert_ne!(key(&conf), key(&other));
        // Where the location introspects, both by default; not cached here.
        let mut both = fetching();
        both.finish(Some(&audience()), true).unwrap();
        assert_eq!(both.issuers_ready[0].mode, Mode::JwtIntrospect);
        assert!(!both.caches_verdicts());
        assert_ne!(both.fingerprint(), conf.fingerprint());
        for (conf, introspects, error) in [
            (
                JwtConf {
                    keys_cache: None,
                    ..fetching()
                },
                false,
                "needs \"auth_oauth2_token_jwt_keys_cache\"",
            ),
            (
                JwtConf {
                    keys_file: Some(("k.json".into(), keys(""))),
                    ..fetching()
                },
                false,
                "are both set",
            ),
            (
                JwtConf {
                    issuers: vec![IssuerArgs {
                        mode: Some(Mode::Introspect),
                        ..named("https://a")
                    }],
                    ..fetching()
                },
                false,
                "does not introspect",
            ),
        ] {
            let mut conf = conf;
            let err = conf.finish(Some(&audience()), introspects).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
        // An issuer in introspect mode needs no key.
        let mut opaque = JwtConf {
            on: Some(true),
            issuers: vec![IssuerArgs {
                mode: Some(Mode::Introspect),
                ..named("https://a")
            }],
            ..JwtConf::default()
        };
        opaque.finish(Some(&audience()), true).unwrap();
        assert_eq!(opaque.issuers_ready[0].mode, Mode::Introspect);
    }

    #[test]
    fn an_issuer_may_have_its_own_audience() {
        let read = |_: &[u8]| -> Result<(String, Vec<Jwk>), String> { Err("no files".into()) };
        let args = [&b"https://b"[..], b"audience=https://b/api,other"];
        let own = parse_issuer(&args, read).unwrap();
        assert_eq!(
            own.audiences.as_deref(),
            Some(&["https://b/api".to_string(), "other".into()][..])
        );
        let mut conf = JwtConf {
            issuers: vec![named("https://a"), own],
            ..configured()
        };
        // Without the block's audience, only the issuer with its own passes nginx -t.
        let err = conf.clone().finish(None, false).unwrap_err();
        assert!(
            err.contains("audience= of the issuer \"https://a\""),
            "{err}"
        );
        conf.finish(Some(&audience()), false).unwrap();
        let [a, b] = &conf.issuers_ready[..] else {
            panic!("two issuers")
        };
        assert_eq!(a.policy.audiences, ["api"]);
        assert_eq!(b.policy.audiences, ["https://b/api", "other"]);
    }

    #[test]
    fn keys_cache_arguments() {
        let (zone, refresh) = parse_keys_cache(&[
            b"zone=jwks:1m",
            b"max_age=1h",
            b"min_age=30s",
            b"default_age=5m",
            b"stale=2h",
            b"unknown_kid_interval=10s",
        ])
        .unwrap();
        assert_eq!(zone.zone_name, b"jwks");
        assert_eq!(
            (
                refresh.max_ttl_ms,
                refresh.min_ttl_ms,
                refresh.default_ttl_ms,
                refresh.stale_ms,
                refresh.unknown_kid_interval_ms
            ),
            (3_600_000, 30_000, 300_000, 7_200_000, 10_000)
        );
        for (args, error) in [
            (&[&b"max_age=1h"[..]][..], "needs \"zone=NAME:SIZE\""),
            (&[b"zone=jwks:1m", b"max_ttl=1h"], "unknown parameter"),
            (&[b"zone=jwks:1m", b"stale=soon"], "invalid time"),
            (&[b"zone=jwks:1m", b"min_age=2h", b"max_age=1h"], "above"),
            (&[b"zone=jwks:1m", b"min_age=0"], "at least 1s"),
        ] {
            let err = parse_keys_cache(args).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
    }
}
