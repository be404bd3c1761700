//! Per-location configuration: what the directives set, how a location
//! inherits from the blocks around it, and what must hold before nginx starts.

pub mod cache_args;
pub mod checks;
pub mod dpop;
pub mod endpoint;
pub mod jwt;
pub mod redis_args;
pub mod redis_tls;
pub mod require_args;
pub mod resource_metadata;
pub mod scopes;
pub mod ssf;
pub mod ssf_poll;
pub mod statuses;
pub mod template;

use crate::metrics::{Catalogue, Counters};
use crate::oauth::cache::key::KeyScope;
use crate::oauth::carriers::TokenSource;
use crate::oauth::claim_rule::ClaimCheck;
#[cfg(test)]
use crate::oauth::claim_rule::ClaimRule;
use crate::oauth::client_auth::{self, Alg, AssertionKey};
use crate::oauth::form;
use crate::oauth::introspection::ClaimPaths;
use crate::oauth::verdict::AudienceRule;
use crate::resilience::breaker::BreakerConf;
pub use endpoint::{is_valid_endpoint, CacheConf, Endpoint};
pub use resource_metadata::ResourceMetadataConf;
pub use statuses::{parse_error_status, Situation, Statuses};
pub use template::Template;

/// The realm used in `WWW-Authenticate` when `auth_oauth2_token_realm` is unset.
pub const DEFAULT_REALM: &str = "api";

/// How the module authenticates to the IdP: `oauth::client_auth::Method`.
pub use crate::oauth::client_auth::Method as ClientAuth;

/// One `auth_oauth2_token_require`: every variable must be non-empty and not "0".
#[derive(Debug, Clone)]
pub struct Requirement {
    pub variables: Vec<Template>,
    pub status: u16,
}

/// `auth_oauth2_token_www_authenticate`: the challenge sent with refusals.
#[derive(Debug, Clone, Copy)]
pub enum Challenge {
    /// The module's RFC 6750 challenge (the default).
    Standard,
    /// No `WWW-Authenticate` header.
    Off,
    /// The operator's value, which may contain variables, in place of ours.
    Custom(Template),
}

/// The request phase the check runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// PREACCESS: before limit_req/limit_conn, so they can use the claims.
    Preaccess,
    /// ACCESS, like auth_basic and auth_request (the default).
    Access,
}

/// Where a client secret came from; only one source may be set per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Inline,
    File,
}

/// http-level configuration.
#[derive(Debug, Default)]
pub struct MainConf {
    /// The claim paths of `auth_oauth2_token_claim_set` (in variable order)
    /// and of `auth_oauth2_token_require_claim`, read from every answer.
    pub claims: ClaimPaths,
    /// The index of `$oauth2_token_error` when the configuration uses it,
    /// set at postconfiguration.
    pub error_variable: Option<usize>,
    /// Every series the metrics count, and where they count (set when the
    /// counters zone is initialised).
    pub metrics: Catalogue,
    pub counters: Counters,
    /// The cache zones, by name, for the metrics page.
    pub zones: Vec<(String, *mut core::ffi::c_void)>,
    /// `auth_oauth2_token_redis`: the Redis tier, when configured.
    pub redis: Option<RedisTier>,
    /// The `LocationConf`s with `auth_oauth2_token_redis_pass` (opaque
    /// pointers into the configuration pool), wired to the upstream once
    /// the http block is parsed.
    pub redis_passes: Vec<*mut core::ffi::c_void>,
    /// The first location with `auth_oauth2_token_redis_pass` and a plain
    /// path: that path and its server block's configuration context
    /// (opaque), where a worker's own Redis calls go, outside any client
    /// request (`redis/cluster_start.rs`).
    pub redis_pass_at: Option<(Vec<u8>, *mut core::ffi::c_void)>,
    /// The `LocationConf`s with an `auth_oauth2_token_redis_ssl*`
    /// directive, each of which must have `auth_oauth2_token_redis_pass`.
    pub redis_tls_locations: Vec<*mut core::ffi::c_void>,
    /// The tier's TLS (`auth_oauth2_token_redis_ssl on`), made when the
    /// http block is parsed (`redis/tls.rs`).
    pub redis_tls: Option<redis_tls::TierTls>,
    /// The Redis tier's scopes of the locations merged so far, each with
    /// its zone scope and where it was met
    /// (`checks::redis_keeps_apart_what_zones_do`).
    pub tier_scopes: std::collections::HashMap<KeyScope, (KeyScope, String)>,
    /// The variables `auth_oauth2_token_require` refers to, each with where
    /// it is written ("FILE:LINE"), checked once every variable is declared.
    pub require_variables: Vec<(Vec<u8>, String)>,
    /// `auth_oauth2_token_ssf_receiver`: the Shared Signals receiver and
    /// its revocation list, checked on every request when configured.
    pub ssf: Option<ssf::SsfReceiver>,
    /// `auth_oauth2_token_ssf_poll`: the receiver polls its transmitter
    /// (RFC 8936) through this location, from worker 0.
    pub ssf_poll: Option<ssf_poll::SsfPoll>,
}

