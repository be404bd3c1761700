//! Cache keys: what names a cached answer in a zone, so that an answer
//! obtained for one endpoint, client or set of exchange parameters is never
//! served for another, and no raw token is kept in shared memory.
//!
//! Every key made from a token begins with the token's tag
//! ([`token_tag`], a fast hash of the token): bytes 0..8 are the tag, bytes
//! 8..24 a keyed 128-bit hash (SipHash-2-4-128) of everything that decides
//! the answer, under the zone's own random secret ([`KeySecret`]), bytes
//! 24..32 zero. The table needs keys that nobody can make collide, and
//! nobody who sends tokens knows the secret: finding two inputs with one
//! hash without it is guessing a 128-bit PRF's output, and the secret never
//! leaves the zone's memory. (A SHA-256 digest, as keys were before, costs
//! a gateway without SHA-NI ten times the instructions per hit.) The
//! shared-memory table picks a key's bucket from its first 8 bytes (a
//! keyed hash of them, with another random key per zone, so nobody can aim
//! tokens at a chain), so all the entries of one token, in every policy,
//! share one chain, and a purge of the token walks that chain only. Keys
//! live only in their zone: the Redis tier names answers by its own keyed
//! hashes (`redis/fleet.rs`), and purges by the tag.

// OpenSSL's SHA-256, for what is hashed once per configuration (scopes,
// server identities): SHA-NI where the CPU has it; no allocation.
use openssl::sha::Sha256;

use crate::oauth::exchange::ExchangeParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey(pub [u8; 32]);

/// A map hashes a key by its bytes 8 to 16: for a key made under a zone's
/// secret, the start of that keyed hash (see `CacheKey::keyed`). Equal keys
/// hash equally whatever they are made of.
impl core::hash::Hash for CacheKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(
            self.0[8..16].try_into().expect("8 bytes"),
        ));
    }
}

/// The hasher of this worker's map of questions in flight, whose keys are
/// all made under a zone's secret: their hash is already keyed and uniform,
/// so the map takes it as it is. Nobody without the secret can aim keys at
/// one bucket, which is what the default hasher's own SipHash is for (it
/// cost ~500 instructions an IdP call, hashing a key four times).
#[derive(Debug, Default)]
pub struct KeyedKeyHasher(u64);

impl core::hash::Hasher for KeyedKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not what a `CacheKey` writes; any other bytes are folded in.
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes
            .iter()
            .fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
    }
}

/// Builds [`KeyedKeyHasher`]s for `HashMap::with_hasher`.
pub type KeyedKeys = core::hash::BuildHasherDefault<KeyedKeyHasher>;

impl CacheKey {
    /// The digest of `parts`, each length-prefixed so that ("ab", "c") and
    /// ("a", "bc") stay apart.
    pub fn from_parts(parts: &[&[u8]]) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        CacheKey(hasher.finish())
    }

    /// A well-mixed 64-bit slice of the digest: for a key made from a
    /// token, its tag. (The zone's table hashes it again with a key of its
    /// own to pick a bucket.)
    pub fn bucket_hash(&self) -> u64 {
        u64::from_le_bytes(self.tag())
    }

    /// The first 8 bytes: for a key made from a token, the token's tag.
    pub fn tag(&self) -> [u8; 8] {
        self.0[..8].try_into().expect("8 bytes")
    }
}

