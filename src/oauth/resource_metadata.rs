//! OAuth 2.0 Protected Resource Metadata (RFC 9728): the JSON document a
//! resource server publishes (§2, §3.2), where it lives (§3.1's path
//! insertion), and the URLs it may name.

/// How a client may send a token (RFC 9728 §2 `bearer_methods_supported`,
/// RFC 6750 §2's three ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMethod {
    Header,
    Body,
    Query,
}

impl BearerMethod {
    pub fn parse(name: &[u8]) -> Option<BearerMethod> {
        match name {
            b"header" => Some(BearerMethod::Header),
            b"body" => Some(BearerMethod::Body),
            b"query" => Some(BearerMethod::Query),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BearerMethod::Header => "header",
            BearerMethod::Body => "body",
            BearerMethod::Query => "query",
        }
    }
}

/// One document's values, as evaluated for a request.
#[derive(Debug, Default)]
pub struct Metadata<'a> {
    /// `resource`: the resource identifier (REQUIRED).
    pub resource: &'a [u8],
    pub authorization_servers: Vec<&'a [u8]>,
    pub scopes_supported: &'a [String],
    pub bearer_methods_supported: &'a [BearerMethod],
    pub resource_name: Option<&'a [u8]>,
    pub resource_documentation: Option<&'a [u8]>,
    /// The algorithms of the DPoP proofs the resource accepts (RFC 9728
    /// §2, RFC 9449), space-separated; empty: the member is left out.
    pub dpop_algs: &'a str,
    /// Whether only DPoP-bound tokens are accepted (`true` is sent; the
    /// member's default is `false`).
    pub dpop_required: bool,
}

/// Why a document cannot be served: which member, and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub member: &'static str,
    pub why: &'static str,
}

/// The JSON document (RFC 9728 §3.2): an object with the members that have
/// a value, in §2's order; every URL checked with [`check_url`] (the
/// resource with `fragment_allowed` false), text valid UTF-8.
pub fn document(m: &Metadata<'_>) -> Result<String, Invalid> {
    let url = |member: &'static str, value: &[u8]| {
        check_url(value).map_err(|why| Invalid { member, why })
    };
    url("resource", m.resource)?;
    if m.resource.contains(&b'#') {
        return Err(Invalid {
            member: "resource",
            why: "has a fragment",
        });
    }
    let mut out = String::with_capacity(256);
    out.push('{');
    member(&mut out, "resource");
    string(&mut out, "resource", m.resource)?;
    if !m.authorization_servers.is_empty() {
        out.push(',');
        member(&mut out, "authorization_servers");
        out.push('[');
        for (i, server) in m.authorization_servers.iter().enumerate() {
            url("authorization_servers", server)?;
            if i > 0 {
                out.push(',');
            }
            string(&mut out, "authorization_servers", server)?;
        }
        out.push(']');
    }
    if !m.scopes_supported.is_empty() {
        out.push(',');
        member(&mut out, "scopes_supported");
        let scopes = m.scopes_supported.iter().map(|s| s.as_bytes());
        array(&mut out, "scopes_supported", scopes)?;
    }
    if !m.bearer_methods_supported.is_empty() {
        out.push(',');
        member(&mut out, "bearer_methods_supported");
        let methods = m
            .bearer_methods_supported
            .iter()
            .map(|b| b.name().as_bytes());
        array(&mut out, "bearer_methods_supported", methods)?;
    }
    if let Some(name) = m.resource_name {
        out.push(',');
        member(&mut out, "resource_name");
        string(&mut out, "resource_name", name)?;
    }
    if let Some(doc) = m.resource_documentation {
        url("resource_documentation", doc)?;
        out.push(',');
        member(&mut out, "resource_documentation");
        string(&mut out, "resource_documentation", doc)?;
    }
    if !m.dpop_algs.is_empty() {
        out.push(',');
        member(&mut out, "dpop_signing_alg_values_supported");
        let algs = m.dpop_algs.split(' ').map(str::as_bytes);
        array(&mut out, "dpop_signing_alg_values_supported", algs)?;
    }
    if m.dpop_required {
        out.push(',');
        member(&mut out, "dpop_bound_access_tokens_required");
        out.push_str("true");
    }
    out.push('}');
    Ok(out)
}

fn member(out: &mut String, name: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

fn array<'v>(
    out: &mut String,
    member: &'static str,
    values: impl Iterator<Item = &'v [u8]>,
) -> Result<(), Invalid> {
    out.push('[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, member, value)?;
    }
    out.push(']');
    Ok(())
}

