//! The `WWW-Authenticate: Bearer ...` challenge of RFC 6750 §3, the
//! `DPoP` challenge of RFC 9449 §7.1 beside it where DPoP is accepted, RFC
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
    /// The DPoP proof is missing or does not hold (401,
    /// `invalid_dpop_proof`, RFC 9449 §7.1), told in the `DPoP` challenge.
    InvalidDpopProof(&'a str),
    /// The location wants the server's nonce in the proof (401,
    /// `use_dpop_nonce`, RFC 9449 §9), told in the `DPoP` challenge; the
    /// answer carries a `DPoP-Nonce` header.
    UseDpopNonce(&'a str),
    /// The token's DPoP binding refuses it (sent as `Bearer`, or with the
    /// `DPoP` scheme while unbound): 401 `invalid_token`, told in the
    /// `DPoP` challenge.
    InvalidTokenForDpop(&'a str),
}

impl BearerError<'_> {
    pub fn status(self) -> u16 {
        match self {
            BearerError::NoToken
            | BearerError::InvalidToken
            | BearerError::InvalidTokenBecause(_)
            | BearerError::WrongAudience
            | BearerError::InvalidDpopProof(_)
            | BearerError::UseDpopNonce(_)
            | BearerError::InvalidTokenForDpop(_)
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
            | BearerError::WrongAudience
            | BearerError::InvalidTokenForDpop(_) => "invalid_token",
            BearerError::InsufficientScope(_) => "insufficient_scope",
            BearerError::InsufficientUserAuthentication { .. } => {
                "insufficient_user_authentication"
            }
            BearerError::InvalidDpopProof(_) => "invalid_dpop_proof",
            BearerError::UseDpopNonce(_) => "use_dpop_nonce",
        }
    }

    /// Whether the error is DPoP's own, told in the `DPoP` challenge.
    pub fn concerns_dpop(self) -> bool {
        matches!(
            self,
            BearerError::InvalidDpopProof(_)
                | BearerError::UseDpopNonce(_)
                | BearerError::InvalidTokenForDpop(_)
        )
    }
}

/// The schemes a location accepts, as its challenges announce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer<'a> {
    /// `Bearer` (not when the location requires DPoP).
    pub bearer: bool,
    /// `DPoP`, with its `algs` (when the `Authorization` header is a source).
    pub dpop_algs: Option<&'a str>,
}

/// Whether a refusal announces the `DPoP` scheme beside `Bearer`: where the
/// `Authorization` header is a token source, when DPoP is in play (the
/// refusal concerns it, the client used it, or the location requires it).
/// Other refusals keep the one `Bearer` challenge clients already parse.
pub fn announces_dpop(
    reads_authorization: bool,
    requires_dpop: bool,
    used_dpop: bool,
    error: BearerError<'_>,
) -> bool {
    reads_authorization && (requires_dpop || used_dpop || error.concerns_dpop())
}

/// The `WWW-Authenticate` values of a refusal, in order (`Bearer`, then
/// `DPoP`, RFC 9449 §7.1): the error goes in the challenge of the scheme
/// it concerns (DPoP's own errors, any error of a client that used the
/// `DPoP` scheme, or every error where only DPoP is accepted), the other
/// challenge announces its scheme without one.
pub fn challenges(
    realm: &str,
    scopes: Option<&str>,
    resource_metadata: Option<&Quoted>,
    offer: Offer<'_>,
    used_dpop: bool,
    error: BearerError<'_>,
) -> Vec<String> {
    let Some(algs) = offer.dpop_algs else {
        return vec![challenge_with(realm, scopes, resource_metadata, error)];
    };
    let in_dpop = !offer.bearer || used_dpop || error.concerns_dpop();
    let mut values = Vec::with_capacity(2);
    if offer.bearer {
        let bearer_error = match in_dpop {
            true => BearerError::NoToken,
            false => error,
        };
        values.push(challenge_with(
            realm,
            scopes,
            resource_metadata,
            bearer_error,
        ));
    }
    let mut dpop = format!("DPoP realm=\"{realm}\", algs=\"{algs}\"");
    if in_dpop {
        push_error(&mut dpop, error);
    }
    push_metadata(&mut dpop, resource_metadata);
    values.push(dpop);
    values
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
    push_error(&mut value, error);
    push_metadata(&mut value, resource_metadata);
    value
}