/// `auth_oauth2_token_redis`: the Redis server of the Redis tier and the
/// secrets that go with it, read once at configuration time.
pub struct RedisTier {
    /// The upstream's `ngx_http_upstream_srv_conf_t`, opaque here.
    pub upstream: *mut core::ffi::c_void,
    /// What names and seals entries and purge messages (current, old).
    pub keys: crate::redis::fleet::FleetKeys,
    /// `AUTH [user] password` (if a password is configured) and `SELECT n`
    /// (if n != 0), RESP-encoded: the start of every pipeline.
    pub preamble: Vec<u8>,
    /// How many replies `preamble` asks for.
    pub preamble_replies: usize,
    /// Key prefix (`oauth2:`); the purge channel is `<prefix>purge`.
    pub prefix: Vec<u8>,
    /// `sentinel=NAME`: `upstream` is the sentinels, and every call goes to
    /// the primary they name NAME (`redis/sentinel_watch.rs`).
    pub sentinel: Option<Vec<u8>>,
    /// `AUTH <sentinel password>`, RESP-encoded, when the sentinels have
    /// one (empty otherwise): sent before the question.
    pub sentinel_auth: Vec<u8>,
    /// `cluster`: `upstream` is a Redis Cluster's seed nodes, and every
    /// call goes to its slot's primary (`redis/cluster_route.rs`).
    pub cluster: bool,
}

impl RedisTier {
    /// The purge channel, `<prefix>purge`.
    pub fn channel(&self) -> Vec<u8> {
        [&self.prefix[..], b"purge"].concat()
    }

    /// The revocations pushed by the IdP (`fleet::revocation_list`).
    pub fn revocation_list(&self) -> Vec<u8> {
        crate::redis::fleet::revocation_list(&self.prefix)
    }
}

/// Never prints the secrets (keys, the password inside the preamble).
impl core::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RedisTier")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("preamble_replies", &self.preamble_replies)
            .finish_non_exhaustive()
    }
}

/// The `auth_oauth2_token_redis_*` values of the location that talks to
/// Redis (`auth_oauth2_token_redis_pass`); not inherited.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisLocation {
    /// `auth_oauth2_token_redis_pass`: the location's
    /// `ngx_http_upstream_conf_t` (opaque; null until the http block is parsed).
    pub pass: Option<*mut core::ffi::c_void>,
    pub connect_timeout_ms: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub next_upstream: Option<redis_args::NextUpstream>,
    pub buffer_size: Option<usize>,
}

impl RedisLocation {
    pub const DEFAULT_TIMEOUT_MS: u64 = 500;
    pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

    /// Whether a call past its deadline moves on to the next server.
    pub fn fails_over_on_deadline(&self) -> bool {
        self.next_upstream.unwrap_or_default().timeout
    }

    /// How long a call may take from its start: to connect, then to send
    /// and be answered.
    pub fn deadline_ms(&self) -> u64 {
        self.connect_timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS)
            + self.read_timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS)
    }
}

