//! A compact JWS (RFC 7515 §7.1) taken apart before any key is used: three
//! parts of strict base64url without padding, a JOSE header that is a JSON
//! object within a size limit, naming an algorithm the module implements,
//! with no critical extension it does not understand (§4.1.11). Nothing in
//! the header chooses a key by itself: `jwk`, `jku`, `x5u` and `x5c` are
//! never read (keys come only from the configuration).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::oauth::jose::alg::Alg;

/// The largest token taken apart: a JWS access token of tens of claims is
/// under 2 KiB; nginx's header buffers end far longer ones anyway.
pub const MAX_JWS_BYTES: usize = 16 * 1024;
/// The largest encoded header: `alg`, `kid`, `typ` and a few more.
pub const MAX_HEADER_BYTES: usize = 2048;
/// The longest `kid` a token may name.
pub const MAX_KID_BYTES: usize = 256;

/// The critical header parameters the module understands: none. A token
/// whose `crit` lists any is refused, as RFC 7515 §4.1.11 asks.
const UNDERSTOOD_CRITICAL: &[&str] = &[];

/// Header parameters RFC 7515 and RFC 7518 define, which `crit` may not name.
const REGISTERED: &[&str] = &[
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc",
    "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c",
];

/// Why a token is not a JWS the module will check. `description` is what
/// the client is told (`error_description`): constant words, no token bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("token larger than {MAX_JWS_BYTES} bytes")]
    TooLarge,
    #[error("not three dot-separated parts")]
    NotThreeParts,
    #[error("a part is not unpadded base64url")]
    NotBase64Url,
    #[error("header larger than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge,
    #[error("header is not a JSON object with well-typed members")]
    BadHeader,
    #[error("header names no algorithm")]
    NoAlgorithm,
    #[error("alg none: an unsecured JWS")]
    Unsecured,
    #[error("header names an unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("header lists a critical extension the module does not understand")]
    UnknownCritical,
    #[error("signature is empty")]
    Unsigned,
}

impl JwsError {
    pub fn description(self) -> &'static str {
        match self {
            JwsError::TooLarge => "the token is too large",
            JwsError::NotThreeParts | JwsError::NotBase64Url => "the token is not a compact JWS",
            JwsError::HeaderTooLarge | JwsError::BadHeader | JwsError::NoAlgorithm => {
                "the token has a malformed JOSE header"
            }
            JwsError::Unsecured => "unsecured tokens (alg none) are not accepted",
            JwsError::UnsupportedAlgorithm => "the token's algorithm is not supported",
            JwsError::UnknownCritical => {
                "the token has a critical header parameter that is not understood"
            }
            JwsError::Unsigned => "the token is not signed",
        }
    }
}

/// The header members the module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `typ` as sent (RFC 9068 §4 checks it).
    pub typ: Option<String>,
}

/// A compact JWS taken apart; the signature is not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jws<'t> {
    pub header: Header,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'t [u8],
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The header as sent. serde refuses a struct member given twice, so a
/// header like `{"alg":"RS256","alg":"none"}` is refused rather than read
/// as whichever came last.
#[derive(Deserialize)]
struct WireHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    crit: Option<Value>,
}

/// Takes `token` apart. Every input gets an answer, none a panic.
pub fn parse(token: &[u8]) -> Result<Jws<'_>, JwsError> {
    if token.len() > MAX_JWS_BYTES {
        return Err(JwsError::TooLarge);
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::NotThreeParts);
    };
    if header.len() > MAX_HEADER_BYTES {
        return Err(JwsError::HeaderTooLarge);
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header = parse_header(&decode(header)?)?;
    if signature.is_empty() {
        return Err(JwsError::Unsigned);
    }
    Ok(Jws {
        header,
        signing_input,
        signature: decode(signature)?,
        payload: decode(payload)?,
    })
}

/// Strict base64url: the URL-safe alphabet, no padding, no stray bits in
/// the last character (the `base64` engine's default), no whitespace.
pub fn decode(part: &[u8]) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::NotBase64Url)
}