fn push_metadata(value: &mut String, resource_metadata: Option<&Quoted>) {
    if let Some(url) = resource_metadata {
        value.push_str(", resource_metadata=");
        value.push_str(url.as_str());
    }
}

/// The error's parameters, after the scheme's own.
fn push_error(value: &mut String, error: BearerError<'_>) {
    match error {
        BearerError::NoToken => {}
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
        BearerError::InvalidDpopProof(description) => {
            value.push_str(", error=\"invalid_dpop_proof\", error_description=\"");
            value.push_str(description);
            value.push('"');
        }
        BearerError::UseDpopNonce(description) => {
            value.push_str(", error=\"use_dpop_nonce\", error_description=\"");
            value.push_str(description);
            value.push('"');
        }
        BearerError::InvalidTokenForDpop(description) => {
            value.push_str(", error=\"invalid_token\", error_description=\"");
            value.push_str(description);
            value.push('"');
        }
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
    }
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
    fn dpop_challenges_beside_bearer() {
        let both = Offer {
            bearer: true,
            dpop_algs: Some("ES256 PS256"),
        };
        assert_eq!(
            challenges("api", None, None, both, false, BearerError::NoToken),
            vec![
                "Bearer realm=\"api\"".to_string(),
                "DPoP realm=\"api\", algs=\"ES256 PS256\"".to_string()
            ]
        );
        assert_eq!(
            challenges("api", None, None, both, false, BearerError::InvalidDpopProof("x")),
            vec![
                "Bearer realm=\"api\"".to_string(),
                "DPoP realm=\"api\", algs=\"ES256 PS256\", error=\"invalid_dpop_proof\", error_description=\"x\"".to_string()
            ]
        );
        assert_eq!(
            challenges("api", None, None, both, false, BearerError::InvalidToken),
            vec![
                "Bearer realm=\"api\", error=\"invalid_token\"".to_string(),
                "DPoP realm=\"api\", algs=\"ES256 PS256\"".to_string()
            ]
        );
        assert_eq!(
            challenges("api", None, None, both, true, BearerError::InvalidToken)[1],
            "DPoP realm=\"api\", algs=\"ES256 PS256\", error=\"invalid_token\""
        );
        let dpop_only = Offer {
            bearer: false,
            dpop_algs: Some("ES256"),
        };
        assert_eq!(
            challenges("api", None, None, dpop_only, false, BearerError::InvalidTokenForDpop("y")),
            vec!["DPoP realm=\"api\", algs=\"ES256\", error=\"invalid_token\", error_description=\"y\"".to_string()]
        );
        let bearer_only = Offer {
            bearer: true,
            dpop_algs: None,
        };
        assert_eq!(
            challenges(
                "api",
                Some("a"),
                None,
                bearer_only,
                false,
                BearerError::InvalidToken
            ),
            vec!["Bearer realm=\"api\", scope=\"a\", error=\"invalid_token\"".to_string()]
        );
        assert_eq!(
            BearerError::InvalidDpopProof("x").code(),
            "invalid_dpop_proof"
        );
        assert_eq!(BearerError::InvalidDpopProof("x").status(), 401);
        assert_eq!(
            BearerError::InvalidTokenForDpop("x").code(),
            "invalid_token"
        );
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

    #[test]
    fn resource_metadata_follows_the_dpop_challenge_too() {
        let url = Quoted::new(b"https://h/.well-known/oauth-protected-resource").unwrap();
        let offer = Offer {
            bearer: true,
            dpop_algs: Some("ES256"),
        };
        let values = challenges(
            "api",
            None,
            Some(&url),
            offer,
            true,
            BearerError::InvalidToken,
        );
        assert_eq!(
            values,
            [
                "Bearer realm=\"api\", resource_metadata=\"https://h/.well-known/oauth-protected-resource\"",
                "DPoP realm=\"api\", algs=\"ES256\", error=\"invalid_token\", resource_metadata=\"https://h/.well-known/oauth-protected-resource\"",
            ]
        );
    }
}
