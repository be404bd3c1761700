//! Claims in IdP answers: dotted paths, rendering, `require_claim` rules and
//! required scopes, over arbitrary JSON and arbitrary directive arguments.
//!
//! Input lines: a JSON text (a document, or a claim's value), a claim path,
//! a claim type, then the rule's values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::claim_rule::{ClaimRule, ClaimType};
use ngx_http_auth_oauth2_token_module::oauth::verdict::AudienceRule;
use ngx_http_auth_oauth2_token_module::oauth::{claims, scope};
use serde_json::{Map, Value};

#[path = "common.rs"]
mod common;

/// A claim value the rule is written to accept, if one can be named.
fn meeting_claim(claim_type: ClaimType, values: &[&str]) -> Option<Value> {
    let strings = || values.iter().map(|v| Value::String(v.to_string()));
    Some(match claim_type {
        ClaimType::String => Value::String(values[0].to_string()),
        ClaimType::Integer => Value::from(values[0].parse::<i64>().ok()?),
        ClaimType::Boolean => Value::Bool(values[0].eq_ignore_ascii_case("true")),
        ClaimType::Array => Value::Array(strings().collect()),
        // A value with a space can never be one word of the claim.
        ClaimType::Delimited if values.iter().any(|v| v.contains(' ')) => return None,
        ClaimType::Delimited => Value::String(values.join(" ")),
    })
}

/// How the module keeps a checked claim: compact JSON text, null as absent.
fn as_checked(value: Option<&Value>) -> Option<String> {
    value.filter(|v| !v.is_null()).map(Value::to_string)
}

fn check_rule(args: &[&[u8]], json: &[u8]) {
    let Ok(rule) = ClaimRule::parse(args) else {
        return;
    };
    assert!(
        claims::is_valid_path(args[0]),
        "rule accepted path {:?}",
        args[0]
    );
    assert_eq!(rule.path().as_bytes(), args[0]);
    assert!(!rule.is_met_by(None) && !rule.is_met_by_json(None));
    assert!(!rule.is_met_by(Some(&Value::Null)) && !rule.is_met_by_json(Some("null")));

    let values: Vec<&str> = args[2..]
        .iter()
        .map(|v| std::str::from_utf8(v).unwrap())
        .collect();
    if let Some(claim) = meeting_claim(rule.claim_type(), &values) {
        assert!(rule.is_met_by(Some(&claim)), "{rule:?} not met by {claim}");
        assert!(
            rule.is_met_by_json(Some(&claim.to_string())),
            "{rule:?} not met by {claim}"
        );
    }

    // A claim decides the same, parsed from the answer or kept as JSON text.
    if let Ok(value) = serde_json::from_slice::<Value>(json) {
        let kept = as_checked(Some(&value));
        assert_eq!(
            rule.is_met_by(Some(&value)),
            rule.is_met_by_json(kept.as_deref()),
            "{rule:?} decides {value} and its text {kept:?} differently"
        );
        if let Value::Object(doc) = &value {
            let found = claims::lookup(doc, rule.path());
            let kept = as_checked(found);
            assert_eq!(
                rule.is_met_by(found.filter(|v| !v.is_null())),
                rule.is_met_by_json(kept.as_deref())
            );
        }
    }
}

fn check_paths(doc: &Map<String, Value>, path: &[u8]) {
    if let Ok(path) = std::str::from_utf8(path) {
        let found = claims::lookup(doc, path);
        if !path.contains('.') {
            assert_eq!(found, doc.get(path));
        }
        if let Some(value) = found {
            let text = claims::render(value);
            assert_eq!(text.is_none(), value.is_null());
            if let Value::String(s) = value {
                assert_eq!(text.as_deref(), Some(s.as_str()));
            }
        }
    }
    // Every member is found by its own name, and one level down.
    for (name, value) in doc.iter().take(8) {
        if name.is_empty() || name.contains('.') {
            continue;
        }
        assert_eq!(claims::lookup(doc, name), Some(value));
        if let Value::Object(inner) = value {
            for (inner_name, inner_value) in inner.iter().take(4) {
                if !inner_name.is_empty() && !inner_name.contains('.') {
                    let dotted = format!("{name}.{inner_name}");
                    assert!(claims::is_valid_path(dotted.as_bytes()));
                    assert_eq!(claims::lookup(doc, &dotted), Some(inner_value));
                }
            }
        }
    }
}

/// `require_audience`: `aud` as a string, or an array with one such string.
fn check_audience(json: &[u8], wanted: &[&[u8]]) {
    let accepted: Vec<String> = wanted
        .iter()
        .filter_map(|w| std::str::from_utf8(w).ok())
        .map(str::to_string)
        .collect();
    let rule = AudienceRule { accepted, index: 0 };
    assert!(!rule.is_met_by_json(None) && !rule.is_met_by_json(Some("null")));
    if let Some(first) = rule.accepted.first() {
        let aud = Value::String(first.clone());
        assert!(rule.is_met_by_json(Some(&aud.to_string())));
        assert!(rule.is_met_by_json(Some(&Value::Array(vec![Value::Null, aud]).to_string())));
    }
    let Ok(aud) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let names = |v: &Value| {
        v.as_str()
            .is_some_and(|s| rule.accepted.iter().any(|a| a == s))
    };
    let expected = match &aud {
        Value::Array(values) => values.iter().any(names),
        other => names(other),
    };
    assert_eq!(
        rule.is_met_by_json(as_checked(Some(&aud)).as_deref()),
        expected,
        "aud {aud}"
    );
}

fn check_scopes(granted: &[u8], wanted: &[&[u8]]) {
    let Ok(granted) = std::str::from_utf8(granted) else {
        return;
    };
    let required: Vec<String> = wanted
        .iter()
        .filter(|w| scope::is_scope_token(w))
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    let words: Vec<&str> = granted.split(' ').collect();
    assert_eq!(
        scope::grants_all(Some(granted), &required),
        required.iter().all(|r| words.contains(&r.as_str()))
    );
    assert!(scope::grants_all(Some(&required.join(" ")), &required));
    assert_eq!(scope::grants_all(None, &required), required.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let lines = common::lines(data);
    let json = lines[0];
    let args = &lines[1..];
    if args.len() >= 3 {
        check_rule(args, json);
    }
    let path = args.first().copied().unwrap_or_default();
    if let Ok(doc) = serde_json::from_slice::<Map<String, Value>>(json) {
        check_paths(&doc, path);
    }
    check_scopes(json, args);
    check_audience(json, args);
});
