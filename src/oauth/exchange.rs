//! RFC 8693 token exchange: the request body, and what the token endpoint's
//! answer means for the request that waits on it.

use serde::Deserialize;

use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::claims::is_header_safe;
use crate::oauth::form::append_encoded;
use crate::oauth::idp_reply::{IdpReply, MAX_RESPONSE_BYTES};

pub const GRANT_TYPE: &[u8] = b"urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &[u8] = b"urn:ietf:params:oauth:token-type:access_token";

/// What the client's token is exchanged for; empty values are left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExchangeParams<'a> {
    pub audience: &'a [u8],
    pub scope: &'a [u8],
    pub resource: &'a [u8],
    pub requested_token_type: &'a [u8],
}

/// The RFC 8693 §2.1 request body.
pub fn request_body(subject_token: &[u8], params: &ExchangeParams<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(256 + subject_token.len());
    body.extend_from_slice(b"grant_type=");
    append_encoded(&mut body, GRANT_TYPE);
    body.extend_from_slice(b"&subject_token=");
    append_encoded(&mut body, subject_token);
    body.extend_from_slice(b"&subject_token_type=");
    append_encoded(&mut body, ACCESS_TOKEN_TYPE);
    for (name, value) in [
        (&b"audience"[..], params.audience),
        (b"scope", params.scope),
        (b"resource", params.resource),
        (b"requested_token_type", params.requested_token_type),
    ] {
        if !value.is_empty() {
            body.push(b'&');
            body.extend_from_slice(name);
            body.push(b'=');
            append_encoded(&mut body, value);
        }
    }
    body
}

/// A successful exchange (RFC 8693 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
}

/// Why the exchange gave no token. `Display` is the error-log line: it names
/// the OAuth error code, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeFailure {
    /// `invalid_grant`: the subject token is not acceptable.
    #[error("token exchange refused the subject token (invalid_grant)")]
    InvalidGrant,
    /// `invalid_target` or `invalid_scope`: the token may not have what was asked.
    #[error("token exchange refused the requested target or scope ({0})")]
    NotPermitted(&'static str),
    /// No usable answer, as any kind of call may fail.
    #[error("{}", .0.describe("token endpoint", "token endpoint response"))]
    Call(CallFailure),
    #[error("token endpoint answered {status}{}", error_suffix(.error))]
    ErrorStatus {
        status: usize,
        error: Option<String>,
    },
    #[error("token endpoint response lacks {0}")]
    MissingMember(&'static str),
    #[error("token endpoint issued a token with characters not allowed in a bearer token")]
    InvalidIssuedToken,
    #[error("token endpoint response member \"{0}\" holds a control character; refused, as it could split a header")]
    UnsafeMember(&'static str),
}

fn error_suffix(error: &Option<String>) -> String {
    match error {
        Some(code) => format!(" ({code})"),
        None => String::new(),
    }
}

impl ExchangeFailure {
    /// The status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            ExchangeFailure::InvalidGrant => 401,
            ExchangeFailure::NotPermitted(_) => 403,
            ExchangeFailure::Call(failure) => failure.status(),
            _ => 502,
        }
    }
}

impl From<CallFailure> for ExchangeFailure {
    fn from(failure: CallFailure) -> Self {
        ExchangeFailure::Call(failure)
    }
}

impl KindFailure for ExchangeFailure {
    fn call(&self) -> Option<&CallFailure> {
        match self {
            ExchangeFailure::Call(failure) => Some(failure),
            _ => None,
        }
    }

