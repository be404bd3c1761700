//! The cache keys' scopes of a merged location (`oauth/cache/key.rs`
//! `KeyScope`): what this gateway's zones and the Redis tier name its
//! answers by, and what the Redis tier's checks (`checks.rs`) ask of them:
//! which endpoints keep answers there, and whether the module can see the
//! credentials that asked.

use super::{ClientAuth, Endpoint, LocationConf};
use crate::oauth::cache::key::{Client, KeyScope};
use crate::oauth::client_auth::AssertionKey;

impl LocationConf {
    /// Derives the cache keys' scopes of a merged location: the server
    /// block it belongs to (`oauth::cache::key::server_identity`), its
    /// endpoints, its client and secret, and the http-level claim lists.
    pub fn scope_caches(&mut self, server: &[u8; 32], fleet: &[u8; 32], claims_fingerprint: &[u8]) {
        let uris: Vec<Vec<u8>> = self
            .issuer_endpoints
            .iter()
            .map(|e| e.uri().to_vec())
            .collect();
        let uris: Vec<&[u8]> = uris.iter().map(Vec::as_slice).collect();
        let (own, exchange, issuers) = self.scopes(server, claims_fingerprint, &uris);
        (self.introspection.key_scope, self.token_endpoint.key_scope) = (own, exchange);
        for (endpoint, scope) in self.issuer_endpoints.iter_mut().zip(issuers) {
            endpoint.key_scope = scope;
        }
        let (own, exchange, issuers) = self.scopes(fleet, claims_fingerprint, &uris);
        (
            self.introspection.tier_scope,
            self.token_endpoint.tier_scope,
        ) = (own, exchange);
        for (endpoint, scope) in self.issuer_endpoints.iter_mut().zip(issuers) {
            endpoint.tier_scope = scope;
        }
        self.jwt.scope_key_sets(server);
        self.jwt.key_scope = KeyScope::jwt(
            server,
            &self.jwt.fingerprint(),
            claims_fingerprint,
            self.shared_tenant.as_deref(),
        );
    }

    /// The introspection and exchange scopes of this location in `server`,
    /// and the introspection scope at each of `uris` (its issuers' own).
    fn scopes(
        &self,
        server: &[u8; 32],
        claims_fingerprint: &[u8],
        uris: &[&[u8]],
    ) -> (KeyScope, KeyScope, Vec<KeyScope>) {
        let key = self
            .assertion_key
            .as_ref()
            .and_then(AssertionKey::fingerprint);
        let client = Client {
            id: self.client_id.as_deref().unwrap_or_default(),
            secret: self.client_secret.as_ref().map_or(&[][..], |(_, s)| s),
            key: key.as_ref(),
            tenant: self.shared_tenant.as_deref(),
        };
        let at = |uri: &[u8]| {
            KeyScope::introspection(
                server,
                uri,
                &client,
                self.phantom_enabled(),
                claims_fingerprint,
                self.cache_vary.is_some(),
            )
        };
        let exchange = KeyScope::exchange(server, self.token_endpoint.uri(), &client);
        let issuers = uris.iter().map(|uri| at(uri)).collect();
        (at(self.introspection.uri()), exchange, issuers)
    }

    /// Gives each issuer with an introspection endpoint of its own
    /// (`introspect=` of `auth_oauth2_token_jwt_issuer`) the location's
    /// introspection endpoint at that URI (one per URI); called once merged.
    pub fn derive_issuer_endpoints(&mut self) {
        self.issuer_endpoints.clear();
        // `issuers_ready` follows `issuers`, one for one, once checks are on.
        let issuers = match self.jwt.enabled() {
            true => &self.jwt.issuers[..],
            false => &[],
        };
        let mut places = Vec::with_capacity(issuers.len());
        for args in issuers {
            let place = args.introspect.as_deref().map(|uri| {
                let known = self
                    .issuer_endpoints
                    .iter()
                    .position(|e| e.uri() == uri.as_bytes());
                known.unwrap_or_else(|| {
                    let mut endpoint = self.introspection.clone();
                    endpoint.uri = Some(uri.as_bytes().to_vec());
                    self.issuer_endpoints.push(endpoint);
                    self.issuer_endpoints.len() - 1
                })
            });
            places.push(place);
        }
        self.jwt.issuer_endpoint = places;
    }

