//! The value of a cache entry: the verdict and the claims the module exposes,
//! as length-prefixed bytes, so a hit needs no JSON parsing.

use crate::oauth::cnf::Confirmation;
use crate::oauth::exchange::{self, IssuedToken};
use crate::oauth::introspection::{self, IntrospectionResult, TokenClaims};
use crate::oauth::named_claims::NamedClaims;
use crate::oauth::ssf::Marks;

/// Layout: an inactive answer is one byte, 0. An active one begins with a
/// byte of flags over 0x80 ([`ACTIVE`]: bound, `exp`, `exp` past 32 bits,
/// `sub` a UUID, lists, phantom JWT); then `exp` (4 bytes, or 8 with its
/// flag); `sub` (16 bytes when it is a UUID in its canonical lowercase
/// form, a string otherwise), `scope` and `client_id`, a string being a
/// varint of its length plus one (0: absent) and its bytes; with their flag,
/// the `claim_set` values and the `require_claim` values, each a varint
/// count and strings, and the phantom JWT (a varint length and its bytes);
/// when bound, the binding: 2 for a `cnf` that cannot be checked, or 1 and a
/// byte of flags (1: `jkt`, 2: `x5t#S256`) followed by those 32-byte
/// digests; last, the revocation marks, if any.
///
/// Compact, for the zone's density: a typical answer (a UUID `sub`, three
/// scopes, a client id, `exp`) takes 62 bytes. Entries of the earlier
/// layout (first byte 1 or 2, from the Redis tier of a gateway not yet
/// upgraded) decode to nothing, a miss, as this layout's do for it.
#[derive(Debug, PartialEq, Eq)]
pub struct CachedIntrospection;

/// The flags of an active answer's first byte.
const ACTIVE: u8 = 0x80;
const BOUND: u8 = 0x01;
const EXP: u8 = 0x02;
const EXP_64: u8 = 0x04;
const SUB_UUID: u8 = 0x08;
const LISTS: u8 = 0x10;
const PHANTOM: u8 = 0x20;

impl CachedIntrospection {
    pub fn encode(result: &IntrospectionResult) -> Vec<u8> {
        let claims = match result {
            IntrospectionResult::Inactive => return vec![0],
            IntrospectionResult::Active(claims) => claims,
        };
        let [sub, scope, client_id] = claims.named.all();
        let mut out = Vec::with_capacity(
            9 + [sub, scope, client_id]
                .iter()
                .map(|s| 2 + s.map_or(0, str::len))
                .sum::<usize>(),
        );
        let uuid = sub.map(str::as_bytes).and_then(uuid_bytes);
        let exp_32 = claims.exp.and_then(|exp| u32::try_from(exp).ok());
        let lists = !claims.extra.is_empty() || !claims.checked.is_empty();
        let flag = |on: bool, flag: u8| if on { flag } else { 0 };
        out.push(
            ACTIVE
                | flag(claims.cnf != Confirmation::Unbound, BOUND)
                | flag(claims.exp.is_some(), EXP)
                | flag(claims.exp.is_some() && exp_32.is_none(), EXP_64)
                | flag(uuid.is_some(), SUB_UUID)
                | flag(lists, LISTS)
                | flag(claims.phantom.is_some(), PHANTOM),
        );
        match (exp_32, claims.exp) {
            (Some(exp), _) => out.extend_from_slice(&exp.to_le_bytes()),
            (None, Some(exp)) => out.extend_from_slice(&exp.to_le_bytes()),
            (None, None) => {}
        }
        match uuid {
            Some(uuid) => out.extend_from_slice(&uuid),
            None => put_opt(&mut out, sub),
        }
        put_opt(&mut out, scope);
        put_opt(&mut out, client_id);
        if lists {
            for list in [&claims.extra, &claims.checked] {
                put_varint(&mut out, list.len());
                for s in list {
                    put_opt(&mut out, s.as_deref());
                }
            }
        }
        if let Some(phantom) = &claims.phantom {
            put_varint(&mut out, phantom.len());
            out.extend_from_slice(phantom);
        }
        put_binding(&mut out, &claims.cnf);
        put_marks(&mut out, &claims.marks);
        out
    }

