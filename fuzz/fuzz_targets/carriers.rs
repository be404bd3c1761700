//! Query strings and Cookie headers: finding the token, and withholding
//! every carrier from what goes upstream.
//!
//! Input: the parameter/cookie name on the first line, then the query
//! string or Cookie header value (the rest, newlines included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::bearer::{self, BearerToken};
use ngx_http_auth_oauth2_token_module::oauth::carriers::{self, HeaderEdit, Withheld};

#[path = "common.rs"]
mod common;

/// The non-empty pairs of a query string, as the module splits it.
fn query_pairs(args: &[u8]) -> Vec<&[u8]> {
    args.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .collect()
}

/// The names of a Cookie header's pairs (blanks trimmed), at most `max`.
fn cookie_names(header: &[u8], max: usize) -> Vec<&[u8]> {
    header
        .split(|&b| b == b';')
        .filter_map(|pair| {
            pair.iter()
                .position(|&b| b == b'=')
                .map(|eq| pair[..eq].trim_ascii())
        })
        .take(max)
        .collect()
}

/// Whether `sub` is `all` with some elements left out.
fn is_subsequence(sub: &[&[u8]], all: &[&[u8]]) -> bool {
    let mut all = all.iter();
    sub.iter().all(|s| all.any(|a| a == s))
}

fn check_query(name: &[u8], args: &[u8]) {
    let kept = carriers::query_without(args, name);
    assert_eq!(
        carriers::query_value(&kept, name),
        None,
        "a removed parameter is found again"
    );
    assert!(
        !kept.starts_with(b"&") && !kept.ends_with(b"&") && !kept.windows(2).any(|w| w == b"&&")
    );
    assert!(
        is_subsequence(&query_pairs(&kept), &query_pairs(args)),
        "a parameter was changed"
    );
    if carriers::query_value(args, name).is_none() {
        assert_eq!(
            kept,
            query_pairs(args).join(&b'&'),
            "a parameter that is not there was removed"
        );
    }

    let withheld = Withheld {
        queries: vec![name, b"access_token"],
        ..Default::default()
    };
    let rewritten = withheld.query(args);
    let upstream = rewritten.clone().unwrap_or_else(|| args.to_vec());
    for carrier in &withheld.queries {
        assert_eq!(
            carriers::query_value(&upstream, carrier),
            None,
            "withheld parameter reaches upstream"
        );
    }
    if rewritten.is_none() {
        assert!(withheld
            .queries
            .iter()
            .all(|q| carriers::query_value(args, q).is_none()));
    }
    let uri = carriers::uri_with_args(&[&b"/p%20q?"[..], args].concat(), &upstream);
    let expected = match upstream.is_empty() {
        true => b"/p%20q".to_vec(),
        false => [&b"/p%20q?"[..], &upstream].concat(),
    };
    assert_eq!(uri, expected);
}

fn check_cookies(name: &[u8], header: &[u8]) {
    let kept = carriers::cookie_without(header, name);
    assert_eq!(
        carriers::cookie_value(&kept, name),
        None,
        "a removed cookie is found again"
    );
    assert_eq!(carriers::cookie_without(&kept, name), kept);
    // Every other cookie keeps its value.
    for other in cookie_names(header, 8) {
        if other != name {
            assert_eq!(
                carriers::cookie_value(&kept, other),
                carriers::cookie_value(header, other)
            );
        }
    }

    let withheld = Withheld {
        cookies: vec![name, b"t"],
        ..Default::default()
    };
    let present = withheld
        .cookies
        .iter()
        .any(|c| carriers::cookie_value(header, c).is_some());
    let upstream = match withheld.edit_header(b"Cookie", header) {
        HeaderEdit::Keep => {
            assert!(!present, "a header holding a withheld cookie was kept");
            header.to_vec()
        }
        HeaderEdit::Rewrite(rest) => {
            assert!(present, "a header without withheld cookies was rewritten");
            rest
        }
        HeaderEdit::Remove => panic!("a Cookie header was removed whole"),
    };
    for cookie in &withheld.cookies {
        assert_eq!(
            carriers::cookie_value(&upstream, cookie),
            None,
            "withheld cookie reaches upstream"
        );
    }
    for other in cookie_names(header, 8) {
        if !withheld.cookies.contains(&other) {
            assert_eq!(
                carriers::cookie_value(&upstream, other),
                carriers::cookie_value(header, other)
            );
        }
    }
    assert_eq!(withheld.edit_header(b"Cookie2", header), HeaderEdit::Keep);
}

fn check_headers(name: &[u8], value: &[u8]) {
    // Without `bearer` among the sources, every Bearer attempt is withheld.
    let unchecked = Withheld {
        bearer_authorization: true,
        cookies: vec![b"at"],
        ..Default::default()
    };
    if let BearerToken::Present(_) = bearer::from_authorization(&[value]) {
        assert!(unchecked.removes_authorization(value));
        assert_eq!(
            unchecked.edit_header(b"authorization", value),
            HeaderEdit::Remove
        );
    }
    if !name.eq_ignore_ascii_case(b"Authorization") && !name.eq_ignore_ascii_case(b"Cookie") {
        assert_eq!(unchecked.edit_header(name, value), HeaderEdit::Keep);
    }

    let withheld = Withheld {
        headers: vec![b"X-Token"],
        authorization: true,
        ..Default::default()
    };
    let named =
        name.eq_ignore_ascii_case(b"X-Token") || name.eq_ignore_ascii_case(b"Authorization");
    let edit = withheld.edit_header(name, value);
    assert_eq!(
        edit == HeaderEdit::Remove,
        named,
        "header {name:?}: {edit:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let (name, rest) = common::first_line(data);
    check_query(name, rest);
    check_cookies(name, rest);
    check_headers(name, rest);
});
