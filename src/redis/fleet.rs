//! What the gateways of a fleet share in the Redis tier, and how nobody
//! else can read it: the names of a token's entries are keyed hashes
//! (HMAC-SHA-256), so reading Redis does not tell whether a guessed token
//! is cached; values
//! and purge messages are sealed (AES-256-GCM, a random nonce per seal)
//! and bound to their names, so a value moved to another name does not
//! open. Two keys are derived from the operator's secret; an old secret is
//! still accepted for reading during a rotation.

use crate::oauth::cache::Lifetime;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use openssl::sha::Sha256;

/// The shortest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 32;
/// The version byte in front of every sealed value and message.
/// 2: entries carry when the IdP answered (1 did not).
const VERSION: u8 = 2;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// The keys derived from one secret, kept ready to use: the naming key as
/// an HMAC already keyed (its padded blocks hashed), the sealing key as an
/// expanded AES key. Naming a token then costs two SHA-256 blocks and
/// opening an entry well under a microsecond; an OpenSSL context per call
/// (EVP) cost 16 µs and 3 µs when measured. The SHA-256 is OpenSSL's plain
/// one (no context to allocate): its assembly beats the `sha2` crate's
/// portable code where the CPU has no SHA extensions.
///
/// The AES key is boxed: its round keys want 16-byte alignment, and a
/// `FleetKey` may live in memory that promises less (nginx's configuration
/// pool aligns to 8).
pub struct FleetKey {
    /// Unique in the process (see `entry_field`'s memo).
    id: u64,
    mac: Keyed,
    enc: Box<Aes256Gcm>,
}

/// Never prints key material.
impl core::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

/// The secret entries are written with, and the one of before a rotation.
#[derive(Debug)]
pub struct FleetKeys {
    pub current: FleetKey,
    pub old: Option<FleetKey>,
}

impl FleetKey {
    /// The keys of a secret file's bytes (trailing whitespace is not part of it).
    pub fn from_secret(bytes: &[u8]) -> Result<FleetKey, String> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let secret = &bytes[..end];
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret must be at least {MIN_SECRET_BYTES} bytes (it has {}); make one with `openssl rand -hex 32`",
                secret.len()
            ));
        }
        let secret_key = keyed(secret);
        Ok(FleetKey {
            id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
            mac: keyed(&hmac(&secret_key, &[b"oauth2 fleet mac"])),
            enc: Box::new(Aes256Gcm::new(
                &hmac(&secret_key, &[b"oauth2 fleet enc"]).into(),
            )),
        })
    }
}

/// The next `FleetKey::id`.
static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(0);

/// HMAC-SHA-256 (RFC 2104) keyed: SHA-256 after the key's inner padded
/// block and after its outer one, copied for each message.
#[derive(Clone)]
struct Keyed {
    inner: Sha256,
    outer: Sha256,
}

/// HMAC-SHA-256 keyed with `key` (any length: a key longer than a block
/// is hashed first).
fn keyed(key: &[u8]) -> Keyed {
    let mut block = [0u8; 64];
    match key.len() {
        0..=64 => block[..key.len()].copy_from_slice(key),
        _ => block[..32].copy_from_slice(&openssl::sha::sha256(key)),
    }
    let padded = |pad: u8| {
        let mut hash = Sha256::new();
        hash.update(&block.map(|b| b ^ pad));
        hash
    };
    Keyed {
        inner: padded(0x36),
        outer: padded(0x5c),
    }
}

/// HMAC-SHA-256 of the concatenated `parts`.
fn hmac(key: &Keyed, parts: &[&[u8]]) -> [u8; 32] {
    let mut inner = key.inner.clone();
    for part in parts {
        inner.update(part);
    }
    let mut outer = key.outer.clone();
    outer.update(&inner.finish());
    outer.finish()
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .collect()
}

/// The Redis hash that holds every cached answer about `token`.
pub fn token_slot(key: &FleetKey, prefix: &[u8], token: &[u8]) -> Vec<u8> {
    let name = hex(&hmac(&key.mac, &[b"token\0", token]));
    [prefix, b"t:", &name].concat()
}

