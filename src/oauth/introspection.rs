//! What an RFC 7662 introspection answer means for the request that waits on it.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oauth::answer_members::{
    self as members, claim_text, numeric_date, Active, ClaimText, NumericDate,
};
use crate::oauth::cache::key::CacheKey;
use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::claims;
use crate::oauth::cnf::Confirmation;
use crate::oauth::idp_reply::{IdpReply, Transport, MAX_RESPONSE_BYTES};
use crate::oauth::jwt::{self, JwtError, MAX_JWT_BYTES};
use crate::oauth::named_claims::NamedClaims;
use crate::oauth::ssf::Marks;

/// The largest answer in phantom mode: a JWT of up to 64 KiB, possibly
/// wrapped in JSON next to the introspection members.
pub const MAX_PHANTOM_RESPONSE_BYTES: usize = 2 * MAX_JWT_BYTES;

/// The claim paths the configuration asks for beyond the usual members.
#[derive(Debug, Default, Clone)]
pub struct ClaimPaths {
    /// `auth_oauth2_token_claim_set`: kept as variable text.
    pub rendered: Vec<String>,
    /// `auth_oauth2_token_require_claim`: kept as compact JSON for the checks.
    pub checked: Vec<String>,
    /// A Shared Signals receiver checks tokens against its revocation list:
    /// their marks (`oauth/ssf/`) are read too. Without one, nothing of
    /// them is read, kept or decoded.
    pub marks: bool,
}

impl ClaimPaths {
    /// Where the claim at `path` is kept as JSON text for checks, adding it
    /// when no rule asked for it yet.
    pub fn checked_index(&mut self, path: &str) -> usize {
        match self.checked.iter().position(|p| p == path) {
            Some(index) => index,
            None => {
                self.checked.push(path.to_string());
                self.checked.len() - 1
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.rendered.is_empty() && self.checked.is_empty()
    }

    /// Identifies the lists, for cache keys: entries keep claim values by
    /// position, so a reload that changes the lists must not reuse them.
    /// Empty lists add nothing to a key.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut text = Vec::new();
        for list in [&self.rendered, &self.checked] {
            for path in list {
                text.extend_from_slice(path.as_bytes());
                text.push(b'\n');
            }
            text.push(b'\0');
        }
        // Entries kept without marks must not serve a receiver that checks
        // them (one added by a reload): the flag is part of the keys.
        if self.marks {
            text.extend_from_slice(b"marks\0");
        }
        match self.is_empty() && !self.marks {
            true => Vec::new(),
            false => CacheKey::from_parts(&[&text]).0.to_vec(),
        }
    }
}

/// What the module keeps of an active token.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`, `scope` and `client_id`.
    pub named: NamedClaims,
    pub exp: Option<i64>,
    /// The values of the `auth_oauth2_token_claim_set` paths, in their order.
    pub extra: Vec<Option<String>>,
    /// The values of the `auth_oauth2_token_require_claim` paths, as JSON.
    pub checked: Vec<Option<String>>,
    /// The JWT that replaces the client's token upstream (phantom mode);
    /// checked to be a compact JWS, so ASCII, and kept as bytes so that a
    /// cache hit need not check it again.
    pub phantom: Option<Vec<u8>>,
    /// What the token is bound to (`cnf`, RFC 7800): checked on every
    /// request, cache hits included (`oauth/binding.rs`).
    pub cnf: Confirmation,
    /// The token's keys in the revocation list of pushed events, and its
    /// `iat` (`oauth/ssf/`): checked on every request when a receiver is
    /// configured.
    pub marks: Marks,
}

impl TokenClaims {
    pub fn sub(&self) -> Option<&str> {
        self.named.sub()
    }

    pub fn scope(&self) -> Option<&str> {
        self.named.scope()
    }

    pub fn client_id(&self) -> Option<&str> {
        self.named.client_id()
    }
}

/// One per request (in its context) or per cache read: the size of the
/// active variant (the claims, with their binding) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionResult {
    Active(TokenClaims),
    Inactive,
}

/// Why no verdict could be had from the IdP. Each maps to a 5xx the operator
/// can tell apart, and its `Display` is the error-log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpFailure {
    /// No usable answer, as any kind of call may fail.
    #[error("{}", .0.describe("introspection endpoint", "introspection response"))]
    Call(CallFailure),
    #[error("introspection endpoint answered {0}: client credentials rejected")]
    CredentialsRejected(usize),
    #[error("introspection endpoint answered 503: service unavailable")]
    Unavailable,
    #[error("introspection endpoint answered {0}")]
    ErrorStatus(usize),
    #[error("introspection response has no boolean \"active\" member")]
    NoActiveMember,
    #[error("introspection response carries no JWT for the phantom token")]
    NoJwt,
    #[error("introspection response JWT is malformed: {0}")]
    MalformedJwt(#[from] JwtError),
    #[error("introspection response JWT has no \"token_introspection\" object (RFC 9701)")]
    NoTokenIntrospection,
    /// The claim's name only: its value may be personal data.
    #[error("introspection response claim \"{0}\" holds a control character; refused, as it could split a header")]
    UnsafeClaim(String),
}

impl IdpFailure {
    /// The status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            IdpFailure::Call(failure) => failure.status(),
            IdpFailure::Unavailable => 503,
            _ => 502,
        }
    }

    fn from_transport(t: Transport, limit: usize) -> Self {
        IdpFailure::Call(CallFailure::from_transport(t, limit))
    }
}

impl From<CallFailure> for IdpFailure {
    fn from(failure: CallFailure) -> Self {
        IdpFailure::Call(failure)
    }
}

impl KindFailure for IdpFailure {
    fn call(&self) -> Option<&CallFailure> {
        match self {
            IdpFailure::Call(failure) => Some(failure),
            _ => None,
        }
    }

    /// A 503 or another 5xx too; a refusal of the gateway's credentials is
    /// an answer.
    fn allows_stale(&self) -> bool {
        match self {
            IdpFailure::Call(_) | IdpFailure::Unavailable => true,
            IdpFailure::ErrorStatus(status) => *status >= 500,
            _ => false,
        }
    }
}

/// An error status from the IdP, or `Ok` for 200.
fn check_status(status: usize) -> Result<(), IdpFailure> {
    match status {
        200 => Ok(()),
        401 | 403 => Err(IdpFailure::CredentialsRejected(status)),
        503 => Err(IdpFailure::Unavailable),
        status => Err(IdpFailure::ErrorStatus(status)),
    }
}