#[derive(Debug, Default)]
pub struct LocationConf {
    pub introspect: Option<bool>,
    /// `auth_oauth2_token_introspect_endpoint` and `_introspect_cache`.
    pub introspection: Endpoint,
    pub client_id: Option<Vec<u8>>,
    pub client_secret: Option<(SecretSource, Vec<u8>)>,
    pub realm: Option<String>,
    pub exchange: Option<bool>,
    /// `auth_oauth2_token_token_endpoint` and `_exchange_cache`.
    pub token_endpoint: Endpoint,
    pub audience: Option<Template>,
    pub scope: Option<Template>,
    pub resource: Option<Template>,
    pub requested_token_type: Option<Vec<u8>>,
    pub require_scope: Option<Vec<String>>,
    pub require_audience: Option<AudienceRule>,
    /// `auth_oauth2_token_require_resource`: the URL `aud` must name, and where `aud` is kept.
    pub require_resource: Option<(Template, usize)>,
    /// `auth_oauth2_token_require_acr` (RFC 9470 step-up).
    pub require_acr: Option<crate::oauth::step_up::AcrRule>,
    /// `auth_oauth2_token_max_auth_age` (RFC 9470 step-up).
    pub max_auth_age: Option<crate::oauth::step_up::AgeRule>,
    /// The required scopes as the challenge's `scope` attribute, derived at merge time.
    pub required_scope_text: String,
    pub client_auth: Option<ClientAuth>,
    pub pass_options: Option<bool>,
    pub phase: Option<Phase>,
    pub www_authenticate: Option<Challenge>,
    pub phantom: Option<bool>,
    pub statuses: Statuses,
    /// Where the token is looked for, in order; `None` means `bearer`.
    pub token_source: Option<Vec<TokenSource>>,
    /// Enclosing blocks' claim requirements first, then this block's own.
    pub require_claim: Vec<ClaimCheck>,
    /// Enclosing blocks' requirements first, then this block's own.
    pub require: Vec<Requirement>,
    /// `Authorization` value for the IdP (empty with client_secret_post),
    /// derived once at merge time.
    pub client_authorization: Vec<u8>,
    /// What client_secret_post and the TLS methods append to every IdP
    /// request body (else empty).
    pub client_credentials_form: Vec<u8>,
    /// `auth_oauth2_token_client_assertion_audience`: `aud` of client assertions.
    pub assertion_audience: Option<String>,
    /// `auth_oauth2_token_client_key_file`: the PEM of private_key_jwt's key.
    pub client_key_pem: Option<Vec<u8>>,
    /// `auth_oauth2_token_client_key_id`: the assertions' `kid`.
    pub client_key_id: Option<String>,
    /// `auth_oauth2_token_client_assertion_alg`.
    pub assertion_alg: Option<Alg>,
    /// What signs this location's client assertions, derived at merge time.
    pub assertion_key: Option<AssertionKey>,
    /// `auth_oauth2_token_cache_vary`: per-request values both caches' keys include.
    pub cache_vary: Option<Template>,
    /// `auth_oauth2_token_breaker`.
    pub breaker: Option<BreakerConf>,
    /// `auth_oauth2_token_metrics`: this location shows the metrics page.
    pub metrics_page: bool,
    /// `auth_oauth2_token_purge`: the location answers purge requests.
    pub purge_page: bool,
    /// `auth_oauth2_token_ssf_push`: the location is the Shared Signals
    /// receiver's push endpoint.
    pub ssf_push_page: bool,
    /// `auth_oauth2_token_ssf_poll`: the location is the one the Shared
    /// Signals receiver polls its transmitter through.
    pub ssf_poll_page: bool,
    /// The push page's (or the poll's) fetch of the transmitter's JWK Set
    /// (`keys_request=` of `auth_oauth2_token_ssf_receiver`), named at
    /// merge time.
    pub ssf_keys: Option<crate::oauth::jose::verify::KeysFetch>,
    /// `auth_oauth2_token_resource_metadata`: the location serves RFC 9728
    /// Protected Resource Metadata (this location only).
    pub resource_metadata: Option<ResourceMetadataConf>,
    /// `auth_oauth2_token_resource_metadata_url`: the URL of this resource's
    /// RFC 9728 metadata, named in every challenge; `off` is `Some(None)`.
    pub resource_metadata_url: Option<Option<Template>>,
    /// `auth_oauth2_token_redis_pass` and its timeouts (this location only).
    pub redis: RedisLocation,
    /// `auth_oauth2_token_redis_ssl*` (this location only).
    pub redis_tls: redis_tls::RedisTls,
    /// `auth_oauth2_token_shared_cache`: the internal location of the shared
    /// tier (Redis), or `off` (`Some(None)`).
    pub shared_cache: Option<Option<Vec<u8>>>,
    /// `auth_oauth2_token_shared_cache_tenant`: whose answers these are, as
    /// the operator names them; part of every cache key.
    pub shared_tenant: Option<Vec<u8>>,
    /// Scopes the challenge announces (Curity's `phantom_token_scopes`).
    pub announced_scopes: Option<String>,
    /// The same one by one (Curity's `phantom_token_scope`); `announced_scopes` wins.
    pub announced_scope_list: Vec<String>,
    /// Whether the internal location supplies the IdP credentials itself, as
    /// Curity's configurations do (`phantom_token on`): no client id needed.
    pub credentials_in_location: Option<bool>,
    /// `auth_oauth2_token_jwt_*`: JWT access tokens checked at the gateway.
    pub jwt: jwt::JwtConf,
    /// Derived once merged: the introspection endpoints of issuers with
    /// their own (`jwt.issuer_endpoint` says whose).
    pub issuer_endpoints: Vec<Endpoint>,
    /// `auth_oauth2_token_dpop_*`: DPoP proofs and their replay store.
    pub dpop: dpop::DpopConf,
}

