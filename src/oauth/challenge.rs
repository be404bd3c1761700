//! The `WWW-Authenticate: Bearer ...` challenge of RFC 6750 §3, with RFC
//! 9728 §5.1's `resource_metadata` parameter and RFC 9470 §3's step-up
//! challenge.

use crate::oauth::step_up::Shortfall;

/// Why a request is refused, as far as the client is told.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum BearerError<'a> {
    /// No credentials were presented: the challenge carries no `error`.
    NoToken,
    /// A malformed request, such as two Authorization headers (400).
    InvalidRequest(&'a str),
    /// A token that is not valid here (401, `invalid_token` with a reason):
    /// malformed as sent, or meant for another audience.
    InvalidTokenBecause(&'a str),
    InvalidToken,
    /// A token issued for another resource (401, `invalid_token`, RFC 9068 §4).
    WrongAudience,
    /// The token may not have what the request needs (403), with the
    /// scopes it would need when the module knows them.
    InsufficientScope(Option<&'a str>),
    /// The user's authentication behind the token is too weak or too old
    /// (RFC 9470, 401): what the location asks, for the client to ask the
    /// authorization server for it.
    InsufficientUserAuthentication {
        shortfall: Shortfall,
        acr_values: Option<&'a str>,
        max_age: Option<u64>,
    },
}

impl BearerError<'_> {
    pub fn status(self) -> u16 {
        match self {
            BearerError::NoToken
            | BearerError::InvalidToken
            | BearerError::InvalidTokenBecause(_)
            | BearerError::WrongAudience
            | BearerError::InsufficientUserAuthentication { .. } => 401,
            BearerError::InvalidRequest(_) => 400,
            BearerError::InsufficientScope(_) => 403,
        }
    }
}

impl BearerError<'_> {
    /// The error code for `$oauth2_token_error` (RFC 6750 §3.1, and
    /// `missing_token` when the client sent none).
    pub fn code(self) -> &'static str {
        match self {
            BearerError::NoToken => "missing_token",
            BearerError::InvalidRequest(_) => "invalid_request",
            BearerError::InvalidTokenBecause(_)
            | BearerError::InvalidToken
            | BearerError::WrongAudience => "invalid_token",
            BearerError::InsufficientScope(_) => "insufficient_scope",
            BearerError::InsufficientUserAuthentication { .. } => {
                "insufficient_user_authentication"
            }
        }
    }
}

/// Builds the header value. `realm` and required scopes are checked at
/// configuration time to hold no `"` or `\`, and descriptions are
/// constants, so no escaping is needed.
pub fn www_authenticate(realm: &str, error: BearerError<'_>) -> String {
    challenge(realm, None, error)
}

/// The same, announcing `scopes` (RFC 6750 §3: the scope the resource
/// needs) unless the error names the scopes it lacks itself.
pub fn challenge(realm: &str, scopes: Option<&str>, error: BearerError<'_>) -> String {
    challenge_with(realm, scopes, None, error)
}

/// A quoted-string (RFC 9110 §5.6.4, the auth-param value RFC 6750 §3 and
/// RFC 9728 §5.1 use): `"` and `\` escaped with a backslash, visible ASCII,
/// space and tab as they are. Control characters cannot be sent in one, and
/// other bytes (obs-text) are refused too: `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    pub fn new(value: &[u8]) -> Option<Quoted> {
        let mut out = String::with_capacity(value.len() + 2);
        out.push('"');
        for &b in value {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                b'\t' | 0x20..=0x7e => out.push(b as char),
                _ => return None,
            }
        }
        out.push('"');
        Some(Quoted(out))
    }

    /// The quoted form, quotes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The challenge, with `resource_metadata` (RFC 9728 §5.1: the URL of the
