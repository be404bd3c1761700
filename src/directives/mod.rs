//! nginx glue of the configuration: the `auth_oauth2_token_*` directive
//! table. Its `set` handlers live by directive family, each decoding
//! nginx's arguments and handing them to the plain parsers of `conf/`:
//! `endpoint.rs` (the IdP calls and the client's credentials), `policy.rs`
//! (what a location asks of a token and how it refuses), `jwt.rs` (JWT
//! access tokens checked at the gateway), `dpop.rs` (DPoP proofs and their
//! replay store), `cache.rs`,
//! `pages.rs` (content handlers), `redis.rs` (the Redis tier), `ssf.rs`
//! (the Shared Signals receiver) and
//! `curity.rs` (Curity's directive names); `call.rs` is what every handler
//! gets from nginx.

mod cache;
mod call;
mod curity;
pub mod dpop;
mod endpoint;
mod jwt;
mod pages;
mod policy;
mod redis;
mod redis_tls;
pub mod server;
mod ssf;
mod ssf_poll;

pub use policy::warn_undefined_require_variables;

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_2MORE, NGX_CONF_ANY,
    NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
};
use ngx::ngx_string;

use cache::{
    set_cache_vary, set_exchange_cache, set_introspect_cache, set_jwt_cache, set_jwt_keys_cache,
    set_shared_cache, set_shared_cache_tenant,
};
use curity::{set_curity_phantom_token, set_curity_scope, set_curity_scopes};
use dpop::{
    set_client_cert_from, set_dpop_algorithms, set_dpop_nonce_key_file, set_dpop_origin,
    set_dpop_replay_zone, set_dpop_require, set_dpop_window,
};
use endpoint::{
    set_audience, set_breaker, set_client_assertion_alg, set_client_assertion_audience,
    set_client_auth, set_client_id, set_client_key_file, set_client_key_id, set_client_secret,
    set_client_secret_file, set_exchange, set_introspect, set_introspect_endpoint, set_phantom,
    set_requested_token_type, set_resource, set_scope, set_token_endpoint,
};
use jwt::{
    set_jwt, set_jwt_algorithms, set_jwt_issuer, set_jwt_keys_file, set_jwt_keys_request,
    set_jwt_leeway, set_jwt_secret_file, set_jwt_typ,
};
use pages::{set_metrics, set_purge, set_resource_metadata};
use policy::{
    set_claim_set, set_max_auth_age, set_pass_options, set_phase, set_realm, set_require,
    set_require_acr, set_require_audience, set_require_claim, set_require_resource,
    set_require_scope, set_resource_metadata_url, set_source, set_status, set_www_authenticate,
};
use redis::{
    set_redis, set_redis_buffer_size, set_redis_connect_timeout, set_redis_next_upstream,
    set_redis_pass, set_redis_read_timeout, set_redis_send_timeout,
};
use redis_tls::{
    set_redis_ssl, set_redis_ssl_certificate, set_redis_ssl_certificate_key, set_redis_ssl_name,
    set_redis_ssl_protocols, set_redis_ssl_server_name, set_redis_ssl_trusted_certificate,
    set_redis_ssl_verify, set_redis_ssl_verify_depth,
};
use ssf::{set_ssf_push, set_ssf_receiver};
use ssf_poll::set_ssf_poll;

type Handler =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