fn parse_header(json: &[u8]) -> Result<Header, JwsError> {
    // serde reads a struct from a JSON array too, by position.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwsError::BadHeader);
    }
    let wire: WireHeader = serde_json::from_slice(json).map_err(|_| JwsError::BadHeader)?;
    let alg = match wire.alg {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(JwsError::Unsecured)
        }
        Some(Value::String(name)) => {
            Alg::parse(name.as_bytes()).ok_or(JwsError::UnsupportedAlgorithm)?
        }
        None => return Err(JwsError::NoAlgorithm),
        Some(_) => return Err(JwsError::BadHeader),
    };
    if let Some(crit) = wire.crit {
        check_critical(&crit)?;
    }
    Ok(Header {
        alg,
        kid: optional_string(wire.kid, MAX_KID_BYTES)?,
        typ: optional_string(wire.typ, 128)?,
    })
}

/// `crit` (RFC 7515 §4.1.11): a non-empty array of distinct names, none of
/// them a parameter the specifications define; each must be understood.
fn check_critical(crit: &Value) -> Result<(), JwsError> {
    let Value::Array(names) = crit else {
        return Err(JwsError::BadHeader);
    };
    if names.is_empty() {
        return Err(JwsError::BadHeader);
    }
    for (i, name) in names.iter().enumerate() {
        let Value::String(name) = name else {
            return Err(JwsError::BadHeader);
        };
        if name.is_empty() || REGISTERED.contains(&name.as_str()) || names[..i].contains(&names[i])
        {
            return Err(JwsError::BadHeader);
        }
    }
    match names.iter().all(|name| {
        name.as_str()
            .is_some_and(|n| UNDERSTOOD_CRITICAL.contains(&n))
    }) {
        true => Ok(()),
        false => Err(JwsError::UnknownCritical),
    }
}

fn optional_string(value: Option<Value>, limit: usize) -> Result<Option<String>, JwsError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= limit => Ok(Some(s)),
        Some(_) => Err(JwsError::BadHeader),
    }
}

