//! The IdP calls a location makes and how it authenticates to the IdP:
//! `introspect`, `phantom`, `exchange`, their endpoints and the exchange's
//! parameters, the client id and secret, client authentication and signed
//! client assertions, and the endpoints' circuit breaker.

use super::call::{args_of, flag, handler, set_once, utf8};
use crate::conf::{
    cache_args, is_valid_endpoint, secret_from_file_contents, ClientAuth, LocationConf,
    SecretSource,
};
use crate::oauth::client_auth::{Alg, AssertionKey};
use crate::resilience::breaker::BreakerConf;

fn endpoint(arg: &[u8]) -> Result<Vec<u8>, String> {
    if !is_valid_endpoint(arg) {
        return Err(
            "needs the URI of an internal location (or its name), like /_oauth2_introspect".into(),
        );
    }
    Ok(arg.to_vec())
}

handler!(set_introspect, |c| set_once(
    &mut c.conf.introspect,
    flag(c.arg)?
));

handler!(set_exchange, |c| set_once(
    &mut c.conf.exchange,
    flag(c.arg)?
));

handler!(set_token_endpoint, |c| set_once(
    &mut c.conf.token_endpoint.uri,
    endpoint(c.arg)?
));

handler!(set_audience, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.audience, value)
});

handler!(set_scope, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.scope, value)
});

handler!(set_resource, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.resource, value)
});

handler!(set_requested_token_type, |c| {
    if c.arg.is_empty() || c.arg.iter().any(|b| b.is_ascii_whitespace()) {
        return Err("needs a token type URI, like urn:ietf:params:oauth:token-type:jwt".into());
    }
    set_once(&mut c.conf.requested_token_type, c.arg.to_vec())
});

handler!(set_introspect_endpoint, |c| set_once(
    &mut c.conf.introspection.uri,
    endpoint(c.arg)?
));

handler!(set_client_id, |c| {
    if c.arg.is_empty() {
        return Err("needs a non-empty client id".into());
    }
    set_once(&mut c.conf.client_id, c.arg.to_vec())
});

fn set_secret(
    conf: &mut LocationConf,
    source: SecretSource,
    secret: Vec<u8>,
) -> Result<(), String> {
    match conf.client_secret {
        Some((existing, _)) if existing == source => Err("is duplicate".into()),
        Some(_) => Err(
            "conflicts with another client secret in this block: use either \"auth_oauth2_token_client_secret\" or \"auth_oauth2_token_client_secret_file\"".into(),
        ),
        None => {
            conf.client_secret = Some((source, secret));
            Ok(())
        }
    }
}

handler!(set_client_secret, |c| {
    set_secret(c.conf, SecretSource::Inline, c.arg.to_vec())
});

handler!(set_client_secret_file, |c| {
    let contents = c.read_secret_file("", c.arg)?;
    set_secret(
        c.conf,
        SecretSource::File,
        secret_from_file_contents(&contents),
    )
});

handler!(set_breaker, |c| {
    let conf = BreakerConf::parse(&args_of(c), cache_args::parse_time_ms)?;
    set_once(&mut c.conf.breaker, conf)
});

handler!(set_client_auth, |c| {
    let auth = ClientAuth::parse(c.arg).ok_or(
        "takes \"basic\" or \"post\", or \"client_secret_jwt\", \"private_key_jwt\", \"tls_client_auth\" or \"self_signed_tls_client_auth\"",
    )?;
    set_once(&mut c.conf.client_auth, auth)
});

handler!(set_client_assertion_audience, |c| {
    if c.arg.is_empty()
        || c.arg
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("needs the IdP's issuer or endpoint URL".into());
    }
    set_once(&mut c.conf.assertion_audience, utf8(c.arg)?)
});

handler!(set_client_key_file, |c| {
    let pem = c.read_secret_file("", c.arg)?;
    // Checked now, so that a wrong file fails here, naming this directive.
    AssertionKey::from_pem(&pem, None, None)?;
    set_once(&mut c.conf.client_key_pem, pem)
});

handler!(set_client_key_id, |c| {
    if c.arg.is_empty()
        || c.arg
            .iter()
            .any(|b| b.is_ascii_control() || *b == b'"' || *b == b'\\')
    {
        return Err("needs a key id without quotes, backslashes or control characters".into());
    }
    set_once(&mut c.conf.client_key_id, utf8(c.arg)?)
});

handler!(set_client_assertion_alg, |c| {
    let alg = Alg::parse(c.arg).ok_or("takes HS256, RS256, PS256, ES256 or EdDSA")?;
    set_once(&mut c.conf.assertion_alg, alg)
});

handler!(set_phantom, |c| set_once(&mut c.conf.phantom, flag(c.arg)?));