    /// `None` for bytes `encode` did not produce; the caller treats that as a miss.
    pub fn decode(bytes: &[u8]) -> Option<IntrospectionResult> {
        let mut r = Reader(bytes);
        let flags = match r.byte()? {
            0 => return r.0.is_empty().then_some(IntrospectionResult::Inactive),
            flags if flags & 0xc0 == ACTIVE => flags,
            _ => return None,
        };
        // One encoding per value: what `encode` would not write is refused.
        let exp = match flags & (EXP | EXP_64) {
            0 => None,
            EXP => Some(i64::from(u32::from_le_bytes(r.take(4)?.try_into().ok()?))),
            _ if flags & EXP != 0 => {
                let exp = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
                if u32::try_from(exp).is_ok() {
                    return None;
                }
                Some(exp)
            }
            _ => return None,
        };
        // The three strings go into one allocation (`NamedClaims`), checked
        // as UTF-8 at once: a UUID's text is written on the stack first.
        let mut uuid = [0u8; 36];
        let sub = match flags & SUB_UUID {
            0 => r.opt_bytes()?,
            _ => Some(uuid_text(r.take(16)?.try_into().ok()?, &mut uuid)),
        };
        if flags & SUB_UUID == 0 && sub.and_then(uuid_bytes).is_some() {
            return None;
        }
        let named = NamedClaims::from_utf8([sub, r.opt_bytes()?, r.opt_bytes()?])?;
        let (extra, checked) = match flags & LISTS {
            0 => (Vec::new(), Vec::new()),
            _ => (r.strings()?, r.strings()?),
        };
        if flags & LISTS != 0 && extra.is_empty() && checked.is_empty() {
            return None;
        }
        let phantom = match flags & PHANTOM {
            0 => None,
            _ => {
                let len = r.varint()?;
                Some(r.take(len)?.to_vec())
            }
        };
        let claims = TokenClaims {
            exp,
            named,
            extra,
            checked,
            phantom,
            cnf: match flags & BOUND {
                0 => Confirmation::Unbound,
                _ => r.binding()?,
            },
            marks: r.marks()?,
        };
        r.0.is_empty()
            .then_some(IntrospectionResult::Active(claims))
    }

    /// [`decode`](Self::decode), then the checks a fresh answer gets
    /// (`introspection::fit_for_headers`): for an entry this gateway did not
    /// write, the Redis tier's. `None` is a miss.
    pub fn decode_checked(bytes: &[u8]) -> Option<IntrospectionResult> {
        Self::decode(bytes).filter(introspection::fit_for_headers)
    }
}

/// The 16 bytes of `s` when it is a UUID in its canonical form (8-4-4-4-12
/// lowercase hex digits), which [`uuid_text`] gives back exactly.
fn uuid_bytes(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 36 || [8, 13, 18, 23].iter().any(|&i| s[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = s.iter().filter(|&&c| c != b'-');
    for byte in &mut out {
        let mut nibble = || match *digits.next()? {
            c @ b'0'..=b'9' => Some(c - b'0'),
            c @ b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *byte = nibble()? << 4 | nibble()?;
    }
    Some(out)
}

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    pairs
};

/// A UUID's canonical form, written into `out` (a cache hit runs this: no
/// branch, no per-digit work, no allocation).
fn uuid_text(bytes: [u8; 16], out: &mut [u8; 36]) -> &[u8] {
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    *out = [b'-'; 36];
    for (byte, at) in bytes.into_iter().zip(AT) {
        out[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    out
}

/// LEB128: 7 bits a byte, low bits first.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A string that may be absent: its length plus one (0: absent), then its bytes.
fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            put_varint(out, s.len() + 1);
            out.extend_from_slice(s.as_bytes());
        }
        None => out.push(0),
    }
}

/// A token issued by the token endpoint, as the exchange cache keeps it:
/// access_token, issued_token_type, token_type, then expires_in.
pub struct CachedExchange;

impl CachedExchange {
    pub fn encode(token: &IssuedToken) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(32 + token.access_token.len() + token.issued_token_type.len());
        put_string(&mut out, Some(&token.access_token));
        put_string(&mut out, Some(&token.issued_token_type));
        put_string(&mut out, token.token_type.as_deref());
        match token.expires_in {
            Some(e) => {
                out.push(1);
                out.extend_from_slice(&e.to_le_bytes());
            }
            None => out.push(0),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<IssuedToken> {
        let mut r = Reader(bytes);
        let token = IssuedToken {
            access_token: r.string()??,
            issued_token_type: r.string()??,
            token_type: r.string()?,
            expires_in: match r.byte()? {
                0 => None,
                1 => Some(u64::from_le_bytes(r.take(8)?.try_into().ok()?)),
                _ => return None,
            },
        };
        r.0.is_empty().then_some(token)
    }

    /// [`decode`](Self::decode), then the checks a fresh token gets
    /// (`exchange::fit_for_headers`): for an entry this gateway did not
    /// write, the Redis tier's. `None` is a miss.
    pub fn decode_checked(bytes: &[u8]) -> Option<IssuedToken> {
        Self::decode(bytes).filter(exchange::fit_for_headers)
    }
}

/// A token's revocation marks, when it has any: `M`, a byte of flags (1:
/// an `iat` follows as i64) and the count of tags, then the tags. Last in
/// the entry, so a token without marks is encoded as before them, and an
/// earlier version finds an entry with marks longer than it reads (a miss).
fn put_marks(out: &mut Vec<u8>, marks: &Marks) {
    if marks.tags().is_empty() && marks.issued_s.is_none() {
        return;
    }
    out.push(b'M');
    out.push(u8::from(marks.issued_s.is_some()));
    out.push(marks.tags().len() as u8);
    if let Some(iat) = marks.issued_s {
        out.extend_from_slice(&iat.to_le_bytes());
    }
    for tag in marks.tags() {
        out.extend_from_slice(tag);
    }
}

/// A flag byte, then a u32 length and the bytes when present.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.push(0),
    }
}

