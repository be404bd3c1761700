//! The `htu` of a DPoP proof against the request's URI (RFC 9449 §4.3
//! check 9): both without query and fragment, compared after the
//! syntax-based normalisation of RFC 3986 §6.2.2 and the scheme-based one
//! of §6.2.3: scheme and host in lower case, the scheme's default port
//! dropped, percent-encodings in upper case and those of unreserved
//! characters decoded, dot segments removed, an empty path as `/`.
//!
//! Only `http` and `https` URIs with a host and no userinfo are accepted;
//! anything else normalises to nothing and never matches.

/// The longest URI normalised: nginx's own limit on a request line is
/// larger, but a proof's `htu` has no reason to be longer.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// `uri` normalised, without its query and fragment; `None` for what is not
/// an absolute `http`/`https` URI of the RFC 3986 syntax.
pub fn normalise(uri: &[u8]) -> Option<String> {
    if uri.len() > MAX_URI_BYTES {
        return None;
    }
    let colon = uri.iter().position(|&b| b == b':')?;
    let scheme = uri[..colon].to_ascii_lowercase();
    let default_port = match scheme.as_slice() {
        b"http" => 80,
        b"https" => 443,
        _ => return None,
    };
    let rest = uri[colon + 1..].strip_prefix(b"//")?;
    let authority_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let path_end = rest
        .iter()
        .position(|&b| matches!(b, b'?' | b'#'))
        .unwrap_or(rest.len());
    let mut out = String::with_capacity(uri.len());
    out.push_str(if default_port == 80 { "http" } else { "https" });
    out.push_str("://");
    push_authority(&mut out, authority, default_port)?;
    let path = normalise_escapes(&rest[..path_end], is_path_char)?;
    match path.is_empty() {
        true => out.push('/'),
        false => out.push_str(&remove_dot_segments(&path)),
    }
    Some(out)
}

/// The request's own URI from its parts: the scheme (`http`/`https`), the
/// authority (`Host`, or the configured external one) and the request
/// target as sent (origin form, or absolute form, whose own authority wins
/// as nginx's does).
pub fn request_uri(scheme: &str, authority: &[u8], target: &[u8]) -> Option<String> {
    match target.first() {
        Some(b'/') => normalise(&[scheme.as_bytes(), b"://", authority, target].concat()),
        _ => normalise(target),
    }
}

/// The request's URI under a configured origin (`https://api.example.com`,
/// for a gateway behind a TLS terminator or another name): the origin's
/// scheme and authority, the path of the request target as sent.
pub fn request_uri_at(origin: &str, target: &[u8]) -> Option<String> {
    let path = match target.first() {
        Some(b'/') => target,
        _ => {
            let after_scheme = target.windows(3).position(|w| w == b"://")? + 3;
            let rest = &target[after_scheme..];
            let start = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            &rest[start..]
        }
    };
    normalise(&[origin.as_bytes(), path].concat())
}

/// `auth_oauth2_token_dpop_origin`'s value: an `http` or `https` URI with
/// no path but `/`, no query and no fragment, as its normalised
/// `scheme://authority`.
pub fn parse_origin(arg: &[u8]) -> Option<String> {
    if arg.iter().any(|&b| b == b'?' || b == b'#') {
        return None;
    }
    let normalised = normalise(arg)?;
    let authority_end = normalised.find("://")? + 3;
    let path = normalised[authority_end..].find('/')? + authority_end;
    match &normalised[path..] {
        "/" => Some(normalised[..path].to_string()),
        _ => None,
    }
}

/// Whether a proof's `htu` names the request's URI (normalised already).
pub fn matches(htu: &[u8], request: &str) -> bool {
    normalise(htu).is_some_and(|htu| htu == request)
}

fn push_authority(out: &mut String, authority: &[u8], default_port: u16) -> Option<()> {
    if authority.contains(&b'@') {
        return None;
    }
    let (host, port) = match authority.first() {
        Some(b'[') => {
            let close = authority.iter().position(|&b| b == b']')?;
            let literal = &authority[..=close];
            if !literal[1..close]
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
            {
                return None;
            }
            (literal, &authority[close + 1..])
        }
        _ => {
            let colon = authority
                .iter()
                .position(|&b| b == b':')
                .unwrap_or(authority.len());
            authority.split_at(colon)
        }
    };
    let host = normalise_escapes(host, is_host_char)?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    out.push_str(&host);
    let port = match port {
        [] | [b':'] => return Some(()),
        [b':', digits @ ..] if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits).ok()?.parse::<u32>().ok()?
        }
        _ => return None,
    };
    if port > 65535 {
        return None;
    }
    if port != u32::from(default_port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    Some(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `pchar` and `/` (a path), `%` handled apart.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@' | b'/')
}

/// `reg-name` and an IP literal's brackets and colons.
fn is_host_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b'[' | b']' | b':')
}

