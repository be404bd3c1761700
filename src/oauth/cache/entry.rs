//! The value of a cache entry: the verdict and the claims the module exposes,
//! as length-prefixed bytes, so a hit needs no JSON parsing.

use crate::oauth::cnf::Confirmation;
use crate::oauth::exchange::{self, IssuedToken};
use crate::oauth::introspection::{self, IntrospectionResult, TokenClaims};
use crate::oauth::ssf::Marks;

/// Layout: tag (0 inactive, 1 active, 2 active and bound), exp flag + i64,
/// then sub, scope and client_id, each as a flag byte, u32 length and bytes;
/// then the `claim_set` values and the `require_claim` values, each a u32
/// count and strings; then the phantom JWT as a string; with tag 2, the
/// binding: 2 for a `cnf` that cannot be checked, or 1 and a byte of
/// flags (1: `jkt`, 2: `x5t#S256`) followed by those 32-byte digests.
///
/// An unbound token's entry is what it was before bindings were kept (tag
/// 1), so entries written by an earlier version still decode, as unbound
/// (they were written by a gateway that did not read `cnf`; see SECURITY.md),
/// and an earlier version reading a bound entry finds no entry (a miss)
/// rather than a token without its binding.
#[derive(Debug, PartialEq, Eq)]
pub struct CachedIntrospection;

impl CachedIntrospection {
    pub fn encode(result: &IntrospectionResult) -> Vec<u8> {
        let claims = match result {
            IntrospectionResult::Inactive => return vec![0],
            IntrospectionResult::Active(claims) => claims,
        };
        let strings = [&claims.sub, &claims.scope, &claims.client_id];
        let mut out = Vec::with_capacity(
            10 + strings
                .iter()
                .map(|s| 5 + s.as_ref().map_or(0, String::len))
                .sum::<usize>(),
        );
        out.push(match claims.cnf {
            Confirmation::Unbound => 1,
            _ => 2,
        });
        match claims.exp {
            Some(exp) => {
                out.push(1);
                out.extend_from_slice(&exp.to_le_bytes());
            }
            None => out.push(0),
        }
        for s in strings {
            put_string(&mut out, s.as_deref());
        }
        for list in [&claims.extra, &claims.checked] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for s in list {
                put_string(&mut out, s.as_deref());
            }
        }
        put_bytes(&mut out, claims.phantom.as_deref());
        put_binding(&mut out, &claims.cnf);
        put_marks(&mut out, &claims.marks);
        out
    }

    /// `None` for bytes `encode` did not produce; the caller treats that as a miss.
    pub fn decode(bytes: &[u8]) -> Option<IntrospectionResult> {
        let mut r = Reader(bytes);
        let bound = match r.byte()? {
            0 => return r.0.is_empty().then_some(IntrospectionResult::Inactive),
            1 => false,
            2 => true,
            _ => return None,
        };
        let exp = match r.byte()? {
            0 => None,
            1 => Some(i64::from_le_bytes(r.take(8)?.try_into().ok()?)),
            _ => return None,
        };
        let (sub, scope, client_id) = (r.string()?, r.string()?, r.string()?);
        let (extra, checked) = (r.strings()?, r.strings()?);
        let claims = TokenClaims {
            exp,
            sub,
            scope,
            client_id,
            extra,
            checked,
            phantom: r.bytes()?.map(<[u8]>::to_vec),
            cnf: match bound {
                true => r.binding()?,
                false => Confirmation::Unbound,
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

    /// A u32 count, then that many strings.
    fn strings(&mut self) -> Option<Vec<Option<String>>> {
        let count = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        (0..count).map(|_| self.string()).collect()
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
            sub: Some("alice".into()),
            scope: Some("read write".into()),
            client_id: None,
            exp: Some(-5),
            extra: vec![Some("admin,view".into()), None],
            checked: vec![None, Some(r#"["a"]"#.into())],
            phantom: Some(b"eyJh.eyJz.c2ln".to_vec()),
            cnf: Confirmation::Unbound,
            marks: Marks::default(),
        });
        let marked = |issued_s, tags: &[[u8; 8]]| {
            IntrospectionResult::Active(TokenClaims {
                sub: Some("alice".into()),
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
                sub: Some("alice".into()),
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

    /// An entry written before bindings were kept (this layout, tag 1)
    /// still decodes, as an unbound token; a bound entry ends with its binding.
    #[test]
    fn entries_without_a_binding_still_decode() {
        let old = [
            &[1u8, 1][..],
            &5i64.to_le_bytes(),
            &[1, 5, 0, 0, 0],
            b"alice",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        let expected = IntrospectionResult::Active(TokenClaims {
            sub: Some("alice".into()),
            exp: Some(5),
            ..TokenClaims::default()
        });
        assert_eq!(CachedIntrospection::decode(&old), Some(expected.clone()));
        assert_eq!(CachedIntrospection::encode(&expected), old);
        let mut bound = old.clone();
        bound[0] = 2;
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

    #[test]
    fn garbage_decodes_to_none() {
        assert_eq!(CachedIntrospection::decode(&[]), None);
        assert_eq!(CachedIntrospection::decode(&[2]), None);
        assert_eq!(CachedIntrospection::decode(&[0, 0]), None);
        assert_eq!(CachedIntrospection::decode(&[1, 1, 0]), None);
        let mut bytes = CachedIntrospection::encode(&IntrospectionResult::Active(TokenClaims {
            sub: Some("alice".into()),
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
                sub: Some("alice\tsmith".into()),
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
                sub: split.clone(),
                ..TokenClaims::default()
            },
            TokenClaims {
                scope: Some("read\0".into()),
                ..TokenClaims::default()
            },
            TokenClaims {
                client_id: Some("\x7f".into()),
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

    #[test]
    fn compact() {
        let result = IntrospectionResult::Active(TokenClaims {
            sub: Some("alice".into()),
            scope: Some("read".into()),
            client_id: Some("app".into()),
            exp: Some(1),
            ..TokenClaims::default()
        });
        // tag, exp, three strings' headers and bytes, two empty counts, no JWT
        assert_eq!(
            CachedIntrospection::encode(&result).len(),
            1 + 9 + 3 * 5 + 5 + 4 + 3 + 4 + 4 + 1
        );
    }
}