/// The field of one answer in its token's hash: the policy that shaped it
/// (`oauth/cache/key.rs` `policy`: server, endpoint, client, kind,
/// `cache_vary` values, exchange parameters; the token is the hash's).
///
/// Remembered per thread for the last few policies: a location without
/// `cache_vary` asks with one policy, whose field then costs a comparison
/// instead of two SHA-256 blocks per request.
pub fn entry_field(key: &FleetKey, policy: &[u8]) -> Vec<u8> {
    FIELDS.with_borrow_mut(|fields| {
        if let Some((_, _, field)) = fields
            .iter()
            .find(|(id, p, _)| *id == key.id && p.as_slice() == policy)
        {
            return field.clone();
        }
        let field = hex(&hmac(&key.mac, &[b"entry\0", policy]));
        if fields.len() == REMEMBERED_FIELDS {
            fields.remove(0);
        }
        fields.push((key.id, policy.to_vec(), field.clone()));
        field
    })
}

/// How many (key, policy) fields each thread remembers.
const REMEMBERED_FIELDS: usize = 8;

/// A remembered field: its key's id, its policy, the field.
type Remembered = (u64, Vec<u8>, Vec<u8>);

thread_local! {
    /// `entry_field`'s memo, the latest last.
    static FIELDS: RefCell<Vec<Remembered>> = const { RefCell::new(Vec::new()) };
}

/// The name under which the fleet records a DPoP proof (`replay_id`:
/// SHA-256 of its key's thumbprint and its `jti`, `oauth/dpop/proof.rs`)
/// for the locations of `tenant` (`auth_oauth2_token_shared_cache_tenant`,
/// empty without one): a keyed hash, so Redis tells nobody which proofs
/// or keys were seen.
pub fn proof_name(key: &FleetKey, prefix: &[u8], tenant: &[u8], replay_id: &[u8; 32]) -> Vec<u8> {
    let name = hex(&hmac(&key.mac, &[b"dpop\0", tenant, b"\0", replay_id]));
    [prefix, b"d:", &name].concat()
}

/// The revocations pushed by the IdP, `{<prefix>ssf}`: a sorted set of
/// sealed messages scored by how long each is kept. The braces are a
/// Redis Cluster hash tag: the list and every name [`set_name`] makes live
/// in one slot, so a push's one pipeline (the list's `ZADD`s, then the
/// `jti`'s `SET NX`) goes to one node, and a subscriber reads the list
/// from that node.
pub fn revocation_list(prefix: &[u8]) -> Vec<u8> {
    [b"{", prefix, b"ssf}"].concat()
}

/// The name under which the fleet records a Shared Signals SET's `jti`
/// (`set_id`: a digest of the transmitter's issuer and the `jti`,
/// `pages/ssf_push.rs`): a keyed hash, as a proof's is, in a space of its
/// own, after the list's name (its hash tag: the list's slot).
pub fn set_name(key: &FleetKey, prefix: &[u8], set_id: &[u8; 32]) -> Vec<u8> {
    let name = hex(&hmac(&key.mac, &[b"ssf-jti\0", set_id]));
    [&revocation_list(prefix)[..], b"j:", &name].concat()
}

/// `VERSION || nonce || ciphertext || tag`, bound to `aad`; empty when
/// OpenSSL has no random bytes or memory (an empty value opens to nothing:
/// a miss, never a reused nonce, never a worker aborted by a panic).
fn seal(key: &FleetKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_BYTES];
    if openssl::rand::rand_bytes(&mut nonce).is_err() {
        // No randomness, no seal: an empty value never opens (a miss).
        return Vec::new();
    }
    let sealed = key
        .enc
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad });
    match sealed {
        // The ciphertext is followed by its 16-byte tag.
        Ok(sealed) => [&[VERSION][..], &nonce, &sealed].concat(),
        Err(_) => Vec::new(),
    }
}

fn open(key: &FleetKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (&version, rest) = sealed.split_first()?;
    if version != VERSION || rest.len() < NONCE_BYTES + TAG_BYTES {
        return None;
    }
    let (nonce, data) = rest.split_at(NONCE_BYTES);
    key.enc
        .decrypt(Nonce::from_slice(nonce), Payload { msg: data, aad })
        .ok()
}

