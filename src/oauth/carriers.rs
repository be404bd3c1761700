//! Where the client's access token comes from (`auth_oauth2_token_source`):
//! the `Authorization` header, another header, a query parameter or a cookie.
//! The nginx glue fetches the raw bytes; these functions pick the token out
//! and strip it again from what goes upstream.

use std::borrow::Cow;

use crate::oauth::bearer::{self, is_b64token, BearerToken, Malformed};
use crate::oauth::form;

/// One place to look for the token; header and cookie names as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Header(Vec<u8>),
    Query(Vec<u8>),
    Cookie(Vec<u8>),
}

impl TokenSource {
    /// Header names are case-insensitive, so `header=X-Token` and
    /// `header=x-token` read the same header.
    fn same_as(&self, other: &TokenSource) -> bool {
        match (self, other) {
            (TokenSource::Header(a), TokenSource::Header(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

/// The directive's arguments (after its name) -> the sources in order.
pub fn parse_sources(args: &[&[u8]]) -> Result<Vec<TokenSource>, String> {
    if args.is_empty() {
        return Err("needs at least one token source".to_string());
    }
    let mut sources: Vec<TokenSource> = Vec::with_capacity(args.len());
    for arg in args {
        let source = parse_source(arg)?;
        if sources.iter().any(|seen| seen.same_as(&source)) {
            return Err(format!("lists \"{}\" twice", show(arg)));
        }
        sources.push(source);
    }
    Ok(sources)
}

fn parse_source(arg: &[u8]) -> Result<TokenSource, String> {
    if arg == b"bearer" {
        return Ok(TokenSource::Bearer);
    }
    if let Some(name) = arg.strip_prefix(b"header=") {
        if !is_field_name(name) {
            return Err(format!("has an invalid header name \"{}\"", show(name)));
        }
        for (reserved, instead) in [("Authorization", "bearer"), ("Cookie", "cookie=NAME")] {
            if name.eq_ignore_ascii_case(reserved.as_bytes()) {
                let arg = show(arg);
                return Err(format!(
                    "cannot read the token from \"{arg}\": use \"{instead}\""
                ));
            }
        }
        if NGINX_HEADERS
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known.as_bytes()))
        {
            return Err(format!(
                "cannot read the token from \"{}\": nginx itself interprets that header",
                show(arg)
            ));
        }
        return Ok(TokenSource::Header(name.to_vec()));
    }
    if let Some(name) = arg.strip_prefix(b"query=") {
        let unreserved =
            |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || !name.iter().all(unreserved) {
            return Err(format!(
                "has an invalid query parameter name \"{}\"",
                show(name)
            ));
        }
        return Ok(TokenSource::Query(name.to_vec()));
    }
    if let Some(name) = arg.strip_prefix(b"cookie=") {
        if !is_field_name(name) || name.contains(&b'=') {
            return Err(format!("has an invalid cookie name \"{}\"", show(name)));
        }
        return Ok(TokenSource::Cookie(name.to_vec()));
    }
    Err(format!(
        "takes \"bearer\", \"header=NAME\", \"query=NAME\" or \"cookie=NAME\", not \"{}\"",
        show(arg)
    ))
}

/// Headers nginx keeps its own pointers to: removing one from the list
/// would leave the token readable through them (`$http_user_agent`, realip).
const NGINX_HEADERS: [&str; 28] = [
    "Host",
    "Connection",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Match",
    "If-None-Match",
    "User-Agent",
    "Referer",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Range",
    "If-Range",
    "Transfer-Encoding",
    "TE",
    "Expect",
    "Upgrade",
    "Accept-Encoding",
    "Via",
    "Keep-Alive",
    "X-Forwarded-For",
    "X-Real-IP",
    "Accept",
    "Accept-Language",
    "Depth",
    "Destination",
    "Overwrite",
    "Date",
];

/// RFC 9110 `token`: what a header field name is made of.
fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Configuration bytes need not be UTF-8; the error message must be.
fn show(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A token carried as a whole value (header=, cookie=, query=).
/// An empty value is `Missing` so that the next source gets its turn.
pub fn raw_token(value: &[u8]) -> BearerToken<'_> {
    let token = trim_blanks(value);
    if token.is_empty() {
        BearerToken::Missing
    } else if is_b64token(token) {
        BearerToken::Present(token)
    } else {
        BearerToken::Malformed(Malformed::InvalidCharacters)
    }
}

/// Spaces and tabs only: HTTP's optional whitespace, not CR or LF.
fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether a pair's raw name decodes to `name`: `access%5Ftoken` is the
/// same parameter to the application behind the gateway.
fn is_query_named(pair_name: &[u8], name: &[u8]) -> bool {
    pair_name == name
        || (pair_name.iter().any(|&b| b == b'%' || b == b'+')
            && form::decode(pair_name).is_some_and(|decoded| decoded == name))
}

/// The form-decoded value of the first `name=...` pair of a query string.
/// A value with a broken %-escape comes back raw: its '%' is not a b64token
/// character, so `raw_token` rejects it rather than us guessing.
pub fn query_value<'a>(args: &'a [u8], name: &[u8]) -> Option<Cow<'a, [u8]>> {
    let (_, raw) = args
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(form::split_pair)
        .find(|(pair_name, _)| is_query_named(pair_name, name))?;
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    Some(form::decode(raw).map_or(Cow::Borrowed(raw), Cow::Owned))
}

/// The query string without any `name` pair, so the token does not reach
/// upstream. Empty pairs (`a&&b`) carry nothing and are dropped as well.
pub fn query_without(args: &[u8], name: &[u8]) -> Vec<u8> {
    let kept: Vec<&[u8]> = args
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty() && !is_query_named(form::split_pair(pair).0, name))
        .collect();
    kept.join(&b'&')
}

