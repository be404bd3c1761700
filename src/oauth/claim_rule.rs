//! The `auth_oauth2_token_require_claim CLAIM TYPE VALUE ...;` directive: a
//! requirement on one claim of the token introspection answer.
//!
//! CLAIM is a dotted path into the introspection JSON object
//! ("resource_access.account.roles"); TYPE says how the claim's value is
//! compared with the VALUEs. For `string`, `integer` and `boolean` the values
//! are alternatives (any one matches); for `array` and `delimited` the claim
//! must contain every value. Matching is case-sensitive except for the
//! boolean words, and an absent or null claim never meets a rule.

use serde_json::Value;

/// How a claim's value is compared with the rule's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimType {
    String,
    Integer,
    Boolean,
    Array,
    Delimited,
}

/// The rule's values, parsed once at configuration time so that requests
/// never re-parse them; the variant also records how they are compared.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    AnyText(Vec<String>),
    AnyInteger(Vec<i64>),
    AnyBoolean(Vec<bool>),
    AllElements(Vec<String>),
    AllWords(Vec<String>),
}

/// One `auth_oauth2_token_require_claim` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    path: String,
    expected: Expected,
}

/// One `auth_oauth2_token_require_claim`, with where its claim's value is
/// kept in a token's claims (`TokenClaims::checked`).
#[derive(Debug, Clone)]
pub struct ClaimCheck {
    pub rule: ClaimRule,
    pub index: usize,
}

impl ClaimRule {
    /// Parses the directive's arguments after its name: CLAIM TYPE VALUE...
    ///
    /// Errors do not name the directive: the caller prefixes it.
    pub fn parse(args: &[&[u8]]) -> Result<ClaimRule, String> {
        let (path, claim_type, values) = match args {
            [path, claim_type, values @ ..] if !values.is_empty() => (path, claim_type, values),
            _ => return Err("needs a claim, a type and at least one value".into()),
        };
        let path = parse_path(path)?;
        let claim_type = parse_type(claim_type)?;
        let texts = values
            .iter()
            .map(|value| parse_value(value))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = match claim_type {
            ClaimType::String => Expected::AnyText(texts),
            ClaimType::Array => Expected::AllElements(texts),
            // A value is itself a space-delimited list, as NGINX ACM's
            // introspection policies write it: "openid profile email" asks
            // for all three words.
            ClaimType::Delimited => Expected::AllWords(
                texts
                    .iter()
                    .flat_map(|text| text.split(' ').filter(|w| !w.is_empty()))
                    .map(str::to_owned)
                    .collect(),
            ),
            ClaimType::Integer => Expected::AnyInteger(parse_each(&texts, parse_integer)?),
            ClaimType::Boolean => Expected::AnyBoolean(parse_each(&texts, parse_boolean)?),
        };
        Ok(ClaimRule { path, expected })
    }

    /// The dotted path of the claim, so the caller knows what to extract.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn claim_type(&self) -> ClaimType {
        match self.expected {
            Expected::AnyText(_) => ClaimType::String,
            Expected::AnyInteger(_) => ClaimType::Integer,
            Expected::AnyBoolean(_) => ClaimType::Boolean,
            Expected::AllElements(_) => ClaimType::Array,
            Expected::AllWords(_) => ClaimType::Delimited,
        }
    }

    /// Whether the claim's value satisfies the rule; `None` = claim absent.
    pub fn is_met_by(&self, claim: Option<&Value>) -> bool {
        let Some(claim) = claim else {
            return false;
        };
        match (&self.expected, claim) {
            (Expected::AnyText(values), Value::String(text)) => values.contains(text),
            (Expected::AnyText(values), Value::Array(elements)) => elements
                .iter()
                .any(|e| matches!(e, Value::String(text) if values.contains(text))),
            (Expected::AnyInteger(values), _) => {
                claim_as_integer(claim).is_some_and(|number| values.contains(&number))
            }
            (Expected::AnyBoolean(values), _) => {
                claim_as_bool(claim).is_some_and(|flag| values.contains(&flag))
            }
            (Expected::AllElements(values), Value::Array(elements)) => values
                .iter()
                .all(|value| elements.iter().any(|e| element_equals(e, value))),
            (Expected::AllWords(values), Value::String(text)) => {
                let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
                values.iter().all(|value| words.contains(&value.as_str()))
            }
            _ => false,
        }
    }

    /// The same, from the compact JSON text of the value, as kept in the
    /// cache (unparseable text = not met).
    pub fn is_met_by_json(&self, claim: Option<&str>) -> bool {
        let value = claim.and_then(|text| serde_json::from_str::<Value>(text).ok());
        self.is_met_by(value.as_ref())
    }
}

