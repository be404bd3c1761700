//! A Security Event Token (RFC 8417) pushed to the receiver (RFC 8935),
//! from bytes to the revocations it asks for: a compact JWS taken apart and
//! verified with `oauth/jose/` (the transmitter's keys, asymmetric
//! algorithms only), `typ` `secevent+jwt`, `iss` and `aud` those of the
//! stream, `iat` within the age bound, a `jti`, and an `events` object.
//! The events acted on (CAEP and RISC, below) revoke the tokens of their
//! subject issued up to the SET's `iat`; other events are accepted and
//! counted. Every refusal is one of RFC 8935 §2.4's error codes with
//! constant words (no claim value, no token byte).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::subject::{self, Target};
use super::{numeric_date, tag};
use crate::oauth::jose::access_token::Refusal;
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::jose::jws::{self, JwsError};
use crate::oauth::jose::verify;

/// The largest SET read: a few events about one subject fit in 2 KiB.
pub const MAX_SET_BYTES: usize = jws::MAX_JWS_BYTES;
/// The longest `jti` accepted (it is kept in the replay store as a digest).
pub const MAX_JTI_BYTES: usize = 256;
/// The most events one SET may carry (SSF 1.0 sends one).
pub const MAX_EVENTS: usize = 4;
/// The clock difference tolerated for an `iat` in the future.
pub const LEEWAY_S: i64 = 60;

/// What one stream of a transmitter must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The transmitter's `iss`.
    pub issuer: String,
    /// This receiver's name in `aud`.
    pub audience: String,
    /// The oldest `iat` accepted, in seconds before now.
    pub max_age_s: i64,
}

/// RFC 8935 §2.4's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    InvalidKey,
    InvalidIssuer,
    InvalidAudience,
    AuthenticationFailed,
    AccessDenied,
}

impl Code {
    /// The `err` member's value.
    pub fn err(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidKey => "invalid_key",
            Code::InvalidIssuer => "invalid_issuer",
            Code::InvalidAudience => "invalid_audience",
            Code::AuthenticationFailed => "authentication_failed",
            Code::AccessDenied => "access_denied",
        }
    }
}

/// Why a delivery is refused: its code and description (RFC 8935 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", .code.err(), .description)]
pub struct SetError {
    pub code: Code,
    pub description: &'static str,
}

impl SetError {
    pub const fn new(code: Code, description: &'static str) -> SetError {
        SetError { code, description }
    }

    /// The 400's body (RFC 8935 §2.3): `{"err":..,"description":..}`.
    pub fn body(&self) -> String {
        serde_json::json!({"err": self.code.err(), "description": self.description}).to_string()
    }
}

const fn bad(description: &'static str) -> SetError {
    SetError::new(Code::InvalidRequest, description)
}

pub const TOO_LARGE: SetError = bad("the SET is too large");
pub const WRONG_MEDIA_TYPE: SetError =
    bad("the request's media type is not application/secevent+jwt");
pub const NOT_POST: SetError = bad("a SET is delivered with POST");
pub const REPLAYED: SetError = bad("a SET with this jti was received before");
pub const NO_ROOM: SetError = bad("the receiver cannot record the SET now");
pub const NO_CREDENTIALS: SetError = SetError::new(
    Code::AuthenticationFailed,
    "the transmitter did not authenticate",
);
pub const WRONG_CREDENTIALS: SetError = SetError::new(
    Code::AccessDenied,
    "the transmitter is not authorized to deliver SETs here",
);