/// The pairs of one Cookie header value, blanks around ';' trimmed.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|&b| b == b';')
        .map(trim_blanks)
        .filter(|pair| !pair.is_empty())
}

/// A pair's name and value; a pair without '=' names no cookie.
fn split_cookie_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((trim_blanks(&pair[..eq]), trim_blanks(&pair[eq + 1..])))
}

fn is_cookie_named(pair: &[u8], name: &[u8]) -> bool {
    split_cookie_pair(pair).is_some_and(|(pair_name, _)| pair_name == name)
}

/// The value of the first cookie called `name` in one Cookie header value.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let pair = cookie_pairs(header).find(|pair| is_cookie_named(pair, name))?;
    match split_cookie_pair(pair)? {
        (_, [b'"', quoted @ .., b'"']) => Some(quoted),
        (_, value) => Some(value),
    }
}

/// The Cookie header value without any cookie called `name`, so the token
/// does not reach upstream; empty when nothing is left.
pub fn cookie_without(header: &[u8], name: &[u8]) -> Vec<u8> {
    let kept: Vec<&[u8]> = cookie_pairs(header)
        .filter(|pair| !is_cookie_named(pair, name))
        .collect();
    kept.join(&b"; "[..])
}

/// What leaves the request before it goes upstream, decided from the
/// location's sources and the one that held the token: every configured
/// header, query parameter and cookie carrier, whichever held the token, as
/// any of them may hold a token nobody checked. The `Authorization` header
/// stays when it held the token (compatible with the C module; exchange and
/// phantom replace it) and goes when `bearer` is configured but the token
/// came from elsewhere. Without `bearer` among the sources, a Bearer
/// `Authorization` is a token nobody checked: it goes; other schemes (Basic
/// credentials meant for the backend) stay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withheld<'s> {
    /// Headers removed whole (names as configured, case-insensitive).
    pub headers: Vec<&'s [u8]>,
    /// Cookies removed from every Cookie header.
    pub cookies: Vec<&'s [u8]>,
    /// Query parameters removed from the query string.
    pub queries: Vec<&'s [u8]>,
    /// Whether the `Authorization` header goes too.
    pub authorization: bool,
    /// Whether an `Authorization` header with the Bearer scheme goes.
    pub bearer_authorization: bool,
}