impl LocationConf {
    pub fn introspection_enabled(&self) -> bool {
        self.introspect == Some(true)
    }

    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::Access)
    }

    /// A CORS preflight (OPTIONS without a token) passes unchecked.
    pub fn passes_preflight(&self) -> bool {
        self.pass_options == Some(true)
    }

    pub fn exchange_enabled(&self) -> bool {
        self.exchange == Some(true)
    }

    /// JWT access tokens are verified here (`auth_oauth2_token_jwt on`).
    pub fn jwt_enabled(&self) -> bool {
        self.jwt.enabled()
    }

    pub fn phantom_enabled(&self) -> bool {
        self.phantom == Some(true)
    }

    /// The internal location of the Redis tier, when this block uses one.
    pub fn shared_cache_uri(&self) -> Option<&[u8]> {
        self.shared_cache.as_ref()?.as_deref()
    }

    pub fn announced_scopes(&self) -> Option<&str> {
        self.announced_scopes.as_deref()
    }

    /// The URL of the resource's metadata the challenges name, if any.
    pub fn resource_metadata_url(&self) -> Option<Template> {
        self.resource_metadata_url.flatten()
    }

    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(DEFAULT_REALM)
    }

    /// Inherits every unset value from the enclosing block, then checks that
    /// the result is usable. The error names the directive to fix.
    pub fn merge(&mut self, prev: &LocationConf) -> Result<(), String> {
        inherit(&mut self.introspect, &prev.introspect);
        self.introspection.inherit(&prev.introspection);
        inherit(&mut self.shared_cache, &prev.shared_cache);
        inherit(&mut self.shared_tenant, &prev.shared_tenant);
        inherit(&mut self.client_id, &prev.client_id);
        inherit(&mut self.client_secret, &prev.client_secret);
        inherit(&mut self.realm, &prev.realm);
        inherit(&mut self.exchange, &prev.exchange);
        self.token_endpoint.inherit(&prev.token_endpoint);
        inherit(&mut self.audience, &prev.audience);
        inherit(&mut self.scope, &prev.scope);
        inherit(&mut self.resource, &prev.resource);
        inherit(&mut self.requested_token_type, &prev.requested_token_type);
        inherit(&mut self.require_scope, &prev.require_scope);
        inherit(&mut self.require_audience, &prev.require_audience);
        inherit(&mut self.require_resource, &prev.require_resource);
        inherit(&mut self.require_acr, &prev.require_acr);
        inherit(&mut self.max_auth_age, &prev.max_auth_age);
        inherit(&mut self.client_auth, &prev.client_auth);
        inherit(&mut self.pass_options, &prev.pass_options);
        inherit(&mut self.phase, &prev.phase);
        inherit(&mut self.www_authenticate, &prev.www_authenticate);
        inherit(&mut self.resource_metadata_url, &prev.resource_metadata_url);
        inherit(&mut self.phantom, &prev.phantom);
        inherit(&mut self.token_source, &prev.token_source);
        inherit(&mut self.cache_vary, &prev.cache_vary);
        inherit(&mut self.breaker, &prev.breaker);
        inherit(&mut self.assertion_audience, &prev.assertion_audience);
        inherit(&mut self.client_key_pem, &prev.client_key_pem);
        inherit(&mut self.client_key_id, &prev.client_key_id);
        inherit(&mut self.assertion_alg, &prev.assertion_alg);
        inherit(&mut self.announced_scopes, &prev.announced_scopes);
        inherit(
            &mut self.credentials_in_location,
            &prev.credentials_in_location,
        );
        if self.announced_scope_list.is_empty() {
            self.announced_scope_list
                .clone_from(&prev.announced_scope_list);
        }
        if self.announced_scopes.is_none() && !self.announced_scope_list.is_empty() {
            self.announced_scopes = Some(self.announced_scope_list.join(" "));
        }
        self.statuses.inherit(&prev.statuses);
        // Requirements add up: a location keeps those of its server and http blocks.
        let own = std::mem::take(&mut self.require);
        self.require = prev.require.iter().cloned().chain(own).collect();
        let own = std::mem::take(&mut self.require_claim);
        self.require_claim = prev.require_claim.iter().cloned().chain(own).collect();
        self.required_scope_text = self.require_scope.as_deref().unwrap_or_default().join(" ");
        self.jwt.inherit(&prev.jwt);
        let introspects = self.introspection_enabled();
        self.jwt
            .finish(self.require_audience.as_ref(), introspects)?;
        self.derive_issuer_endpoints();
        self.dpop.inherit(&prev.dpop);
        self.dpop.finish();

        if !self.introspection_enabled() && !self.jwt_enabled() && self.exchange_enabled() {
            if self.require_scope.is_some() {
                return Err("\"auth_oauth2_token_require_scope\" needs \"auth_oauth2_token_introspect on\": scopes come from introspection".into());
            }
            if self.require_audience.is_some() {
                return Err("\"auth_oauth2_token_require_audience\" needs \"auth_oauth2_token_introspect on\": the audience comes from introspection".into());
            }
            if self.require_resource.is_some() {
                return Err("\"auth_oauth2_token_require_resource\" needs \"auth_oauth2_token_introspect on\" or \"auth_oauth2_token_jwt on\": the audience comes from the token's claims".into());
            }
            if self.require_acr.is_some() || self.max_auth_age.is_some() {
                return Err("\"auth_oauth2_token_require_acr\" and \"auth_oauth2_token_max_auth_age\" need \"auth_oauth2_token_introspect on\" or \"auth_oauth2_token_jwt on\": acr and auth_time come from the token's claims".into());
            }
            if !self.require_claim.is_empty() {
                return Err("\"auth_oauth2_token_require_claim\" needs \"auth_oauth2_token_introspect on\": claims come from introspection".into());
            }
            // `auth_oauth2_token_require` is not refused here: the C module's
            // configurations have it where tokens are only exchanged, where
            // it is not evaluated (checks::require_not_evaluated warns).
        }
        if self.phantom_enabled() {
            if !self.introspection_enabled() {
                return Err("\"auth_oauth2_token_phantom\" needs \"auth_oauth2_token_introspect on\": the JWT comes from introspection".into());
            }
            if self.exchange_enabled() {
                return Err("\"auth_oauth2_token_phantom\" and \"auth_oauth2_token_exchange\" both replace the upstream's Authorization: turn one off".into());
            }
        }
        let switch = match (self.introspection_enabled(), self.exchange_enabled()) {
            (false, false) => return Ok(()),
            (true, _) => "auth_oauth2_token_introspect",
            (false, true) => "auth_oauth2_token_exchange",
        };
        if self.introspection_enabled() && self.introspection.uri.is_none() {
            return Err("\"auth_oauth2_token_introspect\" is on but \"auth_oauth2_token_introspect_endpoint\" is not set".into());
        }
        if self.exchange_enabled() && self.token_endpoint.uri.is_none() {
            return Err("\"auth_oauth2_token_exchange\" is on but \"auth_oauth2_token_token_endpoint\" is not set".into());
        }
        let Some(client_id) = &self.client_id else {
            if self.credentials_in_location == Some(true) {
                return Ok(());
            }
            return Err(format!(
                "\"{switch}\" is on but \"auth_oauth2_token_client_id\" is not set"
            ));
        };
        let secret = self.client_secret.as_ref().map_or(&[][..], |(_, s)| s);
        let method = self.client_auth.unwrap_or(ClientAuth::Basic);
        match method {
            ClientAuth::Basic => {
                self.client_authorization = form::basic_credentials(client_id, secret)
            }
            ClientAuth::Post => {
                self.client_credentials_form = form::client_credentials_form(client_id, secret)
            }
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
                self.client_credentials_form = client_auth::client_id_form(client_id)
            }
            ClientAuth::SecretJwt => {
                if self.client_secret.is_none() {
                    return Err("\"auth_oauth2_token_client_auth client_secret_jwt\" needs \"auth_oauth2_token_client_secret\" or \"auth_oauth2_token_client_secret_file\"".into());
                }
                if self.assertion_alg.is_some_and(|alg| alg != Alg::HS256) {
                    return Err("\"auth_oauth2_token_client_assertion_alg\" must be HS256 with client_secret_jwt".into());
                }
                let key = AssertionKey::from_secret(secret).map_err(|e| {
                    let directive = match self.client_secret {
                        Some((SecretSource::File, _)) => "auth_oauth2_token_client_secret_file",
                        _ => "auth_oauth2_token_client_secret",
                    };
                    format!("\"auth_oauth2_token_client_auth client_secret_jwt\" signs with the client secret, and the one of \"{directive}\" {e}")
                })?;
                self.assertion_key = Some(key);
            }
            ClientAuth::PrivateKeyJwt => {
                let Some(pem) = &self.client_key_pem else {
                    return Err("\"auth_oauth2_token_client_auth private_key_jwt\" needs \"auth_oauth2_token_client_key_file\"".into());
                };
                let key =
                    AssertionKey::from_pem(pem, self.assertion_alg, self.client_key_id.clone())
                        .map_err(|e| format!("\"auth_oauth2_token_client_key_file\" {e}"))?;
                self.assertion_key = Some(key);
            }
        }
        if method.signs() && self.assertion_audience.is_none() {
            return Err("client assertions need \"auth_oauth2_token_client_assertion_audience\": the IdP's issuer or endpoint URL, which the module cannot know from an internal location".into());
        }
        Ok(())
    }
}

