//! What RFC 9068 §4 asks of a JWT access token once its signature holds:
//! the explicit type, the issuer, the lifetime and the audience. One plain
//! function over the header's `typ` and the claims; each failure is a
//! [`Refusal`] whose `description` is the `error_description` the client
//! gets with its 401 `invalid_token`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jws::JwsError;

/// What a location (or one issuer of it) asks of a JWT access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenPolicy {
    /// `iss` must be exactly this (RFC 9068 §4 step 3).
    pub issuer: String,
    /// `aud` must name one of these; empty: the audience is left to
    /// `auth_oauth2_token_require_audience`.
    pub audiences: Vec<String>,
    /// The algorithms accepted; anything else is refused before a key is used.
    pub algorithms: Algorithms,
    /// Seconds of clock difference tolerated for `exp`, `nbf` and `iat`.
    pub leeway_s: i64,
    /// Accept `typ` `JWT` or none (IdPs that do not type their access
    /// tokens); other explicit types are refused even then.
    pub typ_relaxed: bool,
}

/// The most clock difference a policy may tolerate.
pub const MAX_LEEWAY_S: i64 = 600;

/// Why a JWT access token is refused. `description()` is sent to the
/// client; `Display` is the log line. Neither carries claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a JWS the module checks: {0}")]
    Malformed(JwsError),
    #[error("algorithm not on the allow-list")]
    AlgorithmNotAllowed,
    #[error("no key for the token's kid and algorithm")]
    NoKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("payload is not a JSON object, or has a deciding claim twice")]
    BadPayload,
    #[error("typ is not at+jwt")]
    WrongType,
    #[error("no iss claim")]
    NoIssuer,
    #[error("iss is not the configured issuer")]
    WrongIssuer,
    #[error("no exp claim")]
    NoExpiry,
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    /// The claim's name: a date that is not a number, an `iss` or `aud`
    /// of the wrong JSON type.
    #[error("claim \"{0}\" has the wrong type")]
    BadClaim(&'static str),
    #[error("no aud claim")]
    NoAudience,
    #[error("aud names none of the accepted audiences")]
    WrongAudience,
    /// The claim's name only (its value may be personal data).
    #[error("claim \"{0}\" holds a control character; refused, as it could split a header")]
    UnsafeClaim(String),
}

impl Refusal {
    /// The `error_description` of the 401: constant words (RFC 6749's
    /// characters, no quote or backslash).
    pub fn description(&self) -> &'static str {
        match self {
            Refusal::Malformed(e) => e.description(),
            Refusal::AlgorithmNotAllowed => "the token's algorithm is not accepted",
            Refusal::NoKey => "no key is known for the token",
            Refusal::BadSignature => "the token's signature is invalid",
            Refusal::BadPayload => "the token's claims are not a JSON object",
            Refusal::WrongType => "the token is not typed at+jwt",
            Refusal::NoIssuer => "the token has no issuer",
            Refusal::WrongIssuer => "the token's issuer is not accepted",
            Refusal::NoExpiry => "the token has no expiry",
            Refusal::Expired => "the token has expired",
            Refusal::NotYetValid => "the token is not valid yet",
            Refusal::IssuedInFuture => "the token was issued in the future",
            Refusal::BadClaim(_) => "the token has a malformed claim",
            Refusal::NoAudience => "the token has no audience",
            Refusal::WrongAudience => "the token is not meant for this resource",
            Refusal::UnsafeClaim(_) => "the token has a claim that cannot be passed on",
        }
    }
}

impl From<JwsError> for Refusal {
    fn from(e: JwsError) -> Refusal {
        Refusal::Malformed(e)
    }
}

/// The claims the checks decide on. serde refuses a struct member given
/// twice: which `exp` of two would the upstream read?
#[derive(Deserialize)]
struct DecidingClaims {
    #[serde(rename = "iss")]
    _iss: Option<Value>,
    #[serde(rename = "exp")]
    _exp: Option<Value>,
    #[serde(rename = "nbf")]
    _nbf: Option<Value>,
    #[serde(rename = "iat")]
    _iat: Option<Value>,
    #[serde(rename = "aud")]
    _aud: Option<Value>,
    #[serde(rename = "sub")]
    _sub: Option<Value>,
    #[serde(rename = "scope")]
    _scope: Option<Value>,
    #[serde(rename = "client_id")]
    _client_id: Option<Value>,
}

