//! The client's W3C Trace Context (`traceparent`, `tracestate`), checked
//! before any of it goes to the IdP: client bytes must not reach the IdP
//! unless they are exactly what the grammar allows, and small.
//!
//! - `traceparent`: version (2 lowercase hex, not `ff`) `-` trace-id (32
//!   lowercase hex, not all zero) `-` parent-id (16 lowercase hex, not all
//!   zero) `-` flags (2 lowercase hex). Version `00` is exactly 55 bytes; a
//!   higher version may go on after a `-` with visible ASCII, up to
//!   [`MAX_TRACEPARENT_BYTES`], and is passed on unchanged as a proxy does.
//! - `tracestate`: a list of at most [`MAX_TRACESTATE_MEMBERS`] members in at
//!   most [`MAX_TRACESTATE_BYTES`] (the header lines a client split it into,
//!   joined with `,` as RFC 9110 combines a list), each empty or `key=value`:
//!   the key 1 to 256 of `a-z 0-9 _ - * / @`, starting with a letter or a
//!   digit (the grammar of Level 2, which accepts every Level 1 key), the
//!   value 1 to 256 printable ASCII characters but `,` and `=`, not ending
//!   in a space; a key at most once. Spaces and tabs around a member are
//!   optional whitespace.
//!
//! A `tracestate` goes only with a valid `traceparent` (the specification
//! reads no `tracestate` without one); an invalid one is dropped, not the
//! request, and an invalid `tracestate` does not take the `traceparent` with
//! it.

use std::borrow::Cow;

/// A longer `traceparent` (of a version after `00`) is not passed on.
pub const MAX_TRACEPARENT_BYTES: usize = 256;
/// The size of a `tracestate` the specification asks every vendor to pass
/// on; a longer one is dropped whole.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// List members a `tracestate` may have (empty ones count).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 256;

/// What of the client's trace context goes to the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    pub traceparent: &'a [u8],
    /// Borrowed when the client sent it in one header line.
    pub tracestate: Option<Cow<'a, [u8]>>,
}

/// What goes to the IdP of the `traceparent` and `tracestate` header lines
/// the client sent (every line, in order): nothing unless exactly one valid
/// `traceparent`; with it the `tracestate`, if valid and not empty.
pub fn to_forward<'a>(traceparent: &[&'a [u8]], tracestate: &[&'a [u8]]) -> Option<Forward<'a>> {
    let [traceparent] = traceparent else {
        return None;
    };
    if !is_valid_traceparent(traceparent) {
        return None;
    }
    Some(Forward {
        traceparent,
        tracestate: combined_tracestate(tracestate),
    })
}

/// The `tracestate` lines as one list, if it is valid and has a member.
fn combined_tracestate<'a>(lines: &[&'a [u8]]) -> Option<Cow<'a, [u8]>> {
    if lines.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let value: Cow<'a, [u8]> = match lines {
        [] => return None,
        [one] => Cow::Borrowed(*one),
        many => {
            let total = many.iter().map(|l| l.len() + 1).sum::<usize>() - 1;
            if total > MAX_TRACESTATE_BYTES {
                return None;
            }
            Cow::Owned(many.join(&b","[..]))
        }
    };
    match tracestate_members(&value) {
        Some(members) if members > 0 => Some(value),
        _ => None,
    }
}

/// Whether `value` is a `traceparent` the IdP may get.
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    if value.len() < 55 || value.len() > MAX_TRACEPARENT_BYTES {
        return false;
    }
    let (version, trace_id, parent_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let fields = [version, trace_id, parent_id, flags];
    let shape = [value[2], value[35], value[52]] == [b'-'; 3]
        && fields.iter().all(|f| f.iter().all(is_lower_hex));
    if !shape || version == b"ff" || all_zero(trace_id) || all_zero(parent_id) {
        return false;
    }
    match (version, &value[55..]) {
        (b"00", rest) => rest.is_empty(),
        (_, []) => true,
        (_, [b'-', rest @ ..]) => rest.iter().all(|b| (0x21..=0x7e).contains(b)),
        _ => false,
    }
}