    /// A 5xx too.
    fn allows_stale(&self) -> bool {
        match self {
            ExchangeFailure::Call(_) => true,
            ExchangeFailure::ErrorStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct WireSuccess {
    access_token: Option<serde_json::Value>,
    issued_token_type: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireError {
    error: Option<String>,
}

pub fn interpret(reply: IdpReply<'_>) -> Result<IssuedToken, ExchangeFailure> {
    reply
        .transport(MAX_RESPONSE_BYTES)
        .map_err(|t| ExchangeFailure::Call(CallFailure::from_transport(t, MAX_RESPONSE_BYTES)))?;
    if reply.status != 200 {
        // RFC 6749 §5.2: errors are 400 (401 for client authentication) with an `error` code.
        let error = serde_json::from_slice::<WireError>(reply.body)
            .ok()
            .and_then(|e| e.error);
        return Err(match (reply.status, error.as_deref()) {
            (400, Some("invalid_grant")) => ExchangeFailure::InvalidGrant,
            (400, Some("invalid_target")) => ExchangeFailure::NotPermitted("invalid_target"),
            (400, Some("invalid_scope")) => ExchangeFailure::NotPermitted("invalid_scope"),
            (status, _) => ExchangeFailure::ErrorStatus {
                status,
                error: error.filter(|e| is_error_code(e)),
            },
        });
    }
    let wire: WireSuccess = serde_json::from_slice(reply.body)
        .map_err(|_| ExchangeFailure::Call(CallFailure::NotJson))?;
    let access_token = match wire.access_token {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        _ => return Err(ExchangeFailure::MissingMember("access_token")),
    };
    let issued_token_type = match wire.issued_token_type {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        _ => return Err(ExchangeFailure::MissingMember("issued_token_type")),
    };
    let token_type = match wire.token_type {
        Some(serde_json::Value::String(t)) => Some(t),
        _ => None,
    };
    let token = IssuedToken {
        access_token,
        issued_token_type,
        token_type,
        expires_in: wire
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))),
    };
    check_for_headers(&token)?;
    Ok(token)
}

/// What an issued token passes before it reaches a header: the token goes
/// into the upstream's `Authorization` (a bearer token's characters), its
/// types into `$oauth2_token_new_token_type` and logs (no control
/// characters).
fn check_for_headers(token: &IssuedToken) -> Result<(), ExchangeFailure> {
    if !crate::oauth::bearer::is_b64token(token.access_token.as_bytes()) {
        return Err(ExchangeFailure::InvalidIssuedToken);
    }
    if !is_header_safe(&token.issued_token_type) {
        return Err(ExchangeFailure::UnsafeMember("issued_token_type"));
    }
    if !token.token_type.as_deref().is_none_or(is_header_safe) {
        return Err(ExchangeFailure::UnsafeMember("token_type"));
    }
    Ok(())
}

/// Whether an issued token that did not come from the token endpoint just
/// now (a cached entry another gateway wrote into the Redis tier) passes
/// the checks a fresh one gets: both members present, and safe in headers.
pub fn fit_for_headers(token: &IssuedToken) -> bool {
    !token.access_token.is_empty()
        && !token.issued_token_type.is_empty()
        && check_for_headers(token).is_ok()
}

/// RFC 6749 error codes are `%x20-21 / %x23-5B / %x5D-7E`; anything else is not logged.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    use IdpReply as R;

    #[test]
    fn minimal_body() {
        assert_eq!(
            request_body(b"abc", &ExchangeParams::default()),
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=abc\
&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
                .to_vec()
        );
    }

    #[test]
    fn optional_parameters_in_order_and_encoded() {
        let params = ExchangeParams {
            audience: b"orders-api",
            scope: b"orders:read orders:write",
            resource: b"https://orders.example/",
            requested_token_type: b"urn:ietf:params:oauth:token-type:jwt",
        };
        let body = String::from_utf8(request_body(b"t+1", &params)).unwrap();
        assert!(body.contains("&subject_token=t%2B1&"), "{body}");
        assert!(body.ends_with(
            "&audience=orders-api&scope=orders%3Aread+orders%3Awrite\
&resource=https%3A%2F%2Forders.example%2F&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
        ), "{body}");
    }

    #[test]
    fn success() {
        let body = br#"{"access_token":"new.jwt-tok","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60}"#;
        assert_eq!(
            interpret(R::new(0, 200, body)),
            Ok(IssuedToken {
                access_token: "new.jwt-tok".into(),
                issued_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
                token_type: Some("Bearer".into()),
                expires_in: Some(60),
            })
        );
    }

