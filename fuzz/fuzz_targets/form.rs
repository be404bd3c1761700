//! Form encoding of what the module sends the IdP: every value comes back
//! unchanged through the decoding the module itself uses for query strings.
//!
//! Input: one value (every byte); its lines are also taken as the fields of
//! client credentials and of a token-exchange request.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::carriers;
use ngx_http_auth_oauth2_token_module::oauth::client_auth;
use ngx_http_auth_oauth2_token_module::oauth::exchange::{self, ExchangeParams};
use ngx_http_auth_oauth2_token_module::oauth::form;

#[path = "common.rs"]
mod common;

/// The form-decoded value of `name` in `body`, which must be there.
fn value_of(body: &[u8], name: &[u8]) -> Vec<u8> {
    carriers::query_value(body, name)
        .unwrap_or_else(|| {
            panic!(
                "no {:?} in {:?}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(body)
            )
        })
        .into_owned()
}

fn decoded(encoded: &[u8]) -> Vec<u8> {
    value_of(&[&b"x="[..], encoded].concat(), b"x")
}

fn pair_count(body: &[u8]) -> usize {
    body.split(|&b| b == b'&').filter(|p| !p.is_empty()).count()
}

fuzz_target!(|data: &[u8]| {
    let encoded = form::encode(data);
    assert!(
        encoded
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._*+%".contains(&b)),
        "{encoded:?}"
    );
    assert_eq!(decoded(&encoded), data, "encode does not round-trip");
    let mut appended = b"a=1&x=".to_vec();
    form::append_encoded(&mut appended, data);
    assert_eq!(appended[6..], encoded[..]);
    assert_eq!(value_of(&appended, b"x"), data);

    let body = form::introspection_body(data);
    assert_eq!(value_of(&body, b"token"), data);
    assert_eq!(value_of(&body, b"token_type_hint"), b"access_token");
    assert_eq!(pair_count(&body), 2);

    let fields = common::lines(data);
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let (id, secret) = (field(0), field(1));

    let post = form::client_credentials_form(id, secret);
    assert_eq!(
        (
            value_of(&post, b"client_id"),
            value_of(&post, b"client_secret")
        ),
        (id.to_vec(), secret.to_vec())
    );
    assert_eq!(pair_count(&post), 2);

    // RFC 7523 §2.2 (signed assertions) and RFC 8705 §2 (mutual TLS).
    const ASSERTION: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let signed = client_auth::assertion_form(id, ASSERTION);
    assert_eq!(value_of(&signed, b"client_assertion"), ASSERTION.as_bytes());
    assert_eq!(
        value_of(&signed, b"client_assertion_type"),
        b"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(value_of(&signed, b"client_id"), id);
    assert_eq!(pair_count(&signed), 3);
    let mtls = client_auth::client_id_form(id);
    assert_eq!(
        (value_of(&mtls, b"client_id"), pair_count(&mtls)),
        (id.to_vec(), 1)
    );

    // RFC 6749 §2.3.1: base64 of the encoded id, ':', the encoded secret.
    let basic = form::basic_credentials(id, secret);
    let pair = base64::engine::general_purpose::STANDARD
        .decode(basic.strip_prefix(b"Basic ").expect("Basic scheme"))
        .expect("base64");
    let colon = pair.iter().position(|&b| b == b':').expect("a ':'");
    assert_eq!(
        (decoded(&pair[..colon]), decoded(&pair[colon + 1..])),
        (id.to_vec(), secret.to_vec())
    );

    let params = ExchangeParams {
        audience: field(1),
        scope: field(2),
        resource: field(3),
        requested_token_type: field(4),
    };
    let body = exchange::request_body(field(0), &params);
    assert_eq!(value_of(&body, b"grant_type"), exchange::GRANT_TYPE);
    assert_eq!(value_of(&body, b"subject_token"), field(0));
    assert_eq!(
        value_of(&body, b"subject_token_type"),
        exchange::ACCESS_TOKEN_TYPE
    );
    let mut pairs = 3;
    for (name, value) in [
        (&b"audience"[..], params.audience),
        (b"scope", params.scope),
        (b"resource", params.resource),
        (b"requested_token_type", params.requested_token_type),
    ] {
        match value.is_empty() {
            true => assert_eq!(carriers::query_value(&body, name), None),
            false => {
                assert_eq!(value_of(&body, name), value);
                pairs += 1;
            }
        }
    }
    assert_eq!(pair_count(&body), pairs);
});