/// `value` as a JSON string (RFC 8259 §7): `"` and `\` escaped, control
/// characters as `\uXXXX` (or their short forms); text that is not UTF-8
/// is refused.
fn string(out: &mut String, member: &'static str, value: &[u8]) -> Result<(), Invalid> {
    let text = core::str::from_utf8(value).map_err(|_| Invalid {
        member,
        why: "is not valid UTF-8",
    })?;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            // Line and paragraph separators are valid JSON but break
            // JavaScript string literals: escaped too.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// An absolute `http` or `https` URL with a host, in visible ASCII (RFC
/// 3986 characters; no space, quote, backslash or control character).
/// RFC 9728 asks for `https`; `http` is accepted for development.
pub fn check_url(url: &[u8]) -> Result<(), &'static str> {
    let rest = if let Some(rest) = url.strip_prefix(b"https://") {
        rest
    } else if let Some(rest) = url.strip_prefix(b"http://") {
        rest
    } else {
        return Err("is not an http or https URL");
    };
    if url
        .iter()
        .any(|&b| !(0x21..0x7f).contains(&b) || matches!(b, b'"' | b'\\' | b'<' | b'>'))
    {
        return Err("holds a character a URL cannot have");
    }
    let authority_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if host.is_empty() || host.starts_with(b":") {
        return Err("has no host");
    }
    Ok(())
}

/// The well-known prefix of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Where a client looks for the metadata of `resource` (RFC 9728 §3.1):
/// the well-known suffix inserted between the host and the resource's
/// path, whose trailing `/` is kept and a path of `/` alone dropped; the
/// query too is kept. `None` for what [`check_url`] refuses.
pub fn metadata_path(resource: &[u8]) -> Option<String> {
    check_url(resource).ok()?;
    let rest = resource.splitn(2, |&b| b == b':').nth(1)?.get(2..)?;
    let path_at = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    let tail = &rest[path_at..];
    let tail = match tail.iter().position(|&b| b == b'#') {
        Some(at) => &tail[..at],
        None => tail,
    };
    let tail = tail.strip_prefix(b"/").map_or(tail, |t| match t {
        [] => t,
        [b'?', ..] => t,
        _ => tail,
    });
    let tail = core::str::from_utf8(tail).ok()?;
    Some(format!("{WELL_KNOWN}{tail}"))
}