/// Percent-encodings in upper case, those of unreserved characters decoded;
/// `None` for a broken escape or a byte the component may not hold.
fn normalise_escapes(part: &[u8], allowed: fn(u8) -> bool) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        let b = part[i];
        if b == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            match is_unreserved(value) {
                true => out.push(char::from(value)),
                false => {
                    out.push('%');
                    out.push_str(&format!("{value:02X}"));
                }
            }
            i += 3;
            continue;
        }
        if !allowed(b) {
            return None;
        }
        out.push(char::from(b));
        i += 1;
    }
    Some(out)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output: Vec<&str> = Vec::new();
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            output.pop();
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..]
                .find('/')
                .map_or(input.len(), |end| end + start);
            output.push(&input[..end]);
            input = &input[end..];
        }
    }
    output.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(uri: &str) -> Option<String> {
        normalise(uri.as_bytes())
    }

    #[test]
    fn equivalent_uris_normalise_alike() {
        let canonical = "https://server.example.com/token";
        for uri in [
            "https://server.example.com/token",
            "HTTPS://Server.Example.COM/token",
            "https://server.example.com:443/token",
            "https://server.example.com:/token",
            "https://server.example.com/token?x=1",
            "https://server.example.com/token#frag",
            "https://server.example.com/token?x=1#f",
            "https://server.example.com/./token",
            "https://server.example.com/a/../token",
            "https://server.example.com/%74oken",
            "https://server.example.com/%74%6F%6b%65%6E",
            "https://%73erver.example.com/token",
        ] {
            assert_eq!(n(uri).as_deref(), Some(canonical), "{uri}");
        }
        assert_eq!(n("http://h:80").as_deref(), Some("http://h/"));
        assert_eq!(n("http://h:0080/").as_deref(), Some("http://h/"));
        assert_eq!(n("http://h:8080/a").as_deref(), Some("http://h:8080/a"));
        assert_eq!(n("https://h:80/a").as_deref(), Some("https://h:80/a"));
        assert_eq!(
            n("http://[::1]:8080/a").as_deref(),
            Some("http://[::1]:8080/a")
        );
        assert_eq!(n("http://h/a%2fb").as_deref(), Some("http://h/a%2Fb"));
        assert_eq!(n("http://h/a/b/../../../c").as_deref(), Some("http://h/c"));
        assert_eq!(n("http://h/a/.").as_deref(), Some("http://h/a/"));
        assert_eq!(n("http://h/a/..").as_deref(), Some("http://h/"));
    }

    #[test]
    fn what_differs_stays_different() {
        for (a, b) in [
            ("https://h/a", "http://h/a"),
            ("https://h/a", "https://h/A"),
            ("https://h/a", "https://h/a/"),
            ("https://h/a", "https://g/a"),
            ("https://h:8443/a", "https://h/a"),
            ("https://h/a%2Fb", "https://h/a/b"),
        ] {
            assert_ne!(n(a), n(b), "{a} {b}");
        }
    }

    #[test]
    fn what_is_not_an_http_uri_normalises_to_nothing() {
        for uri in [
            "",
            "/path",
            "h/path",
            "ftp://h/",
            "https:/h/",
            "https://",
            "https://:443/",
            "https://user@h/",
            "https://h:99999/",
            "https://h:8x/",
            "https://h/a b",
            "https://h/a\r\nb",
            "https://h/%zz",
            "https://h/%4",
            "https://h/\u{e9}",
            "https://h h/",
            "https://[::1/",
            "https://[zz]/",
        ] {
            assert_eq!(n(uri), None, "{uri:?}");
        }
        assert_eq!(normalise(&vec![b'a'; MAX_URI_BYTES + 1]), None);
    }

    #[test]
    fn the_request_side() {
        let own = request_uri("https", b"API.example:443", b"/r/../x?q=1").unwrap();
        assert_eq!(own, "https://api.example/x");
        assert!(matches(b"https://api.example/x", &own));
        assert!(matches(b"https://api.example/x?other=2", &own));
        assert!(!matches(b"https://api.example/y", &own));
        assert!(!matches(b"https://other.example/x", &own));
        assert_eq!(
            request_uri("http", b"ignored", b"http://h:81/p?q").as_deref(),
            Some("http://h:81/p")
        );
        assert_eq!(request_uri("http", b"h", b"*"), None);
    }

    #[test]
    fn a_configured_origin() {
        let origin = parse_origin(b"HTTPS://API.example.com:443/").unwrap();
        assert_eq!(origin, "https://api.example.com");
        assert_eq!(
            parse_origin(b"https://api.example.com:8443").as_deref(),
            Some("https://api.example.com:8443")
        );
        for bad in [
            &b"https://api.example.com/v1"[..],
            b"https://a/?x",
            b"https://a#f",
            b"ftp://a",
            b"api.example.com",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad:?}");
        }
        assert_eq!(
            request_uri_at(&origin, b"/orders/../x?q").as_deref(),
            Some("https://api.example.com/x")
        );
        assert_eq!(
            request_uri_at(&origin, b"http://internal:8080/x").as_deref(),
            Some("https://api.example.com/x")
        );
        assert_eq!(request_uri_at(&origin, b"*"), None);
    }
}
