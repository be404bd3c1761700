//! Finding the client's access token in its `Authorization` header
//! (RFC 6750 §2.1), with the `Bearer` scheme or the `DPoP` scheme (RFC 9449
//! §7.1, the same `b64token` syntax): which one the client used decides
//! what its token's binding asks (`oauth/dpop/binding.rs`).

/// What the client's `Authorization` headers amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum BearerToken<'a> {
    /// No `Authorization` header, or one with another scheme: the client did
    /// not try bearer authentication (RFC 6750 §3.1: answer without `error`).
    Missing,
    /// A bearer attempt that is not well formed.
    Malformed(Malformed),
    Present(&'a [u8]),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Malformed {
    DuplicateHeader,
    EmptyToken,
    InvalidCharacters,
}

impl Malformed {
    /// Goes into `error_description`, so it must stay free of quotes and of
    /// anything the client sent.
    pub fn description(self) -> &'static str {
        match self {
            Malformed::DuplicateHeader => "the token header was sent more than once",
            Malformed::EmptyToken => "empty bearer token",
            Malformed::InvalidCharacters => "bearer token has characters outside b64token",
        }
    }
}

/// Reads the bearer token out of every `Authorization` header the client sent.
pub fn from_authorization<'a>(values: &[&'a [u8]]) -> BearerToken<'a> {
    match values {
        [] => BearerToken::Missing,
        [value] => parse_one(value),
        _ => BearerToken::Malformed(Malformed::DuplicateHeader),
    }
}

/// Whether an authorization scheme carries an access token here.
fn is_token_scheme(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"Bearer") || scheme.eq_ignore_ascii_case(b"DPoP")
}

/// Whether an `Authorization` value uses the `DPoP` scheme (case-insensitive,
/// as every scheme is).
pub fn is_dpop_scheme(value: &[u8]) -> bool {
    value.len() > 4 && value[..4].eq_ignore_ascii_case(b"DPoP") && value[4] == b' '
}

fn parse_one(value: &[u8]) -> BearerToken<'_> {
    let Some(scheme_len) = value.iter().position(|&b| b == b' ') else {
        return match is_token_scheme(value) {
            true => BearerToken::Malformed(Malformed::EmptyToken),
            false => BearerToken::Missing,
        };
    };
    if !is_token_scheme(&value[..scheme_len]) {
        return BearerToken::Missing;
    }
    let token = value[scheme_len..].trim_ascii();
    if token.is_empty() {
        return BearerToken::Malformed(Malformed::EmptyToken);
    }
    if !is_b64token(token) {
        return BearerToken::Malformed(Malformed::InvalidCharacters);
    }
    BearerToken::Present(token)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
pub fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && token[..body_len]
            .iter()
            .all(|&b| B64TOKEN_CHAR[usize::from(b)])
}

/// The characters of a b64token before its padding, by byte value: one
/// lookup per byte, as every request's token is checked.
const B64TOKEN_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_is_missing() {
        assert_eq!(from_authorization(&[]), BearerToken::Missing);
    }

    #[test]
    fn other_schemes_are_missing_not_malformed() {
        assert_eq!(
            from_authorization(&[b"Basic Zm9vOmJhcg=="]),
            BearerToken::Missing
        );
        assert_eq!(from_authorization(&[b"Bearerx abc"]), BearerToken::Missing);
        assert_eq!(from_authorization(&[b"Negotiate"]), BearerToken::Missing);
    }

    #[test]
    fn the_dpop_scheme_carries_a_token_too() {
        assert_eq!(
            from_authorization(&[b"DPoP abc.DEF-_~+/=="]),
            BearerToken::Present(b"abc.DEF-_~+/==")
        );
        assert_eq!(
            from_authorization(&[b"dpop tok"]),
            BearerToken::Present(b"tok")
        );
        assert_eq!(
            from_authorization(&[b"DPoP"]),
            BearerToken::Malformed(Malformed::EmptyToken)
        );
        assert_eq!(
            from_authorization(&[b"DPoP a b"]),
            BearerToken::Malformed(Malformed::InvalidCharacters)
        );
        assert_eq!(from_authorization(&[b"DPoPx abc"]), BearerToken::Missing);
        assert!(is_dpop_scheme(b"DPoP abc") && is_dpop_scheme(b"dpop abc"));
        assert!(!is_dpop_scheme(b"Bearer abc") && !is_dpop_scheme(b"DPoPabc"));
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(
            from_authorization(&[b"bEaReR abc.DEF-_~+/=="]),
            BearerToken::Present(b"abc.DEF-_~+/==")
        );
    }

    #[test]
    fn extra_spaces_around_the_token_are_tolerated() {
        assert_eq!(
            from_authorization(&[b"Bearer   tok1 "]),
            BearerToken::Present(b"tok1")
        );
    }

    #[test]
    fn malformed_bearer_attempts() {
        use Malformed::*;
        assert_eq!(
            from_authorization(&[b"Bearer"]),
            BearerToken::Malformed(EmptyToken)
        );
        assert_eq!(
            from_authorization(&[b"Bearer   "]),
            BearerToken::Malformed(EmptyToken)
        );
        assert_eq!(
            from_authorization(&[b"Bearer a b"]),
            BearerToken::Malformed(InvalidCharacters)
        );
        assert_eq!(
            from_authorization(&[b"Bearer a\"b"]),
            BearerToken::Malformed(InvalidCharacters)
        );
        assert_eq!(
            from_authorization(&[b"Bearer ==="]),
            BearerToken::Malformed(InvalidCharacters)
        );
        assert_eq!(
            from_authorization(&[b"Bearer a=b"]),
            BearerToken::Malformed(InvalidCharacters)
        );
        assert_eq!(
            from_authorization(&[b"Bearer a", b"Bearer b"]),
            BearerToken::Malformed(DuplicateHeader)
        );
    }
}
