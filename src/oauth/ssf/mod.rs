//! Revocation pushed by the IdP: the Shared Signals receiver's plain side
//! (SSF 1.0, CAEP 1.0, RISC 1.0 over RFC 8417 SETs and RFC 9493 subject
//! identifiers). No nginx type here.
//!
//! - `subject.rs` — RFC 9493 subject identifiers read from a SET.
//! - `set.rs` — a pushed SET verified (with `oauth/jose/`) into the
//!   revocations it asks for, or the RFC 8935 §2.4 error it gets.
//! - `poll.rs` — poll delivery (RFC 8936): the request, the answer, when
//!   to poll next.
//!
//! The revocation list is keyed by [`tag`]s: 8 bytes of a digest of what
//! names the subject (its kind, issuer and value). A token's own tags are
//! computed once, when its claims are read (`Marks::of`), and kept with
//! its cache entry, so a cache hit looks them up without hashing.

pub mod memo;
pub mod poll;
pub mod set;
pub mod subject;

use serde_json::{Map, Value};

/// What a revocation names, and which claim of a token is compared with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The user: a token's `sub`.
    Subject,
    /// One session of the user: a token's `sid`.
    Session,
    /// An e-mail address: a token's `email`.
    Email,
    /// One token: its `jti`.
    TokenId,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Subject => 1,
            Kind::Session => 2,
            Kind::Email => 3,
            Kind::TokenId => 4,
        }
    }

    /// The token claim compared with a revocation of this kind.
    pub fn claim(self) -> &'static str {
        match self {
            Kind::Subject => "sub",
            Kind::Session => "sid",
            Kind::Email => "email",
            Kind::TokenId => "jti",
        }
    }

    pub const ALL: [Kind; 4] = [Kind::Subject, Kind::Session, Kind::Email, Kind::TokenId];
}