/// What every cache key made from `token` begins with, in every policy and
/// location: a 64-bit hash of the token, eight bytes at a time, finished
/// with MurmurHash3's mixer. It names the token's entries for a purge
/// without keeping the token. Not a digest: on every look-up it costs a
/// fraction of a SHA-256 (measured: 12 ns against 134 ns for a 40-byte
/// token, 216 ns against 824 ns for 900 bytes; byte-at-a-time FNV-1a took
/// 1.4 us there), and it needs no secrecy (the zone keeps keyed hashes of
/// tokens beside it); two tokens that
/// share a tag share a chain and a purge, nothing more. It is fixed here, so
/// every gateway of a fleet computes the same tag for a purge message.
pub fn token_tag(token: &[u8]) -> [u8; 8] {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, word: u64| (h ^ word).wrapping_mul(K).rotate_left(29);
    let mut words = token.chunks_exact(8);
    let mut h = (token.len() as u64).wrapping_mul(K);
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    if !words.remainder().is_empty() {
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        h = mix(h, u64::from_le_bytes(last));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h.to_le_bytes()
}

/// The server block a location belongs to, by what identifies it to
/// clients: its listen addresses and its names, not its position in the
/// configuration. So an unchanged server keeps its cache entries across a
/// reload, and a server added or moved never reads another's.
pub fn server_identity(listens: &[&[u8]], names: &[&[u8]]) -> [u8; 32] {
    fn canonical<'a>(items: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let mut items = items.to_vec();
        items.sort_unstable();
        items.dedup();
        items
    }
    let (listens, names) = (canonical(listens), canonical(names));
    let mut parts: Vec<&[u8]> = vec![b"listen"];
    parts.extend(listens);
    parts.push(b"server_name");
    parts.extend(names);
    CacheKey::from_parts(&parts).0
}

/// Who asks the IdP, as a cache key names it: the client id, what
/// authenticates it (the secret; for `private_key_jwt` a digest of the
/// public half of its key, [`crate::oauth::client_auth::AssertionKey::fingerprint`]),
/// and the tenant the operator named (`auth_oauth2_token_shared_cache_tenant`).
/// A key or tenant that is absent adds nothing, so the keys of a
/// configuration without them stay what they were.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    pub id: &'a [u8],
    pub secret: &'a [u8],
    pub key: Option<&'a [u8; 32]>,
    pub tenant: Option<&'a [u8]>,
}

/// What decides an IdP's answer besides the token and per-request values,
/// fixed per location when the configuration is loaded: the server block,
/// the endpoint (an internal location of that server), the client and a
/// digest of its secret (a rotated secret does not serve answers obtained
/// with the old one) or key, the tenant, and what kind of answer is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct KeyScope(pub [u8; 32]);

impl KeyScope {
    fn new(server: &[u8; 32], endpoint: &[u8], client: &Client<'_>, kind: &[&[u8]]) -> KeyScope {
        let mut parts = vec![&server[..], endpoint, client.id, client.secret];
        parts.extend_from_slice(kind);
        // Labelled, after the fixed parts: present or not, they cannot be
        // taken for one another or for a part of the kind.
        if let Some(key) = client.key {
            parts.extend_from_slice(&[b"client key", &key[..]]);
        }
        if let Some(tenant) = client.tenant {
            parts.extend_from_slice(&[b"tenant", tenant]);
        }
        KeyScope(CacheKey::from_parts(&parts).0)
    }

    /// The scope of an introspection answer: a phantom answer (a JWT to
    /// forward) is another answer, and entries keep the configured claims
    /// by position, so another claim list must not read them.
    pub fn introspection(
        server: &[u8; 32],
        endpoint: &[u8],
        client: &Client<'_>,
        phantom: bool,
        claims_fingerprint: &[u8],
        varies: bool,
    ) -> KeyScope {
        let answer: &[u8] = match phantom {
            true => b"phantom",
            false => b"introspection",
        };
        KeyScope::new(
            server,
            endpoint,
            client,
            &[
                answer,
                claims_fingerprint,
                if varies { b"vary" } else { b"" },
            ],
        )
    }

    pub fn exchange(server: &[u8; 32], endpoint: &[u8], client: &Client<'_>) -> KeyScope {
        KeyScope::new(server, endpoint, client, &[b"exchange"])
    }