/// The same for a resource written with nginx variables, when its path does
/// not depend on them: a variable may stand in the host and port
/// (`https://$host/mcp`), not in the path or the query, nor end the
/// authority (`https://$host$uri`, whose path could come from it).
pub fn static_metadata_path(resource: &[u8]) -> Option<String> {
    let after = resource.windows(3).position(|w| w == b"://")? + 3;
    let rest = &resource[after..];
    let path_at = rest.iter().position(|&b| matches!(b, b'/' | b'?'));
    let (authority, tail) = rest.split_at(path_at.unwrap_or(rest.len()));
    if tail.contains(&b'$')
        || tail.contains(&b'?')
        || (tail.is_empty() && authority.contains(&b'$'))
    {
        return None;
    }
    metadata_path(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(m: &Metadata<'_>) -> serde_json::Value {
        serde_json::from_str(&document(m).unwrap()).unwrap()
    }

    #[test]
    fn minimal_document_has_only_the_resource() {
        let m = Metadata {
            resource: b"https://api.example.com/mcp",
            ..Metadata::default()
        };
        assert_eq!(
            document(&m).unwrap(),
            r#"{"resource":"https://api.example.com/mcp"}"#
        );
    }

    #[test]
    fn full_document_uses_rfc_9728_member_names_in_order() {
        let scopes = ["mcp:tools".to_string(), "mcp:read".to_string()];
        let methods = [BearerMethod::Header, BearerMethod::Query];
        let m = Metadata {
            resource: b"https://api.example.com/mcp",
            authorization_servers: vec![b"https://as1.example.com", b"https://as2.example.com/t"],
            scopes_supported: &scopes,
            bearer_methods_supported: &methods,
            resource_name: Some(b"Example MCP"),
            resource_documentation: Some(b"https://docs.example.com/mcp"),
            dpop_algs: "ES256 EdDSA",
            dpop_required: true,
        };
        assert_eq!(
            document(&m).unwrap(),
            concat!(
                r#"{"resource":"https://api.example.com/mcp","#,
                r#""authorization_servers":["https://as1.example.com","https://as2.example.com/t"],"#,
                r#""scopes_supported":["mcp:tools","mcp:read"],"#,
                r#""bearer_methods_supported":["header","query"],"#,
                r#""resource_name":"Example MCP","#,
                r#""resource_documentation":"https://docs.example.com/mcp","#,
                r#""dpop_signing_alg_values_supported":["ES256","EdDSA"],"#,
                r#""dpop_bound_access_tokens_required":true}"#
            )
        );
        let v = doc(&m);
        assert_eq!(v["authorization_servers"][1], "https://as2.example.com/t");
    }

    #[test]
    fn text_is_escaped_as_json() {
        let m = Metadata {
            resource: b"https://a.example",
            resource_name: Some("a \"quoted\" \\ name\n\t\u{1}\u{7f}\u{2028} é".as_bytes()),
            ..Metadata::default()
        };
        let text = document(&m).unwrap();
        assert!(text.contains(r#""resource_name":"a \"quoted\" \\ name\n\t\u0001\u007f\u2028 é""#));
        assert_eq!(
            doc(&m)["resource_name"],
            "a \"quoted\" \\ name\n\t\u{1}\u{7f}\u{2028} é"
        );
    }

    #[test]
    fn bad_values_name_their_member() {
        let bad = |m: Metadata<'_>| document(&m).unwrap_err().member;
        assert_eq!(bad(Metadata::default()), "resource");
        assert_eq!(
            bad(Metadata {
                resource: b"https://a.example/x#frag",
                ..Metadata::default()
            }),
            "resource"
        );
        assert_eq!(
            bad(Metadata {
                resource: b"https://a.example",
                authorization_servers: vec![b"https://ok.example", b"ftp://as"],
                ..Metadata::default()
            }),
            "authorization_servers"
        );
        assert_eq!(
            bad(Metadata {
                resource: b"https://a.example",
                resource_name: Some(b"\xff"),
                ..Metadata::default()
            }),
            "resource_name"
        );
        assert_eq!(
            bad(Metadata {
                resource: b"https://a.example",
                resource_documentation: Some(b"https://d.example/a b"),
                ..Metadata::default()
            }),
            "resource_documentation"
        );
    }

    #[test]
    fn urls_are_absolute_http_with_a_host() {
        assert!(check_url(b"https://host").is_ok());
        assert!(check_url(b"https://host:8443/a/b?c=d").is_ok());
        assert!(check_url(b"http://127.0.0.1:8080/mcp").is_ok());
        assert!(check_url(b"https://[::1]:8443/").is_ok());
        assert!(check_url(b"/relative").is_err());
        assert!(check_url(b"https://").is_err());
        assert!(check_url(b"https:///path").is_err());
        assert!(check_url(b"https://:443/").is_err());
        assert!(check_url(b"https://host/\"").is_err());
        assert!(check_url(b"https://host/a\r\nb").is_err());
        assert!(check_url(b"javascript:alert(1)").is_err());
        assert!(check_url("https://hôst/".as_bytes()).is_err());
    }

    #[test]
    fn path_insertion_follows_rfc_9728_section_3_1() {
        let p = |r: &str| metadata_path(r.as_bytes()).unwrap();
        assert_eq!(p("https://host"), "/.well-known/oauth-protected-resource");
        assert_eq!(p("https://host/"), "/.well-known/oauth-protected-resource");
        assert_eq!(
            p("https://host/mcp"),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            p("https://host:8443/a/b/"),
            "/.well-known/oauth-protected-resource/a/b/"
        );
        assert_eq!(
            p("https://host/r?x=1"),
            "/.well-known/oauth-protected-resource/r?x=1"
        );
        assert_eq!(metadata_path(b"mcp"), None);
    }

    #[test]
    fn a_path_without_variables_is_known_at_configuration() {
        let p = |r: &str| static_metadata_path(r.as_bytes());
        assert_eq!(
            p("https://$host/mcp").as_deref(),
            Some("/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            p("https://$host:$server_port/a/").as_deref(),
            Some("/.well-known/oauth-protected-resource/a/")
        );
        assert_eq!(
            p("https://h").as_deref(),
            Some("/.well-known/oauth-protected-resource")
        );
        assert_eq!(p("https://$host"), None, "the variable could hold a path");
        assert_eq!(p("https://$host$uri"), None);
        assert_eq!(p("https://h/$tenant/mcp"), None);
        assert_eq!(p("https://h/r?x=1"), None, "a location has no query");
        assert_eq!(p("$resource"), None);
    }

    #[test]
    fn bearer_methods_round_trip() {
        for m in [
            BearerMethod::Header,
            BearerMethod::Body,
            BearerMethod::Query,
        ] {
            assert_eq!(BearerMethod::parse(m.name().as_bytes()), Some(m));
        }
        assert_eq!(BearerMethod::parse(b"cookie"), None);
    }
}
