//! The purge request: RFC 7009's revocation request shape
//! (`application/x-www-form-urlencoded`, `token=...`, an optional
//! `token_type_hint`), read strictly: one token, not empty, bounded.

use crate::oauth::form;

/// The longest token a purge accepts, decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a purge request cannot be read (the 400's reason, for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPurge {
    NoToken,
    EmptyToken,
    SeveralTokens,
    BadEncoding,
    TooLong,
}

impl BadPurge {
    pub fn description(self) -> &'static str {
        match self {
            BadPurge::NoToken => "no token parameter",
            BadPurge::EmptyToken => "an empty token",
            BadPurge::SeveralTokens => "more than one token parameter",
            BadPurge::BadEncoding => "a malformed form encoding",
            BadPurge::TooLong => "a token over the size limit",
        }
    }
}

/// The token of a purge request's form body.
pub fn token_of_form(body: &[u8]) -> Result<Vec<u8>, BadPurge> {
    let mut token = None;
    for (name, value) in body
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(form::split_pair)
    {
        if decode(name)? != b"token" {
            continue;
        }
        if token.is_some() {
            return Err(BadPurge::SeveralTokens);
        }
        token = Some(decode(value)?);
    }
    match token {
        None => Err(BadPurge::NoToken),
        Some(token) if token.is_empty() => Err(BadPurge::EmptyToken),
        Some(token) if token.len() > MAX_TOKEN_BYTES => Err(BadPurge::TooLong),
        Some(token) => Ok(token),
    }
}

/// Form decoding, bounded before it starts.
fn decode(text: &[u8]) -> Result<Vec<u8>, BadPurge> {
    if text.len() > 3 * MAX_TOKEN_BYTES {
        return Err(BadPurge::TooLong);
    }
    form::decode(text).ok_or(BadPurge::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_token_and_ignores_the_hint() {
        assert_eq!(token_of_form(b"token=abc").unwrap(), b"abc");
        assert_eq!(
            token_of_form(b"token_type_hint=access_token&token=a%2Bb+c%3d").unwrap(),
            b"a+b c="
        );
        assert_eq!(token_of_form(b"&token=x&").unwrap(), b"x");
    }

    #[test]
    fn refuses_what_is_not_one_token() {
        assert_eq!(token_of_form(b""), Err(BadPurge::NoToken));
        assert_eq!(token_of_form(b"tokens=x"), Err(BadPurge::NoToken));
        assert_eq!(token_of_form(b"token="), Err(BadPurge::EmptyToken));
        assert_eq!(token_of_form(b"token"), Err(BadPurge::EmptyToken));
        assert_eq!(
            token_of_form(b"token=a&token=b"),
            Err(BadPurge::SeveralTokens)
        );
        assert_eq!(token_of_form(b"token=a%2"), Err(BadPurge::BadEncoding));
        assert_eq!(token_of_form(b"token=%zz"), Err(BadPurge::BadEncoding));
        let long = [b"token=".as_slice(), &[b'a'; MAX_TOKEN_BYTES + 1]].concat();
        assert_eq!(token_of_form(&long), Err(BadPurge::TooLong));
    }

    proptest! {
        #[test]
        fn any_token_survives_form_encoding(token in proptest::collection::vec(any::<u8>(), 1..200)) {
            let body = [b"token_type_hint=refresh_token&token=".as_slice(), &crate::oauth::form::encode(&token)].concat();
            prop_assert_eq!(token_of_form(&body).unwrap(), token);
        }

        #[test]
        fn any_body_is_read_or_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(token) = token_of_form(&body) {
                prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            }
        }
    }
}