fn entry_aad(slot: &[u8], field: &[u8]) -> Vec<u8> {
    [slot, b"\0", field].concat()
}

impl FleetKeys {
    /// The current key, then the old one: the order every reader tries them.
    pub fn iter(&self) -> impl Iterator<Item = &FleetKey> {
        core::iter::once(&self.current).chain(self.old.as_ref())
    }
}

/// A cached answer as the Redis tier keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierEntry {
    /// When the IdP gave the answer: every reader counts its own `max_ttl`
    /// from here.
    pub obtained_ms: i64,
    pub fresh_until_ms: i64,
    pub stale_until_ms: i64,
    /// The zone's encoding of the answer.
    pub entry: Vec<u8>,
}

pub fn seal_entry(
    key: &FleetKey,
    slot: &[u8],
    field: &[u8],
    obtained_ms: i64,
    fresh_until_ms: i64,
    stale_until_ms: i64,
    entry: &[u8],
) -> Vec<u8> {
    let plain = [
        &obtained_ms.to_le_bytes()[..],
        &fresh_until_ms.to_le_bytes(),
        &stale_until_ms.to_le_bytes(),
        entry,
    ]
    .concat();
    seal(key, &entry_aad(slot, field), &plain)
}

impl TierEntry {
    /// How long its writer keeps it: fresh, then stale for the IdP's failures.
    pub fn lifetime(&self) -> Lifetime {
        Lifetime {
            fresh_until: self.fresh_until_ms,
            stale_until: self.stale_until_ms,
        }
    }
}

/// `None` for anything `seal_entry` did not make with this key for this
/// slot and field.
pub fn open_entry(key: &FleetKey, slot: &[u8], field: &[u8], sealed: &[u8]) -> Option<TierEntry> {
    let mut plain = open(key, &entry_aad(slot, field), sealed)?;
    let (obtained, rest) = plain.split_first_chunk::<8>()?;
    let (fresh, rest) = rest.split_first_chunk::<8>()?;
    let (stale, _) = rest.split_first_chunk::<8>()?;
    let (obtained_ms, fresh_until_ms, stale_until_ms) = (
        i64::from_le_bytes(*obtained),
        i64::from_le_bytes(*fresh),
        i64::from_le_bytes(*stale),
    );
    // The entry stays in the opened bytes' allocation: no second copy.
    plain.drain(..24);
    Some(TierEntry {
        obtained_ms,
        fresh_until_ms,
        stale_until_ms,
        entry: plain,
    })
}

/// A purge as the channel carries it: the token's tag, and when the
/// purging gateway purged it (its clock, ms since the epoch), which bounds
/// how long a recorded message can be played again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purge {
    pub tag: [u8; 8],
    pub purged_at_ms: i64,
    /// A revocation the IdP pushed (a Shared Signals event) rather than a
    /// purge: `tag` is a key of the revocation list (`oauth/ssf/`), not a
    /// token's.
    pub pushed: Option<Pushed>,
}

/// A revocation of the list: tokens with the tag issued at or before
/// `at_ms` are refused until `keep_until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub at_ms: i64,
    pub keep_until_ms: i64,
}

/// The length of every purge message: version, nonce, tag and time, GCM tag.
pub const PURGE_MESSAGE_BYTES: usize = 1 + NONCE_BYTES + 16 + TAG_BYTES;

/// The length of a pushed revocation's message: a purge's and two times.
pub const PUSHED_MESSAGE_BYTES: usize = PURGE_MESSAGE_BYTES + 16;

/// A revocation pushed by the IdP, sent at `sent_ms`, for the other
/// gateways' revocation lists.
pub fn seal_pushed(
    key: &FleetKey,
    channel: &[u8],
    tag: &[u8; 8],
    sent_ms: i64,
    pushed: Pushed,
) -> Vec<u8> {
    let plain = [
        &tag[..],
        &sent_ms.to_le_bytes(),
        &pushed.at_ms.to_le_bytes(),
        &pushed.keep_until_ms.to_le_bytes(),
    ]
    .concat();
    seal(key, channel, &plain)
}