    #[test]
    fn members_that_could_split_a_header_refuse_the_answer() {
        for bad in ["\\r\\nX: y", "\\n", "\\r", "\\u0000", "\\u007f"] {
            let body = format!(r#"{{"access_token":"t","issued_token_type":"urn:x{bad}"}}"#);
            assert_eq!(
                interpret(R::new(0, 200, body.as_bytes())),
                Err(ExchangeFailure::UnsafeMember("issued_token_type"))
            );
            let body = format!(
                r#"{{"access_token":"t","issued_token_type":"urn:x","token_type":"Bearer{bad}"}}"#
            );
            assert_eq!(
                interpret(R::new(0, 200, body.as_bytes())),
                Err(ExchangeFailure::UnsafeMember("token_type"))
            );
        }
    }

    #[test]
    fn success_needs_access_token_and_issued_token_type() {
        let no_token = br#"{"issued_token_type":"x","token_type":"Bearer"}"#;
        assert_eq!(
            interpret(R::new(0, 200, no_token)),
            Err(ExchangeFailure::MissingMember("access_token"))
        );
        let no_type = br#"{"access_token":"abc"}"#;
        assert_eq!(
            interpret(R::new(0, 200, no_type)),
            Err(ExchangeFailure::MissingMember("issued_token_type"))
        );
        let empty = br#"{"access_token":"","issued_token_type":"x"}"#;
        assert_eq!(
            interpret(R::new(0, 200, empty)),
            Err(ExchangeFailure::MissingMember("access_token"))
        );
        assert_eq!(
            interpret(R::new(0, 200, b"nope")),
            Err(ExchangeFailure::Call(CallFailure::NotJson))
        );
    }

    #[test]
    fn issued_token_must_be_safe_in_a_header() {
        let body = br#"{"access_token":"a\r\nX-Evil: 1","issued_token_type":"x"}"#;
        assert_eq!(
            interpret(R::new(0, 200, body)),
            Err(ExchangeFailure::InvalidIssuedToken)
        );
    }

    #[test]
    fn a_cached_token_passes_the_checks_a_fresh_one_does() {
        let cases = [
            ("eyJ.x.y", "urn:x", Some("Bearer"), true),
            ("abc==", "urn:x", None, true),
            ("a\r\nX-Evil: 1", "urn:x", None, false),
            ("a b", "urn:x", None, false),
            ("", "urn:x", None, false),
            ("abc", "urn:x\n", None, false),
            ("abc", "", None, false),
            ("abc", "urn:x", Some("Bearer\u{7f}"), false),
        ];
        for (access_token, issued_token_type, token_type, ok) in cases {
            let body = serde_json::json!({
                "access_token": access_token,
                "issued_token_type": issued_token_type,
                "token_type": token_type,
            })
            .to_string();
            let fresh = interpret(R::new(0, 200, body.as_bytes()));
            assert_eq!(fresh.is_ok(), ok, "{body}");
            let cached = IssuedToken {
                access_token: access_token.into(),
                issued_token_type: issued_token_type.into(),
                token_type: token_type.map(str::to_owned),
                expires_in: None,
            };
            assert_eq!(fit_for_headers(&cached), ok, "{body}");
        }
    }

    #[test]
    fn oauth_errors_map_to_client_statuses() {
        let e = |code: &str| format!(r#"{{"error":"{code}","error_description":"x"}}"#);
        let grant = e("invalid_grant");
        assert_eq!(
            interpret(R::new(0, 400, grant.as_bytes())),
            Err(ExchangeFailure::InvalidGrant)
        );
        assert_eq!(ExchangeFailure::InvalidGrant.status(), 401);
        let target = e("invalid_target");
        assert_eq!(
            interpret(R::new(0, 400, target.as_bytes())),
            Err(ExchangeFailure::NotPermitted("invalid_target"))
        );
        let scope = e("invalid_scope");
        assert_eq!(
            interpret(R::new(0, 400, scope.as_bytes()))
                .unwrap_err()
                .status(),
            403
        );
        let client = e("invalid_client");
        let failure = interpret(R::new(0, 401, client.as_bytes())).unwrap_err();
        assert_eq!(failure.status(), 502);
        assert_eq!(
            failure.to_string(),
            "token endpoint answered 401 (invalid_client)"
        );
    }

    #[test]
    fn transport_failures() {
        assert_eq!(
            interpret(R::new(504, 0, b"")),
            Err(ExchangeFailure::Call(CallFailure::Timeout))
        );
        assert_eq!(ExchangeFailure::Call(CallFailure::Timeout).status(), 504);
        assert_eq!(
            interpret(R::new(502, 0, b"")),
            Err(ExchangeFailure::Call(CallFailure::Unreachable))
        );
        assert_eq!(
            interpret(R::new(502, 200, b"{")),
            Err(ExchangeFailure::Call(CallFailure::Incomplete))
        );
        assert_eq!(
            interpret(R::new(0, 500, b"<html>"))
                .unwrap_err()
                .to_string(),
            "token endpoint answered 500"
        );
    }
}