impl LocationConf {
    /// Gives the location's IdP calls their series, by internal location
    /// and kind (locations calling the same one share them).
    pub fn register_metrics(&mut self, catalogue: &mut Catalogue, server: &[u8; 32]) {
        if self.jwt_enabled() {
            self.jwt.metrics = Some(catalogue.jwt());
            let issuers = &self.jwt.issuers_ready;
            self.jwt.key_set_metrics = issuers
                .iter()
                .map(|i| {
                    i.fetch
                        .as_ref()
                        .map(|_| catalogue.key_set(&i.policy.issuer))
                })
                .collect();
        }
        if self.jwt_enabled() || self.introspection_enabled() {
            self.dpop.metrics = Some(catalogue.dpop());
        }
        let server: String = server[..8].iter().map(|b| format!("{b:02x}")).collect();
        let breaker = self.breaker.is_some();
        let (introspects, exchanges) = (self.introspection_enabled(), self.exchange_enabled());
        let kinds = [
            (introspects, &mut self.introspection, "introspection"),
            (exchanges, &mut self.token_endpoint, "exchange"),
        ];
        let issuers = self.issuer_endpoints.iter_mut();
        let kinds = kinds
            .into_iter()
            .chain(issuers.map(|e| (introspects, e, "introspection")));
        for (enabled, endpoint, kind) in kinds {
            let Some(uri) = endpoint.uri.as_deref().filter(|_| enabled) else {
                continue;
            };
            let uri = String::from_utf8_lossy(uri).into_owned();
            if breaker {
                endpoint.breaker = Some(catalogue.breaker(&server, &uri, kind));
            }
            endpoint.metrics = catalogue.endpoint(&uri, kind);
        }
    }
}

