//! `Authorization: Bearer` (RFC 6750 §2.1) and tokens carried whole in
//! another header, a query parameter or a cookie.
//!
//! Input: the header value; its lines are also taken as that many headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::bearer::{self, BearerToken};
use ngx_http_auth_oauth2_token_module::oauth::carriers;

#[path = "common.rs"]
mod common;

fn is_blank(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whether `inner` lies within `outer` (the token is borrowed, not copied).
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let range = outer.as_ptr_range();
    inner.is_empty() || (range.start <= inner.as_ptr() && inner.as_ptr_range().end <= range.end)
}

fuzz_target!(|data: &[u8]| {
    match bearer::from_authorization(&[data]) {
        BearerToken::Present(token) => {
            assert!(bearer::is_b64token(token), "token {token:?}");
            assert!(within(token, data));
            assert!(data.len() > 7 && data[..7].eq_ignore_ascii_case(b"bearer "));
        }
        BearerToken::Malformed(why) => assert!(!why.description().contains('"')),
        BearerToken::Missing => {}
    }
    let headers = common::lines(data);
    match bearer::from_authorization(&headers) {
        BearerToken::Malformed(bearer::Malformed::DuplicateHeader) => assert!(headers.len() > 1),
        _ => assert_eq!(headers.len(), 1, "two headers were not refused"),
    }

    match carriers::raw_token(data) {
        BearerToken::Present(token) => {
            assert!(bearer::is_b64token(token), "token {token:?}");
            assert!(within(token, data));
        }
        BearerToken::Missing => assert!(data.iter().all(is_blank)),
        BearerToken::Malformed(why) => {
            assert_eq!(why, bearer::Malformed::InvalidCharacters);
            assert!(!bearer::is_b64token(data));
        }
    }

    // A b64token is found as sent, however it is carried.
    if bearer::is_b64token(data) {
        assert_eq!(carriers::raw_token(data), BearerToken::Present(data));
        let header = [&b"Bearer "[..], data].concat();
        assert_eq!(
            bearer::from_authorization(&[&header]),
            BearerToken::Present(data)
        );
        let padded = [&b" \t"[..], data, b"\t "].concat();
        assert_eq!(carriers::raw_token(&padded), BearerToken::Present(data));
    }
});