/// A bound token's binding (nothing for an unbound one: its tag says so).
fn put_binding(out: &mut Vec<u8>, cnf: &Confirmation) {
    match cnf {
        Confirmation::Unbound => {}
        Confirmation::Unverifiable => out.push(2),
        Confirmation::Bound { jkt, x5t_s256 } => {
            out.push(1);
            out.push(u8::from(jkt.is_some()) | u8::from(x5t_s256.is_some()) << 1);
            for digest in [jkt, x5t_s256].into_iter().flatten() {
                out.extend_from_slice(digest);
            }
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: Option<&str>) {
    put_bytes(out, s.map(str::as_bytes));
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// The marks `put_marks` wrote, or none when the entry ends here.
    fn marks(&mut self) -> Option<Marks> {
        if self.0.first() != Some(&b'M') {
            return Some(Marks::default());
        }
        self.take(1)?;
        let issued = match self.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let count = usize::from(self.byte()?);
        let issued_s = match issued {
            true => Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            false => None,
        };
        let bytes = self.take(count.checked_mul(8)?)?;
        // No allocation: a cache hit reads this.
        let mut tags = [[0u8; 8]; 4];
        let slots = tags.get_mut(..count)?;
        for (slot, chunk) in slots.iter_mut().zip(bytes.chunks_exact(8)) {
            slot.copy_from_slice(chunk);
        }
        Marks::from_parts(issued_s, &tags[..count])
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// What [`put_varint`] wrote: at most 4 bytes (a value under 2^28,
    /// more than any entry holds), the last without its high bit and, after
    /// the first, not 0 (the shortest form only).
    fn varint(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in [0, 7, 14, 21] {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return (b != 0 || shift == 0).then_some(n);
            }
        }
        None
    }

    /// What [`put_opt`] wrote, its bytes unchecked. Outer `None`:
    /// malformed; inner: absent.
    fn opt_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            0 => Some(None),
            n => Some(Some(self.take(n - 1)?)),
        }
    }

    /// What [`put_opt`] wrote. Outer `None`: malformed; inner: absent.
    fn opt(&mut self) -> Option<Option<&'a str>> {
        match self.opt_bytes()? {
            None => Some(None),
            Some(bytes) => Some(Some(core::str::from_utf8(bytes).ok()?)),
        }
    }

    /// Outer `None`: malformed; inner `None`: the value was absent.
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.byte()? {
            0 => Some(None),
            1 => {
                let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
                Some(Some(self.take(len)?))
            }
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Option<String>> {
        match self.bytes()? {
            None => Some(None),
            Some(bytes) => Some(Some(core::str::from_utf8(bytes).ok()?.to_owned())),
        }
    }

    /// What [`put_binding`] wrote for a bound token.
    fn binding(&mut self) -> Option<Confirmation> {
        match self.byte()? {
            2 => Some(Confirmation::Unverifiable),
            1 => {
                let flags = self.byte()?;
                let mut digest = |present: bool| -> Option<Option<[u8; 32]>> {
                    match present {
                        true => Some(Some(self.take(32)?.try_into().ok()?)),
                        false => Some(None),
                    }
                };
                let (jkt, x5t_s256) = (digest(flags & 1 != 0)?, digest(flags & 2 != 0)?);
                match (flags & !3, jkt, x5t_s256) {
                    (0, None, None) | (1.., _, _) => None,
                    _ => Some(Confirmation::Bound { jkt, x5t_s256 }),
                }
            }
            _ => None,
        }
    }

    /// A varint count, then that many strings that may be absent.
    fn strings(&mut self) -> Option<Vec<Option<String>>> {
        let count = self.varint()?;
        // Each takes one byte at least: a count past the bytes left is junk.
        if count > self.0.len() {
            return None;
        }
        (0..count)
            .map(|_| Some(self.opt()?.map(str::to_owned)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_that_do_not_fit_are_a_miss() {
        let claims = TokenClaims {
            marks: Marks::from_parts(Some(1), &[[7; 8]]).unwrap(),
            ..TokenClaims::default()
        };
        let bytes = CachedIntrospection::encode(&IntrospectionResult::Active(claims));
        let at = bytes.iter().rposition(|&b| b == b'M').unwrap();
        let mut five = bytes[..at].to_vec();
        five.extend([b'M', 0, 5]);
        five.extend([0u8; 40]);
        assert_eq!(CachedIntrospection::decode(&five), None);
        let mut cut = bytes.clone();
        cut.pop();
        assert_eq!(CachedIntrospection::decode(&cut), None);
        let mut bad_flag = bytes.clone();
        bad_flag[at + 1] = 2;
        assert_eq!(CachedIntrospection::decode(&bad_flag), None);
    }

    #[test]
    fn round_trips() {
        let full = IntrospectionResult::Active(TokenClaims {
            named: NamedClaims::new(Some("alice"), Some("read write"), None),
            exp: Some(-5),
            extra: vec![Some("admin,view".into()), None],
            checked: vec![None, Some(r#"["a"]"#.into())],
            phantom: Some(b"eyJh.eyJz.c2ln".to_vec()),
            cnf: Confirmation::Unbound,
            marks: Marks::default(),
        });
        let marked = |issued_s, tags: &[[u8; 8]]| {
            IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(Some("alice"), None, None),
                marks: Marks::from_parts(issued_s, tags).unwrap(),
                cnf: Confirmation::Bound {
                    jkt: Some([3; 32]),
                    x5t_s256: None,
                },
                ..TokenClaims::default()
            })
        };
        let bound = |cnf| {
            IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(Some("alice"), None, None),
                cnf,
                ..TokenClaims::default()
            })
        };
        for result in [
            full,
            bound(Confirmation::Unverifiable),
            bound(Confirmation::Bound {
                jkt: Some([7; 32]),
                x5t_s256: None,
            }),
            bound(Confirmation::Bound {
                jkt: None,
                x5t_s256: Some([9; 32]),
            }),
            bound(Confirmation::Bound {
                jkt: Some([1; 32]),
                x5t_s256: Some([2; 32]),
            }),
            IntrospectionResult::Active(TokenClaims::default()),
            IntrospectionResult::Inactive,
            marked(Some(1_800_000_000), &[[1; 8], [2; 8]]),
            marked(None, &[[1; 8]]),
            marked(Some(-1), &[]),
            IntrospectionResult::Active(TokenClaims {
                marks: Marks::from_parts(Some(5), &[[4; 8]; 4]).unwrap(),
                ..TokenClaims::default()
            }),
        ] {
            let bytes = CachedIntrospection::encode(&result);
            assert_eq!(CachedIntrospection::decode(&bytes), Some(result));
        }
    }

    /// Entries of the earlier layout (a Redis tier's, written by a
    /// gateway not yet upgraded) are a miss, never misread; a bound entry
    /// ends with its binding, checked as before.
    #[test]
    fn entries_of_the_earlier_layout_are_a_miss_and_bindings_are_checked() {
        let old = [
            &[1u8, 1][..],
            &5i64.to_le_bytes(),
            &[1, 5, 0, 0, 0],
            b"alice",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(CachedIntrospection::decode(&old), None);
        let expected = IntrospectionResult::Active(TokenClaims {
            named: NamedClaims::new(Some("alice"), None, None),
            exp: Some(5),
            ..TokenClaims::default()
        });
        let now = [
            &[ACTIVE | EXP][..],
            &5u32.to_le_bytes(),
            &[6],
            b"alice",
            &[0, 0],
        ]
        .concat();
        assert_eq!(CachedIntrospection::encode(&expected), now);
        assert_eq!(CachedIntrospection::decode(&now), Some(expected));
        let mut bound = now.clone();
        bound[0] |= BOUND;
        for (tail, cnf) in [
            (vec![2], Some(Confirmation::Unverifiable)),
            (
                [&[1u8, 1][..], &[3; 32]].concat(),
                Some(Confirmation::Bound {
                    jkt: Some([3; 32]),
                    x5t_s256: None,
                }),
            ),
            (vec![], None),
            (vec![1, 0], None),
            (vec![1, 4], None),
            ([&[1u8, 1][..], &[3; 31]].concat(), None),
            ([&[1u8, 2][..], &[3; 33]].concat(), None),
            (vec![3], None),
        ] {
            let entry = [&bound[..], &tail].concat();
            let decoded = CachedIntrospection::decode(&entry);
            match cnf {
                Some(cnf) => {
                    let IntrospectionResult::Active(claims) = decoded.unwrap() else {
                        panic!()
                    };
                    assert_eq!(claims.cnf, cnf);
                }
                None => assert_eq!(decoded, None, "{tail:?}"),
            }
        }
    }

    /// A canonical UUID `sub` takes 16 bytes and comes back as it was;
    /// anything else is kept as its string; `exp` takes 4 bytes when it
    /// fits in 32 bits, 8 otherwise; long strings take longer varints.
    #[test]
    fn subs_exps_and_lengths_of_every_shape_round_trip() {
        let claims = |sub: &str, exp| {
            IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(Some(sub), Some(&*"s".repeat(300)), Some("")),
                exp,
                ..TokenClaims::default()
            })
        };
        let uuid = "6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a";
        for (sub, packed) in [
            (uuid, true),
            ("00000000-0000-0000-0000-000000000000", true),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", true),
            ("6F1C2A52-8D4E-4B7A-9A35-0C8F1D2E3B4A", false),
            ("6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4", false),
            ("6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a0", false),
            ("6f1c2a528-d4e-4b7a-9a35-0c8f1d2e3b4a", false),
            ("6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4g", false),
            ("6f1c2a52+8d4e-4b7a-9a35-0c8f1d2e3b4a", false),
            ("", false),
        ] {
            for (exp, width) in [
                (Some(4_102_444_800), 4),
                (Some(0), 4),
                (Some(u32::MAX as i64), 4),
                (Some(u32::MAX as i64 + 1), 8),
                (Some(-1), 8),
                (Some(i64::MIN), 8),
                (None, 0),
            ] {
                let result = claims(sub, exp);
                let bytes = CachedIntrospection::encode(&result);
                assert_eq!(bytes[0] & SUB_UUID != 0, packed, "{sub}");
                let sub_len = if packed { 16 } else { 1 + sub.len() };
                // flags, exp, sub, scope (2-byte varint), empty client id
                assert_eq!(
                    bytes.len(),
                    1 + width + sub_len + 2 + 300 + 1,
                    "{sub} {exp:?}"
                );
                assert_eq!(CachedIntrospection::decode(&bytes), Some(result));
            }
        }
    }

    #[test]
    fn flags_and_varints_that_encode_never_writes_are_a_miss() {
        let good = CachedIntrospection::encode(&IntrospectionResult::Active(TokenClaims {
            exp: Some(7),
            ..TokenClaims::default()
        }));
        assert!(CachedIntrospection::decode(&good).is_some());
        for first in [0x40, 0xc0 | EXP, ACTIVE | EXP_64, 0xff, 1, 2, 3] {
            let mut bad = good.clone();
            bad[0] = first;
            assert_eq!(CachedIntrospection::decode(&bad), None, "{first:#x}");
        }
        // A varint longer than 4 bytes, and one that runs past the end.
        let mut long = vec![ACTIVE, 0x80, 0x80, 0x80, 0x80, 0x01];
        long.extend([0u8; 8]);
        assert_eq!(CachedIntrospection::decode(&long), None);
        assert_eq!(CachedIntrospection::decode(&[ACTIVE, 0x85]), None);
        // A list count larger than what follows.
        assert_eq!(
            CachedIntrospection::decode(&[ACTIVE | LISTS, 0, 0, 0, 0x7f, 0]),
            None
        );
        // One encoding per value (the fuzz target checks it): a length in
        // two bytes where one does, an `exp` in 8 bytes that fits in 4, a
        // UUID kept as a string, a lists flag with no list.
        assert!(CachedIntrospection::decode(&[ACTIVE, 0x82, 0x00, b'a', 0, 0]).is_none());
        assert!(CachedIntrospection::decode(&[ACTIVE, 0x02, b'a', 0, 0]).is_some());
        let long_exp = [
            &[ACTIVE | EXP | EXP_64][..],
            &7i64.to_le_bytes(),
            &[0, 0, 0],
        ]
        .concat();
        assert_eq!(CachedIntrospection::decode(&long_exp), None);
        let uuid = "6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a";
        let as_string = [&[ACTIVE, 37][..], uuid.as_bytes(), &[0, 0]].concat();
        assert_eq!(CachedIntrospection::decode(&as_string), None);
        assert_eq!(
            CachedIntrospection::decode(&[ACTIVE | LISTS, 0, 0, 0, 0, 0]),
            None
        );
        assert!(CachedIntrospection::decode(&[ACTIVE | LISTS, 0, 0, 0, 1, 0, 0]).is_some());
    }

    #[test]
    fn garbage_decodes_to_none() {
        assert_eq!(CachedIntrospection::decode(&[]), None);
        assert_eq!(CachedIntrospection::decode(&[2]), None);
        assert_eq!(CachedIntrospection::decode(&[0, 0]), None);
        assert_eq!(CachedIntrospection::decode(&[1, 1, 0]), None);
        let mut bytes = CachedIntrospection::encode(&IntrospectionResult::Active(TokenClaims {
            named: NamedClaims::new(Some("alice"), None, None),
            ..Default::default()
        }));
        bytes.pop();
        assert_eq!(CachedIntrospection::decode(&bytes), None);
    }

    #[test]
    fn exchanged_tokens_round_trip() {
        let full = IssuedToken {
            access_token: "eyJ.x.y".into(),
            issued_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
            token_type: Some("Bearer".into()),
            expires_in: Some(60),
        };
        let bare = IssuedToken {
            token_type: None,
            expires_in: None,
            ..full.clone()
        };
        for token in [full, bare] {
            assert_eq!(
                CachedExchange::decode(&CachedExchange::encode(&token)),
                Some(token)
            );
        }
        assert_eq!(CachedExchange::decode(&[1, 0, 0, 0, 0, 0]), None);
        assert_eq!(CachedExchange::decode(&[0]), None);
    }

    /// Zones kept across a reload and the Redis tier hold entries other
    /// builds wrote: the layout is fixed, and `token_type` (what
    /// `$oauth2_token_new_token_type` shows) has always been in it.
    #[test]
    fn exchanged_tokens_written_by_other_builds_keep_their_token_type() {
        let mut written = vec![1, 3, 0, 0, 0];
        written.extend_from_slice(b"a.b");
        written.extend_from_slice(&[1, 5, 0, 0, 0]);
        written.extend_from_slice(b"urn:x");
        written.extend_from_slice(&[1, 6, 0, 0, 0]);
        written.extend_from_slice(b"Bearer");
        written.extend_from_slice(&[1, 60, 0, 0, 0, 0, 0, 0, 0]);
        let token = IssuedToken {
            access_token: "a.b".into(),
            issued_token_type: "urn:x".into(),
            token_type: Some("Bearer".into()),
            expires_in: Some(60),
        };
        assert_eq!(CachedExchange::encode(&token), written);
        assert_eq!(CachedExchange::decode_checked(&written), Some(token));
        // An answer without token_type: the flag byte 0, nothing else.
        let mut bare = written[..5 + 3 + 5 + 5].to_vec();
        bare.extend_from_slice(&[0, 0]);
        let decoded = CachedExchange::decode_checked(&bare).unwrap();
        assert_eq!((decoded.token_type, decoded.expires_in), (None, None));
    }

    #[test]
    fn entries_from_elsewhere_get_the_checks_of_a_fresh_answer() {
        let jwt = crate::oauth::jwt::compact(r#"{"alg":"ES256"}"#, r#"{"sub":"a"}"#, b"sig");
        let active = |claims: TokenClaims| IntrospectionResult::Active(claims);
        let good = [
            IntrospectionResult::Inactive,
            active(TokenClaims {
                named: NamedClaims::new(Some("alice\tsmith"), None, None),
                extra: vec![Some("x".into()), None],
                // Claims only checked by require_claim never reach a header.
                checked: vec![Some("a\r\nb".into())],
                phantom: Some(jwt.clone().into_bytes()),
                ..TokenClaims::default()
            }),
        ];
        for result in good {
            let bytes = CachedIntrospection::encode(&result);
            assert_eq!(CachedIntrospection::decode_checked(&bytes), Some(result));
        }
        let split = Some("a\r\nX-Injected: 1".to_string());
        let bad = [
            TokenClaims {
                named: NamedClaims::new(split.clone().as_deref(), None, None),
                ..TokenClaims::default()
            },
            TokenClaims {
                named: NamedClaims::new(None, Some("read\0"), None),
                ..TokenClaims::default()
            },
            TokenClaims {
                named: NamedClaims::new(None, None, Some("\x7f")),
                ..TokenClaims::default()
            },
            TokenClaims {
                extra: vec![None, split],
                ..TokenClaims::default()
            },
            // Phantom JWTs that are no JWTs, or could split the header.
            TokenClaims {
                phantom: Some(b"{\"active\":false}".to_vec()),
                ..TokenClaims::default()
            },
            TokenClaims {
                phantom: Some(format!("{jwt}\r\nX-Injected: 1").into_bytes()),
                ..TokenClaims::default()
            },
            TokenClaims {
                phantom: Some(
                    crate::oauth::jwt::compact(r#"{"alg":"none"}"#, "{}", b"s").into_bytes(),
                ),
                ..TokenClaims::default()
            },
            TokenClaims {
                phantom: Some(Vec::new()),
                ..TokenClaims::default()
            },
        ];
        for (i, claims) in bad.into_iter().enumerate() {
            let bytes = CachedIntrospection::encode(&active(claims));
            assert!(
                CachedIntrospection::decode(&bytes).is_some(),
                "entry {i} decodes"
            );
            assert_eq!(
                CachedIntrospection::decode_checked(&bytes),
                None,
                "entry {i}"
            );
        }
        assert_eq!(CachedIntrospection::decode_checked(&[7]), None);

        let issued = IssuedToken {
            access_token: "eyJ.x.y".into(),
            issued_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
            token_type: Some("Bearer".into()),
            expires_in: Some(60),
        };
        let bytes = CachedExchange::encode(&issued);
        assert_eq!(CachedExchange::decode_checked(&bytes), Some(issued.clone()));
        for bad in [
            IssuedToken {
                access_token: "tok\r\nX-Injected: 1".into(),
                ..issued.clone()
            },
            IssuedToken {
                access_token: "two words".into(),
                ..issued.clone()
            },
            IssuedToken {
                access_token: String::new(),
                ..issued.clone()
            },
            IssuedToken {
                issued_token_type: "urn:x\n".into(),
                ..issued.clone()
            },
            IssuedToken {
                issued_token_type: String::new(),
                ..issued.clone()
            },
            IssuedToken {
                token_type: Some("Bearer\r".into()),
                ..issued.clone()
            },
        ] {
            let bytes = CachedExchange::encode(&bad);
            assert!(CachedExchange::decode(&bytes).is_some());
            assert_eq!(CachedExchange::decode_checked(&bytes), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// One encoding per value (the fuzz target's check): an entry with
        /// one byte changed either decodes to nothing or to a value that
        /// encodes to exactly those bytes.
        #[test]
        fn whatever_decodes_is_what_encode_writes(
            sub in proptest::prop_oneof![
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9a-fA-F-]{0,40}",
            ],
            exp in proptest::prelude::any::<Option<i64>>(),
            lists in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let result = IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(Some(&*sub), Some("a b"), None),
                exp,
                extra: if lists { vec![None, Some("x".into())] } else { vec![] },
                ..TokenClaims::default()
            });
            let mut bytes = CachedIntrospection::encode(&result);
            proptest::prop_assert_eq!(CachedIntrospection::decode(&bytes), Some(result));
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Some(decoded) = CachedIntrospection::decode(&bytes) {
                proptest::prop_assert_eq!(CachedIntrospection::encode(&decoded), bytes);
            }
        }
    }

    /// `sub`, `scope` and `client_id` as the decoder before `NamedClaims`
    /// read them: a `String` each, a UUID formatted on its own (here with
    /// `format!`). `None` where it refused the bytes.
    fn strings_read_the_old_way(bytes: &[u8]) -> Option<[Option<String>; 3]> {
        let mut r = Reader(bytes);
        let flags = r.byte()?;
        r.take(match flags & (EXP | EXP_64) {
            0 => 0,
            EXP => 4,
            _ => 8,
        })?;
        let opt = |r: &mut Reader| -> Option<Option<String>> {
            match r.varint()? {
                0 => Some(None),
                n => Some(Some(String::from_utf8(r.take(n - 1)?.to_vec()).ok()?)),
            }
        };
        let sub = match flags & SUB_UUID {
            0 => opt(&mut r)?,
            _ => {
                let hex: Vec<String> = r.take(16)?.iter().map(|b| format!("{b:02x}")).collect();
                let group = |from: usize, to: usize| hex[from..to].concat();
                Some(format!(
                    "{}-{}-{}-{}-{}",
                    group(0, 4),
                    group(4, 6),
                    group(6, 8),
                    group(8, 10),
                    group(10, 16)
                ))
            }
        };
        Some([sub, opt(&mut r)?, opt(&mut r)?])
    }

    fn claim_text() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        proptest::option::of(proptest::prop_oneof![
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            ".{0,30}",
        ])
    }

    proptest::proptest! {
        /// The strings decoded into one allocation are those the earlier
        /// decoder read into three, for entries as written and with any
        /// byte changed: what it refused is refused.
        #[test]
        fn the_named_claims_read_as_the_old_decoder_read_them(
            sub in claim_text(),
            scope in claim_text(),
            client_id in claim_text(),
            exp in proptest::prelude::any::<Option<i64>>(),
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let result = IntrospectionResult::Active(TokenClaims {
                named: NamedClaims::new(sub.as_deref(), scope.as_deref(), client_id.as_deref()),
                exp,
                ..TokenClaims::default()
            });
            let written = CachedIntrospection::encode(&result);
            let mut changed = written.clone();
            let at = at % changed.len();
            changed[at] = byte;
            for bytes in [written, changed] {
                let old = strings_read_the_old_way(&bytes);
                let decoded = CachedIntrospection::decode(&bytes);
                if let Some(IntrospectionResult::Active(claims)) = &decoded {
                    let now = claims.named.all().map(|s| s.map(str::to_owned));
                    proptest::prop_assert_eq!(Some(now), old);
                } else if old.is_none() && bytes[0] & 0xc0 == ACTIVE {
                    proptest::prop_assert_eq!(decoded, None);
                }
            }
            let decoded = CachedIntrospection::decode(&CachedIntrospection::encode(&result));
            proptest::prop_assert_eq!(decoded, Some(result));
        }
    }

    /// The typical claims of `scripts/cache-sizing.pl` and the zone's
    /// density test (`shm/table.rs`): 62 bytes.
    #[test]
    fn compact() {
        let result = IntrospectionResult::Active(TokenClaims {
            named: NamedClaims::new(
                Some("6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a"),
                Some("openid profile orders:read"),
                Some("web-app-1234"),
            ),
            exp: Some(4_102_444_800),
            ..TokenClaims::default()
        });
        // flags, exp, the UUID, two strings' lengths and bytes
        assert_eq!(
            CachedIntrospection::encode(&result).len(),
            1 + 4 + 16 + (1 + 26) + (1 + 12)
        );
    }
}