/// The list's key of `value` of `kind` at `issuer` (`""` for tokens that
/// carry no `iss`). 64 bits of SHA-256: a collision only refuses a token,
/// it never lets one through.
pub fn tag(kind: Kind, issuer: &str, value: &str) -> [u8; 8] {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(b"ssf");
    hasher.update(&[kind.byte()]);
    for part in [issuer, value] {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finish();
    digest[..8].try_into().expect("8 bytes")
}

/// What fills an index key after its two tags (a table keeps only the
/// first 16 bytes of a key; the rest feeds its hash).
const INDEX_FILL: [u8; 16] = *b"ssf index entry!";

/// How many chains of the index's table one list key's entries are spread
/// over: a chain holds at most `MAX_CHAIN` (16) nodes, so a subject's
/// tokens past that in one chain would push each other out.
pub const INDEX_CHAINS: usize = 8;

/// The list key `tag` as it begins the index keys of chain `chain`
/// (below [`INDEX_CHAINS`]): its last byte's low bits set to the chain.
fn index_tag(tag: &[u8; 8], chain: usize) -> [u8; 8] {
    let mut spread = *tag;
    spread[7] = (spread[7] & !(INDEX_CHAINS as u8 - 1)) | chain as u8;
    spread
}

/// What each of `tag`'s index keys begins with, one per chain: a
/// revocation reads these [`INDEX_CHAINS`] chains.
pub fn index_tags(tag: &[u8; 8]) -> [[u8; 8]; INDEX_CHAINS] {
    core::array::from_fn(|chain| index_tag(tag, chain))
}

/// The key of the index entry saying that the token whose cache keys begin
/// with `token_tag` carries the list key `tag` (`shm/revocations.rs`): it
/// begins with one of `tag`'s [`index_tags`], chosen by the token, so the
/// entries of one subject share [`INDEX_CHAINS`] chains of the index's
/// table, and a revocation finds them in that many walks.
pub fn index_key(tag: &[u8; 8], token_tag: &[u8; 8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let chain = usize::from(token_tag[0]) % INDEX_CHAINS;
    key[..8].copy_from_slice(&index_tag(tag, chain));
    key[8..16].copy_from_slice(token_tag);
    key[16..].copy_from_slice(&INDEX_FILL);
    key
}

pub fn indexed_token(kept: &[u8; 16], tag: &[u8; 8]) -> Option<[u8; 8]> {
    (kept[..8] == tag[..]).then(|| kept[8..16].try_into().expect("8 bytes"))
}

/// A token's keys in the revocation list and when it was issued: computed
/// once from its claims, kept with its cache entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// The token's `iat`; without one, when the gateway first saw it
    /// ([`Marks::first_seen`]); `None` when neither is known (then any
    /// revocation of its subject refuses it while the revocation lasts).
    pub issued_s: Option<i64>,
    tags: [[u8; 8]; 4],
    count: u8,
    /// `issued_s` was set by [`Marks::first_seen`] just now (not kept in a
    /// cache entry: an entry's marks read back without it).
    seen_now: bool,
}

impl Marks {
    /// The marks of a token with these claims: a tag for each of `sub`,
    /// `sid`, `email` and `jti` it carries as a string, at its `iss` (or `""`).
    pub fn of(claims: &Map<String, Value>) -> Marks {
        Marks::of_members(
            claims.get("iss"),
            claims.get("iat"),
            Kind::ALL.map(|kind| claims.get(kind.claim()).and_then(Value::as_str)),
        )
    }

    /// [`Marks::of`] from the members as read: `iss`, `iat`, then the
    /// string values of `sub`, `sid`, `email` and `jti` (`Kind::ALL`'s order).
    pub fn of_members(
        iss: Option<&Value>,
        iat: Option<&Value>,
        values: [Option<&str>; 4],
    ) -> Marks {
        let issuer = iss.and_then(Value::as_str).unwrap_or("");
        let mut marks = Marks {
            issued_s: iat.and_then(numeric_date),
            ..Marks::default()
        };
        for (kind, value) in Kind::ALL.into_iter().zip(values) {
            if let Some(value) = value {
                marks.push(tag(kind, issuer, value));
            }
        }
        marks
    }

    /// Marks read back from a cache entry; `None` for more tags than fit.
    pub fn from_parts(issued_s: Option<i64>, tags: &[[u8; 8]]) -> Option<Marks> {
        if tags.len() > 4 {
            return None;
        }
        let mut marks = Marks {
            issued_s,
            ..Marks::default()
        };
        tags.iter().for_each(|t| marks.push(*t));
        Some(marks)
    }

    fn push(&mut self, tag: [u8; 8]) {
        self.tags[usize::from(self.count)] = tag;
        self.count += 1;
    }

    /// A token without `iat` is taken as issued when the gateway first
    /// saw it: `now_s`, for an answer just obtained (kept with its cache
    /// entry, so later hits compare that time). One with `iat` keeps it.
    pub fn first_seen(&mut self, now_s: i64) {
        if self.issued_s.is_none() && self.count > 0 {
            self.issued_s = Some(now_s);
            self.seen_now = true;
        }
    }

    /// Whether the issue time is the one [`Marks::first_seen`] gave an
    /// answer just obtained: its cache entry is then the only record of
    /// it, which a revocation must not drop (`shm/revocations.rs` index).
    pub fn seen_now(&self) -> bool {
        self.seen_now
    }

    pub fn tags(&self) -> &[[u8; 8]] {
        &self.tags[..usize::from(self.count)]
    }

    /// Whether a revocation list whose cutoffs `cutoff` reads refuses the
    /// token: one of its tags was revoked at or after it was issued (its
    /// `iat` in ms against the cutoff in ms).
    pub fn refused(&self, mut cutoff: impl FnMut(&[u8; 8]) -> Option<i64>) -> bool {
        let issued_ms = self.issued_ms();
        self.tags()
            .iter()
            .any(|tag| cutoff(tag).is_some_and(|until| issued_ms <= until))
    }

    /// [`Marks::refused`] from what `known` knows of the tags' cutoffs
    /// (`None`: not known): `None` when that is not enough to tell.
    pub fn refused_as_known(
        &self,
        mut known: impl FnMut(&[u8; 8]) -> Option<Option<i64>>,
    ) -> Option<bool> {
        let issued_ms = self.issued_ms();
        let mut all_known = true;
        for tag in self.tags() {
            match known(tag) {
                Some(Some(until)) if issued_ms <= until => return Some(true),
                Some(_) => {}
                None => all_known = false,
            }
        }
        all_known.then_some(false)
    }

    fn issued_ms(&self) -> i64 {
        self.issued_s.map_or(i64::MIN, |s| s.saturating_mul(1000))
    }
}

/// RFC 7519 NumericDate, fractions cut.
pub(crate) fn numeric_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_tokens_marks_name_its_claims_at_its_issuer() {
        let m = Marks::of(&map(json!({
            "iss": "https://idp", "sub": "alice", "sid": "s1", "iat": 100, "jti": "j"
        })));
        assert_eq!(m.issued_s, Some(100));
        assert_eq!(
            m.tags(),
            &[
                tag(Kind::Subject, "https://idp", "alice"),
                tag(Kind::Session, "https://idp", "s1"),
                tag(Kind::TokenId, "https://idp", "j"),
            ]
        );
        let bare = Marks::of(&map(json!({"sub": "alice"})));
        assert_eq!(bare.tags(), &[tag(Kind::Subject, "", "alice")]);
        assert_eq!(bare.issued_s, None);
        assert_ne!(
            tag(Kind::Subject, "https://idp", "alice"),
            tag(Kind::Session, "https://idp", "alice")
        );
        assert_ne!(tag(Kind::Subject, "a", "bc"), tag(Kind::Subject, "ab", "c"));
    }

    #[test]
    fn a_token_without_iat_is_issued_when_first_seen() {
        let alice = tag(Kind::Subject, "i", "alice");
        let list = |t: &[u8; 8]| (*t == alice).then_some(100_000);
        let mut seen_before = Marks::from_parts(None, &[alice]).unwrap();
        assert!(!seen_before.seen_now());
        seen_before.first_seen(99);
        assert_eq!(seen_before.issued_s, Some(99));
        assert!(seen_before.seen_now());
        assert!(seen_before.refused(list));
        let mut seen_after = Marks::from_parts(None, &[alice]).unwrap();
        seen_after.first_seen(101);
        assert!(!seen_after.refused(list));
        // A token's own iat stays; a token of no tag stays as it is.
        let mut issued = Marks::from_parts(Some(5), &[alice]).unwrap();
        issued.first_seen(101);
        assert_eq!(issued.issued_s, Some(5));
        assert!(!issued.seen_now());
        let mut none = Marks::default();
        none.first_seen(101);
        assert_eq!(none, Marks::default());
    }

    #[test]
    fn an_index_key_names_its_token_for_its_tag_only() {
        let (alice, bob, token) = ([1; 8], [2; 8], [9; 8]);
        let key = index_key(&alice, &token);
        let kept: [u8; 16] = key[..16].try_into().expect("16 bytes");
        let found = |tag| index_tags(tag).map(|chain| indexed_token(&kept, &chain));
        assert_eq!(found(&alice).iter().flatten().collect::<Vec<_>>(), [&token]);
        assert_eq!(found(&bob), [None; INDEX_CHAINS]);
    }

    #[test]
    fn a_subjects_tokens_spread_over_its_chains() {
        let alice = tag(Kind::Subject, "i", "alice");
        let chains = index_tags(&alice);
        let distinct: std::collections::HashSet<_> = chains.iter().collect();
        assert_eq!(distinct.len(), INDEX_CHAINS);
        let mut per_chain = [0usize; INDEX_CHAINS];
        for t in 0..=255u8 {
            let key = index_key(&alice, &[t, 1, 2, 3, 4, 5, 6, 7]);
            let chain = chains.iter().position(|c| key[..8] == c[..]);
            per_chain[chain.expect("one of alice's chains")] += 1;
        }
        assert_eq!(
            per_chain, [32; INDEX_CHAINS],
            "256 tokens, evenly by their first byte"
        );
    }

    #[test]
    fn a_token_issued_at_or_before_a_cutoff_is_refused_after_it_passes() {
        let alice = tag(Kind::Subject, "i", "alice");
        let m = Marks::from_parts(Some(100), &[alice]).unwrap();
        let list = |t: &[u8; 8]| (*t == alice).then_some(100_000);
        assert!(m.refused(list));
        let later = Marks::from_parts(Some(101), &[alice]).unwrap();
        assert!(!later.refused(list));
        let bob = Marks::from_parts(Some(1), &[tag(Kind::Subject, "i", "bob")]).unwrap();
        assert!(!bob.refused(list));
        let no_iat = Marks::from_parts(None, &[alice]).unwrap();
        assert!(no_iat.refused(list));
        assert!(!Marks::default().refused(|_| Some(i64::MAX)));
        assert!(Marks::from_parts(None, &[alice; 5]).is_none());
    }

    #[test]
    fn what_is_known_of_some_tags_tells_only_a_refusal_and_all_of_them_a_pass() {
        let (alice, sid) = (
            tag(Kind::Subject, "i", "alice"),
            tag(Kind::Session, "i", "s"),
        );
        let m = Marks::from_parts(Some(100), &[alice, sid]).unwrap();
        let none_known = |_: &[u8; 8]| None;
        assert_eq!(m.refused_as_known(none_known), None);
        // One known, with no cutoff: the other could still refuse.
        let alice_clear = |t: &[u8; 8]| (*t == alice).then_some(None);
        assert_eq!(m.refused_as_known(alice_clear), None);
        // One known to refuse: refused, whatever the other.
        let sid_refuses = |t: &[u8; 8]| (*t == sid).then_some(Some(100_000));
        assert_eq!(m.refused_as_known(sid_refuses), Some(true));
        // All known: a cutoff before its iat passes, as `refused` says.
        let all_before = |_: &[u8; 8]| Some(Some(99_999));
        assert_eq!(m.refused_as_known(all_before), Some(false));
        assert!(!m.refused(|_| Some(99_999)));
        assert_eq!(Marks::default().refused_as_known(none_known), Some(false));
    }
}
