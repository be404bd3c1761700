//! Per-location configuration: what the directives set, how a location
//! inherits from the blocks around it, and what must hold before nginx starts.

pub mod cache_args;
#[cfg(not(test))]
pub mod directives;
pub mod require_args;

use crate::cache::CachePolicy;
use crate::form;

/// The realm used in `WWW-Authenticate` when `auth_oauth2_token_realm` is unset.
pub const DEFAULT_REALM: &str = "api";

/// How the module authenticates to the IdP (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic …` (client_secret_basic), the default.
    Basic,
    /// `client_id` and `client_secret` in the form body (client_secret_post).
    Post,
}

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
    /// The claim paths of `auth_oauth2_token_claim_set`, in variable order.
    pub claim_paths: Vec<String>,
}

/// `auth_oauth2_token_introspect_cache`: a shared zone and this block's policy for it.
#[derive(Debug, Clone, Copy)]
pub struct CacheConf {
    /// The zone's `ngx_shm_zone_t`, opaque to the plain-Rust side.
    pub zone: *mut core::ffi::c_void,
    pub policy: CachePolicy,
}

/// A directive value that may contain nginx variables: the compiled
/// `ngx_http_complex_value_t`, opaque to the plain-Rust side.
#[derive(Debug, Clone, Copy)]
pub struct Template(pub *mut core::ffi::c_void);

#[derive(Debug, Default)]
pub struct LocationConf {
    pub introspect: Option<bool>,
    pub introspect_endpoint: Option<Vec<u8>>,
    pub client_id: Option<Vec<u8>>,
    pub client_secret: Option<(SecretSource, Vec<u8>)>,
    pub realm: Option<String>,
    pub introspect_cache: Option<CacheConf>,
    pub exchange: Option<bool>,
    pub token_endpoint: Option<Vec<u8>>,
    pub audience: Option<Template>,
    pub scope: Option<Template>,
    pub resource: Option<Template>,
    pub requested_token_type: Option<Vec<u8>>,
    pub exchange_cache: Option<CacheConf>,
    pub require_scope: Option<Vec<String>>,
    /// The required scopes as the challenge's `scope` attribute, derived at merge time.
    pub required_scope_text: String,
    pub client_auth: Option<ClientAuth>,
    pub pass_options: Option<bool>,
    pub phase: Option<Phase>,
    pub www_authenticate: Option<Challenge>,
    /// Enclosing blocks' requirements first, then this block's own.
    pub require: Vec<Requirement>,
    /// `Authorization` value for the IdP (empty with client_secret_post),
    /// derived once at merge time.
    pub client_authorization: Vec<u8>,
    /// What client_secret_post appends to every IdP request body (else empty).
    pub client_credentials_form: Vec<u8>,
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

    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(DEFAULT_REALM)
    }

    /// Inherits every unset value from the enclosing block, then checks that
    /// the result is usable. The error names the directive to fix.
    pub fn merge(&mut self, prev: &LocationConf) -> Result<(), String> {
        inherit(&mut self.introspect, &prev.introspect);
        inherit(&mut self.introspect_endpoint, &prev.introspect_endpoint);
        inherit(&mut self.client_id, &prev.client_id);
        inherit(&mut self.client_secret, &prev.client_secret);
        inherit(&mut self.realm, &prev.realm);
        inherit(&mut self.introspect_cache, &prev.introspect_cache);
        inherit(&mut self.exchange, &prev.exchange);
        inherit(&mut self.token_endpoint, &prev.token_endpoint);
        inherit(&mut self.audience, &prev.audience);
        inherit(&mut self.scope, &prev.scope);
        inherit(&mut self.resource, &prev.resource);
        inherit(&mut self.requested_token_type, &prev.requested_token_type);
        inherit(&mut self.exchange_cache, &prev.exchange_cache);
        inherit(&mut self.require_scope, &prev.require_scope);
        inherit(&mut self.client_auth, &prev.client_auth);
        inherit(&mut self.pass_options, &prev.pass_options);
        inherit(&mut self.phase, &prev.phase);
        inherit(&mut self.www_authenticate, &prev.www_authenticate);
        // Requirements add up: a location keeps those of its server and http blocks.
        let own = std::mem::take(&mut self.require);
        self.require = prev.require.iter().cloned().chain(own).collect();
        self.required_scope_text = self.require_scope.as_deref().unwrap_or_default().join(" ");

        if self.require_scope.is_some() && !self.introspection_enabled() && self.exchange_enabled()
        {
            return Err("\"auth_oauth2_token_require_scope\" needs \"auth_oauth2_token_introspect on\": scopes come from introspection".into());
        }
        let switch = match (self.introspection_enabled(), self.exchange_enabled()) {
            (false, false) => return Ok(()),
            (true, _) => "auth_oauth2_token_introspect",
            (false, true) => "auth_oauth2_token_exchange",
        };
        if self.introspection_enabled() && self.introspect_endpoint.is_none() {
            return Err("\"auth_oauth2_token_introspect\" is on but \"auth_oauth2_token_introspect_endpoint\" is not set".into());
        }
        if self.exchange_enabled() && self.token_endpoint.is_none() {
            return Err("\"auth_oauth2_token_exchange\" is on but \"auth_oauth2_token_token_endpoint\" is not set".into());
        }
        let Some(client_id) = &self.client_id else {
            return Err(format!(
                "\"{switch}\" is on but \"auth_oauth2_token_client_id\" is not set"
            ));
        };
        let secret = self.client_secret.as_ref().map_or(&[][..], |(_, s)| s);
        match self.client_auth.unwrap_or(ClientAuth::Basic) {
            ClientAuth::Basic => {
                self.client_authorization = form::basic_credentials(client_id, secret)
            }
            ClientAuth::Post => {
                self.client_credentials_form = form::client_credentials_form(client_id, secret)
            }
        }
        Ok(())
    }
}

fn inherit<T: Clone>(value: &mut Option<T>, prev: &Option<T>) {
    if value.is_none() {
        value.clone_from(prev);
    }
}

/// An internal location is addressed by URI: it must be a path.
pub fn is_valid_endpoint(uri: &[u8]) -> bool {
    uri.first() == Some(&b'/') && !uri.iter().any(|b| b.is_ascii_whitespace() || *b == b'?')
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

    fn enabled() -> LocationConf {
        LocationConf {
            introspect: Some(true),
            introspect_endpoint: Some(b"/_introspect".to_vec()),
            client_id: Some(b"gw".to_vec()),
            client_secret: Some((SecretSource::Inline, b"s3cret".to_vec())),
            ..Default::default()
        }
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
            child.introspect_endpoint.as_deref(),
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
            introspect_endpoint: Some(b"/i".to_vec()),
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
            token_endpoint: Some(b"/t".to_vec()),
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
            token_endpoint: Some(b"/t".to_vec()),
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
            token_endpoint: Some(b"/t".to_vec()),
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
    fn off_needs_nothing() {
        LocationConf::default()
            .merge(&LocationConf::default())
            .unwrap();
        assert_eq!(LocationConf::default().realm(), DEFAULT_REALM);
    }

    #[test]
    fn endpoint_must_be_a_path() {
        assert!(is_valid_endpoint(b"/_oauth2/introspect"));
        assert!(!is_valid_endpoint(b"http://idp/introspect"));
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