/// An RFC 7662 JSON answer.
pub fn interpret(
    reply: IdpReply<'_>,
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    header_safe(interpret_json(reply, paths)?, paths)
}

fn interpret_json(
    reply: IdpReply<'_>,
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    reply
        .transport(MAX_RESPONSE_BYTES)
        .map_err(|t| IdpFailure::from_transport(t, MAX_RESPONSE_BYTES))?;
    check_status(reply.status)?;
    match paths.is_empty() {
        true => parse(reply.body, paths.marks),
        false => parse_with_extra(reply.body, paths),
    }
}

/// An answer to a phantom-token introspection, which must carry a JWT when
/// the token is active: `application/token-introspection+jwt` (RFC 9701),
/// `application/jwt` (the JWT itself), or JSON with a `jwt` member. An
/// inactive token is `{"active":false}` or a 204, and never becomes a token.
pub fn interpret_phantom(
    reply: IdpReply<'_>,
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    header_safe(interpret_phantom_answer(reply, paths)?, paths)
}

/// Refuses an answer whose claims could split a header: every claim the
/// module exposes as a variable may end up in `proxy_set_header` or
/// `add_header`, which copy it verbatim. A whole answer is refused (502)
/// rather than one variable left empty, so a backend never sees a request
/// whose identity headers are silently missing.
fn header_safe(
    result: IntrospectionResult,
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    let IntrospectionResult::Active(claims) = &result else {
        return Ok(result);
    };
    match unsafe_claim_name(claims, paths) {
        None => Ok(result),
        Some(name) => Err(IdpFailure::UnsafeClaim(name.to_string())),
    }
}

/// The name of the first exposed claim that could split a header.
fn unsafe_claim_name<'p>(claims: &TokenClaims, paths: &'p ClaimPaths) -> Option<&'p str> {
    Some(match first_unsafe_claim(claims)? {
        i @ 0..=2 => ["sub", "scope", "client_id"][i],
        i => paths.rendered.get(i - 3).map_or("claim", String::as_str),
    })
}

/// The claims of an active token that no IdP answer carried (a JWT access
/// token whose signature the module verified), read as an answer's are and
/// under the same rule: the name of a claim that could split a header is
/// the error.
pub fn verified_claims(
    map: &Map<String, Value>,
    paths: &ClaimPaths,
) -> Result<TokenClaims, String> {
    let claims = claims_of(map, paths);
    match unsafe_claim_name(&claims, paths) {
        None => Ok(claims),
        Some(name) => Err(name.to_string()),
    }
}

/// The position of the first exposed claim that could split a header:
/// `sub`, `scope`, `client_id`, then the `claim_set` values in order.
fn first_unsafe_claim(claims: &TokenClaims) -> Option<usize> {
    claims
        .named
        .all()
        .into_iter()
        .chain(claims.extra.iter().map(Option::as_deref))
        .position(|value| !value.is_none_or(claims::is_header_safe))
}

/// Whether an answer that did not come from the IdP just now (a cached
/// entry another gateway wrote into the Redis tier) passes the checks a
/// fresh answer gets before its claims reach variables and its JWT the
/// upstream's `Authorization`: every exposed claim safe in a header, a
/// phantom JWT a compact JWS with a JSON header and payload.
pub fn fit_for_headers(result: &IntrospectionResult) -> bool {
    let IntrospectionResult::Active(claims) = result else {
        return true;
    };
    first_unsafe_claim(claims).is_none()
        && claims
            .phantom
            .as_deref()
            .is_none_or(|jwt| jwt::claims(jwt).is_ok())
}

fn interpret_phantom_answer(
    reply: IdpReply<'_>,
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    reply
        .transport(MAX_PHANTOM_RESPONSE_BYTES)
        .map_err(|t| IdpFailure::from_transport(t, MAX_PHANTOM_RESPONSE_BYTES))?;
    if reply.status == 204 {
        return Ok(IntrospectionResult::Inactive);
    }
    check_status(reply.status)?;
    let body = reply.body.trim_ascii();
    match reply.media_type().as_str() {
        "application/token-introspection+jwt" => {
            let payload = jwt::payload(body)?;
            if !unambiguous::<Rfc9701Members>(&payload) {
                return Err(JwtError::PayloadNotJson.into());
            }
            let payload: Map<String, Value> =
                serde_json::from_slice(&payload).map_err(|_| JwtError::PayloadNotJson)?;
            let Some(Value::Object(members)) = payload.get("token_introspection") else {
                return Err(IdpFailure::NoTokenIntrospection);
            };
            match members.get("active") {
                Some(Value::Bool(true)) => Ok(phantom_result(members, body, paths)),
                Some(Value::Bool(false)) => Ok(IntrospectionResult::Inactive),
                _ => Err(IdpFailure::NoActiveMember),
            }
        }
        "application/jwt" => Ok(phantom_result(&jwt::claims(body)?, body, paths)),
        _ => {
            let map = deciding_map(body)?;
            let active = match map.get("active") {
                None => None,
                Some(Value::Bool(active)) => Some(*active),
                Some(_) => return Err(IdpFailure::NoActiveMember),
            };
            match (active, map.get("jwt")) {
                (Some(false), _) => Ok(IntrospectionResult::Inactive),
                (_, Some(Value::String(token))) => {
                    let mut result =
                        phantom_result(&jwt::claims(token.as_bytes())?, token.as_bytes(), paths);
                    // The answer's own `exp` bounds the cache entry too.
                    if let IntrospectionResult::Active(claims) = &mut result {
                        let outer = map.get("exp").and_then(numeric_date);
                        claims.exp = match (claims.exp, outer) {
                            (Some(inner), Some(outer)) => Some(inner.min(outer)),
                            (inner, outer) => inner.or(outer),
                        };
                        // The answer speaks for the client's token: its
                        // binding wins over the JWT's.
                        if map.get("cnf").is_some_and(|cnf| !cnf.is_null()) {
                            claims.cnf = Confirmation::of(map.get("cnf"));
                        }
                    }
                    Ok(result)
                }
                (Some(true), _) => Err(IdpFailure::NoJwt),
                (None, _) => Err(IdpFailure::NoActiveMember),
            }
        }
    }
}

