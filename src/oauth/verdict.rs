//! What a location asks of a token the IdP called active, checked in a fixed
//! order: the audience (`require_audience`, then the resource of
//! `require_resource`), the required scopes, then the
//! `auth_oauth2_token_require` rules, then the required claims, then the
//! user's authentication (RFC 9470 step-up: a token otherwise fine). The
//! first that fails decides the answer.

use crate::oauth::claim_rule::ClaimCheck;
use crate::oauth::introspection::TokenClaims;
use crate::oauth::resource::aud_names_resource;
use crate::oauth::scope;
use crate::oauth::step_up::{self, AcrRule, AgeRule, Shortfall};

/// The step-up rules of a location (`auth_oauth2_token_require_acr`,
/// `auth_oauth2_token_max_auth_age`) and the clock they are checked with.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepUpRules<'a> {
    pub acr: Option<&'a AcrRule>,
    pub age: Option<&'a AgeRule>,
    /// Seconds since the epoch.
    pub now_s: i64,
}

/// `auth_oauth2_token_require_audience`: the token's `aud` (a string or an
/// array of strings, RFC 7662 §2.2 / RFC 9068 §4) must name one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRule {
    pub accepted: Vec<String>,
    /// Where `aud` is kept, as JSON text, in `TokenClaims::checked`.
    pub index: usize,
}