    /// The scope of a JWT access token's verdict, verified at the gateway:
    /// no IdP and no client ask, so the JWT policy and keys
    /// (`conf::jwt::JwtConf::fingerprint`) stand in for them.
    pub fn jwt(
        server: &[u8; 32],
        policy: &[u8; 32],
        claims_fingerprint: &[u8],
        tenant: Option<&[u8]>,
    ) -> KeyScope {
        let client = Client {
            tenant,
            ..Client::default()
        };
        KeyScope::new(server, b"", &client, &[b"jwt", policy, claims_fingerprint])
    }
}

/// What names an answer's policy in the Redis tier, where every answer
/// about one token lives in that token's hash: the scope and the
/// per-request parts, length-prefixed; no token.
pub fn policy(scope: &KeyScope, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + parts.iter().map(|p| 8 + p.len()).sum::<usize>());
    out.extend_from_slice(&scope.0);
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A zone's secret key for [`introspection_key`] and [`exchange_key`]: 16
/// random bytes drawn when the zone's table is made, kept in the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySecret(pub [u64; 2]);

impl KeySecret {
    pub fn from_bytes(bytes: [u8; 16]) -> KeySecret {
        let [k0, k1] = [&bytes[..8], &bytes[8..]]
            .map(|half| u64::from_le_bytes(half.try_into().expect("8 bytes")));
        KeySecret([k0, k1])
    }
}

/// SipHash-2-4 with its 128-bit output (Aumasson and Bernstein), fed in
/// pieces: the pieces are hashed as one message, their concatenation.
struct Sip128 {
    v: [u64; 4],
    /// Bytes not yet hashed (fewer than 8), in the low bytes.
    tail: u64,
    ntail: usize,
    len: usize,
}