/// An active token whose claims are `claims` and whose upstream token is `jwt`
/// (already checked to be a compact JWS, so ASCII).
fn phantom_result(
    claims: &Map<String, Value>,
    jwt: &[u8],
    paths: &ClaimPaths,
) -> IntrospectionResult {
    IntrospectionResult::Active(TokenClaims {
        phantom: Some(jwt.to_vec()),
        ..claims_of(claims, paths)
    })
}

/// The members that decide a verdict. Read into a map, a member given twice
/// silently keeps its last value; serde refuses a struct field given twice,
/// so an answer like `{"active":false,"active":true}` is refused instead.
#[derive(Deserialize)]
struct DecidingMembers {
    #[serde(rename = "active")]
    _active: Option<IgnoredAny>,
    #[serde(rename = "jwt")]
    _jwt: Option<IgnoredAny>,
    // The claims the module exposes: given twice, which one is the token's?
    #[serde(rename = "sub")]
    _sub: Option<IgnoredAny>,
    #[serde(rename = "scope")]
    _scope: Option<IgnoredAny>,
    #[serde(rename = "client_id")]
    _client_id: Option<IgnoredAny>,
    #[serde(rename = "exp")]
    _exp: Option<IgnoredAny>,
    // Given twice, which binding is the token's?
    #[serde(rename = "cnf")]
    _cnf: Option<IgnoredAny>,
    // What the revocation list matches: two `iat`s, and a revocation could
    // be dodged by the one it does not read.
    #[serde(rename = "iss")]
    _iss: Option<IgnoredAny>,
    #[serde(rename = "iat")]
    _iat: Option<IgnoredAny>,
    #[serde(rename = "sid")]
    _sid: Option<IgnoredAny>,
    #[serde(rename = "email")]
    _email: Option<IgnoredAny>,
    #[serde(rename = "jti")]
    _jti: Option<IgnoredAny>,
}

/// The same for an RFC 9701 payload, whose verdict is one level down.
#[derive(Deserialize)]
struct Rfc9701Members {
    #[serde(rename = "token_introspection")]
    _members: Option<DecidingMembers>,
}

/// Whether no deciding member is given twice in the JSON `body`.
fn unambiguous<T: serde::de::DeserializeOwned>(body: &[u8]) -> bool {
    serde_json::from_slice::<T>(body).is_ok()
}

/// The members of a JSON object `body` none of whose deciding members
/// ([`DecidingMembers`]) is given twice, read in one pass.
fn deciding_map(body: &[u8]) -> Result<Map<String, Value>, IdpFailure> {
    members::deciding_map(body).ok_or(IdpFailure::Call(CallFailure::NotJson))
}

/// Only the members the module uses are kept; the rest are skipped unparsed.
/// The usual ones are read as they arrive, without a `Value` in between
/// (the rarer `cnf` and revocation members are read as values). A member
/// given twice is refused, as serde refuses a struct field given twice.
#[derive(Deserialize)]
struct WireResponse {
    active: Option<Active>,
    sub: Option<ClaimText>,
    scope: Option<ClaimText>,
    client_id: Option<ClaimText>,
    exp: Option<NumericDate>,
    cnf: Option<Value>,
    // What the revocation list of pushed events matches (`oauth/ssf/`).
    iss: Option<Value>,
    iat: Option<Value>,
    sid: Option<Value>,
    email: Option<Value>,
    jti: Option<Value>,
}

/// `marks`: read the token's revocation marks too (`ClaimPaths::marks`).
pub fn parse(body: &[u8], marks: bool) -> Result<IntrospectionResult, IdpFailure> {
    // serde reads a struct from a JSON array too (`[true, "alice"]` as
    // active and sub, by position): only an object is an answer.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(IdpFailure::Call(CallFailure::NotJson));
    }
    let wire: WireResponse =
        members::from_json(body).map_err(|_| IdpFailure::Call(CallFailure::NotJson))?;
    match wire.active {
        Some(Active(Some(true))) => {
            // `sub`, `scope` and `client_id` are copied into one allocation.
            let marks = match marks {
                true => Marks::of_members(
                    wire.iss.as_ref(),
                    wire.iat.as_ref(),
                    [
                        wire.sub.as_ref().and_then(ClaimText::as_str),
                        wire.sid.as_ref().and_then(Value::as_str),
                        wire.email.as_ref().and_then(Value::as_str),
                        wire.jti.as_ref().and_then(Value::as_str),
                    ],
                ),
                false => Marks::default(),
            };
            Ok(IntrospectionResult::Active(TokenClaims {
                exp: wire.exp.and_then(|exp| exp.0),
                cnf: Confirmation::of(wire.cnf.as_ref()),
                named: NamedClaims::new(
                    wire.sub.as_ref().and_then(ClaimText::as_text),
                    wire.scope.as_ref().and_then(ClaimText::as_text),
                    wire.client_id.as_ref().and_then(ClaimText::as_text),
                ),
                marks,
                ..TokenClaims::default()
            }))
        }
        Some(Active(Some(false))) => Ok(IntrospectionResult::Inactive),
        _ => Err(IdpFailure::NoActiveMember),
    }
}

/// Like [`parse`], also reading the claims at the configured paths; this
/// needs the whole document, so it is only used when such claims are configured.
pub fn parse_with_extra(
    body: &[u8],
    paths: &ClaimPaths,
) -> Result<IntrospectionResult, IdpFailure> {
    let map = deciding_map(body)?;
    match map.get("active") {
        Some(Value::Bool(true)) => Ok(IntrospectionResult::Active(claims_of(&map, paths))),
        Some(Value::Bool(false)) => Ok(IntrospectionResult::Inactive),
        _ => Err(IdpFailure::NoActiveMember),
    }
}