fn parse_path(path: &[u8]) -> Result<String, String> {
    let shown = String::from_utf8_lossy(path);
    let invalid = || format!("has an invalid claim path \"{shown}\"");
    let path = std::str::from_utf8(path).map_err(|_| invalid())?;
    if path.split('.').any(str::is_empty) || path.chars().any(char::is_whitespace) {
        return Err(invalid());
    }
    Ok(path.to_owned())
}

fn parse_type(claim_type: &[u8]) -> Result<ClaimType, String> {
    match claim_type {
        b"string" => Ok(ClaimType::String),
        b"integer" => Ok(ClaimType::Integer),
        b"boolean" => Ok(ClaimType::Boolean),
        b"array" => Ok(ClaimType::Array),
        b"delimited" => Ok(ClaimType::Delimited),
        _ => Err(format!(
            "has an unknown claim type \"{}\": use string, integer, boolean, array or delimited",
            String::from_utf8_lossy(claim_type)
        )),
    }
}

fn parse_value(value: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(value) {
        Ok("") => Err("has an empty value".into()),
        Ok(value) => Ok(value.to_owned()),
        Err(_) => Err("has a value that is not valid UTF-8".into()),
    }
}

fn parse_each<T>(texts: &[String], parse: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    texts.iter().map(|text| parse(text)).collect()
}

fn parse_integer(text: &str) -> Result<i64, String> {
    text.parse()
        .map_err(|_| format!("has an invalid integer value \"{text}\""))
}

fn parse_boolean(text: &str) -> Result<bool, String> {
    bool_word(text)
        .ok_or_else(|| format!("has an invalid boolean value \"{text}\": use true or false"))
}

