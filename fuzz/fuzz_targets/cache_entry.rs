//! Cache entries read back from shared memory, and JWTs from the IdP:
//! arbitrary bytes never panic, and whatever decodes is exactly what
//! encoding gives back (one encoding per value).
//!
//! Input: the bytes, as an entry and as a JWT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::bearer;
use ngx_http_auth_oauth2_token_module::oauth::cache::{CachedExchange, CachedIntrospection};
use ngx_http_auth_oauth2_token_module::oauth::jwt;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    if let Some(result) = CachedIntrospection::decode(data) {
        assert_eq!(CachedIntrospection::encode(&result), data, "{result:?}");
    }
    if let Some(token) = CachedExchange::decode(data) {
        assert_eq!(CachedExchange::encode(&token), data, "{token:?}");
    }

    let payload = jwt::payload(data);
    let claims = jwt::claims(data);
    if let Ok(payload) = &payload {
        // A JWT the module accepts can go into an Authorization header.
        assert!(bearer::is_b64token(data), "accepted JWT {data:?}");
        assert!(data.len() <= jwt::MAX_JWT_BYTES);
        assert_eq!(data.iter().filter(|&&b| b == b'.').count(), 2);
        assert_eq!(
            claims.as_ref().ok(),
            serde_json::from_slice::<Map<String, Value>>(payload)
                .ok()
                .as_ref()
        );
    } else {
        assert_eq!(claims.err(), payload.err());
    }
});
