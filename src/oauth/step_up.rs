//! RFC 9470 step-up: what a location asks of the user's authentication
//! behind a token (the `acr` class, how long ago `auth_time` was), and the
//! shortfall the challenge reports (`insufficient_user_authentication`,
//! `acr_values`, `max_age`).

/// `auth_oauth2_token_require_acr`: the token's `acr` must be one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrRule {
    /// Accepted values, in the order of preference the challenge gives.
    pub accepted: Vec<String>,
    /// The same, space-separated: the challenge's `acr_values`.
    pub text: String,
    /// Where `acr` is kept, as JSON text, in `TokenClaims::checked`.
    pub index: usize,
}

/// `auth_oauth2_token_max_auth_age`: the user authenticated at most this
/// many seconds ago (`auth_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeRule {
    pub seconds: u64,
    /// Where `auth_time` is kept, as JSON text, in `TokenClaims::checked`.
    pub index: usize,
}

/// What fell short: the class, the age, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub acr: bool,
    pub age: bool,
}

impl Shortfall {
    /// The challenge's `error_description`.
    pub fn description(self) -> &'static str {
        match (self.acr, self.age) {
            (true, true) => "a different and more recent authentication is required",
            (true, false) => "a different authentication level is required",
            _ => "more recent authentication is required",
        }
    }
}

/// An `acr` value fit for the challenge's quoted `acr_values` list: visible
/// ASCII but `"` and `\` (no space: the list's separator).
pub fn is_acr_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl AcrRule {
    pub fn new(accepted: Vec<String>, index: usize) -> AcrRule {
        let text = accepted.join(" ");
        AcrRule {
            accepted,
            text,
            index,
        }
    }

    /// Whether `acr`, as compact JSON (`None` when absent), is a string
    /// among the accepted values (compared exactly).
    pub fn is_met_by_json(&self, acr: Option<&str>) -> bool {
        match acr.and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok()) {
            Some(serde_json::Value::String(acr)) => self.accepted.contains(&acr),
            _ => false,
        }
    }
}

impl AgeRule {
    /// Whether `auth_time`, as compact JSON (`None` when absent), is a
    /// number of seconds since the epoch at most `seconds` before `now_s`.
    /// A time ahead of the clock (skew) is recent enough.
    pub fn is_met_by_json(&self, auth_time: Option<&str>, now_s: i64) -> bool {
        let Some(value) =
            auth_time.and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        else {
            return false;
        };
        let auth_time = match value {
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.is_finite() => f.floor() as i64,
                _ => return false,
            },
            _ => return false,
        };
        let age = now_s.saturating_sub(auth_time);
        age <= 0 || (age as u64) <= self.seconds
    }
}

/// Checks the two rules (either may be absent) against a token's checked
/// claims (`checked(index)`, compact JSON); `None` when it has what they ask.
pub fn check<'a>(
    acr: Option<&AcrRule>,
    age: Option<&AgeRule>,
    checked: impl Fn(usize) -> Option<&'a str>,
    now_s: i64,
) -> Option<Shortfall> {
    let shortfall = Shortfall {
        acr: acr.is_some_and(|rule| !rule.is_met_by_json(checked(rule.index))),
        age: age.is_some_and(|rule| !rule.is_met_by_json(checked(rule.index), now_s)),
    };
    (shortfall.acr || shortfall.age).then_some(shortfall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acr() -> AcrRule {
        AcrRule::new(vec!["urn:mace:incommon:iap:silver".into(), "phr".into()], 0)
    }

    #[test]
    fn acr_is_one_of_the_accepted_strings() {
        let rule = acr();
        assert_eq!(rule.text, "urn:mace:incommon:iap:silver phr");
        assert!(rule.is_met_by_json(Some(r#""phr""#)));
        assert!(rule.is_met_by_json(Some(r#""urn:mace:incommon:iap:silver""#)));
        for weak in [
            r#""pwd""#,
            r#""PHR""#,
            r#"["phr"]"#,
            "1",
            "null",
            "",
            r#""phr "#,
        ] {
            assert!(!rule.is_met_by_json(Some(weak)), "{weak}");
        }
        assert!(!rule.is_met_by_json(None), "no acr is too weak");
    }

    #[test]
    fn auth_time_is_recent_enough() {
        let rule = AgeRule {
            seconds: 300,
            index: 1,
        };
        let now = 1_800_000_000;
        assert!(rule.is_met_by_json(Some("1800000000"), now));
        assert!(
            rule.is_met_by_json(Some("1799999700"), now),
            "exactly 300 s"
        );
        assert!(!rule.is_met_by_json(Some("1799999699"), now), "301 s");
        assert!(rule.is_met_by_json(Some("1799999700.9"), now));
        assert!(rule.is_met_by_json(Some("1800000060"), now), "ahead: skew");
        for bad in [r#""1800000000""#, "null", "true", "[1800000000]", "x"] {
            assert!(!rule.is_met_by_json(Some(bad), now), "{bad}");
        }
        assert!(!rule.is_met_by_json(None, now), "no auth_time is too old");
        assert!(!rule.is_met_by_json(Some("-9223372036854775808"), now));
    }

    #[test]
    fn the_shortfall_says_what_fell_short() {
        let (acr, age) = (
            acr(),
            AgeRule {
                seconds: 60,
                index: 1,
            },
        );
        let now = 1000;
        let claims = |a: Option<&'static str>, t: Option<&'static str>| {
            move |i: usize| if i == 0 { a } else { t }
        };
        assert_eq!(check(None, None, claims(None, None), now), None);
        assert_eq!(
            check(
                Some(&acr),
                Some(&age),
                claims(Some(r#""phr""#), Some("990")),
                now
            ),
            None
        );
        let s = check(
            Some(&acr),
            Some(&age),
            claims(Some(r#""pwd""#), Some("990")),
            now,
        );
        assert_eq!(
            s,
            Some(Shortfall {
                acr: true,
                age: false
            })
        );
        let s = check(
            Some(&acr),
            Some(&age),
            claims(Some(r#""phr""#), Some("900")),
            now,
        );
        assert_eq!(
            s,
            Some(Shortfall {
                acr: false,
                age: true
            })
        );
        let s = check(Some(&acr), Some(&age), claims(None, None), now).unwrap();
        assert_eq!(
            s,
            Shortfall {
                acr: true,
                age: true
            }
        );
        assert_eq!(
            s.description(),
            "a different and more recent authentication is required"
        );
        assert_eq!(
            check(None, Some(&age), claims(None, Some("999")), now),
            None
        );
    }

    #[test]
    fn acr_values_fit_a_quoted_list() {
        assert!(is_acr_value(b"urn:mace:incommon:iap:silver"));
        assert!(is_acr_value(b"0"));
        for bad in [&b""[..], b"a b", b"a\"b", b"a\\b", b"a\tb", "é".as_bytes()] {
            assert!(!is_acr_value(bad), "{bad:?}");
        }
    }
}