/// The usual members and the configured paths of a claims object.
fn claims_of(map: &Map<String, Value>, paths: &ClaimPaths) -> TokenClaims {
    TokenClaims {
        named: NamedClaims::new(
            map.get("sub").and_then(claim_text).as_deref(),
            map.get("scope").and_then(claim_text).as_deref(),
            map.get("client_id").and_then(claim_text).as_deref(),
        ),
        exp: map.get("exp").and_then(numeric_date),
        extra: paths
            .rendered
            .iter()
            .map(|path| claims::lookup(map, path).and_then(claims::render))
            .collect(),
        checked: paths
            .checked
            .iter()
            .map(|path| {
                claims::lookup(map, path)
                    .filter(|v| !v.is_null())
                    .map(Value::to_string)
            })
            .collect(),
        phantom: None,
        cnf: Confirmation::of(map.get("cnf")),
        marks: match paths.marks {
            true => Marks::of(map),
            false => Marks::default(),
        },
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
            interpret(R::new(0, 200, body), &ClaimPaths::default()),
            Ok(IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(Some("alice"), Some("read write"), Some("app")),
                exp: Some(1_700_000_000),
                ..TokenClaims::default()
            }))
        );
    }

    #[test]
    fn both_readings_of_an_answer_give_the_same_revocation_marks() {
        let body = br#"{"active":true,"sub":"alice","iss":"https://idp","iat":1700000000,
            "sid":"s1","email":"a@x","jti":"j1","aud":"api"}"#;
        let paths = ClaimPaths {
            rendered: vec!["aud".into()],
            checked: vec![],
            marks: true,
        };
        let fast_paths = ClaimPaths {
            marks: true,
            ..ClaimPaths::default()
        };
        assert_ne!(
            fast_paths.fingerprint(),
            ClaimPaths::default().fingerprint()
        );
        let unmarked = |paths: &ClaimPaths| match interpret(R::new(0, 200, body), paths) {
            Ok(IntrospectionResult::Active(claims)) => claims.marks,
            other => panic!("{other:?}"),
        };
        assert_eq!(unmarked(&ClaimPaths::default()), Marks::default());
        let marks = |paths: &ClaimPaths| match interpret(R::new(0, 200, body), paths) {
            Ok(IntrospectionResult::Active(claims)) => claims.marks,
            other => panic!("{other:?}"),
        };
        let fast = marks(&fast_paths);
        assert_eq!(fast, marks(&paths));
        assert_eq!(fast, Marks::of(&serde_json::from_slice(body).unwrap()));
        assert_eq!(fast.tags().len(), 4);
        assert_eq!(fast.issued_s, Some(1_700_000_000));
    }

    #[test]
    fn configured_claims_are_extracted_in_order() {
        let body = br#"{"active":true,"sub":"alice","aud":["api","web"],"realm_access":{"roles":["admin"]}}"#;
        let wanted = ClaimPaths {
            marks: false,
            rendered: vec!["realm_access.roles".into(), "aud".into(), "missing".into()],
            checked: vec!["aud".into(), "realm_access".into(), "missing".into()],
        };
        let Ok(IntrospectionResult::Active(claims)) = interpret(R::new(0, 200, body), &wanted)
        else {
            panic!()
        };
        assert_eq!(claims.sub(), Some("alice"));
        assert_eq!(
            claims.extra,
            vec![Some("admin".into()), Some("api,web".into()), None]
        );
        assert_eq!(
            claims.checked,
            vec![
                Some(r#"["api","web"]"#.into()),
                Some(r#"{"roles":["admin"]}"#.into()),
                None
            ]
        );
        assert_eq!(
            parse_with_extra(br#"{"active":false}"#, &wanted),
            Ok(IntrospectionResult::Inactive)
        );
        assert_eq!(
            parse_with_extra(br#"{"active":"yes"}"#, &wanted),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(
            parse_with_extra(b"[1]", &wanted),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
    }

    #[test]
    fn claim_lists_have_distinct_fingerprints() {
        let paths = |r: &[&str], c: &[&str]| ClaimPaths {
            marks: false,
            rendered: r.iter().map(|s| s.to_string()).collect(),
            checked: c.iter().map(|s| s.to_string()).collect(),
        };
        assert!(ClaimPaths::default().fingerprint().is_empty());
        let prints = [
            paths(&["a", "b"], &[]).fingerprint(),
            paths(&["b", "a"], &[]).fingerprint(),
            paths(&["a"], &["b"]).fingerprint(),
            paths(&["ab"], &[]).fingerprint(),
        ];
        for (i, a) in prints.iter().enumerate() {
            assert_eq!(a.len(), 32);
            for b in &prints[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(paths(&["a", "b"], &[]).fingerprint(), prints[0]);
    }

    #[test]
    fn absent_and_null_claims_are_none_and_non_strings_become_json_text() {
        let body = br#"{"active":true,"sub":42,"client_id":null,"exp":1.7e9}"#;
        let Ok(IntrospectionResult::Active(claims)) = parse(body, false) else {
            panic!()
        };
        assert_eq!(claims.sub(), Some("42"));
        assert_eq!(claims.client_id(), None);
        assert_eq!(claims.scope(), None);
        assert_eq!(claims.exp, Some(1_700_000_000));
    }

    #[test]
    fn inactive_token() {
        assert_eq!(
            parse(br#"{"active":false}"#, false),
            Ok(IntrospectionResult::Inactive)
        );
    }

    #[test]
    fn active_must_be_a_boolean() {
        assert_eq!(
            parse(br#"{"active":"true"}"#, false),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(
            parse(br#"{"active":1}"#, false),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(
            parse(br#"{"sub":"x"}"#, false),
            Err(IdpFailure::NoActiveMember)
        );
    }

    #[test]
    fn garbage_is_not_json() {
        assert_eq!(
            parse(b"<html>oops</html>", false),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        assert_eq!(
            parse(br#"{"active":tr"#, false),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        assert_eq!(
            parse(br#"[true]"#, false),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        assert_eq!(
            parse(b"", false),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        // Two `active` members are ambiguous: refuse rather than pick one.
        assert_eq!(
            parse(br#"{"active":false,"active":true}"#, false),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let body = vec![b' '; MAX_RESPONSE_BYTES + 1];
        assert_eq!(
            interpret(R::new(0, 200, &body), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::TooLarge(
                MAX_RESPONSE_BYTES + 1,
                MAX_RESPONSE_BYTES
            )))
        );
    }

    #[test]
    fn transport_failures() {
        assert_eq!(
            interpret(R::new(504, 0, b""), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Timeout))
        );
        assert_eq!(
            interpret(R::new(504, 200, b"{"), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Timeout))
        );
        assert_eq!(
            interpret(R::new(502, 0, b""), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Unreachable))
        );
        assert_eq!(
            interpret(R::new(-1, 0, b""), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Unreachable))
        );
        assert_eq!(
            interpret(R::new(502, 200, b"{\"active\":"), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Incomplete))
        );
        assert_eq!(
            interpret(R::new(-1, 200, b""), &ClaimPaths::default()),
            Err(IdpFailure::Call(CallFailure::Incomplete))
        );
    }

    #[test]
    fn idp_error_statuses() {
        assert_eq!(
            interpret(R::new(0, 401, b""), &ClaimPaths::default()),
            Err(IdpFailure::CredentialsRejected(401))
        );
        assert_eq!(
            interpret(R::new(0, 403, b""), &ClaimPaths::default()),
            Err(IdpFailure::CredentialsRejected(403))
        );
        assert_eq!(
            interpret(R::new(0, 503, b""), &ClaimPaths::default()),
            Err(IdpFailure::Unavailable)
        );
        assert_eq!(
            interpret(R::new(0, 500, b""), &ClaimPaths::default()),
            Err(IdpFailure::ErrorStatus(500))
        );
        assert_eq!(
            interpret(R::new(0, 400, b""), &ClaimPaths::default()),
            Err(IdpFailure::ErrorStatus(400))
        );
    }

    #[test]
    fn failure_statuses_are_distinct() {
        assert_eq!(IdpFailure::Call(CallFailure::Timeout).status(), 504);
        assert_eq!(IdpFailure::Unavailable.status(), 503);
        assert_eq!(IdpFailure::Call(CallFailure::NotJson).status(), 502);
        assert_eq!(IdpFailure::CredentialsRejected(401).status(), 502);
    }

    fn phantom(
        status: usize,
        content_type: &str,
        body: &str,
    ) -> Result<IntrospectionResult, IdpFailure> {
        let reply = R::new(0, status, body.as_bytes()).with_content_type(content_type.as_bytes());
        interpret_phantom(reply, &ClaimPaths::default())
    }

    fn jws(payload: &str) -> String {
        crate::oauth::jwt::compact(r#"{"alg":"ES256"}"#, payload, b"signature")
    }

    fn upstream_token(result: Result<IntrospectionResult, IdpFailure>) -> (String, TokenClaims) {
        match result {
            Ok(IntrospectionResult::Active(claims)) => (
                String::from_utf8(claims.phantom.clone().unwrap()).unwrap(),
                claims,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn claims_that_could_split_a_header_refuse_the_answer() {
        let paths = ClaimPaths {
            marks: false,
            rendered: vec!["name".into()],
            checked: vec!["note".into()],
        };
        for bad in [
            "\\r\\nX-Injected: yes",
            "\\r",
            "\\n",
            "\\u0000",
            "\\u007f",
            "\\u001b",
        ] {
            for (claim, expected) in [
                ("sub", "sub"),
                ("scope", "scope"),
                ("client_id", "client_id"),
                ("name", "name"),
            ] {
                let body = format!(r#"{{"active":true,"{claim}":"alice{bad}"}}"#);
                assert_eq!(
                    interpret(R::new(0, 200, body.as_bytes()), &paths),
                    Err(IdpFailure::UnsafeClaim(expected.into())),
                    "{body}"
                );
            }
            // In a JWT's claims (phantom) as well.
            let jwt = jws(&format!(r#"{{"sub":"alice{bad}","exp":4102444800}}"#));
            assert_eq!(
                phantom(200, "application/jwt", &jwt),
                Err(IdpFailure::UnsafeClaim("sub".into()))
            );
        }
        // A tab is allowed; claims kept only as JSON for require_claim are
        // escaped there and never become header text.
        let body = br#"{"active":true,"sub":"al\tice","note":"a\r\nb"}"#;
        let Ok(IntrospectionResult::Active(claims)) = interpret(R::new(0, 200, body), &paths)
        else {
            panic!("refused");
        };
        assert_eq!(claims.sub(), Some("al\tice"));
        assert_eq!(claims.checked, [Some(r#""a\r\nb""#.to_string())]);
        // An inactive answer carries nothing to expose.
        let body = br#"{"active":false,"sub":"a\r\nb"}"#;
        assert_eq!(
            interpret(R::new(0, 200, body), &paths),
            Ok(IntrospectionResult::Inactive)
        );
    }

    #[test]
    fn a_cached_answer_passes_the_checks_a_fresh_one_does() {
        let paths = ClaimPaths {
            marks: false,
            rendered: vec!["tenant".into()],
            checked: vec![],
        };
        let cases = [
            (r#"{"active":true,"sub":"alice","tenant":"a"}"#, true),
            (r#"{"active":true,"sub":"a\r\nb"}"#, false),
            (r#"{"active":true,"scope":"read\u0000"}"#, false),
            (r#"{"active":true,"client_id":"\u007f"}"#, false),
            (r#"{"active":true,"tenant":"a\nb"}"#, false),
            (r#"{"active":false,"sub":"a\r\nb"}"#, true),
        ];
        for (body, ok) in cases {
            let fresh = interpret(R::new(0, 200, body.as_bytes()), &paths);
            assert_eq!(fresh.is_ok(), ok, "{body}");
            let unchecked = interpret_json(R::new(0, 200, body.as_bytes()), &paths);
            assert_eq!(fit_for_headers(&unchecked.unwrap()), ok, "{body}");
        }
    }

    #[test]
    fn only_failures_of_the_idp_allow_stale_answers() {
        for failure in [
            IdpFailure::Call(CallFailure::Timeout),
            IdpFailure::Call(CallFailure::Unreachable),
            IdpFailure::Unavailable,
            IdpFailure::ErrorStatus(500),
            IdpFailure::Call(CallFailure::NotJson),
        ] {
            assert!(failure.allows_stale(), "{failure:?}");
        }
        for failure in [
            IdpFailure::CredentialsRejected(401),
            IdpFailure::ErrorStatus(404),
            IdpFailure::UnsafeClaim("sub".into()),
            IdpFailure::NoActiveMember,
        ] {
            assert!(!failure.allows_stale(), "{failure:?}");
        }
    }

    #[test]
    fn only_an_object_is_an_answer() {
        let paths = ClaimPaths::default();
        for body in [
            &br#"[true,"alice","read","app",1700000000]"#[..],
            b"[true]",
            b" [true]",
            b"true",
            b"\"x\"",
        ] {
            assert_eq!(
                interpret(R::new(0, 200, body), &paths),
                Err(IdpFailure::Call(CallFailure::NotJson)),
                "{body:?}"
            );
        }
    }

    // Found by the fuzz target (fuzz/regressions/introspection/*-skipped-member,
    // duplicate-jwt-plain-answer): without claim paths the members nobody reads
    // are skipped, not validated; with them the whole answer becomes JSON values,
    // which refuses these. Neither changes `active` or an exposed claim.
    #[test]
    fn members_nobody_reads_are_checked_only_with_claim_paths() {
        let with_claims = ClaimPaths {
            marks: false,
            rendered: vec!["x".into()],
            checked: vec![],
        };
        for body in [
            &b"{\"active\":true,\"sub\":\"alice\",\"y\":\"\xff\"}"[..],
            br#"{"active":true,"sub":"alice","y":"\ud800"}"#,
            br#"{"active":true,"sub":"alice","y":1e999}"#,
            br#"{"active":true,"sub":"alice","jwt":"a","jwt":"b"}"#,
        ] {
            match interpret(R::new(0, 200, body), &ClaimPaths::default()) {
                Ok(IntrospectionResult::Active(claims)) => {
                    assert_eq!(claims.sub(), Some("alice"), "{body:?}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
            assert_eq!(
                interpret(R::new(0, 200, body), &with_claims),
                Err(IdpFailure::Call(CallFailure::NotJson)),
                "{body:?}"
            );
        }
    }

    #[test]
    fn an_exposed_claim_given_twice_is_refused_on_every_path() {
        let with_claims = ClaimPaths {
            marks: false,
            rendered: vec!["x".into()],
            checked: vec![],
        };
        for body in [
            &br#"{"active":true,"sub":"alice","sub":"mallory"}"#[..],
            br#"{"active":true,"exp":1,"exp":4102444800}"#,
            br#"{"active":true,"scope":"a","scope":"admin"}"#,
        ] {
            assert_eq!(
                interpret(R::new(0, 200, body), &ClaimPaths::default()),
                Err(IdpFailure::Call(CallFailure::NotJson))
            );
            assert_eq!(
                interpret(R::new(0, 200, body), &with_claims),
                Err(IdpFailure::Call(CallFailure::NotJson))
            );
        }
    }

    #[test]
    fn phantom_raw_jwt() {
        let jwt = jws(r#"{"sub":"alice","scope":"read","exp":1700000000}"#);
        let (token, claims) = upstream_token(phantom(200, "application/jwt", &format!("{jwt}\n")));
        assert_eq!(token, jwt);
        assert_eq!(claims.sub(), Some("alice"));
        assert_eq!(claims.exp, Some(1_700_000_000));
        // Parameters and case of the media type do not matter.
        let (token, _) = upstream_token(phantom(200, "Application/JWT; charset=utf-8", &jwt));
        assert_eq!(token, jwt);
    }

    #[test]
    fn phantom_json_with_jwt_member_takes_the_jwt_claims() {
        let jwt = jws(r#"{"sub":"from-jwt","scope":"a b"}"#);
        let body = format!(r#"{{"active":true,"sub":"from-json","jwt":"{jwt}"}}"#);
        let (token, claims) = upstream_token(phantom(200, "application/json", &body));
        assert_eq!(token, jwt);
        assert_eq!(claims.sub(), Some("from-jwt"));
        assert_eq!(claims.scope(), Some("a b"));
    }

    #[test]
    fn phantom_rfc9701_answer() {
        let jwt = jws(
            r#"{"iss":"idp","token_introspection":{"active":true,"sub":"alice","exp":1700000000}}"#,
        );
        let (token, claims) =
            upstream_token(phantom(200, "application/token-introspection+jwt", &jwt));
        assert_eq!(token, jwt);
        assert_eq!(claims.sub(), Some("alice"));
        let inactive = jws(r#"{"token_introspection":{"active":false}}"#);
        assert_eq!(
            phantom(200, "application/token-introspection+jwt", &inactive),
            Ok(IntrospectionResult::Inactive)
        );
        let missing = jws(r#"{"sub":"alice"}"#);
        assert_eq!(
            phantom(200, "application/token-introspection+jwt", &missing),
            Err(IdpFailure::NoTokenIntrospection)
        );
    }

    #[test]
    fn phantom_inactive_answers_never_become_tokens() {
        for (status, body) in [
            (200, r#"{"active":false}"#),
            (200, r#"{"active":false,"jwt":"x.y.z"}"#),
            (204, ""),
        ] {
            assert_eq!(
                phantom(status, "application/json", body),
                Ok(IntrospectionResult::Inactive),
                "{body}"
            );
        }
    }

    #[test]
    fn phantom_answers_without_a_usable_jwt_are_failures() {
        assert_eq!(
            phantom(200, "application/json", r#"{"active":true}"#),
            Err(IdpFailure::NoJwt)
        );
        assert_eq!(
            phantom(200, "application/json", r#"{"sub":"x"}"#),
            Err(IdpFailure::NoActiveMember)
        );
        assert_eq!(
            phantom(200, "application/json", "<html>"),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        assert_eq!(
            phantom(200, "application/jwt", r#"{"active":true}"#),
            Err(IdpFailure::MalformedJwt(JwtError::NotThreeParts))
        );
        assert_eq!(
            phantom(
                200,
                "application/json",
                r#"{"active":true,"jwt":"e30.e30.c2ln"}"#
            ),
            Err(IdpFailure::MalformedJwt(JwtError::BadHeader))
        );
        assert_eq!(
            phantom(401, "application/jwt", ""),
            Err(IdpFailure::CredentialsRejected(401))
        );
        assert_eq!(IdpFailure::NoJwt.status(), 502);
    }

    #[test]
    fn a_deciding_member_given_twice_is_refused_on_every_path() {
        let twice = r#"{"active":false,"active":true}"#;
        let paths = ClaimPaths {
            marks: false,
            rendered: vec!["sub".into()],
            checked: Vec::new(),
        };
        assert_eq!(
            interpret(R::new(0, 200, twice.as_bytes()), &paths),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        assert_eq!(
            phantom(200, "application/json", twice),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        let jwt = jws(r#"{"sub":"a"}"#);
        let two_jwts = format!(r#"{{"active":true,"jwt":"{jwt}","jwt":"{jwt}"}}"#);
        assert_eq!(
            phantom(200, "application/json", &two_jwts),
            Err(IdpFailure::Call(CallFailure::NotJson))
        );
        // The members the revocation list matches, with claim paths or not
        // (the fuzz target found these read on one path only).
        for member in ["iss", "iat", "sid", "email", "jti"] {
            let twice = format!(r#"{{"active":true,"{member}":"a","{member}":"b"}}"#);
            for paths in [ClaimPaths::default(), paths.clone()] {
                assert_eq!(
                    interpret(R::new(0, 200, twice.as_bytes()), &paths),
                    Err(IdpFailure::Call(CallFailure::NotJson)),
                    "{member} twice"
                );
            }
        }
        let rfc9701 = jws(r#"{"token_introspection":{"active":false,"active":true}}"#);
        assert_eq!(
            phantom(200, "application/token-introspection+jwt", &rfc9701),
            Err(IdpFailure::MalformedJwt(JwtError::PayloadNotJson))
        );
    }

    #[test]
    fn the_answer_exp_bounds_a_phantom_jwt_without_one() {
        let no_exp = jws(r#"{"sub":"a"}"#);
        let body = format!(r#"{{"active":true,"exp":1700000000,"jwt":"{no_exp}"}}"#);
        let (_, claims) = upstream_token(phantom(200, "application/json", &body));
        assert_eq!(claims.exp, Some(1_700_000_000));
        let later = jws(r#"{"sub":"a","exp":1800000000}"#);
        let body = format!(r#"{{"active":true,"exp":1700000000,"jwt":"{later}"}}"#);
        let (_, claims) = upstream_token(phantom(200, "application/json", &body));
        assert_eq!(claims.exp, Some(1_700_000_000));
    }

    #[test]
    fn phantom_answers_may_be_larger_than_json_ones() {
        let pad = "x".repeat(48_000);
        let jwt = jws(&format!(r#"{{"sub":"alice","pad":"{pad}"}}"#));
        let body = format!(r#"{{"active":true,"jwt":"{jwt}","pad":"{pad}"}}"#);
        assert!(body.len() > MAX_RESPONSE_BYTES);
        let (token, _) = upstream_token(phantom(200, "application/json", &body));
        assert_eq!(token.len(), jwt.len());
    }

    #[test]
    fn the_binding_is_read_on_every_path_and_given_once() {
        let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let body = format!(r#"{{"active":true,"sub":"a","cnf":{{"jkt":"{jkt}"}}}}"#);
        let digest = crate::oauth::cnf::sha256_b64u(jkt).unwrap();
        let paths = ClaimPaths {
            marks: false,
            rendered: vec!["sub".into()],
            checked: vec![],
        };
        for result in [
            interpret(R::new(0, 200, body.as_bytes()), &ClaimPaths::default()),
            interpret(R::new(0, 200, body.as_bytes()), &paths),
        ] {
            let Ok(IntrospectionResult::Active(claims)) = result else {
                panic!("{result:?}")
            };
            assert_eq!(claims.cnf.jkt(), Some(&digest));
        }
        let twice = format!(r#"{{"active":true,"cnf":{{"jkt":"{jkt}"}},"cnf":null}}"#);
        for paths in [&ClaimPaths::default(), &paths] {
            assert!(interpret(R::new(0, 200, twice.as_bytes()), paths).is_err());
        }
        let odd = br#"{"active":true,"cnf":{"jkt":"short"}}"#;
        let Ok(IntrospectionResult::Active(claims)) = parse(odd, false) else {
            panic!()
        };
        assert_eq!(claims.cnf, Confirmation::Unverifiable);
    }

    /// A verified JWT access token's claims carry its binding as an
    /// answer's do (RFC 9449 §6.1, RFC 8705 §3.1: `cnf` in the JWT).
    #[test]
    fn a_verified_jwts_binding_is_read() {
        let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let map: Map<String, Value> =
            serde_json::from_str(&format!(r#"{{"sub":"a","cnf":{{"x5t#S256":"{jkt}"}}}}"#))
                .unwrap();
        let claims = verified_claims(&map, &ClaimPaths::default()).unwrap();
        assert_eq!(
            claims.cnf.x5t_s256(),
            crate::oauth::cnf::sha256_b64u(jkt).as_ref()
        );
        let map: Map<String, Value> = serde_json::from_str(r#"{"sub":"a"}"#).unwrap();
        let claims = verified_claims(&map, &ClaimPaths::default()).unwrap();
        assert_eq!(claims.cnf, Confirmation::Unbound);
    }

    /// A phantom answer with a `jwt` member: the answer's `cnf` binds the
    /// client's token, whatever the JWT for the upstream says.
    #[test]
    fn a_phantom_answers_binding_is_the_answers() {
        let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let jwt = crate::oauth::jwt::compact(r#"{"alg":"ES256"}"#, r#"{"sub":"a"}"#, b"sig");
        let body = format!(r#"{{"active":true,"jwt":"{jwt}","cnf":{{"jkt":"{jkt}"}}}}"#);
        let reply = IdpReply::new(0, 200, body.as_bytes()).with_content_type(b"application/json");
        let Ok(IntrospectionResult::Active(claims)) =
            interpret_phantom(reply, &ClaimPaths::default())
        else {
            panic!()
        };
        assert_eq!(
            claims.cnf.jkt(),
            crate::oauth::cnf::sha256_b64u(jkt).as_ref()
        );
        assert!(claims.phantom.is_some());
    }

    /// The readings before the one-pass parsers, kept as their oracle: every
    /// member a `Value`, converted afterwards; with claim paths, the answer
    /// read as a map and again as [`DecidingMembers`].
    mod oracle {
        use super::*;

        #[derive(Deserialize)]
        struct WireValues {
            active: Option<Value>,
            sub: Option<Value>,
            scope: Option<Value>,
            client_id: Option<Value>,
            exp: Option<Value>,
            cnf: Option<Value>,
            iss: Option<Value>,
            iat: Option<Value>,
            sid: Option<Value>,
            email: Option<Value>,
            jti: Option<Value>,
        }

        fn text(value: Value) -> Option<String> {
            match value {
                Value::String(s) => Some(s),
                other => claim_text(&other),
            }
        }

        pub fn parse(body: &[u8], marks: bool) -> Result<IntrospectionResult, IdpFailure> {
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(IdpFailure::Call(CallFailure::NotJson));
            }
            let wire: WireValues =
                serde_json::from_slice(body).map_err(|_| IdpFailure::Call(CallFailure::NotJson))?;
            match wire.active {
                Some(Value::Bool(true)) => Ok(IntrospectionResult::Active(TokenClaims {
                    marks: match marks {
                        true => Marks::of_members(
                            wire.iss.as_ref(),
                            wire.iat.as_ref(),
                            [&wire.sub, &wire.sid, &wire.email, &wire.jti]
                                .map(|v| v.as_ref().and_then(Value::as_str)),
                        ),
                        false => Marks::default(),
                    },
                    exp: wire.exp.as_ref().and_then(numeric_date),
                    cnf: Confirmation::of(wire.cnf.as_ref()),
                    named: NamedClaims::new(
                        wire.sub.and_then(text).as_deref(),
                        wire.scope.and_then(text).as_deref(),
                        wire.client_id.and_then(text).as_deref(),
                    ),
                    ..TokenClaims::default()
                })),
                Some(Value::Bool(false)) => Ok(IntrospectionResult::Inactive),
                _ => Err(IdpFailure::NoActiveMember),
            }
        }

        pub fn deciding_map(body: &[u8]) -> Option<Map<String, Value>> {
            let map: Map<String, Value> = serde_json::from_slice(body).ok()?;
            unambiguous::<DecidingMembers>(body).then_some(map)
        }
    }

    /// Member names: every deciding one, one spelled with an escape, others.
    const NAMES: [&str; 17] = [
        "active",
        "jwt",
        "sub",
        "scope",
        "client_id",
        "exp",
        "cnf",
        "iss",
        "iat",
        "sid",
        "email",
        "jti",
        "act\\u0069ve",
        "s\\u0075b",
        "aud",
        "$serde_json::private::RawValue",
        "x",
    ];

    /// Member values, the hostile ones included.
    const VALUES: [&[u8]; 34] = [
        b"true",
        b"false",
        b"null",
        b"0",
        b"-1",
        b"1700000000",
        b"1.7e9",
        b"-2.5",
        b"1e999",
        b"18446744073709551615",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"\"alice\"",
        b"\"\"",
        b"\"1700000000\"",
        b"\"-5\"",
        b"\"1.5\"",
        b"\"a\\r\\nb\"",
        b"\"\\u00e9\\ud83d\\ude00\"",
        b"\"\\ud800\"",
        b"\"\\u0000\"",
        b"\"\xff\"",
        b"\"\xc3\xa9\"",
        b"[]",
        b"[1,\"a\",null,{\"b\":[true]}]",
        b"{}",
        b"{\"b\":1,\"a\":2,\"b\":3}",
        b"{\"jkt\":\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\"}",
        b"{\"jkt\":\"a\",\"jkt\":\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\"}",
        b"{\"x5t#S256\":1}",
        b"{\"$serde_json::private::RawValue\":\"[1]\"}",
        b"{\"$serde_json::private::RawValue\":1}",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        b"tru",
    ];

    /// An answer of the given members, then damaged by `cut` bytes from its
    /// end and a `prefix` (none, whitespace, an array's bracket).
    fn answer(members: &[(usize, usize)], cut: usize, prefix: usize) -> Vec<u8> {
        let mut body = [&b""[..], b" \n", b"["][prefix].to_vec();
        body.push(b'{');
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(format!("\"{}\":", NAMES[*name]).as_bytes());
            body.extend_from_slice(VALUES[*value]);
        }
        body.push(b'}');
        body.truncate(body.len().saturating_sub(cut));
        body
    }

    fn members() -> impl proptest::strategy::Strategy<Value = Vec<(usize, usize)>> {
        use proptest::prelude::*;
        // Mostly an `active` first, so that most answers get past it.
        (
            prop_oneof![Just(0usize), Just(1), Just(2)],
            proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..8),
        )
            .prop_map(|(active, mut rest)| {
                if active < 2 {
                    rest.insert(0, (0, active));
                }
                rest
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn one_pass_parsing_reads_answers_as_the_value_readings_did(
            members in members(),
            cut in proptest::prelude::prop_oneof![
                6 => proptest::prelude::Just(0usize),
                1 => 1usize..4,
            ],
            prefix in proptest::prelude::prop_oneof![
                8 => proptest::prelude::Just(0usize),
                1 => 1usize..3,
            ],
        ) {
            let body = answer(&members, cut, prefix);
            for marks in [false, true] {
                proptest::prop_assert_eq!(parse(&body, marks), oracle::parse(&body, marks));
            }
            proptest::prop_assert_eq!(deciding_map(&body).ok(), oracle::deciding_map(&body));
        }

        #[test]
        fn one_pass_parsing_reads_any_bytes_as_the_value_readings_did(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            for marks in [false, true] {
                proptest::prop_assert_eq!(parse(&body, marks), oracle::parse(&body, marks));
            }
            proptest::prop_assert_eq!(deciding_map(&body).ok(), oracle::deciding_map(&body));
        }
    }

    #[test]
    fn the_deciding_names_are_the_deciding_members() {
        for name in NAMES.iter().take(12) {
            let twice = format!(r#"{{"{name}":1,"{name}":1}}"#);
            assert!(members::DECIDING.contains(name));
            assert!(!unambiguous::<DecidingMembers>(twice.as_bytes()), "{name}");
            assert_eq!(
                deciding_map(twice.as_bytes()),
                Err(IdpFailure::Call(CallFailure::NotJson))
            );
        }
        assert_eq!(members::DECIDING.len(), 12);
        let twice = br#"{"aud":1,"aud":2}"#;
        assert!(unambiguous::<DecidingMembers>(twice));
        assert_eq!(deciding_map(twice).map(|m| m["aud"].clone()), Ok(2.into()));
    }

    #[test]
    fn one_pass_parsing_reads_edge_answers_as_the_value_readings_did() {
        for body in [
            &b"null"[..],
            b"{}",
            b"[]",
            b"{\"active\":true}  ",
            b"{\"active\":true} x",
            b"{\"active\":true,}",
            b"{\"active\":true,\"sub\":{\"$serde_json::private::RawValue\":\"[1,2]\"}}",
            b"{\"active\":true,\"exp\":\"12\\u0033\"}",
            b"{\"active\":true,\"scope\":\"a\\\"b\"}",
            b"{\"active\":true,\"sub\":1e308,\"exp\":-1e308,\"client_id\":-0.0}",
        ] {
            for marks in [false, true] {
                assert_eq!(parse(body, marks), oracle::parse(body, marks), "{body:?}");
            }
            assert_eq!(
                deciding_map(body).ok(),
                oracle::deciding_map(body),
                "{body:?}"
            );
        }
    }
}