/// A directive of `location` blocks only (content handlers, the Redis location).
const fn location_directive(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_HTTP_LOC_CONF | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

const fn directive(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (ANY_LEVEL | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

/// A directive of the http block, kept in the `MainConf`.
const fn http_only(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_HTTP_MAIN_CONF | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 83] = [
    http_only(
        ngx_string!("auth_oauth2_token_ssf_receiver"),
        NGX_CONF_2MORE,
        set_ssf_receiver,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_ssf_push"),
        NGX_CONF_NOARGS,
        set_ssf_push,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_ssf_poll"),
        NGX_CONF_ANY,
        set_ssf_poll,
    ),
    directive(
        ngx_string!("auth_oauth2_token_introspect"),
        NGX_CONF_FLAG,
        set_introspect,
    ),
    directive(
        ngx_string!("auth_oauth2_token_introspect_endpoint"),
        NGX_CONF_TAKE1,
        set_introspect_endpoint,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_id"),
        NGX_CONF_TAKE1,
        set_client_id,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_secret"),
        NGX_CONF_TAKE1,
        set_client_secret,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_secret_file"),
        NGX_CONF_TAKE1,
        set_client_secret_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_resource"),
        NGX_CONF_TAKE1,
        set_require_resource,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_acr"),
        NGX_CONF_1MORE,
        set_require_acr,
    ),
    directive(
        ngx_string!("auth_oauth2_token_max_auth_age"),
        NGX_CONF_TAKE1,
        set_max_auth_age,
    ),
    directive(
        ngx_string!("auth_oauth2_token_resource_metadata_url"),
        NGX_CONF_TAKE1,
        set_resource_metadata_url,
    ),
    directive(
        ngx_string!("auth_oauth2_token_realm"),
        NGX_CONF_TAKE1,
        set_realm,
    ),
    directive(
        ngx_string!("auth_oauth2_token_introspect_cache"),
        NGX_CONF_1MORE,
        set_introspect_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_exchange"),
        NGX_CONF_FLAG,
        set_exchange,
    ),
    directive(
        ngx_string!("auth_oauth2_token_token_endpoint"),
        NGX_CONF_TAKE1,
        set_token_endpoint,
    ),
    directive(
        ngx_string!("auth_oauth2_token_audience"),
        NGX_CONF_TAKE1,
        set_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_scope"),
        NGX_CONF_TAKE1,
        set_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_resource"),
        NGX_CONF_TAKE1,
        set_resource,
    ),
    directive(
        ngx_string!("auth_oauth2_token_requested_token_type"),
        NGX_CONF_TAKE1,
        set_requested_token_type,
    ),
    directive(
        ngx_string!("auth_oauth2_token_breaker"),
        NGX_CONF_1MORE,
        set_breaker,
    ),
    directive(
        ngx_string!("auth_oauth2_token_cache_vary"),
        NGX_CONF_TAKE1,
        set_cache_vary,
    ),
    directive(
        ngx_string!("auth_oauth2_token_exchange_cache"),
        NGX_CONF_1MORE,
        set_exchange_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_scope"),
        NGX_CONF_1MORE,
        set_require_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_audience"),
        NGX_CONF_1MORE,
        set_require_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_auth"),
        NGX_CONF_TAKE1,
        set_client_auth,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_assertion_audience"),
        NGX_CONF_TAKE1,
        set_client_assertion_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_key_file"),
        NGX_CONF_TAKE1,
        set_client_key_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_key_id"),
        NGX_CONF_TAKE1,
        set_client_key_id,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_assertion_alg"),
        NGX_CONF_TAKE1,
        set_client_assertion_alg,
    ),
    directive(
        ngx_string!("auth_oauth2_token_pass_options"),
        NGX_CONF_FLAG,
        set_pass_options,
    ),
    directive(
        ngx_string!("auth_oauth2_token_phase"),
        NGX_CONF_TAKE1,
        set_phase,
    ),
    directive(
        ngx_string!("auth_oauth2_token_www_authenticate"),
        NGX_CONF_TAKE1,
        set_www_authenticate,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require"),
        NGX_CONF_1MORE,
        set_require,
    ),
    directive(
        ngx_string!("auth_oauth2_token_phantom"),
        NGX_CONF_FLAG,
        set_phantom,
    ),
    directive(
        ngx_string!("auth_oauth2_token_source"),
        NGX_CONF_1MORE,
        set_source,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_claim"),
        NGX_CONF_2MORE,
        set_require_claim,
    ),
    directive(
        ngx_string!("auth_oauth2_token_status"),
        NGX_CONF_TAKE2,
        set_status,
    ),
    directive(ngx_string!("auth_oauth2_token_jwt"), NGX_CONF_FLAG, set_jwt),
    directive(
        ngx_string!("auth_oauth2_token_dpop_require"),
        NGX_CONF_FLAG,
        set_dpop_require,
    ),
    directive(
        ngx_string!("auth_oauth2_token_dpop_algorithms"),
        NGX_CONF_1MORE,
        set_dpop_algorithms,
    ),
    directive(
        ngx_string!("auth_oauth2_token_dpop_window"),
        NGX_CONF_TAKE1,
        set_dpop_window,
    ),
    directive(
        ngx_string!("auth_oauth2_token_dpop_nonce_key_file"),
        NGX_CONF_TAKE1,
        set_dpop_nonce_key_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_cert_from"),
        NGX_CONF_1MORE,
        set_client_cert_from,
    ),
    directive(
        ngx_string!("auth_oauth2_token_dpop_origin"),
        NGX_CONF_TAKE1,
        set_dpop_origin,
    ),
    directive(
        ngx_string!("auth_oauth2_token_dpop_replay_zone"),
        NGX_CONF_TAKE1,
        set_dpop_replay_zone,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_issuer"),
        NGX_CONF_1MORE,
        set_jwt_issuer,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_keys_file"),
        NGX_CONF_TAKE1,
        set_jwt_keys_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_keys_request"),
        NGX_CONF_TAKE1,
        set_jwt_keys_request,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_keys_cache"),
        NGX_CONF_1MORE,
        set_jwt_keys_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_secret_file"),
        NGX_CONF_TAKE1,
        set_jwt_secret_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_algorithms"),
        NGX_CONF_1MORE,
        set_jwt_algorithms,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_leeway"),
        NGX_CONF_TAKE1,
        set_jwt_leeway,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_typ"),
        NGX_CONF_TAKE1,
        set_jwt_typ,
    ),
    directive(
        ngx_string!("auth_oauth2_token_jwt_cache"),
        NGX_CONF_1MORE,
        set_jwt_cache,
    ),
    // Curity's phantom token module (2.0), mapped onto ours.
    directive(
        ngx_string!("phantom_token"),
        NGX_CONF_FLAG,
        set_curity_phantom_token,
    ),
    directive(
        ngx_string!("phantom_token_introspection_endpoint"),
        NGX_CONF_TAKE1,
        set_introspect_endpoint,
    ),
    directive(
        ngx_string!("phantom_token_realm"),
        NGX_CONF_TAKE1,
        set_realm,
    ),
    directive(
        ngx_string!("phantom_token_scopes"),
        NGX_CONF_TAKE1,
        set_curity_scopes,
    ),
    directive(
        ngx_string!("phantom_token_scope"),
        NGX_CONF_TAKE1,
        set_curity_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_shared_cache"),
        NGX_CONF_TAKE1,
        set_shared_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_shared_cache_tenant"),
        NGX_CONF_TAKE1,
        set_shared_cache_tenant,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_purge"),
        NGX_CONF_NOARGS,
        set_purge,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_metrics"),
        NGX_CONF_NOARGS,
        set_metrics,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_resource_metadata"),
        NGX_CONF_1MORE,
        set_resource_metadata,
    ),
    http_only(
        ngx_string!("auth_oauth2_token_claim_set"),
        NGX_CONF_TAKE2,
        set_claim_set,
    ),
    http_only(
        ngx_string!("auth_oauth2_token_redis"),
        NGX_CONF_1MORE,
        set_redis,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_pass"),
        NGX_CONF_NOARGS,
        set_redis_pass,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_connect_timeout"),
        NGX_CONF_TAKE1,
        set_redis_connect_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_send_timeout"),
        NGX_CONF_TAKE1,
        set_redis_send_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_read_timeout"),
        NGX_CONF_TAKE1,
        set_redis_read_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_next_upstream"),
        NGX_CONF_1MORE,
        set_redis_next_upstream,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_buffer_size"),
        NGX_CONF_TAKE1,
        set_redis_buffer_size,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl"),
        NGX_CONF_FLAG,
        set_redis_ssl,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_verify"),
        NGX_CONF_FLAG,
        set_redis_ssl_verify,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_verify_depth"),
        NGX_CONF_TAKE1,
        set_redis_ssl_verify_depth,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_trusted_certificate"),
        NGX_CONF_TAKE1,
        set_redis_ssl_trusted_certificate,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_name"),
        NGX_CONF_TAKE1,
        set_redis_ssl_name,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_server_name"),
        NGX_CONF_FLAG,
        set_redis_ssl_server_name,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_certificate"),
        NGX_CONF_TAKE1,
        set_redis_ssl_certificate,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_certificate_key"),
        NGX_CONF_TAKE1,
        set_redis_ssl_certificate_key,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_ssl_protocols"),
        NGX_CONF_1MORE,
        set_redis_ssl_protocols,
    ),
    ngx_command_t::empty(),
];