/// resource's metadata) after the RFC 6750 parameters when there is one.
pub fn challenge_with(
    realm: &str,
    scopes: Option<&str>,
    resource_metadata: Option<&Quoted>,
    error: BearerError<'_>,
) -> String {
    let mut value = format!("Bearer realm=\"{realm}\"");
    if let (Some(scopes), false) = (
        scopes,
        matches!(error, BearerError::InsufficientScope(Some(_))),
    ) {
        value.push_str(", scope=\"");
        value.push_str(scopes);
        value.push('"');
    }
    match error {
        BearerError::NoToken => {}
        BearerError::InvalidRequest(description) => {
            value.push_str(", error=\"invalid_request\", error_description=\"");
            value.push_str(description);
            value.push('"');
        }
        BearerError::InvalidTokenBecause(description) => {
            value.push_str(", error=\"invalid_token\", error_description=\"");
            value.push_str(description);
            value.push('"');
        }
        BearerError::InvalidToken => value.push_str(", error=\"invalid_token\""),
        BearerError::WrongAudience => value.push_str(
            ", error=\"invalid_token\", error_description=\"the token is not meant for this resource\"",
        ),
        BearerError::InsufficientScope(scope) => {
            value.push_str(", error=\"insufficient_scope\"");
            if let Some(scope) = scope {
                value.push_str(", scope=\"");
                value.push_str(scope);
                value.push('"');
            }
        }
        BearerError::InsufficientUserAuthentication {
            shortfall,
            acr_values,
            max_age,
        } => {
            value.push_str(", error=\"insufficient_user_authentication\", error_description=\"");
            value.push_str(shortfall.description());
            value.push('"');
            if let Some(acr_values) = acr_values {
                value.push_str(", acr_values=\"");
                value.push_str(acr_values);
                value.push('"');
            }
            if let Some(max_age) = max_age {
                value.push_str(&format!(", max_age=\"{max_age}\""));
            }
        }
    }
    if let Some(url) = resource_metadata {
        value.push_str(", resource_metadata=");
        value.push_str(url.as_str());
    }
    value
}