fn inherit<T: Clone>(value: &mut Option<T>, prev: &Option<T>) {
    if value.is_none() {
        value.clone_from(prev);
    }
}

/// What a secret file's permission bits let others do, when they let
/// anyone but its owner read or write it (`mode & 0o077`): the warning's
/// words. nginx reads its files as the user that starts it (root, usually),
/// so `0600` or `0400` always works.
pub fn secret_file_too_open(mode: u32) -> Option<String> {
    let open = mode & 0o077;
    if open == 0 {
        return None;
    }
    let who = match (open & 0o070 != 0, open & 0o007 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        _ => "others",
    };
    let what = match (open & 0o044 != 0, open & 0o022 != 0) {
        (true, true) => "read and write",
        (true, false) => "read",
        _ => "write",
    };
    Some(format!(
        "{who} may {what} it (mode {:04o}): make it 0600 or 0400",
        mode & 0o7777
    ))
}

/// A secret file holds the secret on its first line; the line ending is not part of it.
pub fn secret_from_file_contents(contents: &[u8]) -> Vec<u8> {
    let end = contents
        .iter()
        .rposition(|b| *b != b'\n' && *b != b'\r')
        .map_or(0, |i| i + 1);
    contents[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A location that introspects, with a client and a secret (also the
    /// fixture of `conf/scopes.rs`'s tests).
    pub(crate) fn enabled() -> LocationConf {
        LocationConf {
            introspect: Some(true),
            introspection: Endpoint::at(b"/_introspect"),
            client_id: Some(b"gw".to_vec()),
            client_secret: Some((SecretSource::Inline, b"s3cret".to_vec())),
            ..Default::default()
        }
    }

    #[test]
    fn secret_files_open_to_others_are_named() {
        assert_eq!(secret_file_too_open(0o100600), None);
        assert_eq!(secret_file_too_open(0o400), None);
        assert_eq!(secret_file_too_open(0o700), None);
        assert_eq!(
            secret_file_too_open(0o100644).as_deref(),
            Some("its group and others may read it (mode 0644): make it 0600 or 0400")
        );
        assert_eq!(
            secret_file_too_open(0o640).as_deref(),
            Some("its group may read it (mode 0640): make it 0600 or 0400")
        );
        assert_eq!(
            secret_file_too_open(0o604).as_deref(),
            Some("others may read it (mode 0604): make it 0600 or 0400")
        );
        assert_eq!(
            secret_file_too_open(0o666).as_deref(),
            Some("its group and others may read and write it (mode 0666): make it 0600 or 0400")
        );
        assert_eq!(
            secret_file_too_open(0o620).as_deref(),
            Some("its group may write it (mode 0620): make it 0600 or 0400")
        );
    }

    #[test]
    fn location_inherits_unset_values() {
        let parent = enabled();
        let mut child = LocationConf {
            realm: Some("orders".into()),
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        assert!(child.introspection_enabled());
        assert_eq!(
            child.introspection.uri.as_deref(),
            Some(&b"/_introspect"[..])
        );
        assert_eq!(child.realm(), "orders");
        assert_eq!(child.client_authorization, b"Basic Z3c6czNjcmV0");
    }

    #[test]
    fn location_overrides_parent() {
        let parent = enabled();
        let mut child = LocationConf {
            introspect: Some(false),
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        assert!(!child.introspection_enabled());

        let mut child = LocationConf {
            client_secret: Some((SecretSource::File, b"other".to_vec())),
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        assert_eq!(
            child.client_authorization,
            form::basic_credentials(b"gw", b"other")
        );
    }

    #[test]
    fn on_without_endpoint_names_the_directive() {
        let mut conf = LocationConf {
            introspect: Some(true),
            ..Default::default()
        };
        let err = conf.merge(&LocationConf::default()).unwrap_err();
        assert!(
            err.contains("auth_oauth2_token_introspect_endpoint"),
            "{err}"
        );
    }

    #[test]
    fn on_without_client_id_names_the_directive() {
        let mut conf = LocationConf {
            introspect: Some(true),
            introspection: Endpoint::at(b"/i"),
            ..Default::default()
        };
        let err = conf.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_client_id"), "{err}");
    }

    #[test]
    fn exchange_needs_a_token_endpoint_and_a_client() {
        let mut conf = LocationConf {
            exchange: Some(true),
            ..Default::default()
        };
        let err = conf.merge(&LocationConf::default()).unwrap_err();
        assert!(
            err.contains("\"auth_oauth2_token_token_endpoint\" is not set"),
            "{err}"
        );

        let mut conf = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            ..Default::default()
        };
        let err = conf.merge(&LocationConf::default()).unwrap_err();
        assert!(
            err.contains(
                "\"auth_oauth2_token_exchange\" is on but \"auth_oauth2_token_client_id\""
            ),
            "{err}"
        );

        let mut conf = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            client_id: Some(b"gw".to_vec()),
            ..Default::default()
        };
        conf.merge(&LocationConf::default()).unwrap();
        assert_eq!(conf.client_authorization, b"Basic Z3c6");
    }

    #[test]
    fn required_scopes_are_inherited_and_need_introspection() {
        let parent = LocationConf {
            require_scope: Some(vec!["a".into(), "b".into()]),
            ..enabled()
        };
        let mut child = LocationConf::default();
        child.merge(&parent).unwrap();
        assert_eq!(child.required_scope_text, "a b");

        let mut exchange_only = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            client_id: Some(b"gw".to_vec()),
            require_scope: Some(vec!["a".into()]),
            ..Default::default()
        };
        let err = exchange_only.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_require_scope"), "{err}");

        // Inherited into a location that turned checks off: that location is public.
        let mut public = LocationConf {
            introspect: Some(false),
            ..Default::default()
        };
        public.merge(&parent).unwrap();
    }

    const SECRET_32: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn signed_and_tls_methods_need_what_they_use() {
        let mut jwt = LocationConf {
            client_auth: Some(ClientAuth::SecretJwt),
            client_secret: Some((SecretSource::Inline, SECRET_32.to_vec())),
            ..enabled()
        };
        let err = jwt.merge(&LocationConf::default()).unwrap_err();
        assert!(
            err.contains("auth_oauth2_token_client_assertion_audience"),
            "{err}"
        );
        let mut jwt = LocationConf {
            client_auth: Some(ClientAuth::SecretJwt),
            client_secret: Some((SecretSource::File, SECRET_32.to_vec())),
            assertion_audience: Some("https://idp".into()),
            ..enabled()
        };
        jwt.merge(&LocationConf::default()).unwrap();
        assert!(jwt.client_authorization.is_empty() && jwt.assertion_key.is_some());

        let mut keyless = LocationConf {
            client_auth: Some(ClientAuth::PrivateKeyJwt),
            assertion_audience: Some("https://idp".into()),
            ..enabled()
        };
        let err = keyless.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_client_key_file"), "{err}");

        let mut tls = LocationConf {
            client_auth: Some(ClientAuth::TlsClientAuth),
            ..enabled()
        };
        tls.merge(&LocationConf::default()).unwrap();
        assert!(tls.client_authorization.is_empty());
        assert_eq!(tls.client_credentials_form, b"&client_id=gw");
    }

    #[test]
    fn client_secret_jwt_refuses_a_secret_shorter_than_the_hash() {
        for (source, directive) in [
            (SecretSource::Inline, "\"auth_oauth2_token_client_secret\""),
            (
                SecretSource::File,
                "\"auth_oauth2_token_client_secret_file\"",
            ),
        ] {
            let mut jwt = LocationConf {
                client_auth: Some(ClientAuth::SecretJwt),
                client_secret: Some((source, SECRET_32[..31].to_vec())),
                assertion_audience: Some("https://idp".into()),
                ..enabled()
            };
            let err = jwt.merge(&LocationConf::default()).unwrap_err();
            assert!(
                err.contains("client_secret_jwt") && err.contains(directive),
                "{err}"
            );
            assert!(
                err.contains("at least 32 bytes") && err.contains("RFC 7518"),
                "{err}"
            );
            assert!(
                !err.contains("0123456789"),
                "the secret is not printed: {err}"
            );
        }
    }

    #[test]
    fn client_secret_post_moves_credentials_into_the_body() {
        let mut conf = LocationConf {
            client_auth: Some(ClientAuth::Post),
            ..enabled()
        };
        conf.merge(&LocationConf::default()).unwrap();
        assert!(conf.client_authorization.is_empty());
        assert_eq!(
            conf.client_credentials_form,
            b"&client_id=gw&client_secret=s3cret"
        );

        let mut basic = enabled();
        basic.merge(&LocationConf::default()).unwrap();
        assert!(basic.client_credentials_form.is_empty());
    }

    #[test]
    fn requirements_add_up_outer_first() {
        let t = |n: usize| Template(n as *mut core::ffi::c_void);
        let parent = LocationConf {
            require: vec![Requirement {
                variables: vec![t(1)],
                status: 401,
            }],
            ..Default::default()
        };
        let mut child = LocationConf {
            require: vec![Requirement {
                variables: vec![t(2)],
                status: 403,
            }],
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        let statuses: Vec<u16> = child.require.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 403]);
    }

    #[test]
    fn phantom_needs_introspection_and_excludes_exchange() {
        let mut conf = LocationConf {
            phantom: Some(true),
            ..enabled()
        };
        conf.merge(&LocationConf::default()).unwrap();
        assert!(conf.phantom_enabled());

        let mut exchanging = LocationConf {
            phantom: Some(true),
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            ..enabled()
        };
        let err = exchanging.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("\"auth_oauth2_token_exchange\""), "{err}");

        let mut alone = LocationConf {
            phantom: Some(true),
            ..Default::default()
        };
        let err = alone.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_introspect on"), "{err}");
    }

    #[test]
    fn statuses_inherit_per_situation() {
        let mut parent = LocationConf::default();
        parent.statuses.set(Situation::Missing, 418).unwrap();
        parent.statuses.set(Situation::IdpError, 500).unwrap();
        let mut child = LocationConf::default();
        child.statuses.set(Situation::IdpError, 503).unwrap();
        assert!(child.statuses.set(Situation::IdpError, 502).is_err());
        child.merge(&parent).unwrap();
        assert_eq!(child.statuses.get(Situation::Missing), Some(418));
        assert_eq!(child.statuses.get(Situation::IdpError), Some(503));
        assert_eq!(child.statuses.get(Situation::Invalid), None);
    }

    #[test]
    fn situations_and_error_statuses() {
        for s in Situation::ALL {
            assert_eq!(Situation::parse(s.name().as_bytes()), Some(s));
        }
        assert_eq!(Situation::parse(b"Missing"), None);
        assert_eq!(parse_error_status(b"418"), Some(418));
        for bad in [&b"399"[..], b"600", b"444", b"499", b"4x", b""] {
            assert_eq!(parse_error_status(bad), None);
        }
    }

    #[test]
    fn claim_requirements_add_up_and_need_introspection() {
        let check = |path: &str, index| ClaimCheck {
            rule: ClaimRule::parse(&[path.as_bytes(), b"string", b"x"]).unwrap(),
            index,
        };
        let parent = LocationConf {
            require_claim: vec![check("a", 0)],
            ..enabled()
        };
        let mut child = LocationConf {
            require_claim: vec![check("b", 1)],
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        let paths: Vec<&str> = child.require_claim.iter().map(|c| c.rule.path()).collect();
        assert_eq!(paths, ["a", "b"]);

        let mut exchange_only = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            client_id: Some(b"gw".to_vec()),
            require_claim: vec![check("a", 0)],
            ..Default::default()
        };
        let err = exchange_only.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_require_claim"), "{err}");
    }

    #[test]
    fn required_audience_is_inherited_and_needs_introspection() {
        let rule = AudienceRule {
            accepted: vec!["orders".into()],
            index: 0,
        };
        let parent = LocationConf {
            require_audience: Some(rule.clone()),
            ..enabled()
        };
        let mut child = LocationConf::default();
        child.merge(&parent).unwrap();
        assert_eq!(child.require_audience, Some(rule.clone()));

        let mut exchange_only = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            client_id: Some(b"gw".to_vec()),
            require_audience: Some(rule),
            ..Default::default()
        };
        let err = exchange_only.merge(&LocationConf::default()).unwrap_err();
        assert!(err.contains("auth_oauth2_token_require_audience"), "{err}");
    }

    #[test]
    fn require_where_tokens_are_only_exchanged_is_kept_not_refused() {
        let t = |n: usize| Template(n as *mut core::ffi::c_void);
        let mut exchange_only = LocationConf {
            exchange: Some(true),
            token_endpoint: Endpoint::at(b"/t"),
            client_id: Some(b"gw".to_vec()),
            require: vec![Requirement {
                variables: vec![t(1)],
                status: 401,
            }],
            ..Default::default()
        };
        assert_eq!(exchange_only.merge(&LocationConf::default()), Ok(()));
        assert_eq!(exchange_only.require.len(), 1);
        assert!(checks::require_not_evaluated(&exchange_only, "").is_some());
    }

    #[test]
    fn curity_locations_need_no_client_and_announce_scopes() {
        let mut conf = LocationConf {
            introspect: Some(true),
            phantom: Some(true),
            introspection: Endpoint::at(b"curity"),
            credentials_in_location: Some(true),
            announced_scope_list: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        conf.merge(&LocationConf::default()).unwrap();
        assert!(conf.client_authorization.is_empty() && conf.client_credentials_form.is_empty());
        assert_eq!(conf.announced_scopes(), Some("a b"));
        let mut child = LocationConf {
            announced_scopes: Some("c d".into()),
            ..Default::default()
        };
        child.merge(&conf).unwrap();
        assert_eq!(
            child.announced_scopes(),
            Some("c d"),
            "scopes supersede the list"
        );
    }

    #[test]
    fn off_needs_nothing() {
        LocationConf::default()
            .merge(&LocationConf::default())
            .unwrap();
        assert_eq!(LocationConf::default().realm(), DEFAULT_REALM);
    }

    #[test]
    fn endpoint_must_be_a_path() {
        assert!(is_valid_endpoint(b"/_oauth2/introspect"));
        assert!(is_valid_endpoint(b"curity"));
        assert!(!is_valid_endpoint(b"http://idp/introspect"));
        assert!(!is_valid_endpoint(b"-x"));
        assert!(!is_valid_endpoint(b"/a?b=c"));
        assert!(!is_valid_endpoint(b""));
    }

    #[test]
    fn secret_file_line_endings_are_stripped() {
        assert_eq!(secret_from_file_contents(b"s3cret\r\n"), b"s3cret");
        assert_eq!(secret_from_file_contents(b"s3cret\n\n"), b"s3cret");
        assert_eq!(secret_from_file_contents(b"s3 cret"), b"s3 cret");
        assert_eq!(secret_from_file_contents(b"\n"), b"");
    }
}