/// A purge of the token with `tag` at `purged_at_ms`, for the other gateways.
pub fn seal_purge(key: &FleetKey, channel: &[u8], tag: &[u8; 8], purged_at_ms: i64) -> Vec<u8> {
    seal(
        key,
        channel,
        &[&tag[..], &purged_at_ms.to_le_bytes()].concat(),
    )
}

/// The purge a message carries, opened with the current or the old key.
/// Anything else is `None`, without AES work when its length is not a
/// purge message's: also a message of the module's versions before the
/// purge time was sealed in (a tag alone), which cannot be told fresh.
pub fn open_purge(keys: &FleetKeys, channel: &[u8], message: &[u8]) -> Option<Purge> {
    if message.len() != PURGE_MESSAGE_BYTES && message.len() != PUSHED_MESSAGE_BYTES {
        return None;
    }
    let plain = keys.iter().find_map(|key| open(key, channel, message))?;
    let (tag, rest) = plain.split_first_chunk::<8>()?;
    let (at, rest) = rest.split_first_chunk::<8>()?;
    let pushed = match rest {
        [] => None,
        rest => {
            let (revoked, keep) = rest.split_first_chunk::<8>()?;
            Some(Pushed {
                at_ms: i64::from_le_bytes(*revoked),
                keep_until_ms: i64::from_le_bytes(keep.try_into().ok()?),
            })
        }
    };
    Some(Purge {
        tag: *tag,
        purged_at_ms: i64::from_le_bytes(*at),
        pushed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_secret(&[byte; 32]).unwrap()
    }

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231, test cases 1, 2 and 6 (a key longer than a block).
        type Case<'a> = (&'a [u8], &'a [&'a [u8]], &'a [u8]);
        let cases: [Case; 3] = [
            (
                &[0x0b; 20],
                &[b"Hi There"],
                b"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"],
                b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
                b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, parts, expected) in cases {
            assert_eq!(hex(&hmac(&keyed(key), parts)), expected.to_vec());
        }
    }

    #[test]
    fn remembered_fields_are_their_key_and_policys() {
        let keys = [key(1), key(2), key(1)];
        for round in 0..3 {
            for (k, policy) in keys
                .iter()
                .flat_map(|k| (0..12u8).map(move |p| (k, [p; 40])))
            {
                let field = entry_field(k, &policy);
                assert_eq!(
                    field,
                    hex(&hmac(&k.mac, &[b"entry\0", &policy])),
                    "round {round}"
                );
            }
        }
        assert_ne!(keys[0].id, keys[2].id, "one secret, two keys: two ids");
    }

    #[test]
    fn names_stay_what_earlier_versions_wrote() {
        // Computed apart (Python's hmac): a fleet upgraded one gateway at a
        // time keeps finding its entries.
        assert_eq!(
            token_slot(&key(1), b"p:", b"opaque-token-123"),
            b"p:t:e998dc252943ec686304535e15fbb5816f5c18608391e6d3a67fab1edefc08f8".to_vec()
        );
        assert_eq!(
            entry_field(&key(1), &[3; 32]),
            b"73ff1581071e35fa834704fc770afef58b9e9d476d7c7fa9ea3a5c0b695b7664".to_vec()
        );
    }

    #[test]
    fn the_list_and_the_sets_jtis_share_one_cluster_slot() {
        use crate::redis::cluster::key_slot;
        assert_eq!(revocation_list(b"oauth2:"), b"{oauth2:ssf}".to_vec());
        let name = set_name(&key(1), b"oauth2:", &[9; 32]);
        assert!(name.starts_with(b"{oauth2:ssf}j:"));
        // Whatever the prefix (a `}` in it included), the names of one
        // fleet share a slot; two prefixes, two lists.
        for prefix in [&b"oauth2:"[..], b"", b"gw-eu:", b"a}b:", b"x"] {
            let list = revocation_list(prefix);
            for id in 0..20u8 {
                for k in [key(1), key(2)] {
                    assert_eq!(key_slot(&set_name(&k, prefix, &[id; 32])), key_slot(&list));
                }
            }
        }
        assert_ne!(
            key_slot(&revocation_list(b"oauth2:")),
            key_slot(&revocation_list(b"other:"))
        );
    }

    #[test]
    fn secrets_are_long_enough_and_trimmed() {
        let err = FleetKey::from_secret(b"short secret\n").unwrap_err();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(!err.contains("short secret"));
        let a = FleetKey::from_secret(b"0123456789abcdef0123456789abcdef\n").unwrap();
        let b = FleetKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(token_slot(&a, b"", b"t"), token_slot(&b, b"", b"t"));
        let sealed = seal_entry(&a, b"s", b"f", 0, 1, 2, b"e");
        assert!(open_entry(&b, b"s", b"f", &sealed).is_some());
        assert_eq!(format!("{a:?}"), "FleetKey(..)");
    }

    #[test]
    fn names_hide_the_token_and_depend_on_the_key() {
        let token = b"opaque-token-123";
        let slot = token_slot(&key(1), b"oauth2:", token);
        assert!(slot.starts_with(b"oauth2:t:"));
        assert_eq!(slot.len(), b"oauth2:t:".len() + 64);
        assert!(!slot.windows(token.len()).any(|w| w == token));
        assert_ne!(slot, token_slot(&key(2), b"oauth2:", token));
        assert_ne!(slot, token_slot(&key(1), b"oauth2:", b"other"));
        assert_eq!(entry_field(&key(1), &[3; 32][..]).len(), 64);
        assert_ne!(
            entry_field(&key(1), &[3; 32][..]),
            entry_field(&key(1), &[4; 32][..])
        );
        assert_ne!(
            entry_field(&key(1), &[3; 32][..]),
            entry_field(&key(2), &[3; 32][..])
        );
    }

    #[test]
    fn entries_open_only_where_and_as_they_were_sealed() {
        let k = key(1);
        let sealed = seal_entry(&k, b"s", b"f", 5, 10, 20, b"entry bytes");
        let opened = open_entry(&k, b"s", b"f", &sealed).unwrap();
        assert_eq!(
            opened,
            TierEntry {
                obtained_ms: 5,
                fresh_until_ms: 10,
                stale_until_ms: 20,
                entry: b"entry bytes".to_vec()
            }
        );
        assert!(!sealed.windows(5).any(|w| w == b"entry"));
        assert_ne!(
            sealed,
            seal_entry(&k, b"s", b"f", 5, 10, 20, b"entry bytes"),
            "a nonce per seal"
        );
        assert_eq!(open_entry(&key(2), b"s", b"f", &sealed), None);
        assert_eq!(open_entry(&k, b"s2", b"f", &sealed), None);
        assert_eq!(open_entry(&k, b"s", b"f2", &sealed), None);
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut tampered = sealed.clone();
                tampered[i] ^= 1 << bit;
                assert_eq!(
                    open_entry(&k, b"s", b"f", &tampered),
                    None,
                    "byte {i} bit {bit}"
                );
            }
        }
        for cut in 0..sealed.len() {
            assert_eq!(open_entry(&k, b"s", b"f", &sealed[..cut]), None);
        }
        let slot = token_slot(&k, b"oauth2:", b"tok");
        let field = entry_field(&k, &[5; 32]);
        let sealed = seal_entry(&k, &slot, &field, 0, 1, 2, b"");
        assert!(open_entry(&k, &slot, &field, &sealed).is_some());
        for (i, bit) in (0..slot.len().max(field.len())).flat_map(|i| (0..8).map(move |b| (i, b))) {
            if let Some(mut s) = (i < slot.len()).then(|| slot.clone()) {
                s[i] ^= 1 << bit;
                assert_eq!(
                    open_entry(&k, &s, &field, &sealed),
                    None,
                    "slot byte {i} bit {bit}"
                );
            }
            if let Some(mut f) = (i < field.len()).then(|| field.clone()) {
                f[i] ^= 1 << bit;
                assert_eq!(
                    open_entry(&k, &slot, &f, &sealed),
                    None,
                    "field byte {i} bit {bit}"
                );
            }
        }
        // slot || 0 || field is unambiguous because a field is always 64 hex digits.
        assert!(field.len() == 64 && field.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(
            open_entry(&k, b"s", b"f", &[]),
            None,
            "a failed seal opens to nothing"
        );
    }

    #[test]
    fn hmac_agrees_with_a_second_computation() {
        // HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) for a key of at most 64 bytes.
        use sha2::{Digest, Sha256};
        let key = [0x0b_u8; 40];
        let pad = |byte: u8| {
            let mut block = [byte; 64];
            block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
            block
        };
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(b"token\0abc")
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        assert_eq!(hmac(&keyed(&key), &[b"token\0", b"abc"])[..], outer[..]);
    }

    #[test]
    fn pushed_revocations_open_with_their_times_and_only_under_their_channel() {
        let keys = FleetKeys {
            current: key(3),
            old: None,
        };
        let pushed = Pushed {
            at_ms: 1_790_000_000_000,
            keep_until_ms: 1_790_003_600_000,
        };
        let message = seal_pushed(
            &keys.current,
            b"oauth2:purge",
            &[5; 8],
            1_790_000_001_000,
            pushed,
        );
        assert_eq!(message.len(), PUSHED_MESSAGE_BYTES);
        assert_eq!(
            open_purge(&keys, b"oauth2:purge", &message),
            Some(Purge {
                tag: [5; 8],
                purged_at_ms: 1_790_000_001_000,
                pushed: Some(pushed),
            })
        );
        assert_eq!(open_purge(&keys, b"other:purge", &message), None);
        let mut flipped = message.clone();
        flipped[20] ^= 1;
        assert_eq!(open_purge(&keys, b"oauth2:purge", &flipped), None);
        assert_eq!(open_purge(&keys, b"oauth2:purge", &message[1..]), None);
    }

    #[test]
    fn purge_messages_open_with_the_current_or_the_old_key() {
        let (old, new) = (key(1), key(2));
        let at = 1_790_000_000_123;
        let message = seal_purge(&old, b"oauth2:purge", &[9; 8], at);
        let purge = Purge {
            tag: [9; 8],
            purged_at_ms: at,
            pushed: None,
        };
        let rotating = FleetKeys {
            current: key(2),
            old: Some(key(1)),
        };
        assert_eq!(
            open_purge(&rotating, b"oauth2:purge", &message),
            Some(purge)
        );
        let without_old = FleetKeys {
            current: new,
            old: None,
        };
        assert_eq!(open_purge(&without_old, b"oauth2:purge", &message), None);
        let only_old = FleetKeys {
            current: old,
            old: None,
        };
        assert_eq!(open_purge(&only_old, b"other:purge", &message), None);
        assert_eq!(message.len(), PURGE_MESSAGE_BYTES);
        assert_eq!(message.len(), 1 + 12 + 8 + 8 + 16);
        for i in 0..message.len() {
            let mut tampered = message.clone();
            tampered[i] ^= 0x80;
            assert_eq!(
                open_purge(&rotating, b"oauth2:purge", &tampered),
                None,
                "byte {i}"
            );
        }
        for cut in 0..message.len() {
            assert_eq!(
                open_purge(&rotating, b"oauth2:purge", &message[..cut]),
                None
            );
        }
        assert_ne!(
            message,
            seal_purge(&key(1), b"oauth2:purge", &[9; 8], at),
            "a nonce per seal"
        );
        // A sealed entry published on the channel is not a purge.
        let entry = seal_entry(&key(2), b"oauth2:purge", b"", 0, 1, 2, b"");
        assert_eq!(open_purge(&rotating, b"oauth2:purge", &entry), None);
    }

    #[test]
    fn a_purge_message_of_before_the_purge_time_does_not_open() {
        // What versions before the time was sealed in published: the tag alone.
        let k = key(1);
        let keys = FleetKeys {
            current: key(1),
            old: None,
        };
        let tag_only = seal(&k, b"oauth2:purge", &[9; 8]);
        assert_eq!(tag_only.len(), PURGE_MESSAGE_BYTES - 8);
        assert_eq!(open_purge(&keys, b"oauth2:purge", &tag_only), None);
        let longer = seal(&k, b"oauth2:purge", &[9; 17]);
        assert_eq!(open_purge(&keys, b"oauth2:purge", &longer), None);
    }
}