/// The claims of a verified payload, as an object (the deciding ones given once).
pub fn claims_object(payload: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(Refusal::BadPayload);
    }
    serde_json::from_slice::<DecidingClaims>(payload).map_err(|_| Refusal::BadPayload)?;
    serde_json::from_slice(payload).map_err(|_| Refusal::BadPayload)
}

/// RFC 9068 §4 over a token whose signature verified: `typ` (from the
/// header), `iss`, `exp`, `nbf`, `iat` and `aud`, in that order; the first
/// that fails decides. `now_s` is the time in seconds since the epoch.
pub fn check(
    typ: Option<&str>,
    claims: &Map<String, Value>,
    policy: &AccessTokenPolicy,
    now_s: i64,
) -> Result<(), Refusal> {
    if !type_accepted(typ, policy.typ_relaxed) {
        return Err(Refusal::WrongType);
    }
    match claims.get("iss") {
        None | Some(Value::Null) => return Err(Refusal::NoIssuer),
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        Some(Value::String(_)) => return Err(Refusal::WrongIssuer),
        Some(_) => return Err(Refusal::BadClaim("iss")),
    }
    let leeway = policy.leeway_s.clamp(0, MAX_LEEWAY_S);
    let exp = date(claims, "exp")?.ok_or(Refusal::NoExpiry)?;
    if now_s >= exp.saturating_add(leeway) {
        return Err(Refusal::Expired);
    }
    if date(claims, "nbf")?.is_some_and(|nbf| now_s.saturating_add(leeway) < nbf) {
        return Err(Refusal::NotYetValid);
    }
    if date(claims, "iat")?.is_some_and(|iat| iat > now_s.saturating_add(leeway)) {
        return Err(Refusal::IssuedInFuture);
    }
    if policy.audiences.is_empty() {
        return Ok(());
    }
    let named = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| policy.audiences.iter().any(|a| a == aud))
    };
    match claims.get("aud") {
        None | Some(Value::Null) => Err(Refusal::NoAudience),
        Some(aud @ Value::String(_)) if named(aud) => Ok(()),
        Some(Value::String(_)) => Err(Refusal::WrongAudience),
        Some(Value::Array(auds)) if !auds.iter().all(Value::is_string) => {
            Err(Refusal::BadClaim("aud"))
        }
        Some(Value::Array(auds)) if auds.iter().any(named) => Ok(()),
        Some(Value::Array(_)) => Err(Refusal::WrongAudience),
        Some(_) => Err(Refusal::BadClaim("aud")),
    }
}