/// The events the receiver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    SessionRevoked,
    CredentialChange,
    TokenClaimsChange,
    AssuranceLevelChange,
    AccountDisabled,
    AccountPurged,
    CredentialCompromise,
    SessionsRevoked,
    /// Any other event type: accepted, counted, not acted on.
    Other,
}

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::SessionRevoked,
        EventType::CredentialChange,
        EventType::TokenClaimsChange,
        EventType::AssuranceLevelChange,
        EventType::AccountDisabled,
        EventType::AccountPurged,
        EventType::CredentialCompromise,
        EventType::SessionsRevoked,
        EventType::Other,
    ];

    pub fn of(uri: &str) -> EventType {
        if let Some(name) = uri.strip_prefix(CAEP) {
            return match name {
                "session-revoked" => EventType::SessionRevoked,
                "credential-change" => EventType::CredentialChange,
                "token-claims-change" => EventType::TokenClaimsChange,
                "assurance-level-change" => EventType::AssuranceLevelChange,
                _ => EventType::Other,
            };
        }
        match uri.strip_prefix(RISC) {
            Some("account-disabled") => EventType::AccountDisabled,
            Some("account-purged") => EventType::AccountPurged,
            Some("credential-compromise") => EventType::CredentialCompromise,
            Some("sessions-revoked") => EventType::SessionsRevoked,
            _ => EventType::Other,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            EventType::SessionRevoked => "caep_session_revoked",
            EventType::CredentialChange => "caep_credential_change",
            EventType::TokenClaimsChange => "caep_token_claims_change",
            EventType::AssuranceLevelChange => "caep_assurance_level_change",
            EventType::AccountDisabled => "risc_account_disabled",
            EventType::AccountPurged => "risc_account_purged",
            EventType::CredentialCompromise => "risc_credential_compromise",
            EventType::SessionsRevoked => "risc_sessions_revoked",
            EventType::Other => "other",
        }
    }

    /// Events about one session: a subject naming a session revokes that
    /// session's tokens only; the others revoke all the user's tokens.
    fn session_scoped(self) -> bool {
        matches!(
            self,
            EventType::SessionRevoked
                | EventType::TokenClaimsChange
                | EventType::AssuranceLevelChange
        )
    }
}

/// One entry for the revocation list: the tokens with `tag` issued at or
/// before `at_s` are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub tag: [u8; 8],
    pub at_s: i64,
}

/// A SET accepted: its `jti` (for the replay store), its events' types,
/// the revocations they ask for, and how many subjects were not matchable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub jti: String,
    pub iat_s: i64,
    pub events: Vec<EventType>,
    pub revocations: Vec<Revocation>,
    pub unmatched: usize,
}

/// The claims that decide, each given once (serde refuses a member twice).
#[derive(Deserialize)]
struct Deciding {
    #[serde(rename = "iss")]
    _iss: Option<Value>,
    #[serde(rename = "aud")]
    _aud: Option<Value>,
    #[serde(rename = "iat")]
    _iat: Option<Value>,
    #[serde(rename = "jti")]
    _jti: Option<Value>,
    #[serde(rename = "events")]
    _events: Option<Value>,
    #[serde(rename = "sub_id")]
    _sub_id: Option<Value>,
}

/// Verifies `body` (the POST's bytes) for `stream` with the transmitter's
/// `keys` at `now_s`.
pub fn verify(
    body: &[u8],
    keys: &[Jwk],
    stream: &Stream,
    now_s: i64,
) -> Result<Accepted, SetError> {
    if body.len() > MAX_SET_BYTES {
        return Err(TOO_LARGE);
    }
    let jws = jws::parse(body.trim_ascii()).map_err(|e| match e {
        JwsError::Unsecured | JwsError::Unsigned => bad("unsigned SETs are not accepted"),
        JwsError::TooLarge => TOO_LARGE,
        JwsError::UnsupportedAlgorithm => bad("the SET's algorithm is not supported"),
        _ => bad("the body is not a compact JWS"),
    })?;
    if !Algorithms::asymmetric().allows(jws.header.alg) {
        return Err(SetError::new(
            Code::InvalidKey,
            "the SET is not signed with a public-key algorithm",
        ));
    }
    if !typed_secevent(jws.header.typ.as_deref()) {
        return Err(bad("the SET is not typed secevent+jwt"));
    }
    verify::verify_signature(&jws, &[keys]).map_err(|refusal| match refusal {
        Refusal::NoKey => SetError::new(Code::InvalidKey, "no key of the transmitter fits the SET"),
        _ => SetError::new(Code::InvalidKey, "the SET's signature is invalid"),
    })?;
    let payload = jws.payload.as_slice();
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad("the SET's claims are not a JSON object"));
    }
    serde_json::from_slice::<Deciding>(payload)
        .map_err(|_| bad("the SET's claims are not a JSON object"))?;
    let claims: Map<String, Value> = serde_json::from_slice(payload)
        .map_err(|_| bad("the SET's claims are not a JSON object"))?;
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == stream.issuer => {}
        _ => {
            return Err(SetError::new(
                Code::InvalidIssuer,
                "the SET's issuer is not this stream's",
            ))
        }
    }
    let audience_named = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == stream.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&stream.audience)),
        _ => false,
    };
    if !audience_named {
        return Err(SetError::new(
            Code::InvalidAudience,
            "the SET's audience does not name this receiver",
        ));
    }
    let iat_s = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(bad("the SET has no numeric iat"))?;
    if iat_s > now_s.saturating_add(LEEWAY_S) {
        return Err(bad("the SET was issued in the future"));
    }
    if iat_s < now_s.saturating_sub(stream.max_age_s) {
        return Err(bad("the SET is too old"));
    }
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti.clone(),
        _ => return Err(bad("the SET has no usable jti")),
    };
    let Some(Value::Object(events)) = claims.get("events") else {
        return Err(bad("the SET has no events object"));
    };
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(bad("the SET's events object is empty or too long"));
    }
    let mut accepted = Accepted {
        jti,
        iat_s,
        events: Vec::with_capacity(events.len()),
        revocations: Vec::new(),
        unmatched: 0,
    };
    for (uri, payload) in events {
        let Value::Object(payload) = payload else {
            return Err(bad("an event's payload is not a JSON object"));
        };
        let event = EventType::of(uri);
        accepted.events.push(event);
        if event == EventType::Other {
            continue;
        }
        // CAEP and RISC events carry their subject (RFC 9493) in the event,
        // SSF 1.0 in the SET's `sub_id`.
        let id = payload
            .get("subject")
            .or_else(|| claims.get("sub_id"))
            .ok_or(bad("an event acted on names no subject"))?;
        let subject =
            subject::parse(id).map_err(|_| bad("an event's subject identifier is malformed"))?;
        accepted.unmatched += subject.unmatched;
        let targets = match (event.session_scoped(), subject.sessions.is_empty()) {
            (true, false) => &subject.sessions,
            _ if subject.users.is_empty() => &subject.sessions,
            _ => &subject.users,
        };
        for target in targets {
            revoke(&mut accepted.revocations, target, &stream.issuer, iat_s);
        }
    }
    Ok(accepted)
}