impl<'s> Withheld<'s> {
    pub fn from_sources(sources: &'s [TokenSource], used: &TokenSource) -> Withheld<'s> {
        let mut withheld = Withheld {
            bearer_authorization: !sources.contains(&TokenSource::Bearer),
            ..Withheld::default()
        };
        for source in sources {
            match source {
                TokenSource::Bearer => withheld.authorization = *used != TokenSource::Bearer,
                TokenSource::Header(name) => withheld.headers.push(name),
                TokenSource::Query(name) => withheld.queries.push(name),
                TokenSource::Cookie(name) => withheld.cookies.push(name),
            }
        }
        withheld
    }

    /// Whether any request header is affected.
    pub fn touches_headers(&self) -> bool {
        self.authorization
            || self.bearer_authorization
            || !self.headers.is_empty()
            || !self.cookies.is_empty()
    }

    /// Whether an `Authorization` header with this value goes.
    pub fn removes_authorization(&self, value: &[u8]) -> bool {
        self.authorization || (self.bearer_authorization && is_bearer_scheme(value))
    }

    /// What becomes of one request header.
    pub fn edit_header(&self, name: &[u8], value: &[u8]) -> HeaderEdit {
        let named = |carrier: &&[u8]| name.eq_ignore_ascii_case(carrier);
        if self.headers.iter().any(named)
            || (named(&&b"Authorization"[..]) && self.removes_authorization(value))
        {
            return HeaderEdit::Remove;
        }
        if self.cookies.is_empty() || !name.eq_ignore_ascii_case(b"Cookie") {
            return HeaderEdit::Keep;
        }
        // Decided by content: a header is kept as sent only when it holds
        // none of the withheld cookies, wherever and however often.
        if self
            .cookies
            .iter()
            .all(|cookie| cookie_value(value, cookie).is_none())
        {
            return HeaderEdit::Keep;
        }
        let mut rest = value.to_vec();
        for cookie in &self.cookies {
            rest = cookie_without(&rest, cookie);
        }
        HeaderEdit::Rewrite(rest)
    }

    /// The query string without the withheld parameters; `None` when none
    /// of them is in it.
    pub fn query(&self, args: &[u8]) -> Option<Vec<u8>> {
        let mut kept: Option<Vec<u8>> = None;
        for name in &self.queries {
            let current = kept.as_deref().unwrap_or(args);
            if query_value(current, name).is_some() {
                kept = Some(query_without(current, name));
            }
        }
        kept
    }
}

/// Whether an `Authorization` value uses the Bearer scheme (RFC 6750 §2.1:
/// the scheme is case-insensitive and followed by one or more spaces), or
/// the DPoP scheme, which carries an access token as well (RFC 9449 §7.1).
fn is_bearer_scheme(value: &[u8]) -> bool {
    let value = trim_blanks(value);
    (value.len() > 6 && value[..6].eq_ignore_ascii_case(b"Bearer") && value[6] == b' ')
        || bearer::is_dpop_scheme(value)
}

/// What becomes of one request header on the way upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    Keep,
    Remove,
    /// The header with this value instead; nothing left means it goes.
    Rewrite(Vec<u8>),
}