/// `typ` per RFC 9068 §4 step 1: `at+jwt`, or `application/at+jwt` (RFC
/// 7515 §4.1.9 lets `application/` be left out; media types are compared
/// case-insensitively). Relaxed, also `JWT` (RFC 7519 §5.1) or no `typ`;
/// a token typed as something else (an ID token, a logout token, a DPoP
/// proof) is never an access token.
pub fn type_accepted(typ: Option<&str>, relaxed: bool) -> bool {
    let Some(typ) = typ else {
        return relaxed;
    };
    let subtype = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    subtype.eq_ignore_ascii_case("at+jwt") || (relaxed && subtype.eq_ignore_ascii_case("jwt"))
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds, possibly
/// fractional (the whole seconds count); absent or null is `None`.
fn date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            // `as` saturates: 1e300 is far in the future, not an overflow.
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(Refusal::BadClaim(name)),
        },
        Some(_) => Err(Refusal::BadClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn policy() -> AccessTokenPolicy {
        AccessTokenPolicy {
            issuer: "https://idp.example".into(),
            audiences: vec!["api".into(), "https://api.example".into()],
            algorithms: Algorithms::asymmetric(),
            leeway_s: 30,
            typ_relaxed: false,
        }
    }

    fn good() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "iss": "https://idp.example", "exp": NOW + 60, "nbf": NOW - 5, "iat": NOW - 5,
            "aud": "api", "sub": "alice", "client_id": "app", "jti": "1"
        }) else {
            unreachable!()
        };
        map
    }

    fn with(name: &str, value: Value) -> Map<String, Value> {
        let mut claims = good();
        match value {
            Value::Null => claims.remove(name),
            value => claims.insert(name.into(), value),
        };
        claims
    }

    #[test]
    fn a_good_token_passes() {
        assert_eq!(check(Some("at+jwt"), &good(), &policy(), NOW), Ok(()));
    }

    #[test]
    fn explicit_typing() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(type_accepted(Some(typ), false), "{typ}");
        }
        for typ in [
            "JWT",
            "jwt",
            "application/jwt",
            "at+JWT ",
            "at+jwt; x=y",
            "application/",
            "",
            "dpop+jwt",
            "id_token+jwt",
        ] {
            assert!(!type_accepted(Some(typ), false), "{typ}");
        }
        assert!(!type_accepted(None, false));
        assert!(type_accepted(None, true));
        for typ in ["JWT", "application/jwt", "at+jwt"] {
            assert!(type_accepted(Some(typ), true), "{typ}");
        }
        for typ in ["logout+jwt", "dpop+jwt", "secevent+jwt", "application/é"] {
            assert!(!type_accepted(Some(typ), true), "{typ}");
        }
        assert_eq!(
            check(Some("JWT"), &good(), &policy(), NOW),
            Err(Refusal::WrongType)
        );
        assert_eq!(
            check(None, &good(), &policy(), NOW),
            Err(Refusal::WrongType)
        );
        let relaxed = AccessTokenPolicy {
            typ_relaxed: true,
            ..policy()
        };
        assert_eq!(check(None, &good(), &relaxed, NOW), Ok(()));
    }

    #[test]
    fn issuer_is_compared_exactly() {
        let p = policy();
        for (iss, result) in [
            (json!("https://idp.example/"), Err(Refusal::WrongIssuer)),
            (json!("HTTPS://IDP.EXAMPLE"), Err(Refusal::WrongIssuer)),
            (json!(""), Err(Refusal::WrongIssuer)),
            (
                json!(["https://idp.example"]),
                Err(Refusal::BadClaim("iss")),
            ),
            (Value::Null, Err(Refusal::NoIssuer)),
        ] {
            assert_eq!(
                check(Some("at+jwt"), &with("iss", iss.clone()), &p, NOW),
                result,
                "{iss}"
            );
        }
    }

    #[test]
    fn lifetime_with_leeway() {
        let p = policy();
        let at = |name: &str, value: Value| check(Some("at+jwt"), &with(name, value), &p, NOW);
        assert_eq!(at("exp", Value::Null), Err(Refusal::NoExpiry));
        assert_eq!(at("exp", json!(NOW - 31)), Err(Refusal::Expired));
        assert_eq!(at("exp", json!(NOW - 30)), Err(Refusal::Expired));
        assert_eq!(at("exp", json!(NOW - 29)), Ok(()));
        assert_eq!(at("exp", json!((NOW - 29) as f64 + 0.5)), Ok(()));
        assert_eq!(
            at("exp", json!("1900000000")),
            Err(Refusal::BadClaim("exp"))
        );
        assert_eq!(at("exp", json!(true)), Err(Refusal::BadClaim("exp")));
        assert_eq!(at("exp", json!(1e300)), Ok(()));
        assert_eq!(at("exp", json!(-1e300)), Err(Refusal::Expired));
        // Past i64: a float, held at the far future.
        assert_eq!(at("exp", json!(u64::MAX)), Ok(()));
        assert_eq!(at("nbf", json!(NOW + 30)), Ok(()));
        assert_eq!(at("nbf", json!(NOW + 31)), Err(Refusal::NotYetValid));
        assert_eq!(at("nbf", json!("soon")), Err(Refusal::BadClaim("nbf")));
        assert_eq!(at("nbf", Value::Null), Ok(()));
        assert_eq!(at("iat", json!(NOW + 30)), Ok(()));
        assert_eq!(at("iat", json!(NOW + 31)), Err(Refusal::IssuedInFuture));
        assert_eq!(at("iat", json!({})), Err(Refusal::BadClaim("iat")));
        assert_eq!(at("iat", Value::Null), Ok(()));
        let strict = AccessTokenPolicy {
            leeway_s: 0,
            ..policy()
        };
        assert_eq!(
            check(Some("at+jwt"), &with("exp", json!(NOW)), &strict, NOW),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check(Some("at+jwt"), &with("exp", json!(NOW + 1)), &strict, NOW),
            Ok(())
        );
        assert_eq!(
            check(Some("at+jwt"), &with("nbf", json!(NOW)), &strict, NOW),
            Ok(())
        );
        // A leeway beyond the bound is held to it.
        let lax = AccessTokenPolicy {
            leeway_s: i64::MAX,
            ..policy()
        };
        let claims = with("exp", json!(NOW - MAX_LEEWAY_S));
        assert_eq!(
            check(Some("at+jwt"), &claims, &lax, NOW),
            Err(Refusal::Expired)
        );
        let claims = with("exp", json!(i64::MIN));
        assert_eq!(
            check(Some("at+jwt"), &claims, &lax, i64::MAX),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn audience_string_or_array() {
        let p = policy();
        let at = |aud: Value| check(Some("at+jwt"), &with("aud", aud), &p, NOW);
        assert_eq!(at(json!("api")), Ok(()));
        assert_eq!(at(json!("https://api.example")), Ok(()));
        assert_eq!(at(json!(["web", "api"])), Ok(()));
        assert_eq!(at(json!("API")), Err(Refusal::WrongAudience));
        assert_eq!(at(json!(["web"])), Err(Refusal::WrongAudience));
        assert_eq!(at(json!([])), Err(Refusal::WrongAudience));
        assert_eq!(at(json!(["api", 1])), Err(Refusal::BadClaim("aud")));
        assert_eq!(at(json!({"api": true})), Err(Refusal::BadClaim("aud")));
        assert_eq!(at(Value::Null), Err(Refusal::NoAudience));
        let open = AccessTokenPolicy {
            audiences: vec![],
            ..policy()
        };
        assert_eq!(
            check(Some("at+jwt"), &with("aud", Value::Null), &open, NOW),
            Ok(())
        );
    }

    #[test]
    fn checks_run_in_order() {
        let mut claims = with("exp", json!(NOW - 100));
        claims.insert("iss".into(), json!("other"));
        assert_eq!(
            check(Some("at+jwt"), &claims, &policy(), NOW),
            Err(Refusal::WrongIssuer)
        );
        assert_eq!(
            check(Some("JWT"), &claims, &policy(), NOW),
            Err(Refusal::WrongType)
        );
    }

    #[test]
    fn payloads() {
        assert!(claims_object(br#" {"sub":"a","x":[1]}"#).is_ok());
        for payload in [
            &b"[]"[..],
            b"\"s\"",
            b"",
            b"{",
            br#"{"exp":1,"exp":2}"#,
            br#"{"iss":"a","iss":"a"}"#,
            br#"{"aud":"a","aud":"b"}"#,
            br#"{"sub":"a","sub":"b"}"#,
        ] {
            assert_eq!(
                claims_object(payload),
                Err(Refusal::BadPayload),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        // Claims the checks do not decide on may repeat; the last counts.
        assert_eq!(claims_object(br#"{"x":1,"x":2}"#).unwrap()["x"], 2);
    }

    #[test]
    fn descriptions_fit_in_a_challenge() {
        for refusal in [
            Refusal::Malformed(JwsError::Unsecured),
            Refusal::AlgorithmNotAllowed,
            Refusal::NoKey,
            Refusal::BadSignature,
            Refusal::BadPayload,
            Refusal::WrongType,
            Refusal::NoIssuer,
            Refusal::WrongIssuer,
            Refusal::NoExpiry,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::IssuedInFuture,
            Refusal::BadClaim("exp"),
            Refusal::NoAudience,
            Refusal::WrongAudience,
            Refusal::UnsafeClaim("sub".into()),
        ] {
            let text = refusal.description();
            assert!(
                text.bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{text}"
            );
        }
    }
}
