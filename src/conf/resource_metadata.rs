//! `auth_oauth2_token_resource_metadata` (RFC 9728 Protected Resource
//! Metadata served from the configuration): its parameters, checked here,
//! and what the location keeps of them.

use crate::oauth::resource_metadata::{check_url, BearerMethod};
use crate::oauth::scope;

use super::template::Template;

/// The parameters as written; values that may hold variables are raw, for
/// the glue to compile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetadataArgs<'a> {
    pub resource: &'a [u8],
    pub authorization_servers: Vec<&'a [u8]>,
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: Vec<BearerMethod>,
    pub resource_name: Option<&'a [u8]>,
    pub resource_documentation: Option<&'a [u8]>,
    /// `Cache-Control: max-age` of the answer, in seconds.
    pub max_age: u32,
}

/// What a location that serves RFC 9728 metadata keeps
/// (`auth_oauth2_token_resource_metadata`).
#[derive(Debug, Clone)]
pub struct ResourceMetadataConf {
    pub resource: Template,
    pub authorization_servers: Vec<Template>,
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: Vec<BearerMethod>,
    pub resource_name: Option<Template>,
    pub resource_documentation: Option<Template>,
    pub max_age: u32,
}

pub const DEFAULT_MAX_AGE: u32 = 3600;

/// Parses the directive's arguments. A URL without variables is checked
/// now; one with variables when a request evaluates it. Each error names
/// the parameter; the glue puts the directive's name in front.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<MetadataArgs<'a>, String> {
    let shown = |arg: &[u8]| String::from_utf8_lossy(arg).into_owned();
    let mut m = MetadataArgs {
        max_age: DEFAULT_MAX_AGE,
        ..MetadataArgs::default()
    };
    let mut max_age_set = false;
    for &arg in args {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err(format!("has an unknown parameter \"{}\"", shown(arg)));
        };
        let (name, value) = (&arg[..eq], &arg[eq + 1..]);
        if value.is_empty() {
            return Err(format!("has an empty \"{}\"", shown(arg)));
        }
        let url = |param: &str| -> Result<(), String> {
            if value.contains(&b'$') {
                return Ok(());
            }
            check_url(value).map_err(|why| format!("{param}: \"{}\" {why}", shown(value)))
        };
        match name {
            b"resource" => {
                if !m.resource.is_empty() {
                    return Err("sets resource= twice".into());
                }
                url("resource=")?;
                if value.contains(&b'#') {
                    return Err(format!(
                        "resource=: \"{}\" has a fragment (RFC 9728 §2)",
                        shown(value)
                    ));
                }
                m.resource = value;
            }
            b"authorization_servers" => {
                url("authorization_servers=")?;
                m.authorization_servers.push(value);
            }
            b"scopes_supported" => {
                for scope in value.split(|&b| b == b' ').filter(|s| !s.is_empty()) {
                    if !scope::is_scope_token(scope) {
                        return Err(format!(
                            "scopes_supported=: \"{}\" is not a scope token",
                            shown(scope)
                        ));
                    }
                    m.scopes_supported.push(shown(scope));
                }
            }
            b"bearer_methods_supported" => {
                for method in value.split(|&b| b == b',') {
                    let method = BearerMethod::parse(method).ok_or_else(|| {
                        format!(
                            "bearer_methods_supported=: \"{}\" is not header, body or query",
                            shown(method)
                        )
                    })?;
                    if !m.bearer_methods_supported.contains(&method) {
                        m.bearer_methods_supported.push(method);
                    }
                }
            }
            b"resource_name" => {
                if m.resource_name.replace(value).is_some() {
                    return Err("sets resource_name= twice".into());
                }
            }
            b"resource_documentation" => {
                url("resource_documentation=")?;
                if m.resource_documentation.replace(value).is_some() {
                    return Err("sets resource_documentation= twice".into());
                }
            }
            b"max_age" => {
                if max_age_set {
                    return Err("sets max_age= twice".into());
                }
                max_age_set = true;
                m.max_age = core::str::from_utf8(value)
                    .ok()
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("max_age=: \"{}\" is not seconds", shown(value)))?;
            }
            _ => return Err(format!("has an unknown parameter \"{}\"", shown(arg))),
        }
    }
    if m.resource.is_empty() {
        return Err("needs resource= (RFC 9728 §2: the resource identifier)".into());
    }
    Ok(m)
}

