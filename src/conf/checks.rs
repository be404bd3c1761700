//! Checks across directives that the glue makes while it merges a location,
//! where more than this block's configuration is known (the http block's).
//! Each error is the text `nginx -t` prints.

use std::collections::hash_map::{Entry, HashMap};

use super::LocationConf;
use crate::oauth::cache::key::KeyScope;

/// `auth_oauth2_token_shared_cache` (a location or an enclosing block)
/// needs `auth_oauth2_token_redis` in the http block; `redis_configured`
/// says whether the http block has it.
pub fn shared_cache_needs_redis(
    location: &LocationConf,
    redis_configured: bool,
) -> Result<(), String> {
    if location.shared_cache_uri().is_some() && !redis_configured {
        return Err(
            "\"auth_oauth2_token_shared_cache\" needs \"auth_oauth2_token_redis\" in the http block"
                .into(),
        );
    }
    Ok(())
}

/// `auth_oauth2_token_require` (this block's or inherited) where the token
/// is only exchanged: accepted, as the C module of the same name accepts it
/// there, but never evaluated, since it is checked on the answer of an
/// introspection and none is made. The warning `nginx -t` prints, naming
/// the block (`place`), or `None` where every requirement is evaluated or
/// nothing is checked at all.
pub fn require_not_evaluated(location: &LocationConf, place: &str) -> Option<String> {
    let exchange_only = location.exchange_enabled() && !location.introspection_enabled();
    if !exchange_only || location.require.is_empty() {
        return None;
    }
    Some(format!(
        "\"auth_oauth2_token_require\" is not evaluated in {place} ({} requirement{}): it is checked on the answer of an introspection, and \"auth_oauth2_token_introspect\" is off where tokens are only exchanged (\"auth_oauth2_token_exchange on\"); set \"auth_oauth2_token_introspect on\" to have it checked",
        location.require.len(),
        if location.require.len() == 1 { "" } else { "s" },
    ))
}

/// With `auth_oauth2_token_shared_cache`, a location whose IdP
/// credentials the module cannot see (mutual TLS: the internal location's
/// certificate; Curity's `phantom_token on`: its headers) needs
/// `auth_oauth2_token_shared_cache_tenant`: nothing else in its Redis names
/// tells whose answers they are, on another gateway of the fleet.
pub fn shared_cache_knows_whose_answers(location: &LocationConf) -> Result<(), String> {
    if location.shared_endpoints().next().is_none() || location.shared_tenant.is_some() {
        return Ok(());
    }
    match location.credentials_out_of_sight() {
        Some(why) => Err(format!(
            "\"auth_oauth2_token_shared_cache\" needs \"auth_oauth2_token_shared_cache_tenant\" here: {why}, which the module cannot see, so nothing in the Redis tier's names tells whose answers these are; name them (the same id on every gateway that reaches the same IdP with the same credentials)"
        )),
        None => Ok(()),
    }
}