impl AudienceRule {
    /// Whether `aud`, as compact JSON (`None` when absent), names an accepted audience.
    pub fn is_met_by_json(&self, aud: Option<&str>) -> bool {
        let accepted = |value: &serde_json::Value| {
            value
                .as_str()
                .is_some_and(|aud| self.accepted.iter().any(|a| a == aud))
        };
        match aud.and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok()) {
            Some(serde_json::Value::Array(values)) => values.iter().any(accepted),
            Some(value) => accepted(&value),
            None => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'c, R> {
    Pass,
    /// The token was not issued for this resource (401 `invalid_token`).
    WrongAudience,
    /// The token lacks a required scope (403 `insufficient_scope`).
    MissingScope,
    /// An `auth_oauth2_token_require` rule does not hold: what the caller
    /// made of it (the rules read nginx variables, so the caller checks them).
    Unmet(R),
    /// A required claim does not meet its rule; the claim's path, for the
    /// log (its value may be personal data).
    Claim(&'c str),
    /// The user's authentication is too weak or too old (401
    /// `insufficient_user_authentication`, RFC 9470).
    StepUp(Shortfall),
}

/// Checks `claims` against a location's requirements. `unmet_requirement` is
/// asked only when the scopes are there, as its rules may read variables
/// that only make sense for a token with the right scopes.
pub fn check<'c, R>(
    claims: &TokenClaims,
    audience: Option<&AudienceRule>,
    resource: Option<(&[u8], usize)>,
    required_scopes: &[String],
    required_claims: &'c [ClaimCheck],
    step_up: &StepUpRules<'_>,
    unmet_requirement: impl FnOnce() -> Option<R>,
) -> Verdict<'c, R> {
    let checked = |index: usize| claims.checked.get(index).and_then(Option::as_deref);
    if audience.is_some_and(|rule| !rule.is_met_by_json(checked(rule.index))) {
        return Verdict::WrongAudience;
    }
    if resource.is_some_and(|(url, index)| !aud_names_resource(checked(index), url)) {
        return Verdict::WrongAudience;
    }
    if !required_scopes.is_empty() && !scope::grants_all(claims.scope(), required_scopes) {
        return Verdict::MissingScope;
    }
    if let Some(unmet) = unmet_requirement() {
        return Verdict::Unmet(unmet);
    }
    if let Some(failed) = required_claims
        .iter()
        .find(|check| !check.rule.is_met_by_json(checked(check.index)))
    {
        return Verdict::Claim(failed.rule.path());
    }
    match step_up::check(step_up.acr, step_up.age, checked, step_up.now_s) {
        Some(shortfall) => Verdict::StepUp(shortfall),
        None => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::claim_rule::ClaimRule;
    use crate::oauth::named_claims::NamedClaims;

    fn claims(scope: &str, checked: &[Option<&str>]) -> TokenClaims {
        TokenClaims {
            named: NamedClaims::new(None, Some(scope), None),
            checked: checked.iter().map(|v| v.map(str::to_string)).collect(),
            ..Default::default()
        }
    }

    fn rule(path: &str, value: &str, index: usize) -> ClaimCheck {
        ClaimCheck {
            rule: ClaimRule::parse(&[path.as_bytes(), b"string", value.as_bytes()]).unwrap(),
            index,
        }
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_required_passes() {
        let verdict = check::<()>(
            &claims("", &[]),
            None,
            None,
            &[],
            &[],
            &StepUpRules::default(),
            || None,
        );
        assert_eq!(verdict, Verdict::Pass);
    }

    #[test]
    fn scopes_come_first_and_skip_the_rest() {
        let mut asked = false;
        let checks = [rule("tier", "gold", 0)];
        let verdict = check(
            &claims("read", &[Some("\"x\"")]),
            None,
            None,
            &scopes(&["read", "write"]),
            &checks,
            &StepUpRules::default(),
            || {
                asked = true;
                Some(403)
            },
        );
        assert_eq!(verdict, Verdict::MissingScope);
        assert!(
            !asked,
            "require rules are not evaluated after a scope failed"
        );
    }

    #[test]
    fn require_rules_come_before_claims() {
        let checks = [rule("tier", "gold", 0)];
        let verdict = check(
            &claims("read", &[Some("\"silver\"")]),
            None,
            None,
            &scopes(&["read"]),
            &checks,
            &StepUpRules::default(),
            || Some(418),
        );
        assert_eq!(verdict, Verdict::Unmet(418));
    }

    #[test]
    fn the_first_failing_claim_is_named() {
        let checks = [rule("tier", "gold", 0), rule("org", "acme", 1)];
        let verdict = check::<()>(
            &claims("read", &[Some("\"gold\""), Some("\"other\"")]),
            None,
            None,
            &[],
            &checks,
            &StepUpRules::default(),
            || None,
        );
        assert_eq!(verdict, Verdict::Claim("org"));
        let verdict = check::<()>(
            &claims("read", &[None, None]),
            None,
            None,
            &[],
            &checks,
            &StepUpRules::default(),
            || None,
        );
        assert_eq!(verdict, Verdict::Claim("tier"), "a missing claim fails");
        let verdict = check::<()>(
            &claims("read", &[Some("\"gold\""), Some("\"acme\"")]),
            None,
            None,
            &[],
            &checks,
            &StepUpRules::default(),
            || None,
        );
        assert_eq!(verdict, Verdict::Pass);
    }

    #[test]
    fn audience_is_one_of_the_accepted_in_a_string_or_an_array() {
        let rule = AudienceRule {
            accepted: vec!["orders".into(), "https://api.example".into()],
            index: 0,
        };
        for aud in [
            r#""orders""#,
            r#"["x","https://api.example"]"#,
            r#"["orders"]"#,
        ] {
            assert!(rule.is_met_by_json(Some(aud)), "{aud}");
        }
        for aud in [
            r#""billing""#,
            r#"["x","y"]"#,
            "[]",
            "null",
            "1",
            r#"["Orders"]"#,
            r#"{"orders":1}"#,
        ] {
            assert!(!rule.is_met_by_json(Some(aud)), "{aud}");
        }
        assert!(!rule.is_met_by_json(None), "a missing aud fails");
    }

    #[test]
    fn audience_comes_first() {
        let rule = AudienceRule {
            accepted: vec!["orders".into()],
            index: 0,
        };
        let mut asked = false;
        let verdict = check(
            &claims("", &[Some("\"billing\"")]),
            Some(&rule),
            None,
            &scopes(&["read"]),
            &[],
            &StepUpRules::default(),
            || {
                asked = true;
                Some(403)
            },
        );
        assert_eq!(verdict, Verdict::WrongAudience);
        assert!(!asked);
        let verdict = check::<()>(
            &claims("read", &[Some("\"orders\"")]),
            Some(&rule),
            None,
            &scopes(&["read"]),
            &[],
            &StepUpRules::default(),
            || None,
        );
        assert_eq!(verdict, Verdict::Pass);
    }

    #[test]
    fn the_resource_is_an_audience_rule_too() {
        let token = |aud: &str| claims("read", &[Some(aud)]);
        let resource = Some((&b"https://mcp.example.com/mcp"[..], 0));
        let rules = StepUpRules::default();
        let verdict = |c: &TokenClaims| check::<()>(c, None, resource, &[], &[], &rules, || None);
        assert_eq!(
            verdict(&token(r#"["https://MCP.example.com:443/mcp"]"#)),
            Verdict::Pass
        );
        assert_eq!(
            verdict(&token(r#""https://other.example.com/mcp""#)),
            Verdict::WrongAudience
        );
    }

    #[test]
    fn step_up_comes_last_on_cache_hits_too() {
        let acr = AcrRule::new(vec!["phr".into()], 1);
        let age = AgeRule {
            seconds: 60,
            index: 2,
        };
        let rules = StepUpRules {
            acr: Some(&acr),
            age: Some(&age),
            now_s: 1000,
        };
        let checks = [rule("tier", "gold", 0)];
        let token = |tier, acr, auth_time| claims("read", &[Some(tier), acr, auth_time]);
        let strong = token("\"gold\"", Some("\"phr\""), Some("990"));
        assert_eq!(
            check::<()>(
                &strong,
                None,
                None,
                &scopes(&["read"]),
                &checks,
                &rules,
                || None
            ),
            Verdict::Pass
        );
        let weak = token("\"gold\"", Some("\"pwd\""), Some("900"));
        assert_eq!(
            check::<()>(
                &weak,
                None,
                None,
                &scopes(&["read"]),
                &checks,
                &rules,
                || None
            ),
            Verdict::StepUp(Shortfall {
                acr: true,
                age: true
            })
        );
        let weak_and_missing_scope = token("\"gold\"", None, None);
        assert_eq!(
            check::<()>(
                &weak_and_missing_scope,
                None,
                None,
                &scopes(&["write"]),
                &checks,
                &rules,
                || None
            ),
            Verdict::MissingScope,
            "a token short of scopes is refused for them first"
        );
        let weak_and_wrong_claim = token("\"silver\"", None, None);
        assert_eq!(
            check::<()>(
                &weak_and_wrong_claim,
                None,
                None,
                &[],
                &checks,
                &rules,
                || None
            ),
            Verdict::Claim("tier")
        );
    }
}
