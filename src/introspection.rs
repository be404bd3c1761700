//! What an RFC 7662 introspection answer means for the request that waits on it.

use serde::Deserialize;
use serde_json::Value;

/// The largest IdP answer the module reads.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What nginx tells us about a finished subrequest to the IdP.
#[derive(Debug, Clone, Copy)]
pub struct IdpReply<'a> {
    /// The code the subrequest was finalized with: 0 when the upstream
    /// finished normally, an HTTP status or NGX_ERROR (-1) when it failed.
    pub finalize_rc: isize,
    /// The IdP's status line, 0 if no response header arrived.
    pub status: usize,
    pub body: &'a [u8],
}

/// Why an answer could not be read at all, whatever it was meant to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Timeout,
    Unreachable,
    Incomplete,
    TooLarge(usize),
}

const NGX_HTTP_GATEWAY_TIME_OUT: isize = 504;

impl IdpReply<'_> {
    pub fn new(finalize_rc: isize, status: usize, body: &[u8]) -> IdpReply<'_> {
        IdpReply {
            finalize_rc,
            status,
            body,
        }
    }

    /// `Ok` when a complete answer of a readable size arrived.
    pub fn transport(&self) -> Result<(), Transport> {
        if self.finalize_rc == NGX_HTTP_GATEWAY_TIME_OUT {
            Err(Transport::Timeout)
        } else if self.status == 0 {
            Err(Transport::Unreachable)
        } else if self.finalize_rc != 0 {
            Err(Transport::Incomplete)
        } else if self.body.len() > MAX_RESPONSE_BYTES {
            Err(Transport::TooLarge(self.body.len()))
        } else {
            Ok(())
        }
    }
}

/// The claims the module exposes from an active token.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub sub: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub exp: Option<i64>,
    /// The values of the `auth_oauth2_token_claim_set` paths, in their order.
    pub extra: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionResult {
    Active(TokenClaims),
    Inactive,
}

/// Why no verdict could be had from the IdP. Each maps to a 5xx the operator
/// can tell apart, and its `Display` is the error-log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpFailure {
    #[error("introspection endpoint timed out")]
    Timeout,
    #[error("introspection endpoint unreachable or connection failed")]
    Unreachable,
    #[error("introspection endpoint answered {0}: client credentials rejected")]
    CredentialsRejected(usize),
    #[error("introspection endpoint answered 503: service unavailable")]
    Unavailable,
    #[error("introspection endpoint answered {0}")]
    ErrorStatus(usize),
    #[error("introspection response incomplete or larger than subrequest_output_buffer_size")]
    Incomplete,
    #[error("introspection response of {0} bytes exceeds the {MAX_RESPONSE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("introspection response is not a JSON object")]
    NotJson,
    #[error("introspection response has no boolean \"active\" member")]
    NoActiveMember,
}

impl IdpFailure {
    /// The status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            IdpFailure::Timeout => 504,
            IdpFailure::Unavailable => 503,
            _ => 502,
        }
    }
}

impl From<Transport> for IdpFailure {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Timeout => IdpFailure::Timeout,
            Transport::Unreachable => IdpFailure::Unreachable,
            Transport::Incomplete => IdpFailure::Incomplete,
            Transport::TooLarge(n) => IdpFailure::TooLarge(n),
        }
    }
}

pub fn interpret(reply: IdpReply<'_>, extra: &[String]) -> Result<IntrospectionResult, IdpFailure> {
    reply.transport()?;
    match reply.status {
        200 if extra.is_empty() => parse(reply.body),
        200 => parse_with_extra(reply.body, extra),
        401 | 403 => Err(IdpFailure::CredentialsRejected(reply.status)),
        503 => Err(IdpFailure::Unavailable),
        status => Err(IdpFailure::ErrorStatus(status)),
    }
}

/// Only the members the module uses are kept; the rest are skipped unparsed.
#[derive(Deserialize)]
struct WireResponse {
    active: Option<Value>,
    sub: Option<Value>,
    scope: Option<Value>,
    client_id: Option<Value>,
    exp: Option<Value>,
}

pub fn parse(body: &[u8]) -> Result<IntrospectionResult, IdpFailure> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|_| IdpFailure::NotJson)?;
    match wire.active {
        Some(Value::Bool(true)) => Ok(IntrospectionResult::Active(TokenClaims {
            sub: wire.sub.and_then(claim_text),
            scope: wire.scope.and_then(claim_text),
            client_id: wire.client_id.and_then(claim_text),
            exp: wire.exp.as_ref().and_then(numeric_date),
            extra: Vec::new(),
        })),
        Some(Value::Bool(false)) => Ok(IntrospectionResult::Inactive),
        _ => Err(IdpFailure::NoActiveMember),
    }
}

/// Like [`parse`], also reading the claims at the `extra` paths; this needs
/// the whole document, so it is only used when such claims are configured.
pub fn parse_with_extra(body: &[u8], extra: &[String]) -> Result<IntrospectionResult, IdpFailure> {
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| IdpFailure::NotJson)?;
    match map.get("active") {
        Some(Value::Bool(true)) => Ok(IntrospectionResult::Active(TokenClaims {
            sub: map.get("sub").cloned().and_then(claim_text),
            scope: map.get("scope").cloned().and_then(claim_text),
            client_id: map.get("client_id").cloned().and_then(claim_text),
            exp: map.get("exp").and_then(numeric_date),
            extra: extra
                .iter()
                .map(|path| crate::claims::lookup(&map, path).and_then(crate::claims::render))
                .collect(),
        })),
        Some(Value::Bool(false)) => Ok(IntrospectionResult::Inactive),
        _ => Err(IdpFailure::NoActiveMember),
    }
}