/// The Redis tier must keep apart what this gateway's zones keep apart.
/// It names a server by its `server_name`s only (gateways listen on
/// addresses of their own), so two server blocks of one configuration that
/// differ only by `listen` would share answers there while their zones do
/// not: refused, unless the operator named a tenant
/// (`auth_oauth2_token_shared_cache_tenant`: different ids keep them apart,
/// the same id says they may share). `place` names the location and its
/// server for the message; `seen` collects every location's Redis tier
/// scopes, each with its zone scope and where it was met.
pub fn redis_keeps_apart_what_zones_do(
    seen: &mut HashMap<KeyScope, (KeyScope, String)>,
    location: &LocationConf,
    place: &str,
) -> Result<(), String> {
    if location.shared_tenant.is_some() {
        return Ok(());
    }
    for endpoint in location.shared_endpoints() {
        match seen.entry(endpoint.tier_scope) {
            Entry::Vacant(slot) => {
                slot.insert((endpoint.key_scope, place.to_owned()));
            }
            Entry::Occupied(met) if met.get().0 == endpoint.key_scope => {}
            Entry::Occupied(met) => {
                return Err(format!(
                    "{place} and {} would share their answers from \"{}\" in the Redis tier (\"auth_oauth2_token_shared_cache\"), which knows a server by its server_name only, while this gateway's caches keep them apart by \"listen\": set \"auth_oauth2_token_shared_cache_tenant\" in both, different ids to keep them apart, the same id to let them share",
                    met.get().1,
                    String::from_utf8_lossy(endpoint.uri()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_cache(value: Option<&[u8]>) -> LocationConf {
        LocationConf {
            shared_cache: Some(value.map(<[u8]>::to_vec)),
            ..Default::default()
        }
    }

    #[test]
    fn shared_cache_without_redis_fails_naming_both_directives() {
        assert_eq!(
            shared_cache_needs_redis(&shared_cache(Some(b"/_redis")), false),
            Err("\"auth_oauth2_token_shared_cache\" needs \"auth_oauth2_token_redis\" in the http block".into())
        );
    }

    #[test]
    fn require_where_tokens_are_only_exchanged_is_not_evaluated_and_said_so() {
        use crate::conf::{Requirement, Template};
        let requirement = || Requirement {
            variables: vec![Template(core::ptr::null_mut())],
            status: 401,
        };
        let block = |introspect, exchange, require: usize| LocationConf {
            introspect: Some(introspect),
            exchange: Some(exchange),
            require: (0..require).map(|_| requirement()).collect(),
            ..Default::default()
        };
        let warning = require_not_evaluated(&block(false, true, 2), "location \"/x\"").unwrap();
        assert!(
            warning.starts_with("\"auth_oauth2_token_require\" is not evaluated in location \"/x\" (2 requirements)"),
            "{warning}"
        );
        assert!(
            warning.contains("\"auth_oauth2_token_introspect\" is off"),
            "{warning}"
        );
        assert!(require_not_evaluated(&block(false, true, 1), "")
            .unwrap()
            .contains("(1 requirement)"));
        // Evaluated after introspection; nothing checked where both are off;
        // nothing to say without a requirement.
        assert_eq!(require_not_evaluated(&block(true, true, 1), ""), None);
        assert_eq!(require_not_evaluated(&block(true, false, 1), ""), None);
        assert_eq!(require_not_evaluated(&block(false, false, 1), ""), None);
        assert_eq!(require_not_evaluated(&block(false, true, 0), ""), None);
    }

    #[test]
    fn shared_cache_with_redis_passes() {
        assert_eq!(
            shared_cache_needs_redis(&shared_cache(Some(b"/_redis")), true),
            Ok(())
        );
    }

    use crate::conf::{CacheConf, ClientAuth, Endpoint, SecretSource};

    /// A merged location that keeps its introspection answers in the Redis
    /// tier, scoped in a server known by `listens` and `names` here and by
    /// `names` in the Redis tier.
    fn in_server(conf: LocationConf, listens: &[&[u8]], names: &[&[u8]]) -> LocationConf {
        use crate::oauth::cache::key::server_identity;
        let mut conf = LocationConf {
            introspect: Some(true),
            introspection: Endpoint {
                cache: Some(CacheConf {
                    zone: core::ptr::null_mut(),
                    policy: Default::default(),
                    metrics: Default::default(),
                }),
                ..Endpoint::at(b"/_introspect")
            },
            client_id: Some(b"gw".to_vec()),
            shared_cache: Some(Some(b"/_redis".to_vec())),
            ..conf
        };
        conf.merge(&LocationConf::default()).unwrap();
        conf.scope_caches(
            &server_identity(listens, names),
            &server_identity(&[], names),
            b"",
        );
        conf
    }

    fn tenant(id: &[u8]) -> LocationConf {
        LocationConf {
            shared_tenant: Some(id.to_vec()),
            ..Default::default()
        }
    }

    fn check_all(locations: &[(&LocationConf, &str)]) -> Result<(), String> {
        let mut seen = HashMap::new();
        for (location, place) in locations {
            redis_keeps_apart_what_zones_do(&mut seen, location, place)?;
        }
        Ok(())
    }

    #[test]
    fn servers_apart_only_by_listen_are_refused_naming_the_tenant_directive() {
        let a = in_server(LocationConf::default(), &[b"127.0.0.1:8081"], &[]);
        let b = in_server(LocationConf::default(), &[b"127.0.0.1:8082"], &[]);
        let err = check_all(&[(&a, "location \"/a\""), (&b, "location \"/b\"")]).unwrap_err();
        assert!(
            err.starts_with("location \"/b\" and location \"/a\" would share"),
            "{err}"
        );
        assert!(
            err.contains("\"auth_oauth2_token_shared_cache_tenant\""),
            "{err}"
        );
        assert!(
            err.contains("\"/_introspect\"") && err.contains("\"listen\""),
            "{err}"
        );

        // The same server_name, other listens: the same.
        let a = in_server(LocationConf::default(), &[b"127.0.0.1:80"], &[b"api"]);
        let b = in_server(LocationConf::default(), &[b"127.0.0.1:443"], &[b"api"]);
        assert!(check_all(&[(&a, "a"), (&b, "b")]).is_err());
    }

    #[test]
    fn tenants_names_or_credentials_that_differ_keep_them_apart() {
        let l1: &[&[u8]] = &[b"127.0.0.1:8081"];
        let l2: &[&[u8]] = &[b"127.0.0.1:8082"];
        let secret = |s: &[u8]| LocationConf {
            client_secret: Some((SecretSource::Inline, s.to_vec())),
            ..Default::default()
        };
        let pairs = [
            (
                in_server(tenant(b"a"), l1, &[]),
                in_server(tenant(b"b"), l2, &[]),
            ),
            // The same tenant: the operator lets them share.
            (
                in_server(tenant(b"a"), l1, &[]),
                in_server(tenant(b"a"), l2, &[]),
            ),
            (
                in_server(LocationConf::default(), l1, &[b"a.test"]),
                in_server(LocationConf::default(), l2, &[b"b.test"]),
            ),
            (
                in_server(secret(b"one"), l1, &[]),
                in_server(secret(b"two"), l2, &[]),
            ),
            // One server, two locations: one zone scope.
            (
                in_server(LocationConf::default(), l1, &[]),
                in_server(LocationConf::default(), l1, &[]),
            ),
        ];
        for (i, (a, b)) in pairs.iter().enumerate() {
            assert_eq!(check_all(&[(a, "a"), (b, "b")]), Ok(()), "pair {i}");
        }
        // A tenant on one side only: their Redis names differ.
        let a = in_server(tenant(b"a"), l1, &[]);
        let b = in_server(LocationConf::default(), l2, &[]);
        assert_eq!(check_all(&[(&a, "a"), (&b, "b")]), Ok(()));
        assert_eq!(check_all(&[(&b, "b"), (&a, "a")]), Ok(()));
    }

    #[test]
    fn locations_without_the_redis_tier_are_not_compared() {
        let l1: &[&[u8]] = &[b"127.0.0.1:8081"];
        let l2: &[&[u8]] = &[b"127.0.0.1:8082"];
        let a = in_server(LocationConf::default(), l1, &[]);
        let mut b = in_server(LocationConf::default(), l2, &[]);
        assert!(check_all(&[(&a, "a"), (&b, "b")]).is_err());
        b.shared_cache = Some(None);
        assert_eq!(check_all(&[(&a, "a"), (&b, "b")]), Ok(()));
    }

    #[test]
    fn tls_and_curity_locations_with_the_redis_tier_need_a_tenant() {
        for conf in [
            LocationConf {
                client_auth: Some(ClientAuth::TlsClientAuth),
                ..Default::default()
            },
            LocationConf {
                client_auth: Some(ClientAuth::SelfSignedTlsClientAuth),
                ..Default::default()
            },
            LocationConf {
                phantom: Some(true),
                credentials_in_location: Some(true),
                client_id: None,
                ..Default::default()
            },
        ] {
            let location = in_server(conf, &[b"127.0.0.1:80"], &[b"api"]);
            let err = shared_cache_knows_whose_answers(&location).unwrap_err();
            assert!(
                err.contains("\"auth_oauth2_token_shared_cache_tenant\""),
                "{err}"
            );
            let named = LocationConf {
                shared_tenant: Some(b"acme".to_vec()),
                ..location
            };
            assert_eq!(shared_cache_knows_whose_answers(&named), Ok(()));
            let mut alone = named;
            alone.shared_tenant = None;
            alone.shared_cache = Some(None);
            assert_eq!(
                shared_cache_knows_whose_answers(&alone),
                Ok(()),
                "no Redis tier"
            );
        }
        let basic = in_server(LocationConf::default(), &[b"127.0.0.1:80"], &[b"api"]);
        assert_eq!(shared_cache_knows_whose_answers(&basic), Ok(()));
    }

    #[test]
    fn no_shared_cache_or_off_needs_no_redis() {
        assert_eq!(
            shared_cache_needs_redis(&LocationConf::default(), false),
            Ok(())
        );
        assert_eq!(shared_cache_needs_redis(&shared_cache(None), false), Ok(()));
    }
}