impl Sip128 {
    fn new(secret: &KeySecret) -> Sip128 {
        let [k0, k1] = secret.0;
        Sip128 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    /// [`Sip128::new`] then the 32 bytes of `scope` (four whole blocks):
    /// every key of a zone and endpoint begins so, and a worker keeps the
    /// state this leaves for the last few pairs (the same function, not
    /// computed again for every request).
    fn with_scope(secret: &KeySecret, scope: &KeyScope) -> Sip128 {
        // The scope is a SHA-256 digest: its first byte spreads the pairs.
        let slot = usize::from(scope.0[0]) % SCOPED_SLOTS;
        let remembered = SCOPED.with(|states| states[slot].get());
        let v = match remembered {
            Some((s, sc, v)) if s == *secret && sc == *scope => v,
            _ => {
                let mut hasher = Sip128::new(secret);
                hasher.update(&scope.0);
                SCOPED.with(|states| states[slot].set(Some((*secret, *scope, hasher.v))));
                hasher.v
            }
        };
        Sip128 {
            v,
            tail: 0,
            ntail: 0,
            len: scope.0.len(),
        }
    }

    #[inline(always)]
    fn block(&mut self, m: u64) {
        self.v[3] ^= m;
        sip_round(&mut self.v);
        sip_round(&mut self.v);
        self.v[0] ^= m;
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if self.ntail > 0 {
            while self.ntail < 8 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return;
                };
                self.tail |= u64::from(b) << (8 * self.ntail);
                self.ntail += 1;
                bytes = rest;
            }
            let m = self.tail;
            self.block(m);
            (self.tail, self.ntail) = (0, 0);
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.block(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        // The last bytes at once, not one by one (the tail is empty here).
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.tail = u64::from_le_bytes(last);
        self.ntail = rest.len();
    }

    fn finish(mut self) -> [u8; 16] {
        let m = self.tail | (self.len as u64) << 56;
        self.block(m);
        self.v[2] ^= 0xee;
        for _ in 0..4 {
            sip_round(&mut self.v);
        }
        let first = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        self.v[1] ^= 0xdd;
        for _ in 0..4 {
            sip_round(&mut self.v);
        }
        let second = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        let mut out = [0; 16];
        out[..8].copy_from_slice(&first.to_le_bytes());
        out[8..].copy_from_slice(&second.to_le_bytes());
        out
    }
}

impl CacheKey {
    /// The tag of `token`, then `hash`, then zeros.
    fn keyed(token: &[u8], hash: [u8; 16]) -> CacheKey {
        let mut key = [0; 32];
        key[..8].copy_from_slice(&token_tag(token));
        key[8..24].copy_from_slice(&hash);
        CacheKey(key)
    }
}

/// The key of an introspection answer in the zone whose secret is
/// `secret`: the location's scope, the values of
/// `auth_oauth2_token_cache_vary` (`None` without it: the scope says
/// which), and the token. The scope has a fixed length, the values a length
/// prefix, and the token comes last, so the parts cannot shift into each
/// other. The key begins with the token's tag (see the module's comment).
pub fn introspection_key(
    secret: &KeySecret,
    scope: &KeyScope,
    token: &[u8],
    vary: Option<&[u8]>,
) -> CacheKey {
    let mut hasher = Sip128::with_scope(secret, scope);
    if let Some(vary) = vary {
        hasher.update(&(vary.len() as u64).to_be_bytes());
        hasher.update(vary);
    }
    hasher.update(token);
    CacheKey::keyed(token, hasher.finish())
}

/// The key of an exchanged token: also every parameter that shapes it; it
/// begins with the token's tag.
pub fn exchange_key(
    secret: &KeySecret,
    scope: &KeyScope,
    token: &[u8],
    vary: &[u8],
    params: &ExchangeParams<'_>,
) -> CacheKey {
    let mut hasher = Sip128::with_scope(secret, scope);
    for part in [
        vary,
        params.audience,
        params.scope,
        params.resource,
        params.requested_token_type,
    ] {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(token);
    CacheKey::keyed(token, hasher.finish())
}

/// How many (secret, scope) states a worker keeps ([`Sip128::with_scope`]).
const SCOPED_SLOTS: usize = 4;

/// A remembered state: the secret, the scope, and `v` after both.
type ScopedState = core::cell::Cell<Option<(KeySecret, KeyScope, [u64; 4])>>;

thread_local! {
    static SCOPED: [ScopedState; SCOPED_SLOTS] =
        const { [const { core::cell::Cell::new(None) }; SCOPED_SLOTS] };
}

/// SipHash's round (SipRound), for the keys' 128-bit hash here and the
/// table's 64-bit bucket hash (`shm/table/change.rs`).
#[inline(always)]
pub fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_to_its_keyed_bits() {
        let secret = KeySecret([7, 9]);
        let scope = KeyScope([1; 32]);
        let a = introspection_key(&secret, &scope, b"token-a", None);
        let b = introspection_key(&secret, &scope, b"token-b", None);
        let hash = |k: &CacheKey| core::hash::BuildHasher::hash_one(&KeyedKeys::default(), k);
        assert_eq!(hash(&a), u64::from_le_bytes(a.0[8..16].try_into().unwrap()));
        assert_ne!(hash(&a), hash(&b));
        let mut map = std::collections::HashMap::with_hasher(KeyedKeys::default());
        map.insert(a, 1);
        map.insert(b, 2);
        assert_eq!((map.get(&a), map.get(&b)), (Some(&1), Some(&2)));
        let mut other = KeyedKeyHasher::default();
        core::hash::Hasher::write(&mut other, &[1, 2]);
        assert_eq!(core::hash::Hasher::finish(&other), 0x0102);
    }

    const SERVER: [u8; 32] = [7; 32];
    const SECRET: KeySecret = KeySecret([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);

    fn ikey(scope: &KeyScope, token: &[u8], vary: Option<&[u8]>) -> CacheKey {
        introspection_key(&SECRET, scope, token, vary)
    }

    fn xkey(scope: &KeyScope, token: &[u8], vary: &[u8], params: &ExchangeParams<'_>) -> CacheKey {
        exchange_key(&SECRET, scope, token, vary, params)
    }

    fn client<'a>(id: &'a [u8], secret: &'a [u8]) -> Client<'a> {
        Client {
            id,
            secret,
            ..Client::default()
        }
    }

    fn scope(endpoint: &[u8], client_id: &[u8], secret: &[u8]) -> KeyScope {
        KeyScope::introspection(
            &SERVER,
            endpoint,
            &client(client_id, secret),
            false,
            b"",
            false,
        )
    }

    #[test]
    fn introspection_key_depends_on_everything_that_decides_the_answer() {
        let base = ikey(&scope(b"/i", b"gw", b"s"), b"tok", None);
        assert_eq!(base, ikey(&scope(b"/i", b"gw", b"s"), b"tok", None));
        let others = [
            ikey(&scope(b"/i", b"gw", b"s"), b"tok2", None),
            ikey(&scope(b"/other", b"gw", b"s"), b"tok", None),
            ikey(&scope(b"/i", b"gw2", b"s"), b"tok", None),
            ikey(&scope(b"/i", b"gw", b"rotated"), b"tok", None),
            ikey(&scope(b"/i", b"gw", b"s"), b"tok", Some(b"tenant-a")),
            ikey(
                &KeyScope::introspection(&[8; 32], b"/i", &client(b"gw", b"s"), false, b"", false),
                b"tok",
                None,
            ),
            ikey(
                &KeyScope::introspection(&SERVER, b"/i", &client(b"gw", b"s"), true, b"", false),
                b"tok",
                None,
            ),
            ikey(
                &KeyScope::introspection(&SERVER, b"/i", &client(b"gw", b"s"), false, b"fp", false),
                b"tok",
                None,
            ),
        ];
        for (i, key) in others.iter().enumerate() {
            assert_ne!(base, *key, "part {i}");
        }
        // Bytes moved between parts make another key.
        assert_ne!(
            ikey(&scope(b"/a", b"bc", b"s"), b"t", None),
            ikey(&scope(b"/ab", b"c", b"s"), b"t", None)
        );
        assert_ne!(
            ikey(&scope(b"/i", b"gw", b"s"), b"ab", Some(b"c")),
            ikey(&scope(b"/i", b"gw", b"s"), b"a", Some(b"bc"))
        );
        // With cache_vary the scope differs too, so an empty value never
        // meets a location without it.
        assert_ne!(
            KeyScope::introspection(&SERVER, b"/i", &client(b"gw", b"s"), false, b"", true),
            scope(b"/i", b"gw", b"s")
        );
    }

    #[test]
    fn a_policy_names_scope_and_parts_never_the_token() {
        let a = scope(b"/i", b"gw", b"s");
        let base = policy(&a, &[b"tenant-a"]);
        assert_eq!(base, policy(&a, &[b"tenant-a"]));
        assert_ne!(base, policy(&a, &[b"tenant-b"]));
        assert_ne!(base, policy(&scope(b"/i", b"gw2", b"s"), &[b"tenant-a"]));
        assert_ne!(policy(&a, &[b"ab", b"c"]), policy(&a, &[b"a", b"bc"]));
        assert_ne!(policy(&a, &[]), policy(&a, &[b""]));
    }

    #[test]
    fn client_key_and_tenant_are_in_the_scope_and_absent_ones_change_nothing() {
        let bare = client(b"gw", b"");
        let plain = KeyScope::introspection(&SERVER, b"/i", &bare, false, b"", false);
        // Without a key or tenant the scope is the digest it always was, so
        // entries written before both existed are still found.
        let parts: [&[u8]; 7] = [&SERVER, b"/i", b"gw", b"", b"introspection", b"", b""];
        assert_eq!(plain.0, CacheKey::from_parts(&parts).0);
        let (key_a, key_b) = ([1u8; 32], [2u8; 32]);
        let with = |key: Option<&[u8; 32]>, tenant: Option<&[u8]>| {
            let client = Client {
                key,
                tenant,
                ..bare
            };
            KeyScope::introspection(&SERVER, b"/i", &client, false, b"", false)
        };
        let scopes = [
            plain,
            with(Some(&key_a), None),
            with(Some(&key_b), None),
            with(None, Some(b"a")),
            with(None, Some(b"b")),
            with(None, Some(b"")),
            with(None, Some(&key_a[..])),
            with(Some(&key_a), Some(b"a")),
            KeyScope::exchange(&SERVER, b"/i", &bare),
            KeyScope::exchange(
                &SERVER,
                b"/i",
                &Client {
                    tenant: Some(b"a"),
                    ..bare
                },
            ),
        ];
        for (i, a) in scopes.iter().enumerate() {
            for b in &scopes[i + 1..] {
                assert_ne!(a, b, "scope {i}");
            }
        }
        assert_eq!(
            with(Some(&key_a), Some(b"a")),
            with(Some(&key_a), Some(b"a"))
        );
    }

    #[test]
    fn introspection_and_exchange_scopes_never_meet() {
        assert_ne!(
            KeyScope::introspection(&SERVER, b"/e", &client(b"gw", b"s"), false, b"", false),
            KeyScope::exchange(&SERVER, b"/e", &client(b"gw", b"s"))
        );
    }

    #[test]
    fn jwt_scopes_meet_no_idp_scope_and_follow_their_parts() {
        let jwt = KeyScope::jwt(&SERVER, &[1; 32], b"", None);
        let bare = client(b"", b"");
        assert_ne!(
            jwt,
            KeyScope::introspection(&SERVER, b"", &bare, false, b"", false)
        );
        assert_ne!(jwt, KeyScope::exchange(&SERVER, b"", &bare));
        for other in [
            KeyScope::jwt(&[8; 32], &[1; 32], b"", None),
            KeyScope::jwt(&SERVER, &[2; 32], b"", None),
            KeyScope::jwt(&SERVER, &[1; 32], b"claims", None),
            KeyScope::jwt(&SERVER, &[1; 32], b"", Some(b"t")),
        ] {
            assert_ne!(jwt, other);
        }
    }

    #[test]
    fn server_identity_is_names_and_listens_not_order() {
        let a = server_identity(
            &[b"127.0.0.1:80", b"[::1]:80"],
            &[b"a.example", b"www.a.example"],
        );
        assert_eq!(
            a,
            server_identity(
                &[b"[::1]:80", b"127.0.0.1:80"],
                &[b"www.a.example", b"a.example", b"a.example"]
            )
        );
        assert_ne!(
            a,
            server_identity(&[b"127.0.0.1:80", b"[::1]:80"], &[b"b.example"])
        );
        assert_ne!(
            a,
            server_identity(&[b"127.0.0.1:81"], &[b"a.example", b"www.a.example"])
        );
        // A name is never taken for a listen address, nor the other way.
        assert_ne!(server_identity(&[b"x"], &[]), server_identity(&[], &[b"x"]));
    }

    #[test]
    fn exchange_key_depends_on_every_parameter() {
        let scope = KeyScope::exchange(&SERVER, b"/t", &client(b"gw", b"s"));
        let params = ExchangeParams {
            audience: b"orders",
            scope: b"read",
            resource: b"https://orders",
            requested_token_type: b"",
        };
        let base = xkey(&scope, b"tok", b"", &params);
        assert_eq!(base, xkey(&scope, b"tok", b"", &params));
        for other in [
            ExchangeParams {
                audience: b"billing",
                ..params
            },
            ExchangeParams {
                scope: b"write",
                ..params
            },
            ExchangeParams {
                resource: b"https://billing",
                ..params
            },
            ExchangeParams {
                requested_token_type: b"urn:x",
                ..params
            },
            ExchangeParams {
                audience: b"orders",
                scope: b"",
                resource: b"readhttps://orders",
                requested_token_type: b"",
            },
        ] {
            assert_ne!(base, xkey(&scope, b"tok", b"", &other));
        }
        assert_ne!(base, xkey(&scope, b"tok2", b"", &params));
        assert_ne!(base, xkey(&scope, b"tok", b"t", &params));
        let rotated = KeyScope::exchange(&SERVER, b"/t", &client(b"gw", b"s2"));
        assert_ne!(base, xkey(&rotated, b"tok", b"", &params));
    }

    #[test]
    fn key_parts_are_length_delimited() {
        assert_ne!(
            CacheKey::from_parts(&[b"a", b"bc"]),
            CacheKey::from_parts(&[b"ab", b"c"])
        );
        assert_ne!(
            CacheKey::from_parts(&[b"a", b""]),
            CacheKey::from_parts(&[b"a"])
        );
    }

    #[test]
    fn token_tag_is_the_documented_hash() {
        // The hash of "tok", computed elsewhere (Python, from the definition).
        assert_eq!(
            token_tag(b"tok"),
            [0xf9, 0x8a, 0x07, 0x52, 0x05, 0x70, 0xe6, 0x10]
        );
        assert_ne!(token_tag(b"tok"), token_tag(b"tok2"));
        assert_ne!(token_tag(b""), token_tag(b"\0"));
    }

    #[test]
    fn every_key_of_a_token_begins_with_its_tag() {
        let params = ExchangeParams {
            audience: b"orders",
            scope: b"read",
            resource: b"",
            requested_token_type: b"",
        };
        let keys_of = |token: &[u8]| {
            [
                ikey(&scope(b"/i", b"gw", b"s"), token, None),
                ikey(&scope(b"/i", b"gw", b"s"), token, Some(b"tenant-a")),
                ikey(&scope(b"/other", b"gw2", b"s2"), token, None),
                ikey(
                    &KeyScope::introspection(
                        &SERVER,
                        b"/i",
                        &client(b"gw", b"s"),
                        true,
                        b"fp",
                        true,
                    ),
                    token,
                    Some(b"x"),
                ),
                xkey(
                    &KeyScope::exchange(&SERVER, b"/t", &client(b"gw", b"s")),
                    token,
                    b"",
                    &params,
                ),
                xkey(
                    &KeyScope::exchange(&[8; 32], b"/t", &client(b"gw", b"s")),
                    token,
                    b"v",
                    &ExchangeParams {
                        audience: b"billing",
                        ..params
                    },
                ),
            ]
        };
        let keys = keys_of(b"tok");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(key.tag(), token_tag(b"tok"), "key {i}");
            assert_eq!(key.0[..8], token_tag(b"tok"), "key {i}");
            assert_eq!(key.bucket_hash(), u64::from_le_bytes(token_tag(b"tok")));
            // The rest still tells every policy, vary value and kind apart.
            for (j, other) in keys.iter().enumerate().skip(i + 1) {
                assert_ne!(key.0[8..], other.0[8..], "keys {i} and {j}");
            }
        }
        for (key, other) in keys.iter().zip(keys_of(b"tok2")) {
            assert_eq!(other.tag(), token_tag(b"tok2"));
            assert_ne!(key.tag(), other.tag());
            assert_ne!(key.0[8..], other.0[8..], "the token also decides the rest");
        }
    }

    /// The reference vectors of SipHash-2-4-128 (key 00 01 .. 0f, message
    /// 00 01 .. of each length), fed whole and in pieces of every split.
    #[test]
    fn the_keyed_hash_is_siphash_2_4_128() {
        let secret = KeySecret::from_bytes(core::array::from_fn(|i| i as u8));
        let vectors: [(usize, [u8; 16]); 5] = [
            (
                0,
                [
                    0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7,
                    0x55, 0x02, 0x93,
                ],
            ),
            (
                1,
                [
                    0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b,
                    0x22, 0xfc, 0x45,
                ],
            ),
            (
                8,
                [
                    0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3,
                    0x14, 0x97, 0xb4,
                ],
            ),
            (
                15,
                [
                    0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97,
                    0xcf, 0xc3, 0xd9,
                ],
            ),
            (
                63,
                [
                    0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97,
                    0x3f, 0xbd, 0x7c,
                ],
            ),
        ];
        for (len, expected) in vectors {
            let message: Vec<u8> = (0..len as u8).collect();
            for split in 0..=len {
                for second in split..=len {
                    let mut hasher = Sip128::new(&secret);
                    hasher.update(&message[..split]);
                    hasher.update(&message[split..second]);
                    hasher.update(&message[second..]);
                    assert_eq!(
                        hasher.finish(),
                        expected,
                        "length {len}, split {split}/{second}"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_are_the_tag_then_the_keyed_hash_of_their_parts() {
        let scope = KeyScope([7; 32]);
        let mut hasher = Sip128::new(&SECRET);
        hasher.update(&[[7u8; 32].as_slice(), b"a token"].concat());
        let key = ikey(&scope, b"a token", None);
        assert_eq!(key.0[..8], token_tag(b"a token"));
        assert_eq!(key.0[8..24], hasher.finish());
        assert_eq!(key.0[24..], [0; 8]);
        // Another zone's secret makes other keys of the same parts.
        let other = KeySecret([1, 2]);
        let elsewhere = introspection_key(&other, &scope, b"a token", None);
        assert_eq!(elsewhere.tag(), key.tag());
        assert_ne!(elsewhere.0[8..24], key.0[8..24]);
        assert_ne!(
            exchange_key(&other, &scope, b"t", b"", &ExchangeParams::default()),
            xkey(&scope, b"t", b"", &ExchangeParams::default())
        );
        // Config-time digests stay SHA-256 (checked against the sha2 crate).
        use sha2::{Digest, Sha256 as Reference};
        let mut reference = Reference::new();
        reference.update(2u64.to_be_bytes());
        reference.update(b"ab");
        let digest: [u8; 32] = reference.finalize().into();
        assert_eq!(CacheKey::from_parts(&[b"ab"]).0, digest);
    }

    /// The state a worker remembers per (secret, scope) is the one hashing
    /// them gives: keys made through it, as pairs come and go (sharing
    /// slots, secrets changing under a scope), equal keys made from scratch.
    #[test]
    fn remembered_scope_states_give_the_keys_hashed_from_scratch() {
        let scratch = |secret: &KeySecret, scope: &KeyScope, token: &[u8], vary: Option<&[u8]>| {
            let mut hasher = Sip128::new(secret);
            hasher.update(&scope.0);
            if let Some(vary) = vary {
                hasher.update(&(vary.len() as u64).to_be_bytes());
                hasher.update(vary);
            }
            hasher.update(token);
            CacheKey::keyed(token, hasher.finish())
        };
        let secrets = [KeySecret([1, 2]), KeySecret([1, 3]), KeySecret([0, 0])];
        // First bytes 0, 4 and 8 share a slot; 1 does not.
        let scopes = [0u8, 4, 8, 1].map(|first| {
            let mut scope = [first; 32];
            scope[31] = 0x5a;
            KeyScope(scope)
        });
        for round in 0..3 {
            for (i, secret) in secrets.iter().enumerate() {
                for (j, scope) in scopes.iter().enumerate() {
                    let token = format!("token-{round}-{i}-{j}").into_bytes();
                    for vary in [None, Some(&b"v"[..]), Some(&b"0123456789"[..])] {
                        assert_eq!(
                            introspection_key(secret, scope, &token, vary),
                            scratch(secret, scope, &token, vary)
                        );
                    }
                    let params = ExchangeParams::default();
                    let mut hasher = Sip128::new(secret);
                    hasher.update(&scope.0);
                    for _ in 0..5 {
                        hasher.update(&0u64.to_be_bytes());
                    }
                    hasher.update(&token);
                    assert_eq!(
                        exchange_key(secret, scope, &token, b"", &params),
                        CacheKey::keyed(&token, hasher.finish())
                    );
                }
            }
        }
    }

    #[test]
    fn keys_do_not_contain_the_token() {
        let token = b"0123456789abcdef0123456789abcdef";
        let key = ikey(&KeyScope::default(), token, None);
        assert!(!key.0.windows(8).any(|w| token.windows(8).any(|t| t == w)));
    }
}