/// The target's tags at its issuer (its own, else the transmitter's) and
/// at `""` (tokens whose claims carry no `iss`).
fn revoke(out: &mut Vec<Revocation>, target: &Target, transmitter: &str, at_s: i64) {
    let issuer = target.issuer.as_deref().unwrap_or(transmitter);
    for issuer in [issuer, ""] {
        let tag = tag(target.kind, issuer, &target.value);
        if !out.iter().any(|r| r.tag == tag) {
            out.push(Revocation { tag, at_s });
        }
    }
}

/// `secevent+jwt`, with or without `application/`, any case (RFC 8417 §2.3).
fn typed_secevent(typ: Option<&str>) -> bool {
    let Some(typ) = typ else { return false };
    let subtype = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    subtype.eq_ignore_ascii_case("secevent+jwt")
}

/// Whether a request's `Content-Type` is `application/secevent+jwt`
/// (parameters after `;` allowed, any case).
pub fn media_type_ok(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media.eq_ignore_ascii_case(b"application/secevent+jwt")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::jose::alg::{Alg, KeyKind};
    use crate::oauth::jose::jwk::parse_jwks;
    use crate::oauth::jose::jwk::tests::jwk_json;
    use crate::oauth::jose::key::tests::sign;
    use crate::oauth::ssf::Kind;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use openssl::pkey::{PKey, Private};
    use serde_json::json;

    pub const NOW: i64 = 1_800_000_000;
    pub const SESSION_REVOKED: &str =
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

    pub fn stream() -> Stream {
        Stream {
            issuer: "https://idp.example".into(),
            audience: "https://gw.example".into(),
            max_age_s: 300,
        }
    }

    pub fn key() -> (PKey<Private>, Vec<Jwk>) {
        let private = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let jwks = format!(
            r#"{{"keys":[{}]}}"#,
            jwk_json(&private, KeyKind::P256, r#","kid":"k1""#)
        );
        (private, parse_jwks(jwks.as_bytes()).unwrap())
    }

    pub fn signed(private: &PKey<Private>, header: &Value, claims: &Value) -> Vec<u8> {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = sign(private, Alg::ES256, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)).into_bytes()
    }

    pub fn header() -> Value {
        json!({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt"})
    }

    pub fn claims() -> Value {
        json!({
            "iss": "https://idp.example",
            "aud": "https://gw.example",
            "iat": NOW - 5,
            "jti": "set-1",
            "sub_id": {"format": "iss_sub", "iss": "https://idp.example", "sub": "alice"},
            "events": {SESSION_REVOKED: {"event_timestamp": NOW - 6}}
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            value => claims.as_object_mut().unwrap().insert(name.into(), value),
        };
        claims
    }

    fn check(header: &Value, claims: &Value) -> Result<Accepted, SetError> {
        let (private, keys) = key();
        verify(&signed(&private, header, claims), &keys, &stream(), NOW)
    }

    fn code(header: &Value, claims: &Value) -> Code {
        check(header, claims).unwrap_err().code
    }

    #[test]
    fn a_session_revoked_for_a_user_revokes_the_users_tokens_until_its_iat() {
        let accepted = check(&header(), &claims()).unwrap();
        assert_eq!(accepted.jti, "set-1");
        assert_eq!(accepted.events, [EventType::SessionRevoked]);
        let at_s = NOW - 5;
        assert_eq!(
            accepted.revocations,
            [
                Revocation {
                    tag: tag(Kind::Subject, "https://idp.example", "alice"),
                    at_s
                },
                Revocation {
                    tag: tag(Kind::Subject, "", "alice"),
                    at_s
                },
            ]
        );
    }

    #[test]
    fn a_complex_subject_revokes_the_session_or_for_an_account_event_the_user() {
        let complex = json!({"format": "complex",
            "user": {"format": "iss_sub", "iss": "https://idp.example", "sub": "alice"},
            "session": {"format": "opaque", "id": "s-9"}});
        let c = with(claims(), "sub_id", complex.clone());
        let tags: Vec<_> = check(&header(), &c)
            .unwrap()
            .revocations
            .iter()
            .map(|r| r.tag)
            .collect();
        assert_eq!(
            tags,
            [
                tag(Kind::Session, "https://idp.example", "s-9"),
                tag(Kind::Session, "", "s-9")
            ]
        );
        let risc = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
        let c = with(claims(), "events", json!({risc: {"subject": complex}}));
        let accepted = check(&header(), &c).unwrap();
        assert_eq!(accepted.events, [EventType::AccountDisabled]);
        assert_eq!(
            accepted.revocations[0].tag,
            tag(Kind::Subject, "https://idp.example", "alice")
        );
    }

    #[test]
    fn unknown_events_are_accepted_and_change_nothing() {
        let c = with(
            claims(),
            "events",
            json!({"https://example.com/event/x": {}}),
        );
        let accepted = check(&header(), &c).unwrap();
        assert_eq!(accepted.events, [EventType::Other]);
        assert!(accepted.revocations.is_empty());
    }

    #[test]
    fn every_event_type_is_named_and_labelled() {
        for name in [
            "session-revoked",
            "credential-change",
            "token-claims-change",
            "assurance-level-change",
        ] {
            assert_ne!(EventType::of(&format!("{CAEP}{name}")), EventType::Other);
        }
        for name in [
            "account-disabled",
            "account-purged",
            "credential-compromise",
            "sessions-revoked",
        ] {
            assert_ne!(EventType::of(&format!("{RISC}{name}")), EventType::Other);
        }
        assert_eq!(
            EventType::of(&format!("{CAEP}account-disabled")),
            EventType::Other
        );
        let labels: std::collections::HashSet<_> =
            EventType::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), EventType::ALL.len());
    }

    #[test]
    fn each_refusal_has_its_rfc_8935_code() {
        let h = header();
        assert_eq!(
            code(&h, &with(claims(), "iss", json!("https://evil"))),
            Code::InvalidIssuer
        );
        assert_eq!(
            code(&h, &with(claims(), "iss", Value::Null)),
            Code::InvalidIssuer
        );
        assert_eq!(
            code(&h, &with(claims(), "aud", json!("https://other"))),
            Code::InvalidAudience
        );
        assert!(check(
            &h,
            &with(claims(), "aud", json!(["a", "https://gw.example"]))
        )
        .is_ok());
        assert_eq!(
            code(&h, &with(claims(), "iat", json!(NOW - 301))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "iat", json!(NOW + 61))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "iat", json!("1"))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "jti", Value::Null)),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "jti", json!(""))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "events", json!({}))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "events", json!([]))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "sub_id", Value::Null)),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&h, &with(claims(), "sub_id", json!({"format": "iss_sub"}))),
            Code::InvalidRequest
        );
        assert_eq!(
            code(
                &json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}),
                &claims()
            ),
            Code::InvalidRequest
        );
        assert_eq!(
            code(&json!({"alg": "ES256", "kid": "k1"}), &claims()),
            Code::InvalidRequest
        );
        assert_eq!(
            code(
                &json!({"alg": "ES256", "kid": "k2", "typ": "secevent+jwt"}),
                &claims()
            ),
            Code::InvalidKey
        );
        assert_eq!(
            code(&json!({"alg": "HS256", "typ": "secevent+jwt"}), &claims()),
            Code::InvalidKey
        );
        assert!(check(
            &json!({"alg": "ES256", "typ": "application/SECEVENT+JWT"}),
            &claims()
        )
        .is_ok());
    }

    #[test]
    fn a_wrong_key_unsigned_or_junk_body_is_refused() {
        let (other, _) = key();
        let (_, keys) = key();
        let body = signed(&other, &header(), &claims());
        assert_eq!(
            verify(&body, &keys, &stream(), NOW).unwrap_err().code,
            Code::InvalidKey
        );
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "secevent+jwt"})),
            b64(&claims())
        );
        let e = verify(none.as_bytes(), &keys, &stream(), NOW).unwrap_err();
        assert_eq!(
            (e.code, e.description),
            (Code::InvalidRequest, "unsigned SETs are not accepted")
        );
        for junk in [&b"{\"iss\":1}"[..], b"", b"a.b", b"a.b.c.d", &[0xff; 10]] {
            assert_eq!(
                verify(junk, &keys, &stream(), NOW).unwrap_err().code,
                Code::InvalidRequest
            );
        }
        assert_eq!(
            verify(&vec![b'a'; MAX_SET_BYTES + 1], &keys, &stream(), NOW),
            Err(TOO_LARGE)
        );
    }

    #[test]
    fn claims_that_are_not_json_or_given_twice_are_refused() {
        let (private, keys) = key();
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for payload in [
            "[1]",
            "not json",
            r#"{"iss":"https://idp.example","iss":"x"}"#,
        ] {
            let input = format!("{}.{}", b64(&header().to_string()), b64(payload));
            let sig = sign(&private, Alg::ES256, input.as_bytes());
            let body = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
            let e = verify(body.as_bytes(), &keys, &stream(), NOW).unwrap_err();
            assert_eq!(e.code, Code::InvalidRequest, "{payload}");
        }
    }

    #[test]
    fn the_error_body_has_err_and_description() {
        let body: Value = serde_json::from_str(&REPLAYED.body()).unwrap();
        assert_eq!(
            body,
            json!({"err": "invalid_request", "description": REPLAYED.description})
        );
    }

    #[test]
    fn the_media_type_is_secevent_jwt_with_any_parameters() {
        assert!(media_type_ok(b"application/secevent+jwt"));
        assert!(media_type_ok(b"Application/SecEvent+JWT; charset=utf-8"));
        assert!(!media_type_ok(b"application/json"));
        assert!(!media_type_ok(b"application/secevent+jwtx"));
        assert!(!media_type_ok(b""));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any bytes get an answer, never a panic, and never an accepted SET.
            #[test]
            fn any_bytes_are_refused(body in proptest::collection::vec(any::<u8>(), 0..400)) {
                let (_, keys) = key();
                prop_assert!(verify(&body, &keys, &stream(), NOW).is_err());
            }

            /// A SET with one byte of its signing input changed never verifies.
            #[test]
            fn a_changed_byte_is_refused(at in 0usize..10_000, to in any::<u8>()) {
                let (private, keys) = key();
                let mut body = signed(&private, &header(), &claims());
                let dot = body.iter().rposition(|&b| b == b'.').unwrap();
                let at = at % dot;
                prop_assume!(body[at] != to);
                body[at] = to;
                prop_assert!(verify(&body, &keys, &stream(), NOW).is_err());
            }

            /// Any JSON as the subject gets an answer; an accepted one names
            /// only tags its identifiers' values make.
            #[test]
            fn any_subject_gets_an_answer(sub in "[a-z]{1,8}", fmt in prop::sample::select(
                vec!["iss_sub", "opaque", "email", "jwt_id", "complex", "aliases", "x"])) {
                let id = json!({"format": fmt, "iss": "i", "sub": sub, "id": sub,
                    "email": sub, "jti": sub, "identifiers": [{"format": "opaque", "id": sub}],
                    "user": {"format": "opaque", "id": sub}});
                if let Ok(accepted) = check(&header(), &with(claims(), "sub_id", id)) {
                    for r in accepted.revocations {
                        prop_assert!(Kind::ALL.iter().any(|k| ["i", "https://idp.example", ""]
                            .iter().any(|iss| tag(*k, iss, &sub) == r.tag)));
                    }
                }
            }
        }
    }
}
