//! Required scopes (RFC 6749 §3.3): which a token must carry, and how they
//! may be written in configuration.

/// A scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`, so it is also safe
/// inside the challenge's quoted `scope="..."`.
pub fn is_scope_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Whether every `required` scope is among the space-separated `granted`.
/// Matching is exact and case-sensitive.
pub fn grants_all(granted: Option<&str>, required: &[String]) -> bool {
    let granted = granted.unwrap_or("");
    required
        .iter()
        .all(|want| granted.split(' ').any(|have| have == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_required_scope_must_be_granted() {
        assert!(grants_all(
            Some("read write admin"),
            &req(&["write", "read"])
        ));
        assert!(!grants_all(Some("read"), &req(&["read", "write"])));
        assert!(grants_all(Some("read"), &[]));
    }

    #[test]
    fn matching_is_exact() {
        assert!(!grants_all(Some("readonly"), &req(&["read"])));
        assert!(!grants_all(Some("Read"), &req(&["read"])));
        assert!(!grants_all(Some("orders:read"), &req(&["orders"])));
    }

    #[test]
    fn no_scope_claim_grants_nothing() {
        assert!(!grants_all(None, &req(&["read"])));
        assert!(!grants_all(Some(""), &req(&["read"])));
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token(b"orders:read"));
        assert!(is_scope_token(b"https://api.example/orders.read"));
        assert!(!is_scope_token(b""));
        assert!(!is_scope_token(b"a b"));
        assert!(!is_scope_token(b"a\"b"));
        assert!(!is_scope_token(b"a\\b"));
    }
}