/// Builds a compact JWS from a header, a payload and a signature, for the
/// tests of this folder.
#[cfg(test)]
pub use crate::oauth::jwt::compact;

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"alg":"RS256","typ":"at+jwt","kid":"k1"}"#;

    #[test]
    fn a_compact_jws_comes_apart() {
        let token = compact(HEADER, r#"{"sub":"alice"}"#, b"signature bytes");
        let jws = parse(token.as_bytes()).unwrap();
        assert_eq!(
            jws.header,
            Header {
                alg: Alg::RS256,
                kid: Some("k1".into()),
                typ: Some("at+jwt".into()),
            }
        );
        assert_eq!(jws.payload, br#"{"sub":"alice"}"#);
        assert_eq!(jws.signature, b"signature bytes");
        let (input, _) = token.rsplit_once('.').unwrap();
        assert_eq!(jws.signing_input, input.as_bytes());
    }

    /// RFC 7515 Appendix A.1's JWS: its header has a line break and spaces,
    /// which the signing input keeps as sent.
    #[test]
    fn rfc7515_a1_example() {
        let token = concat!(
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
            ".",
            "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
            ".",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        let jws = parse(token.as_bytes()).unwrap();
        assert_eq!(jws.header.alg, Alg::HS256);
        assert_eq!(jws.header.typ.as_deref(), Some("JWT"));
        assert_eq!(jws.signature.len(), 32);
        assert!(jws.payload.starts_with(b"{\"iss\":\"joe\",\r\n"));
    }

    #[test]
    fn shape_errors() {
        let h = URL_SAFE_NO_PAD.encode(HEADER);
        let p = URL_SAFE_NO_PAD.encode("{}");
        for (token, error) in [
            (String::new(), JwsError::NotThreeParts),
            ("abc".into(), JwsError::NotThreeParts),
            (format!("{h}.{p}"), JwsError::NotThreeParts),
            (format!("{h}.{p}.c2ln.c2ln"), JwsError::NotThreeParts),
            (format!("{h}.{p}=.c2ln"), JwsError::NotBase64Url),
            (format!("{h}.{p}.c2l+"), JwsError::NotBase64Url),
            (format!("{h}.{p}.c2ln="), JwsError::NotBase64Url),
            (format!("{h}.{p}.c2l/"), JwsError::NotBase64Url),
            (format!("{h}.{p}.c2 l"), JwsError::NotBase64Url),
            // "c2m" has stray bits after "si": not the canonical encoding.
            (format!("{h}.{p}.c2m"), JwsError::NotBase64Url),
            (format!("{h}=.{p}.c2ln"), JwsError::NotBase64Url),
            (format!("{h}.{p}."), JwsError::Unsigned),
            (format!(".{p}.c2ln"), JwsError::BadHeader),
        ] {
            assert_eq!(parse(token.as_bytes()), Err(error), "{token}");
        }
        let big = "a".repeat(MAX_JWS_BYTES + 1);
        assert_eq!(parse(big.as_bytes()), Err(JwsError::TooLarge));
    }

    #[test]
    fn headers_that_are_refused() {
        for (header, error) in [
            (r#"{"alg":"none"}"#, JwsError::Unsecured),
            (r#"{"alg":"NONE"}"#, JwsError::Unsecured),
            (r#"{"alg":"nOnE","typ":"at+jwt"}"#, JwsError::Unsecured),
            (r#"{"alg":"HS512"}"#, JwsError::UnsupportedAlgorithm),
            (r#"{"alg":"rs256"}"#, JwsError::UnsupportedAlgorithm),
            (r#"{"typ":"at+jwt"}"#, JwsError::NoAlgorithm),
            (r#"{"alg":["RS256"]}"#, JwsError::BadHeader),
            (r#"{"alg":null}"#, JwsError::NoAlgorithm),
            (r#"{"alg":"RS256","alg":"none"}"#, JwsError::BadHeader),
            (r#"{"alg":"RS256","kid":7}"#, JwsError::BadHeader),
            (r#"{"alg":"RS256","typ":{}}"#, JwsError::BadHeader),
            (r#"["RS256"]"#, JwsError::BadHeader),
            ("not json", JwsError::BadHeader),
            (r#"{"alg":"RS256"} x"#, JwsError::BadHeader),
        ] {
            let token = compact(header, "{}", b"sig");
            assert_eq!(parse(token.as_bytes()), Err(error), "{header}");
        }
        let kid = "k".repeat(MAX_KID_BYTES + 1);
        let token = compact(&format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#), "{}", b"s");
        assert_eq!(parse(token.as_bytes()), Err(JwsError::BadHeader));
        let pad = "p".repeat(MAX_HEADER_BYTES);
        let token = compact(&format!(r#"{{"alg":"ES256","x":"{pad}"}}"#), "{}", b"s");
        assert_eq!(parse(token.as_bytes()), Err(JwsError::HeaderTooLarge));
    }

    #[test]
    fn critical_extensions() {
        for (crit, error) in [
            (r#"["exp"]"#, JwsError::UnknownCritical),
            (r#"["b64"]"#, JwsError::UnknownCritical),
            (r#"["http://example.com/ext"]"#, JwsError::UnknownCritical),
            ("[]", JwsError::BadHeader),
            (r#"["alg"]"#, JwsError::BadHeader),
            (r#"["x","x"]"#, JwsError::BadHeader),
            (r#"[""]"#, JwsError::BadHeader),
            (r#""exp""#, JwsError::BadHeader),
            ("[1]", JwsError::BadHeader),
        ] {
            let header = format!(r#"{{"alg":"RS256","crit":{crit},"exp":1}}"#);
            let token = compact(&header, "{}", b"sig");
            assert_eq!(parse(token.as_bytes()), Err(error), "{crit}");
        }
    }

    #[test]
    fn keys_named_in_the_header_are_not_read() {
        let header =
            r#"{"alg":"RS256","jwk":{"kty":"oct","k":"AA"},"jku":"https://x","x5c":["AA"]}"#;
        let token = compact(header, "{}", b"sig");
        let jws = parse(token.as_bytes()).unwrap();
        assert_eq!(jws.header.kid, None);
    }

    #[test]
    fn descriptions_fit_in_a_challenge() {
        for error in [
            JwsError::TooLarge,
            JwsError::NotThreeParts,
            JwsError::NotBase64Url,
            JwsError::HeaderTooLarge,
            JwsError::BadHeader,
            JwsError::NoAlgorithm,
            JwsError::Unsecured,
            JwsError::UnsupportedAlgorithm,
            JwsError::UnknownCritical,
            JwsError::Unsigned,
        ] {
            let text = error.description();
            assert!(
                text.bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{text}"
            );
        }
    }
}
