//! `application/x-www-form-urlencoded` encoding (WHATWG URL §5.2) and the
//! pieces of an RFC 6749 client authentication built from it.

use base64::Engine;

/// Appends `value` to `out`, form-urlencoded: unreserved bytes stay, space
/// becomes `+`, every other byte becomes `%XX`.
pub fn append_encoded(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    append_encoded(&mut out, value);
    out
}

/// application/x-www-form-urlencoded decoding (`+` is a space, `%XX` a
/// byte); None on an invalid %-escape.
pub fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let [byte, tail @ ..] = rest {
        rest = tail;
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let [high, low, tail @ ..] = rest else {
                    return None;
                };
                decoded.push((hex_digit(*high)? << 4) | hex_digit(*low)?);
                rest = tail;
            }
            _ => decoded.push(*byte),
        }
    }
    Some(decoded)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Splits `name=value` at the first '='; a bare `name` has an empty value,
/// as in application/x-www-form-urlencoded parsing.
pub fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (&pair[..eq], &pair[eq + 1..]),
        None => (pair, &[]),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1
/// requires for client_secret_basic.
pub fn basic_credentials(client_id: &[u8], client_secret: &[u8]) -> Vec<u8> {
    let mut pair = encode(client_id);
    pair.push(b':');
    append_encoded(&mut pair, client_secret);
    let mut header = b"Basic ".to_vec();
    header.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(pair)
            .as_bytes(),
    );
    header
}

/// `&client_id=…&client_secret=…`: client_secret_post (RFC 6749 §2.3.1),
/// appended to a request body instead of sending `Authorization: Basic`.
pub fn client_credentials_form(client_id: &[u8], client_secret: &[u8]) -> Vec<u8> {
    let mut out = b"&client_id=".to_vec();
    append_encoded(&mut out, client_id);
    out.extend_from_slice(b"&client_secret=");
    append_encoded(&mut out, client_secret);
    out
}

/// The RFC 7662 §2.1 introspection request body.
pub fn introspection_body(token: &[u8]) -> Vec<u8> {
    const TAIL: &[u8] = b"&token_type_hint=access_token";
    let mut body = Vec::with_capacity(6 + token.len() + TAIL.len());
    body.extend_from_slice(b"token=");
    append_encoded(&mut body, token);
    body.extend_from_slice(TAIL);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_bytes_pass_through() {
        assert_eq!(encode(b"AZaz09-._*"), b"AZaz09-._*");
    }

    #[test]
    fn reserved_bytes_are_percent_encoded() {
        assert_eq!(encode(b"a b+c/d=e&f~g%"), b"a+b%2Bc%2Fd%3De%26f%7Eg%25");
        assert_eq!(encode(&[0x00, 0xff, b':']), b"%00%FF%3A");
    }

    #[test]
    fn basic_credentials_encode_before_base64() {
        // "gw:s3cret"
        assert_eq!(basic_credentials(b"gw", b"s3cret"), b"Basic Z3c6czNjcmV0");
        // "my+client:p%40ss+word" — ':' in the id and '@' / ' ' in the secret are escaped first.
        assert_eq!(
            basic_credentials(b"my client", b"p@ss word"),
            b"Basic bXkrY2xpZW50OnAlNDBzcyt3b3Jk"
        );
        assert_eq!(basic_credentials(b"a:b", b""), b"Basic YSUzQWI6");
    }

    #[test]
    fn client_secret_post_form() {
        assert_eq!(
            client_credentials_form(b"my client", b"p@ss"),
            b"&client_id=my+client&client_secret=p%40ss"
        );
    }

    #[test]
    fn introspection_body_escapes_the_token() {
        assert_eq!(
            introspection_body(b"abc+/="),
            b"token=abc%2B%2F%3D&token_type_hint=access_token"
        );
    }
}
