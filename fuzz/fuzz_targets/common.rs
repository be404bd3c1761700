//! Shared by the fuzz targets (each includes it with `#[path]`): how an
//! input is cut into fields, so that seeds can be written by hand.
#![allow(dead_code)]

use ngx_http_auth_oauth2_token_module::oauth::idp_reply::IdpReply;

/// The input's lines: fields are separated by '\n' (seeds stay readable;
/// the single-field properties see every byte, '\n' included).
pub fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n').collect()
}

/// The first line and everything after it.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(nl) => (&data[..nl], &data[nl + 1..]),
        None => (data, &[]),
    }
}

/// A selector byte, written as a digit in the seeds: '0' picks choice 0.
pub fn pick(byte: u8, choices: usize) -> usize {
    usize::from(byte.wrapping_sub(b'0')) % choices
}

/// How an IdP call ended, by a selector digit: mostly complete answers with
/// the statuses that matter, and the transport failures.
pub fn reply<'a>(selector: u8, body: &'a [u8]) -> IdpReply<'a> {
    let (rc, status) = match pick(selector, 12) {
        0 => (0, 200),
        1 => (0, 204),
        2 => (0, 400),
        3 => (0, 401),
        4 => (0, 403),
        5 => (0, 500),
        6 => (0, 503),
        7 => (504, 200), // timed out
        8 => (502, 0),   // no response header
        9 => (-1, 200),  // cut short
        10 => (0, 201),
        _ => (0, 200),
    };
    IdpReply::new(rc, status, body)
}

/// Whether `text` can go into an error-log line as it is.
pub fn is_printable_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}
