//! `sub`, `scope` and `client_id` of an active token: the three claims the
//! module reads by name (variables, the scope check). A cache hit decodes
//! them on every request, so their text lives in one allocation, not three.

use core::fmt;

/// Each of the three may be absent; an absent claim is not an empty one.
/// One value per triple (the text of the present ones in order, and where
/// each ends), so equality is that of the claims.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NamedClaims {
    /// The present claims' text, one after the other.
    text: Box<str>,
    /// Where `sub` and `scope` end in `text` (`client_id` ends at its end).
    ends: [usize; 2],
    /// Which are present: [`SUB`], [`SCOPE`], [`CLIENT_ID`].
    present: u8,
}

const SUB: u8 = 1;
const SCOPE: u8 = 2;
const CLIENT_ID: u8 = 4;

impl NamedClaims {
    pub fn new(sub: Option<&str>, scope: Option<&str>, client_id: Option<&str>) -> NamedClaims {
        NamedClaims::from_utf8([sub, scope, client_id].map(|p| p.map(str::as_bytes)))
            .expect("whole strings join on character boundaries")
    }

    /// The claims from bytes (a cache entry's), each UTF-8 on its own, as
    /// one allocation checked once; `None` when one is not UTF-8.
    pub fn from_utf8(parts: [Option<&[u8]>; 3]) -> Option<NamedClaims> {
        let len = parts.iter().flatten().map(|p| p.len()).sum();
        let mut text = Vec::with_capacity(len);
        let mut ends = [0; 2];
        let mut present = 0;
        for (i, part) in parts.into_iter().enumerate() {
            if let Some(part) = part {
                text.extend_from_slice(part);
                present |= 1 << i;
            }
            if let Some(end) = ends.get_mut(i) {
                *end = text.len();
            }
        }
        let text = String::from_utf8(text).ok()?;
        // UTF-8 as a whole, and no character across two claims: each is
        // UTF-8 on its own.
        if !ends.iter().all(|&end| text.is_char_boundary(end)) {
            return None;
        }
        Some(NamedClaims {
            text: text.into_boxed_str(),
            ends,
            present,
        })
    }

    pub fn sub(&self) -> Option<&str> {
        self.part(SUB, 0, self.ends[0])
    }

    pub fn scope(&self) -> Option<&str> {
        self.part(SCOPE, self.ends[0], self.ends[1])
    }

    pub fn client_id(&self) -> Option<&str> {
        self.part(CLIENT_ID, self.ends[1], self.text.len())
    }

    /// `sub`, `scope` and `client_id`, in that order.
    pub fn all(&self) -> [Option<&str>; 3] {
        [self.sub(), self.scope(), self.client_id()]
    }

    fn part(&self, flag: u8, start: usize, end: usize) -> Option<&str> {
        match self.present & flag {
            0 => None,
            // `new` made the ends the bounds of whole `&str`s it pushed.
            _ => self.text.get(start..end),
        }
    }
}

impl fmt::Debug for NamedClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedClaims")
            .field("sub", &self.sub())
            .field("scope", &self.scope())
            .field("client_id", &self.client_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,40}")
    }

    proptest! {
        #[test]
        fn each_claim_reads_back_as_it_was_given(sub in claim(), scope in claim(), client_id in claim()) {
            let named = NamedClaims::new(sub.as_deref(), scope.as_deref(), client_id.as_deref());
            prop_assert_eq!(named.sub(), sub.as_deref());
            prop_assert_eq!(named.scope(), scope.as_deref());
            prop_assert_eq!(named.client_id(), client_id.as_deref());
            prop_assert_eq!(named.all(), [sub.as_deref(), scope.as_deref(), client_id.as_deref()]);
        }

        #[test]
        fn equal_exactly_when_the_claims_are(
            a in (claim(), claim(), claim()),
            b in (claim(), claim(), claim()),
        ) {
            let make = |(s, c, i): &(Option<String>, Option<String>, Option<String>)| {
                NamedClaims::new(s.as_deref(), c.as_deref(), i.as_deref())
            };
            prop_assert_eq!(make(&a) == make(&b), a == b);
            prop_assert_eq!(make(&a).clone(), make(&a));
        }
    }

    fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::prop_oneof![
            ".{0,12}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
            // Pieces of characters: a split one is no claim.
            proptest::collection::vec(
                proptest::sample::select(vec![0xc3, 0xa9, 0xe2, 0x82, 0xac, b'a']),
                0..6
            ),
        ])
    }

    proptest! {
        #[test]
        fn from_bytes_exactly_when_each_claim_is_utf8(parts in [bytes(), bytes(), bytes()]) {
            let strs = parts.clone().map(|p| p.map(String::from_utf8));
            let named = NamedClaims::from_utf8(parts.each_ref().map(Option::as_deref));
            match strs {
                [sub, scope, client_id] if [&sub, &scope, &client_id].iter().all(|s| s.as_ref().is_none_or(Result::is_ok)) => {
                    let [sub, scope, client_id] = [sub, scope, client_id].map(|s| s.map(Result::unwrap));
                    prop_assert_eq!(named, Some(NamedClaims::new(sub.as_deref(), scope.as_deref(), client_id.as_deref())));
                }
                _ => prop_assert_eq!(named, None),
            }
        }
    }

    #[test]
    fn absent_is_not_empty() {
        let named = NamedClaims::new(Some(""), None, Some(""));
        assert_eq!(named.all(), [Some(""), None, Some("")]);
        assert_ne!(named, NamedClaims::new(None, Some(""), Some("")));
        assert_eq!(NamedClaims::default().all(), [None, None, None]);
        // Moved text does not pass from one claim to the next.
        assert_ne!(
            NamedClaims::new(Some("ab"), Some("c"), None),
            NamedClaims::new(Some("a"), Some("bc"), None)
        );
    }

    #[test]
    fn debug_shows_the_claims() {
        let named = NamedClaims::new(Some("alice"), None, Some("app"));
        assert_eq!(
            format!("{named:?}"),
            r#"NamedClaims { sub: Some("alice"), scope: None, client_id: Some("app") }"#
        );
    }
}
