//! The shape of a phantom token: a compact JWS (RFC 7515 §7.1) whose header
//! and payload are JSON objects. The module does not verify the signature
//! (the upstream does, with the IdP's keys); it makes sure that what it puts
//! in the upstream's `Authorization` is a JWT and not some other answer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// The largest JWT accepted from the IdP.
pub const MAX_JWT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("JWT of {0} bytes exceeds the {MAX_JWT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not three dot-separated parts")]
    NotThreeParts,
    #[error("a part is not unpadded base64url")]
    NotBase64Url,
    #[error("header is not a JSON object with an \"alg\" other than \"none\"")]
    BadHeader,
    #[error("payload is not a JSON object")]
    PayloadNotJson,
    #[error("signature is empty")]
    Unsigned,
}

/// Checks that `jwt` is a signed compact JWS and returns its claims.
pub fn claims(jwt: &[u8]) -> Result<Map<String, Value>, JwtError> {
    serde_json::from_slice(&payload(jwt)?).map_err(|_| JwtError::PayloadNotJson)
}

/// Checks that `jwt` is a signed compact JWS and returns its decoded payload.
pub fn payload(jwt: &[u8]) -> Result<Vec<u8>, JwtError> {
    if jwt.len() > MAX_JWT_BYTES {
        return Err(JwtError::TooLarge(jwt.len()));
    }
    let mut parts = jwt.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotThreeParts);
    };
    let header: Map<String, Value> =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::BadHeader)?;
    match header.get("alg") {
        Some(Value::String(alg)) if !alg.eq_ignore_ascii_case("none") => {}
        _ => return Err(JwtError::BadHeader),
    }
    if signature.is_empty() {
        return Err(JwtError::Unsigned);
    }
    decode(signature)?;
    decode(payload)
}

fn decode(part: &[u8]) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::NotBase64Url)
}

/// Builds a compact JWS from JSON texts, for tests here and elsewhere.
#[cfg(test)]
pub fn compact(header: &str, payload: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"alg":"RS256","typ":"at+jwt"}"#;

    #[test]
    fn well_formed_jws_yields_its_claims() {
        let jwt = compact(HEADER, r#"{"sub":"alice","exp":1700000000}"#, b"sig");
        let claims = claims(jwt.as_bytes()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"], 1_700_000_000);
    }

    #[test]
    fn shape_errors() {
        let p = URL_SAFE_NO_PAD.encode("{}");
        let h = URL_SAFE_NO_PAD.encode(HEADER);
        assert_eq!(claims(b"abc"), Err(JwtError::NotThreeParts));
        assert_eq!(
            claims(format!("{h}.{p}.c2ln.x").as_bytes()),
            Err(JwtError::NotThreeParts)
        );
        assert_eq!(
            claims(format!("{h}.{p}=.c2ln").as_bytes()),
            Err(JwtError::NotBase64Url)
        );
        assert_eq!(
            claims(format!("{h}.{p}.c2l+").as_bytes()),
            Err(JwtError::NotBase64Url)
        );
        assert_eq!(
            claims(format!("{h}.{p}.").as_bytes()),
            Err(JwtError::Unsigned)
        );
    }

    #[test]
    fn header_must_name_a_real_algorithm() {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":1}"#,
            "[]",
            "x",
        ] {
            let jwt = compact(header, "{}", b"sig");
            assert_eq!(claims(jwt.as_bytes()), Err(JwtError::BadHeader), "{header}");
        }
    }

    #[test]
    fn payload_must_be_an_object() {
        for payload in ["[1]", "\"s\"", "not json"] {
            let jwt = compact(HEADER, payload, b"sig");
            assert_eq!(claims(jwt.as_bytes()), Err(JwtError::PayloadNotJson));
        }
    }

    #[test]
    fn size_limit() {
        let pad = "x".repeat(MAX_JWT_BYTES);
        let jwt = compact(HEADER, &format!(r#"{{"pad":"{pad}"}}"#), b"sig");
        assert_eq!(claims(jwt.as_bytes()), Err(JwtError::TooLarge(jwt.len())));
        let fits = "x".repeat(MAX_JWT_BYTES / 2);
        let jwt = compact(HEADER, &format!(r#"{{"pad":"{fits}"}}"#), b"sig");
        assert!(claims(jwt.as_bytes()).is_ok());
    }
}