    /// The endpoints whose answers this merged location keeps in the Redis
    /// tier: each one it calls, with a cache, when the location has
    /// `auth_oauth2_token_shared_cache`.
    pub fn shared_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        let shared = self.shared_cache_uri().is_some();
        let issuers = self.issuer_endpoints.iter();
        [
            (self.introspection_enabled(), &self.introspection),
            (self.exchange_enabled(), &self.token_endpoint),
        ]
        .into_iter()
        .chain(issuers.map(|e| (self.introspection_enabled(), e)))
        .filter(move |(on, endpoint)| {
            shared && *on && endpoint.cache.is_some_and(|c| c.policy.enabled())
        })
        .map(|(_, endpoint)| endpoint)
    }

    /// Why the cache keys of this merged location cannot tell whose
    /// credentials asked the IdP (the internal location holds them, out of
    /// the module's sight), or `None` when they can: a secret or an
    /// assertion key is in them.
    pub fn credentials_out_of_sight(&self) -> Option<&'static str> {
        if self.credentials_in_location == Some(true) {
            return Some(
                "the internal location supplies the IdP credentials (\"phantom_token on\")",
            );
        }
        match self.client_auth {
            Some(ClientAuth::TlsClientAuth) => Some("\"auth_oauth2_token_client_auth tls_client_auth\" authenticates with the internal location's client certificate"),
            Some(ClientAuth::SelfSignedTlsClientAuth) => Some("\"auth_oauth2_token_client_auth self_signed_tls_client_auth\" authenticates with the internal location's client certificate"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::tests::enabled;
    use crate::conf::{CacheConf, SecretSource};

    #[test]
    fn cache_scopes_follow_server_client_secret_and_kind() {
        let scoped = |conf: LocationConf, server: &[u8; 32], claims: &[u8]| {
            let mut conf = LocationConf {
                token_endpoint: Endpoint::at(b"/t"),
                ..conf
            };
            conf.merge(&LocationConf::default()).unwrap();
            conf.scope_caches(server, &[0; 32], claims);
            (conf.introspection.key_scope, conf.token_endpoint.key_scope)
        };
        let base = scoped(enabled(), &[1; 32], b"");
        assert_eq!(base, scoped(enabled(), &[1; 32], b""));
        assert_ne!(base.0, base.1);
        let other_server = scoped(enabled(), &[2; 32], b"");
        assert!(base.0 != other_server.0 && base.1 != other_server.1);
        let rotated = LocationConf {
            client_secret: Some((SecretSource::Inline, b"rotated".to_vec())),
            ..enabled()
        };
        let rotated = scoped(rotated, &[1; 32], b"");
        assert!(base.0 != rotated.0 && base.1 != rotated.1);
        let phantom = LocationConf {
            phantom: Some(true),
            ..enabled()
        };
        assert_ne!(base.0, scoped(phantom, &[1; 32], b"").0);
        assert_ne!(base.0, scoped(enabled(), &[1; 32], b"fingerprint").0);
    }

    /// A merged location with `conf`'s settings, scoped in server `zone`
    /// (fleet name `fleet`): its (zone, fleet) introspection scopes.
    fn scoped_in(conf: LocationConf, zone: u8, fleet: u8) -> (KeyScope, KeyScope) {
        let mut conf = conf;
        conf.merge(&LocationConf::default()).unwrap();
        conf.scope_caches(&[zone; 32], &[fleet; 32], b"");
        (conf.introspection.key_scope, conf.introspection.tier_scope)
    }

    fn private_key_jwt(pem: &[u8]) -> LocationConf {
        LocationConf {
            client_auth: Some(ClientAuth::PrivateKeyJwt),
            client_key_pem: Some(pem.to_vec()),
            assertion_audience: Some("https://idp".into()),
            client_secret: None,
            ..enabled()
        }
    }

    #[test]
    fn the_tenant_and_the_assertion_key_are_in_both_scopes() {
        let tenant = |id: &[u8]| LocationConf {
            shared_tenant: Some(id.to_vec()),
            ..enabled()
        };
        let base = scoped_in(enabled(), 1, 2);
        let a = scoped_in(tenant(b"a"), 1, 2);
        assert!(a.0 != base.0 && a.1 != base.1);
        let b = scoped_in(tenant(b"b"), 1, 2);
        assert!(a.0 != b.0 && a.1 != b.1);
        assert_eq!(a, scoped_in(tenant(b"a"), 1, 2));
        // Inherited like the other directives.
        let mut child = LocationConf::default();
        child.merge(&tenant(b"a")).unwrap();
        assert_eq!(child.shared_tenant.as_deref(), Some(&b"a"[..]));

        let gen = || {
            let ec = openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap();
            openssl::pkey::PKey::from_ec_key(ec)
                .unwrap()
                .private_key_to_pem_pkcs8()
                .unwrap()
        };
        let (pem_a, pem_b) = (gen(), gen());
        let key_a = scoped_in(private_key_jwt(&pem_a), 1, 2);
        let key_b = scoped_in(private_key_jwt(&pem_b), 1, 2);
        assert!(
            key_a.0 != key_b.0 && key_a.1 != key_b.1,
            "another key, another scope"
        );
        assert_eq!(key_a, scoped_in(private_key_jwt(&pem_a), 1, 2));
        let kid = LocationConf {
            client_key_id: Some("k2".into()),
            ..private_key_jwt(&pem_a)
        };
        assert_ne!(key_a.1, scoped_in(kid, 1, 2).1);
    }

    #[test]
    fn shared_endpoints_are_the_called_and_cached_ones_with_a_shared_cache() {
        let cache = |max_ttl_ms| CacheConf {
            zone: core::ptr::null_mut(),
            policy: crate::oauth::cache::CachePolicy {
                max_ttl_ms,
                ..Default::default()
            },
            metrics: Default::default(),
        };
        let conf = |shared: Option<&[u8]>, introspect, exchange, ttl| {
            let mut conf = LocationConf {
                shared_cache: Some(shared.map(<[u8]>::to_vec)),
                introspect: Some(introspect),
                exchange: Some(exchange),
                token_endpoint: Endpoint {
                    cache: Some(cache(ttl)),
                    ..Endpoint::at(b"/t")
                },
                ..enabled()
            };
            conf.introspection.cache = Some(cache(ttl));
            conf.merge(&LocationConf::default()).unwrap();
            conf.shared_endpoints()
                .map(|e| e.uri().to_vec())
                .collect::<Vec<_>>()
        };
        let r = Some(&b"/_redis"[..]);
        assert_eq!(
            conf(r, true, true, 1000),
            [b"/_introspect".to_vec(), b"/t".to_vec()]
        );
        assert_eq!(conf(r, true, false, 1000), [b"/_introspect".to_vec()]);
        assert_eq!(conf(r, false, true, 1000), [b"/t".to_vec()]);
        assert!(conf(None, true, true, 1000).is_empty(), "shared_cache off");
        assert!(conf(r, true, true, 0).is_empty(), "max_ttl=0: no cache");
        let no_cache = LocationConf {
            shared_cache: Some(r.map(<[u8]>::to_vec)),
            ..enabled()
        };
        assert_eq!(no_cache.shared_endpoints().count(), 0);
    }

    #[test]
    fn credentials_out_of_sight_are_the_tls_methods_and_curity_locations() {
        let mut seen = Vec::new();
        for method in [
            ClientAuth::TlsClientAuth,
            ClientAuth::SelfSignedTlsClientAuth,
        ] {
            let conf = LocationConf {
                client_auth: Some(method),
                ..enabled()
            };
            let why = conf.credentials_out_of_sight().unwrap();
            assert!(
                why.contains("tls_client_auth") && why.contains("certificate"),
                "{why}"
            );
            seen.push(why);
        }
        let curity = LocationConf {
            credentials_in_location: Some(true),
            ..Default::default()
        };
        assert!(curity
            .credentials_out_of_sight()
            .unwrap()
            .contains("phantom_token on"));
        for method in [
            ClientAuth::Basic,
            ClientAuth::Post,
            ClientAuth::PrivateKeyJwt,
        ] {
            let conf = LocationConf {
                client_auth: Some(method),
                ..enabled()
            };
            assert_eq!(conf.credentials_out_of_sight(), None, "{method:?}");
        }
        assert_eq!(enabled().credentials_out_of_sight(), None);
    }

    #[test]
    fn an_issuer_with_its_own_introspection_endpoint_gets_one_of_its_own() {
        let read = |_: &[u8]| -> Result<(String, Vec<crate::oauth::jose::jwk::Jwk>), String> {
            Err("no files".into())
        };
        let issuer = |args: &[&[u8]]| crate::conf::jwt::parse_issuer(args, read).unwrap();
        let mut conf = enabled();
        conf.require_audience = Some(crate::oauth::verdict::AudienceRule {
            accepted: vec!["api".into()],
            index: 0,
        });
        conf.jwt.on = Some(true);
        for args in [
            &[&b"https://a"[..], b"mode=introspect", b"introspect=/_a"][..],
            &[b"https://b", b"mode=introspect"],
            &[b"https://c", b"mode=introspect", b"introspect=/_a"],
        ] {
            conf.jwt.add_issuer(issuer(args)).unwrap();
        }
        conf.merge(&LocationConf::default()).unwrap();
        conf.scope_caches(&[1; 32], &[2; 32], b"");
        // One endpoint per URI, shared by the issuers naming it.
        assert_eq!(conf.issuer_endpoints.len(), 1);
        assert_eq!(conf.jwt.issuer_endpoint, [Some(0), None, Some(0)]);
        let own = &conf.issuer_endpoints[0];
        assert_eq!(own.uri(), b"/_a");
        assert!(own.key_scope != conf.introspection.key_scope);
        assert!(own.tier_scope != conf.introspection.tier_scope);
        assert!(own.cache.is_some() == conf.introspection.cache.is_some());
    }
}