/// A realm must fit in a quoted-string without escapes.
pub fn is_valid_realm(realm: &[u8]) -> bool {
    realm
        .iter()
        .all(|&b| (b == b'\t' || (0x20..0x7f).contains(&b)) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_challenge_has_no_error() {
        assert_eq!(
            www_authenticate("api", BearerError::NoToken),
            "Bearer realm=\"api\""
        );
        assert_eq!(BearerError::NoToken.status(), 401);
    }

    #[test]
    fn invalid_request_is_400_with_description() {
        let e = BearerError::InvalidRequest("empty bearer token");
        assert_eq!(
            www_authenticate("api", e),
            "Bearer realm=\"api\", error=\"invalid_request\", error_description=\"empty bearer token\""
        );
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn malformed_token_is_401_with_description() {
        let e = BearerError::InvalidTokenBecause("empty bearer token");
        assert_eq!(
            www_authenticate("api", e),
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"empty bearer token\""
        );
        assert_eq!(e.status(), 401);
        assert_eq!(e.code(), "invalid_token");
        assert_eq!(BearerError::NoToken.code(), "missing_token");
    }

    #[test]
    fn invalid_token_is_401() {
        assert_eq!(
            www_authenticate("my api", BearerError::InvalidToken),
            "Bearer realm=\"my api\", error=\"invalid_token\""
        );
        assert_eq!(BearerError::InvalidToken.status(), 401);
    }

    #[test]
    fn insufficient_scope_is_403() {
        assert_eq!(
            www_authenticate("api", BearerError::InsufficientScope(None)),
            "Bearer realm=\"api\", error=\"insufficient_scope\""
        );
        assert_eq!(
            www_authenticate("api", BearerError::InsufficientScope(Some("orders:read orders:write"))),
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:read orders:write\""
        );
        assert_eq!(BearerError::InsufficientScope(None).status(), 403);
    }

    #[test]
    fn realm_rejects_quotes_backslashes_and_controls() {
        assert!(is_valid_realm(b"api.example.com protected"));
        assert!(!is_valid_realm(b"a\"b"));
        assert!(!is_valid_realm(b"a\\b"));
        assert!(!is_valid_realm(b"a\nb"));
    }

    #[test]
    fn announced_scopes_follow_the_realm() {
        assert_eq!(
            challenge("myGoodAPI", Some("scope_a scope_b"), BearerError::NoToken),
            "Bearer realm=\"myGoodAPI\", scope=\"scope_a scope_b\""
        );
        assert_eq!(
            challenge("api", Some("a"), BearerError::InvalidToken),
            "Bearer realm=\"api\", scope=\"a\", error=\"invalid_token\""
        );
        assert_eq!(
            challenge("api", Some("a"), BearerError::InsufficientScope(Some("b"))),
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"b\""
        );
    }

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes() {
        let q = |v: &[u8]| Quoted::new(v).map(|q| q.as_str().to_string());
        assert_eq!(q(b"https://h/x").as_deref(), Some("\"https://h/x\""));
        assert_eq!(q(b"").as_deref(), Some("\"\""));
        assert_eq!(q(b"a\"b\\c").as_deref(), Some(r#""a\"b\\c""#));
        assert_eq!(
            q(b"a\"b\\c").unwrap().as_bytes(),
            [b'"', b'a', b'\\', b'"', b'b', b'\\', b'\\', b'c', b'"']
        );
        assert_eq!(q(b"tab\there ~").as_deref(), Some("\"tab\there ~\""));
        assert_eq!(q(b"a\r\nSet-Cookie: x"), None);
        assert_eq!(q(b"nul\0"), None);
        assert_eq!(q(b"del\x7f"), None);
        assert_eq!(q("h\u{f4}te".as_bytes()), None);
    }

    #[test]
    fn resource_metadata_follows_every_challenge() {
        let url = Quoted::new(b"https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
            .unwrap();
        let with = |scopes, error| challenge_with("api", scopes, Some(&url), error);
        let tail = ", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"";
        assert_eq!(
            with(None, BearerError::NoToken),
            format!("Bearer realm=\"api\"{tail}")
        );
        assert_eq!(
            with(None, BearerError::InvalidToken),
            format!("Bearer realm=\"api\", error=\"invalid_token\"{tail}")
        );
        assert_eq!(
            with(None, BearerError::WrongAudience),
            format!("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token is not meant for this resource\"{tail}")
        );
        assert_eq!(
            with(
                Some("mcp:tools"),
                BearerError::InsufficientScope(Some("mcp:tools"))
            ),
            format!(
                "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"mcp:tools\"{tail}"
            )
        );
        assert_eq!(
            with(Some("a b"), BearerError::NoToken),
            format!("Bearer realm=\"api\", scope=\"a b\"{tail}")
        );
        assert_eq!(
            with(None, BearerError::InvalidRequest("two tokens")),
            format!("Bearer realm=\"api\", error=\"invalid_request\", error_description=\"two tokens\"{tail}")
        );
        let odd = Quoted::new(b"https://h/a\"b").unwrap();
        assert_eq!(
            challenge_with("api", None, Some(&odd), BearerError::NoToken),
            r#"Bearer realm="api", resource_metadata="https://h/a\"b""#
        );
        assert_eq!(
            challenge_with("api", None, None, BearerError::NoToken),
            challenge("api", None, BearerError::NoToken)
        );
    }

    #[test]
    fn step_up_names_what_the_location_asks() {
        let e = |acr: bool, age: bool, acr_values, max_age| {
            BearerError::InsufficientUserAuthentication {
                shortfall: Shortfall { acr, age },
                acr_values,
                max_age,
            }
        };
        let both = e(true, false, Some("phr urn:x:gold"), Some(300));
        assert_eq!(both.status(), 401);
        assert_eq!(both.code(), "insufficient_user_authentication");
        assert_eq!(
            www_authenticate("api", both),
            "Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"a different authentication level is required\", acr_values=\"phr urn:x:gold\", max_age=\"300\""
        );
        assert_eq!(
            www_authenticate("api", e(false, true, None, Some(5))),
            "Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"more recent authentication is required\", max_age=\"5\""
        );
        let url = Quoted::new(b"https://h/.well-known/oauth-protected-resource").unwrap();
        assert_eq!(
            challenge_with("api", Some("s"), Some(&url), e(true, true, Some("phr"), None)),
            "Bearer realm=\"api\", scope=\"s\", error=\"insufficient_user_authentication\", error_description=\"a different and more recent authentication is required\", acr_values=\"phr\", resource_metadata=\"https://h/.well-known/oauth-protected-resource\""
        );
    }
}
