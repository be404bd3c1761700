//! Claims chosen by `auth_oauth2_token_claim_set`: a dotted path into the
//! introspection answer, and how a JSON value becomes variable text.

use serde_json::Value;

/// Follows `path` ("resource_access.account.roles") through nested objects.
pub fn lookup<'v>(root: &'v serde_json::Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut value = root.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Strings as they are, numbers and booleans as JSON text, arrays joined with
/// `,` (their strings raw), objects as compact JSON; null is no value.
pub fn render(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

/// A claim path as configured: dot-separated names, none empty.
pub fn is_valid_path(path: &[u8]) -> bool {
    !path.is_empty() && path.split(|&b| b == b'.').all(|part| !part.is_empty())
}

/// Whether `value` may stand in an HTTP header field value: no control
/// character but horizontal tab, no DEL (RFC 9110 §5.5). Branch-free, so
/// that it vectorizes: every IdP answer's claims go through it.
pub fn is_header_safe(value: &str) -> bool {
    !value.bytes().fold(false, |found, b| {
        found | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Map<String, Value> {
        serde_json::from_str(
            r#"{"sub":"alice","n":42,"ok":true,"aud":["a","b",3],"none":null,
                "resource_access":{"account":{"roles":["view","manage"]}},"obj":{"x":1,"y":"z"}}"#,
        )
        .unwrap()
    }

    fn get(path: &str) -> Option<String> {
        lookup(&doc(), path).and_then(render)
    }

    #[test]
    fn scalars() {
        assert_eq!(get("sub").as_deref(), Some("alice"));
        assert_eq!(get("n").as_deref(), Some("42"));
        assert_eq!(get("ok").as_deref(), Some("true"));
        assert_eq!(get("none"), None);
        assert_eq!(get("missing"), None);
    }

    #[test]
    fn arrays_join_with_commas() {
        assert_eq!(get("aud").as_deref(), Some("a,b,3"));
    }

    #[test]
    fn dotted_paths_and_objects() {
        assert_eq!(
            get("resource_access.account.roles").as_deref(),
            Some("view,manage")
        );
        assert_eq!(get("obj").as_deref(), Some(r#"{"x":1,"y":"z"}"#));
        assert_eq!(get("resource_access.missing.roles"), None);
        assert_eq!(get("sub.deeper"), None);
    }

    #[test]
    fn paths() {
        assert!(is_valid_path(b"a.b.c"));
        assert!(!is_valid_path(b""));
        assert!(!is_valid_path(b"a..b"));
        assert!(!is_valid_path(b".a"));
    }
}