/// Strings as they are, other JSON values as compact JSON text, null as absent.
fn claim_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// RFC 7519 NumericDate: seconds, possibly fractional; a numeric string is tolerated.
fn numeric_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use IdpReply as R;

    #[test]
    fn active_token_yields_claims() {
        let body = br#"{"active":true,"sub":"alice","scope":"read write","client_id":"app","exp":1700000000,"aud":["x"]}"#;
        assert_eq!(
            interpret(R::new(0, 200, body), &[]),
            Ok(IntrospectionResult::Active(TokenClaims {
                sub: Some("alice".into()),
                scope: Some("read write".into()),
                client_id: Some("app".into()),
                exp: Some(1_700_000_000),
                extra: Vec::new(),
            }))
        );
    }

    #[test]
    fn configured_claims_are_extracted_in_order() {
        let body = br#"{"active":true,"sub":"alice","aud":["api","web"],"realm_access":{"roles":["admin"]}}"#;
        let wanted = [
            "realm_access.roles".to_string(),
            "aud".into(),
            "missing".into(),
        ];
        let Ok(IntrospectionResult::Active(claims)) = interpret(R::new(0, 200, body), &wanted)
        else {
            panic!()
        };
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert_eq!(
            claims.extra,
            vec![Some("admin".into()), Some("api,web".into()), None]
        );
        assert_eq!(
            parse_with_extra(br#"{"active":false}"#, &wanted),
            Ok(IntrospectionResult::Inactive)
        );
        assert_eq!(
            parse_with_extra(br#"{"active":"yes"}"#, &wanted),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(parse_with_extra(b"[1]", &wanted), Err(IdpFailure::NotJson));
    }

    #[test]
    fn absent_and_null_claims_are_none_and_non_strings_become_json_text() {
        let body = br#"{"active":true,"sub":42,"client_id":null,"exp":1.7e9}"#;
        let Ok(IntrospectionResult::Active(claims)) = parse(body) else {
            panic!()
        };
        assert_eq!(claims.sub.as_deref(), Some("42"));
        assert_eq!(claims.client_id, None);
        assert_eq!(claims.scope, None);
        assert_eq!(claims.exp, Some(1_700_000_000));
    }

    #[test]
    fn inactive_token() {
        assert_eq!(
            parse(br#"{"active":false}"#),
            Ok(IntrospectionResult::Inactive)
        );
    }

    #[test]
    fn active_must_be_a_boolean() {
        assert_eq!(
            parse(br#"{"active":"true"}"#),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(parse(br#"{"active":1}"#), Err(IdpFailure::NoActiveMember));
        assert_eq!(parse(br#"{"sub":"x"}"#), Err(IdpFailure::NoActiveMember));
    }

    #[test]
    fn garbage_is_not_json() {
        assert_eq!(parse(b"<html>oops</html>"), Err(IdpFailure::NotJson));
        assert_eq!(parse(br#"{"active":tr"#), Err(IdpFailure::NotJson));
        assert_eq!(parse(br#"[true]"#), Err(IdpFailure::NotJson));
        assert_eq!(parse(b""), Err(IdpFailure::NotJson));
        // Two `active` members are ambiguous: refuse rather than pick one.
        assert_eq!(
            parse(br#"{"active":false,"active":true}"#),
            Err(IdpFailure::NotJson)
        );
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let body = vec![b' '; MAX_RESPONSE_BYTES + 1];
        assert_eq!(
            interpret(R::new(0, 200, &body), &[]),
            Err(IdpFailure::TooLarge(MAX_RESPONSE_BYTES + 1))
        );
    }

    #[test]
    fn transport_failures() {
        assert_eq!(
            interpret(R::new(504, 0, b""), &[]),
            Err(IdpFailure::Timeout)
        );
        assert_eq!(
            interpret(R::new(504, 200, b"{"), &[]),
            Err(IdpFailure::Timeout)
        );
        assert_eq!(
            interpret(R::new(502, 0, b""), &[]),
            Err(IdpFailure::Unreachable)
        );
        assert_eq!(
            interpret(R::new(-1, 0, b""), &[]),
            Err(IdpFailure::Unreachable)
        );
        assert_eq!(
            interpret(R::new(502, 200, b"{\"active\":"), &[]),
            Err(IdpFailure::Incomplete)
        );
        assert_eq!(
            interpret(R::new(-1, 200, b""), &[]),
            Err(IdpFailure::Incomplete)
        );
    }

    #[test]
    fn idp_error_statuses() {
        assert_eq!(
            interpret(R::new(0, 401, b""), &[]),
            Err(IdpFailure::CredentialsRejected(401))
        );
        assert_eq!(
            interpret(R::new(0, 403, b""), &[]),
            Err(IdpFailure::CredentialsRejected(403))
        );
        assert_eq!(
            interpret(R::new(0, 503, b""), &[]),
            Err(IdpFailure::Unavailable)
        );
        assert_eq!(
            interpret(R::new(0, 500, b""), &[]),
            Err(IdpFailure::ErrorStatus(500))
        );
        assert_eq!(
            interpret(R::new(0, 400, b""), &[]),
            Err(IdpFailure::ErrorStatus(400))
        );
    }

    #[test]
    fn failure_statuses_are_distinct() {
        assert_eq!(IdpFailure::Timeout.status(), 504);
        assert_eq!(IdpFailure::Unavailable.status(), 503);
        assert_eq!(IdpFailure::NotJson.status(), 502);
        assert_eq!(IdpFailure::CredentialsRejected(401).status(), 502);
    }
}