/// The `Cache-Control` value for `max_age` seconds.
pub fn cache_control(max_age: u32) -> String {
    match max_age {
        0 => "no-cache".into(),
        n => format!("public, max-age={n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<MetadataArgs<'static>, String> {
        let args: Vec<&'static [u8]> = args
            .iter()
            .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse(&args)
    }

    #[test]
    fn every_parameter_is_read() {
        let m = parse_str(&[
            "resource=https://$host/mcp",
            "authorization_servers=https://as1.example",
            "authorization_servers=https://as2.example/realms/x",
            "scopes_supported=mcp:tools  mcp:read",
            "scopes_supported=admin",
            "bearer_methods_supported=header,query,header",
            "resource_name=My MCP server",
            "resource_documentation=https://docs.example/mcp",
            "max_age=60",
        ])
        .unwrap();
        assert_eq!(m.resource, b"https://$host/mcp");
        assert_eq!(m.authorization_servers.len(), 2);
        assert_eq!(m.scopes_supported, ["mcp:tools", "mcp:read", "admin"]);
        assert_eq!(
            m.bearer_methods_supported,
            [BearerMethod::Header, BearerMethod::Query]
        );
        assert_eq!(m.resource_name, Some(&b"My MCP server"[..]));
        assert_eq!(m.max_age, 60);
    }

    #[test]
    fn the_resource_is_required_and_once() {
        assert!(parse_str(&["authorization_servers=https://as"])
            .unwrap_err()
            .contains("needs resource="));
        assert!(parse_str(&["resource=https://a", "resource=https://b"])
            .unwrap_err()
            .contains("twice"));
        assert_eq!(parse_str(&["resource=https://a"]).unwrap().max_age, 3600);
    }

    #[test]
    fn mistakes_name_the_parameter() {
        let err = |args: &[&str]| parse_str(args).unwrap_err();
        assert!(err(&["resource=/mcp"]).starts_with("resource="));
        assert!(err(&["resource=https://a/b#c"]).contains("fragment"));
        assert!(
            err(&["resource=https://a", "authorization_servers=as.example"])
                .starts_with("authorization_servers=")
        );
        assert!(
            err(&["resource=https://a", "scopes_supported=a\"b"]).starts_with("scopes_supported=")
        );
        assert!(
            err(&["resource=https://a", "bearer_methods_supported=cookie"])
                .starts_with("bearer_methods_supported=")
        );
        assert!(err(&["resource=https://a", "resource_documentation=docs"])
            .starts_with("resource_documentation="));
        assert!(err(&["resource=https://a", "max_age=-1"]).starts_with("max_age="));
        assert!(err(&["resource=https://a", "max_age=1", "max_age=2"]).contains("twice"));
        assert!(err(&["resource=https://a", "colour=blue"]).contains("unknown parameter"));
        assert!(err(&["resource=https://a", "resource_name="]).contains("empty"));
        assert!(err(&["https://a"]).contains("unknown parameter"));
    }

    #[test]
    fn values_with_variables_are_checked_later() {
        assert!(parse_str(&["resource=$scheme://$host/mcp"]).is_ok());
        assert!(parse_str(&["resource=https://a", "authorization_servers=$as"]).is_ok());
    }

    #[test]
    fn cache_control_values() {
        assert_eq!(cache_control(0), "no-cache");
        assert_eq!(cache_control(3600), "public, max-age=3600");
    }
}