/// The request URI (path and query, as the client sent it) with `args` as
/// its query string: the path keeps its exact bytes.
pub fn uri_with_args(unparsed_uri: &[u8], args: &[u8]) -> Vec<u8> {
    let path_end = unparsed_uri
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(unparsed_uri.len());
    let mut uri = unparsed_uri[..path_end].to_vec();
    if !args.is_empty() {
        uri.push(b'?');
        uri.extend_from_slice(args);
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<TokenSource>, String> {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        parse_sources(&args)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    const INVALID: BearerToken = BearerToken::Malformed(Malformed::InvalidCharacters);

    #[test]
    fn sources_are_kept_in_order() {
        use TokenSource::*;
        assert_eq!(
            parse(&["cookie=at", "bearer", "header=X-T", "query=access_token"]),
            Ok(vec![
                Cookie(b"at".to_vec()),
                Bearer,
                Header(b"X-T".to_vec()),
                Query(b"access_token".to_vec())
            ])
        );
    }

    #[test]
    fn bad_sources_are_explained() {
        let takes = |arg| {
            format!(r#"takes "bearer", "header=NAME", "query=NAME" or "cookie=NAME", not "{arg}""#)
        };
        let invalid = |kind, name| format!(r#"has an invalid {kind} name "{name}""#);
        let reserved =
            |arg, instead| format!(r#"cannot read the token from "{arg}": use "{instead}""#);
        for (arg, message) in [
            ("x", takes("x")),
            ("Bearer", takes("Bearer")),
            ("header=a b", invalid("header", "a b")),
            ("header=", invalid("header", "")),
            (
                "header=authorization",
                reserved("header=authorization", "bearer"),
            ),
            ("header=COOKIE", reserved("header=COOKIE", "cookie=NAME")),
            ("query=a+b", invalid("query parameter", "a+b")),
            ("query=", invalid("query parameter", "")),
            ("cookie=a=b", invalid("cookie", "a=b")),
            ("cookie=", invalid("cookie", "")),
        ] {
            assert_eq!(parse(&[arg]), Err(message));
        }
        assert_eq!(parse(&[]), Err("needs at least one token source".into()));
    }

    #[test]
    fn the_same_source_twice_is_an_error() {
        for (args, twice) in [
            (&["query=t", "bearer", "query=t"][..], "query=t"),
            (&["bearer", "bearer"], "bearer"),
            (&["header=X-T", "header=x-t"], "header=x-t"),
        ] {
            assert_eq!(parse(args), Err(format!(r#"lists "{twice}" twice"#)));
        }
        assert!(parse(&["query=t", "cookie=t", "header=t", "cookie=T"]).is_ok());
    }

    #[test]
    fn raw_token_trims_and_checks() {
        let token = b" \tabc.DEF-_~+/== ";
        assert_eq!(raw_token(token), BearerToken::Present(b"abc.DEF-_~+/=="));
        assert_eq!(raw_token(b""), BearerToken::Missing);
        assert_eq!(raw_token(b" \t "), BearerToken::Missing);
        assert_eq!(raw_token(b"Bearer abc"), INVALID);
        assert_eq!(raw_token(b"a%2Bb"), INVALID);
        assert_eq!(raw_token(b"a\r"), INVALID);
    }

    #[test]
    fn query_value_finds_the_first_exact_name() {
        for (args, name, value) in [
            ("a=1&access_token=xyz&b", "access_token", Some("xyz")),
            ("t=first&t=second", "t", Some("first")),
            ("token=long&tok=short", "tok", Some("short")),
            ("tok=short&token=long", "token", Some("long")),
            ("a&&t", "t", Some("")),
            ("a=1&b=2", "t", None),
            ("T=x&a=t%3Dy&", "t", None),
            ("", "t", None),
        ] {
            let found = query_value(args.as_bytes(), name.as_bytes());
            assert_eq!(found.as_deref().map(text).as_deref(), value, "{args}");
        }
    }

    #[test]
    fn an_empty_query_value_is_missing() {
        let empty = query_value(b"access_token=&b=2", b"access_token");
        assert_eq!(empty.as_deref(), Some(&b""[..]));
        assert_eq!(raw_token(&empty.unwrap()), BearerToken::Missing);
    }

    #[test]
    fn query_value_is_form_decoded() {
        let plain = query_value(b"t=abc", b"t");
        assert!(matches!(plain, Some(Cow::Borrowed(b"abc"))));
        let decoded = query_value(b"t=a%2Bb%2fc%3D", b"t");
        assert!(matches!(decoded, Some(Cow::Owned(_))));
        assert_eq!(decoded.as_deref(), Some(&b"a+b/c="[..]));
        let plus = query_value(b"t=a+b", b"t").unwrap();
        assert_eq!(&*plus, b"a b");
        assert_eq!(raw_token(&plus), INVALID);
    }

    #[test]
    fn query_value_with_invalid_escapes_stays_raw() {
        for raw in ["a%zz", "a%2", "a%", "a%%41", "a+b%g1"] {
            let args = format!("t={raw}");
            let value = query_value(args.as_bytes(), b"t").unwrap();
            assert_eq!(&*value, raw.as_bytes());
            assert_eq!(raw_token(&value), INVALID);
        }
    }

    #[test]
    fn query_without_drops_every_occurrence() {
        for (args, name, kept) in [
            ("t=1&a=2&b=3", "t", "a=2&b=3"),
            ("a=2&t=1&b=3", "t", "a=2&b=3"),
            ("a=2&b=3&t=1", "t", "a=2&b=3"),
            ("t=1", "t", ""),
            ("t=1&a=%41+b&t=2&t", "t", "a=%41+b"),
            ("t&a=1", "t", "a=1"),
            ("token=1&tok=2&to=3", "tok", "token=1&to=3"),
            ("a=1&&t=2&", "t", "a=1"),
            ("a=1&b", "t", "a=1&b"),
        ] {
            assert_eq!(text(&query_without(args.as_bytes(), name.as_bytes())), kept);
        }
    }

    #[test]
    fn cookie_value_reads_rfc6265_pairs() {
        for (header, name, value) in [
            ("a=1; token=xyz; b=2", "token", Some("xyz")),
            ("a=1;token=xyz;b=2", "token", Some("xyz")),
            ("a=1 ;  token = xyz  ; b", "token", Some("xyz")),
            ("a=1; token=\"xyz\"", "token", Some("xyz")),
            ("token=\"\"", "token", Some("")),
            ("token=\"", "token", Some("\"")),
            ("token=a=b", "token", Some("a=b")),
            ("t=1; t=2", "t", Some("1")),
            ("token=long; tok=short", "tok", Some("short")),
            ("tok=short; token=long", "token", Some("long")),
            ("Token=x; xtoken=y; token", "token", None),
            ("", "token", None),
        ] {
            let found = cookie_value(header.as_bytes(), name.as_bytes());
            assert_eq!(found.map(text).as_deref(), value, "{header}");
        }
    }

    #[test]
    fn cookie_without_keeps_the_others() {
        for (header, kept) in [
            ("a=1; token=xyz; b=\"2\"", "a=1; b=\"2\""),
            ("token=x;a=1 ;token=y;  b=2", "a=1; b=2"),
            ("token=long; tok=short", "tok=short"),
            ("tok=1; tokens=2", "tok=1; tokens=2"),
            ("a=1; flag", "a=1; flag"),
            ("token=xyz", ""),
            (" token=1 ; ; token=\"2\" ", ""),
        ] {
            assert_eq!(text(&cookie_without(header.as_bytes(), b"token")), kept);
        }
    }

    #[test]
    fn encoded_parameter_names_are_the_same_parameter() {
        assert_eq!(
            query_value(b"access%5Ftoken=a", b"access_token").as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(
            text(&query_without(
                b"access_token=a&access%5ftoken=b&x=1",
                b"access_token"
            )),
            "x=1"
        );
        assert_eq!(query_value(b"access%5token=a", b"access_token"), None);
    }

    #[test]
    fn headers_nginx_interprets_are_refused() {
        let err = parse(&["header=user-agent"]).unwrap_err();
        assert!(err.contains("nginx itself interprets"), "{err}");
        assert!(parse(&["header=X-Forwarded-For"]).is_err());
        assert!(parse(&["header=X-Api-Token"]).is_ok());
    }

    #[test]
    fn withheld_carriers_follow_the_sources() {
        use TokenSource::*;
        let sources = vec![
            Bearer,
            Header(b"X-Token".to_vec()),
            Query(b"access_token".to_vec()),
            Cookie(b"at".to_vec()),
        ];
        let from_cookie = Withheld::from_sources(&sources, &Cookie(b"at".to_vec()));
        assert_eq!(
            from_cookie,
            Withheld {
                headers: vec![&b"X-Token"[..]],
                cookies: vec![&b"at"[..]],
                queries: vec![&b"access_token"[..]],
                authorization: true,
                bearer_authorization: false,
            }
        );
        let from_bearer = Withheld::from_sources(&sources, &Bearer);
        assert!(
            !from_bearer.authorization,
            "the checked Authorization stays"
        );
        assert!(!Withheld::from_sources(&[Bearer], &Bearer).touches_headers());
    }

    #[test]
    fn without_bearer_among_the_sources_only_a_bearer_authorization_goes() {
        use TokenSource::*;
        let sources = vec![Cookie(b"at".to_vec())];
        let w = Withheld::from_sources(&sources, &Cookie(b"at".to_vec()));
        assert!(w.touches_headers());
        // A DPoP-scheme token is an access token nobody checked as well.
        for bearer in [
            &b"Bearer x"[..],
            b"bearer x",
            b"BEARER  x",
            b" Bearer x",
            b"DPoP x",
        ] {
            assert_eq!(w.edit_header(b"Authorization", bearer), HeaderEdit::Remove);
        }
        for other in [&b"Basic dXNlcjpwdw=="[..], b"Bearerx", b"Bearer", b"DPoP"] {
            assert_eq!(w.edit_header(b"authorization", other), HeaderEdit::Keep);
        }
        let both = [Bearer, Cookie(b"at".to_vec())];
        let with_bearer = Withheld::from_sources(&both, &Bearer);
        assert_eq!(
            with_bearer.edit_header(b"Authorization", b"Bearer x"),
            HeaderEdit::Keep
        );
    }

    #[test]
    fn headers_are_removed_or_rewritten_by_name() {
        use TokenSource::*;
        let sources = vec![Bearer, Header(b"X-Token".to_vec()), Cookie(b"at".to_vec())];
        let w = Withheld::from_sources(&sources, &Header(b"X-Token".to_vec()));
        assert_eq!(w.edit_header(b"x-token", b"t"), HeaderEdit::Remove);
        assert_eq!(
            w.edit_header(b"AUTHORIZATION", b"Bearer t"),
            HeaderEdit::Remove
        );
        assert_eq!(w.edit_header(b"Accept", b"*/*"), HeaderEdit::Keep);
        assert_eq!(
            w.edit_header(b"Cookie", b"a=1; at=t; b=2"),
            HeaderEdit::Rewrite(b"a=1; b=2".to_vec())
        );
        assert_eq!(
            w.edit_header(b"cookie", b"at=t"),
            HeaderEdit::Rewrite(Vec::new())
        );
        assert_eq!(w.edit_header(b"Cookie", b"a=1; b=2"), HeaderEdit::Keep);
        assert_eq!(w.edit_header(b"Cookie", b"a=1;b=2"), HeaderEdit::Keep);
    }

    #[test]
    fn a_rewrite_is_decided_by_content_not_by_length() {
        // 17 cookies between two tokens: without them, re-joined with "; ",
        // the header is exactly as long as before.
        let value = [&b"t=GOOD;"[..], &b"a;".repeat(16), b"a;t=FORGED"].concat();
        let w = Withheld {
            cookies: vec![&b"t"[..]],
            ..Withheld::default()
        };
        let HeaderEdit::Rewrite(rest) = w.edit_header(b"Cookie", &value) else {
            panic!("a header with the cookie was kept");
        };
        assert_eq!(rest.len(), value.len());
        assert_eq!(cookie_value(&rest, b"t"), None);
    }

    #[test]
    fn query_and_uri_lose_every_withheld_parameter() {
        use TokenSource::*;
        let sources = vec![Query(b"a".to_vec()), Query(b"b".to_vec())];
        let w = Withheld::from_sources(&sources, &Query(b"a".to_vec()));
        assert_eq!(w.query(b"x=1&a=t&b=u&y=2"), Some(b"x=1&y=2".to_vec()));
        assert_eq!(w.query(b"x=1"), None);
        assert_eq!(w.query(b"b=u"), Some(Vec::new()));
        assert_eq!(uri_with_args(b"/p%20q?a=t&x=1", b"x=1"), b"/p%20q?x=1");
        assert_eq!(uri_with_args(b"/p?a=t", b""), b"/p");
        assert_eq!(uri_with_args(b"/p", b""), b"/p");
    }
}