/// The boolean words are the one place where case does not matter.
fn bool_word(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Array elements may be numbers or booleans; those match by their JSON text.
fn element_equals(element: &Value, value: &str) -> bool {
    match element {
        Value::String(text) => text == value,
        Value::Number(number) => number.to_string() == value,
        Value::Bool(flag) => value.parse() == Ok(*flag),
        _ => false,
    }
}

/// Some servers send integers as strings; only the canonical decimal form
/// counts, so "042" or " 42" cannot slip past a rule by accident.
fn claim_as_integer(claim: &Value) -> Option<i64> {
    match claim {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text
            .parse::<i64>()
            .ok()
            .filter(|number| number.to_string() == *text),
        _ => None,
    }
}

fn claim_as_bool(claim: &Value) -> Option<bool> {
    match claim {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => bool_word(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(args: &[&str]) -> ClaimRule {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        ClaimRule::parse(&args).unwrap()
    }

    /// Checks claims given as compact JSON text, as the cache holds them.
    fn check(args: &[&str], met: &[&str], not_met: &[&str]) {
        let rule = rule(args);
        for json in met {
            assert!(rule.is_met_by_json(Some(json)), "{args:?} {json}");
        }
        for json in not_met {
            assert!(!rule.is_met_by_json(Some(json)), "{args:?} {json}");
        }
        assert!(!rule.is_met_by_json(None));
        assert!(!rule.is_met_by(None));
    }

    #[test]
    fn keeps_path_and_type() {
        let r = rule(&["resource_access.account.roles", "array", "admin"]);
        assert_eq!(r.path(), "resource_access.account.roles");
        assert_eq!(r.claim_type(), ClaimType::Array);
    }

    #[test]
    fn rejects_bad_arguments() {
        let error = |args: &[&[u8]]| ClaimRule::parse(args).unwrap_err();
        let missing = "needs a claim, a type and at least one value";
        assert_eq!(error(&[]), missing);
        assert_eq!(error(&[b"sub", b"string"]), missing);
        for path in [&b""[..], b".a", b"a.", b"a..b", b"a b", b"a\tb", b"\xff"] {
            assert!(error(&[path, b"string", b"x"]).starts_with("has an invalid claim path \""));
        }
        assert!(error(&[b"a..b", b"string", b"x"]).ends_with("path \"a..b\""));
        let unknown = "has an unknown claim type \"String\": use string, integer, boolean, array or delimited";
        assert_eq!(error(&[b"sub", b"String", b"x"]), unknown);
        assert_eq!(error(&[b"sub", b"string", b"a", b""]), "has an empty value");
        assert!(error(&[b"sub", b"string", b"\xff"]).contains("not valid UTF-8"));
        assert_eq!(
            error(&[b"n", b"integer", b"1.5"]),
            "has an invalid integer value \"1.5\""
        );
        assert!(error(&[b"b", b"boolean", b"yes"]).ends_with("\"yes\": use true or false"));
    }

    #[test]
    fn string_matches_any_value_in_string_or_array() {
        let met = [r#""bob""#, r#"["carol","alice"]"#];
        let not_met = [r#""Alice""#, r#"["carol"]"#, "42", "null", "bob"];
        check(&["sub", "string", "alice", "bob"], &met, &not_met);
    }

    #[test]
    fn integer_matches_numbers_and_canonical_strings() {
        let met = ["42", "-7", r#""42""#, r#""-7""#];
        let not_met = [
            "43", "42.0", "42.5", r#""042""#, r#"" 42""#, r#""+42""#, "[42]",
        ];
        check(&["level", "integer", "42", "-7"], &met, &not_met);
    }

    #[test]
    fn boolean_matches_bools_and_words() {
        let met = ["true", r#""true""#, r#""True""#];
        let not_met = ["false", r#""false""#, "1", r#""yes""#];
        check(&["email_verified", "boolean", "TRUE"], &met, &not_met);
        check(&["b", "boolean", "false"], &[r#""FALSE""#], &["true"]);
    }

    #[test]
    fn array_needs_every_value() {
        let met = [r#"["x",true,7,"admin"]"#, r#"["true","7","admin"]"#];
        let not_met = [r#"["admin",7]"#, r#"["Admin",7,true]"#, r#""admin 7 true""#];
        check(&["roles", "array", "admin", "7", "true"], &met, &not_met);
    }

    #[test]
    fn delimited_needs_every_word() {
        let met = [r#""read  openid write ""#, r#""write read""#];
        let not_met = [
            r#""read openid""#,
            r#""read Write""#,
            r#""readwrite""#,
            r#"["read","write"]"#,
        ];
        check(&["scope", "delimited", "write", "read"], &met, &not_met);
    }

    #[test]
    fn a_delimited_value_is_itself_a_list_of_words() {
        let rule = ClaimRule::parse(&[b"scope", b"delimited", b"openid profile email"]).unwrap();
        let met = |claim: &str| rule.is_met_by_json(Some(claim));
        assert!(met(r#""openid email profile""#));
        assert!(met(r#""openid profile email account""#));
        assert!(!met(r#""openid profile""#));
        assert!(
            !met(r#"["openid","profile","email"]"#),
            "the array form is not a delimited claim"
        );
        let split =
            ClaimRule::parse(&[b"scope", b"delimited", b"openid", b"profile email"]).unwrap();
        assert_eq!(
            split, rule,
            "the same words, however they are split into arguments"
        );
    }
}