/// The number of non-empty members of a valid `tracestate`; `None` when it
/// is not valid.
pub fn tracestate_members(value: &[u8]) -> Option<usize> {
    if value.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    let mut keys: [&[u8]; MAX_TRACESTATE_MEMBERS] = [&[]; MAX_TRACESTATE_MEMBERS];
    let mut found = 0;
    for (i, member) in value.split(|b| *b == b',').enumerate() {
        if i >= MAX_TRACESTATE_MEMBERS {
            return None;
        }
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let eq = member.iter().position(|b| *b == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !is_valid_key(key) || !is_valid_value(value) || keys[..found].contains(&key) {
            return None;
        }
        keys[found] = key;
        found += 1;
    }
    Some(found)
}

fn is_valid_key(key: &[u8]) -> bool {
    let key_char =
        |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@');
    match key {
        [first, rest @ ..] => {
            key.len() <= MAX_KEY_BYTES
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(key_char)
        }
        [] => false,
    }
}

fn is_valid_value(value: &[u8]) -> bool {
    let chr = |b: &u8| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=';
    match value.last() {
        Some(last) => value.len() <= MAX_VALUE_BYTES && *last != b' ' && value.iter().all(chr),
        None => false,
    }
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn is_lower_hex(b: &u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents() {
        assert!(is_valid_traceparent(TP));
        assert!(is_valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"
        ));
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y",
            b"",
            b"hello",
        ] {
            assert!(
                !is_valid_traceparent(bad),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn later_versions_may_go_on_after_a_dash_and_are_bounded() {
        let v1 = b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid_traceparent(v1));
        let mut longer = v1.to_vec();
        longer.extend_from_slice(b"-what-the-future-brings");
        assert!(is_valid_traceparent(&longer));
        longer.truncate(55);
        longer.extend_from_slice(b"x");
        assert!(!is_valid_traceparent(&longer), "no dash after the flags");
        longer.truncate(55);
        longer.extend_from_slice(b"-a b");
        assert!(!is_valid_traceparent(&longer), "no space");
        longer.truncate(55);
        longer.push(b'-');
        longer.resize(MAX_TRACEPARENT_BYTES, b'a');
        assert!(is_valid_traceparent(&longer));
        longer.push(b'a');
        assert!(!is_valid_traceparent(&longer), "too long");
    }

    #[test]
    fn tracestates() {
        for (good, members) in [
            (&b"congo=t61rcWkgMzE"[..], 1),
            (b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 2),
            (b"rojo=1 , congo=2\t,\t", 2),
            (b"", 0),
            (b" , ,", 0),
            (b"t@sys=v", 1),
            (b"0tenant@vendor=v", 1),
            (b"a-b_c*d/e=x y", 1),
            (b"k= leading spaces stay", 1),
            (b"k=~!\"#$%&'()*+-./:;<>?[]^_`{|}", 1),
        ] {
            assert_eq!(
                tracestate_members(good),
                Some(members),
                "{}",
                String::from_utf8_lossy(good)
            );
        }
        for bad in [
            &b"Congo=x"[..],
            b"_k=x",
            b"k",
            b"k=",
            b"=v",
            b"k=a=b",
            b"k=tab\tinside",
            b"k=\x7f",
            b"k=caf\xc3\xa9",
            b"k=1,k=2",
            b"k=1\r\nX-Injected: yes",
            b"a b=1",
        ] {
            assert_eq!(
                tracestate_members(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_key = [b'k'; 257];
        assert_eq!(tracestate_members(&[&long_key[..], b"=v"].concat()), None);
        assert_eq!(
            tracestate_members(&[&long_key[..256], b"=v"].concat()),
            Some(1)
        );
        let long_value = [b'v'; 257];
        assert_eq!(tracestate_members(&[b"k=", &long_value[..]].concat()), None);
        assert_eq!(
            tracestate_members(&[b"k=", &long_value[..256]].concat()),
            Some(1)
        );
    }

    #[test]
    fn tracestate_limits() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(tracestate_members(list(32).as_bytes()), Some(32));
        assert_eq!(tracestate_members(list(33).as_bytes()), None);
        assert_eq!(tracestate_members(",".repeat(31).as_bytes()), Some(0));
        assert_eq!(tracestate_members(",".repeat(32).as_bytes()), None);
        let big = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES - 2));
        assert_eq!(tracestate_members(big.as_bytes()), None, "a value too long");
        let sized = format!(
            "a={},b={}",
            "v".repeat(254),
            "v".repeat(MAX_TRACESTATE_BYTES - 2 - 254 - 3)
        );
        assert_eq!(sized.len(), MAX_TRACESTATE_BYTES);
        assert_eq!(tracestate_members(sized.as_bytes()), Some(2));
        let over = format!("{sized}w");
        assert_eq!(tracestate_members(over.as_bytes()), None);
        // 7 KB, as in issue 22.
        let seven_k = list(7_000 / 6);
        assert_eq!(tracestate_members(seven_k.as_bytes()), None);
    }

    #[test]
    fn what_is_forwarded() {
        let state = &b"rojo=00f067aa0ba902b7"[..];
        let both = to_forward(&[TP], &[state]).unwrap();
        assert_eq!(both.traceparent, TP);
        assert_eq!(both.tracestate, Some(Cow::Borrowed(state)));
        assert!(matches!(
            to_forward(&[TP], &[b"a=1", b"", b"b=2"]).unwrap().tracestate,
            Some(Cow::Owned(v)) if v == b"a=1,,b=2"
        ));
        assert_eq!(to_forward(&[TP], &[b"Bad=1"]).unwrap().tracestate, None);
        assert_eq!(to_forward(&[TP], &[b" "]).unwrap().tracestate, None);
        assert_eq!(
            to_forward(&[TP], &[b"a=1", b"a=2"]).unwrap().tracestate,
            None
        );
        assert_eq!(to_forward(&[TP], &[]).unwrap().tracestate, None);
        assert_eq!(
            to_forward(&[TP], &[&b"a=1"[..]; 33]).unwrap().tracestate,
            None
        );
        assert_eq!(
            to_forward(&[], &[state]),
            None,
            "no traceparent, no tracestate"
        );
        assert_eq!(to_forward(&[b"00-bad"], &[state]), None);
        assert_eq!(to_forward(&[TP, TP], &[state]), None, "sent twice");
        let (a, b) = (
            format!("a={}", "v".repeat(250)),
            format!("b={}", "v".repeat(250)),
        );
        let ok = to_forward(&[TP], &[a.as_bytes(), b.as_bytes()]).unwrap();
        assert_eq!(ok.tracestate.map(|v| v.len()), Some(505));
        let c = format!("c={}", "v".repeat(250));
        let lines = [a.as_bytes(), b.as_bytes(), c.as_bytes()];
        assert_eq!(
            to_forward(&[TP], &lines).unwrap().tracestate,
            None,
            "lines of valid size, too long together"
        );
    }
}
