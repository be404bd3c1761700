//! Audience binding for resource indicators (RFC 8707): whether a token's
//! `aud` names this resource, the URL clients call. Two resource URLs are
//! the same when they are the same after RFC 3986 §6.2.2's and §6.2.3's
//! normalisation: scheme and host compared without case, a default port
//! (443 for `https`, 80 for `http`) the same as none, an empty path the
//! same as `/`; the rest of the path and the query compared byte for byte
//! (no percent-decoding, no dot-segment removal: a resource is named, not
//! resolved). A URL with a fragment, user information or another scheme
//! names no resource.

/// A resource URL taken apart: `(scheme, host, port, path and query)`.
struct Parts<'a> {
    https: bool,
    host: &'a [u8],
    port: u16,
    rest: &'a [u8],
}

fn parts(url: &[u8]) -> Option<Parts<'_>> {
    let lower = |n: usize| url.get(..n).map(|s| s.to_ascii_lowercase());
    let (https, after) = if lower(8).as_deref() == Some(b"https://") {
        (true, &url[8..])
    } else if lower(7).as_deref() == Some(b"http://") {
        (false, &url[7..])
    } else {
        return None;
    };
    if url.contains(&b'#') || url.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return None;
    }
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains(&b'@') {
        return None;
    }
    // The port is after the last ':' that follows an IPv6 literal's ']'.
    let colon = match authority.iter().rposition(|&b| b == b']') {
        Some(bracket) => authority[bracket..]
            .iter()
            .position(|&b| b == b':')
            .map(|at| bracket + at),
        None => authority.iter().position(|&b| b == b':'),
    };
    let default = if https { 443 } else { 80 };
    let (host, port) = match colon {
        Some(at) => {
            let digits = &authority[at + 1..];
            let port = match digits {
                [] => default,
                _ if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
                    core::str::from_utf8(digits).ok()?.parse().ok()?
                }
                _ => return None,
            };
            (&authority[..at], port)
        }
        None => (authority, default),
    };
    if host.is_empty() {
        return None;
    }
    Some(Parts {
        https,
        host,
        port,
        rest,
    })
}

/// Whether `a` and `b` name the same resource.
pub fn same_resource(a: &[u8], b: &[u8]) -> bool {
    let (Some(a), Some(b)) = (parts(a), parts(b)) else {
        return false;
    };
    let path = |rest: &'_ [u8]| -> Vec<u8> {
        match rest.first() {
            None | Some(b'?') => [b"/", rest].concat(),
            _ => rest.to_vec(),
        }
    };
    a.https == b.https
        && a.port == b.port
        && a.host.eq_ignore_ascii_case(b.host)
        && path(a.rest) == path(b.rest)
}

/// Whether `resource` is a URL that can name a resource at all.
pub fn is_resource_url(resource: &[u8]) -> bool {
    parts(resource).is_some()
}

/// Whether `aud`, as compact JSON (`None` when absent), names `resource`:
/// a string, or an array with such a string.
pub fn aud_names_resource(aud: Option<&str>, resource: &[u8]) -> bool {
    let names = |value: &serde_json::Value| {
        value
            .as_str()
            .is_some_and(|aud| same_resource(aud.as_bytes(), resource))
    };
    match aud.and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok()) {
        Some(serde_json::Value::Array(values)) => values.iter().any(names),
        Some(value) => names(&value),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_resource_after_normalisation() {
        let same = |a: &str, b: &str| same_resource(a.as_bytes(), b.as_bytes());
        assert!(same(
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp"
        ));
        assert!(same(
            "https://MCP.Example.com/mcp",
            "HTTPS://mcp.example.com/mcp"
        ));
        assert!(same(
            "https://mcp.example.com:443/mcp",
            "https://mcp.example.com/mcp"
        ));
        assert!(same("http://h:80/x", "http://h/x"));
        assert!(same("https://h", "https://h/"));
        assert!(same("https://h:/a", "https://h/a"));
        assert!(same("https://h?q=1", "https://h/?q=1"));
        assert!(same("https://[::1]:8443/mcp", "https://[::1]:8443/mcp"));
        assert!(same("https://[::1]/mcp", "https://[::1]:443/mcp"));
    }

    #[test]
    fn different_resources() {
        let same = |a: &str, b: &str| same_resource(a.as_bytes(), b.as_bytes());
        assert!(!same("https://h/mcp", "http://h/mcp"), "scheme");
        assert!(!same("https://h/mcp", "https://h:8443/mcp"), "port");
        assert!(
            !same("http://h:443/mcp", "http://h/mcp"),
            "443 is not http's default"
        );
        assert!(!same("https://h/mcp", "https://g/mcp"), "host");
        assert!(!same("https://h/mcp", "https://h/MCP"), "path case");
        assert!(!same("https://h/mcp", "https://h/mcp/"), "trailing slash");
        assert!(
            !same("https://h/a/../mcp", "https://h/mcp"),
            "no dot segments removed"
        );
        assert!(
            !same("https://h/%6Dcp", "https://h/mcp"),
            "no percent-decoding"
        );
        assert!(!same("https://h/mcp", "https://h/mcp?x"), "query");
        assert!(
            !same("https://h/mcp#f", "https://h/mcp#f"),
            "a fragment names nothing"
        );
        assert!(
            !same("https://u@h/mcp", "https://u@h/mcp"),
            "user information"
        );
        assert!(!same("urn:h:mcp", "urn:h:mcp"), "not http(s)");
        assert!(!same("https:///mcp", "https:///mcp"), "no host");
        assert!(
            !same("https://h:99999/", "https://h:99999/"),
            "no such port"
        );
        assert!(!same("https://h/a b", "https://h/a b"), "a space");
    }

    #[test]
    fn aud_is_a_string_or_an_array() {
        let r = b"https://mcp.example.com/mcp";
        assert!(aud_names_resource(
            Some(r#""https://mcp.example.com/mcp""#),
            r
        ));
        assert!(aud_names_resource(
            Some(r#"["x","https://MCP.example.com:443/mcp"]"#),
            r
        ));
        for aud in [
            r#""https://other.example/mcp""#,
            "[]",
            "null",
            "1",
            r#"{"a":1}"#,
        ] {
            assert!(!aud_names_resource(Some(aud), r), "{aud}");
        }
        assert!(!aud_names_resource(None, r));
        assert!(is_resource_url(r));
        assert!(!is_resource_url(b"mcp"));
    }
}
