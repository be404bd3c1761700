//! Server-provided DPoP nonces (RFC 9449 §9), stateless: a nonce names a
//! time slot and carries an HMAC of it under a key every worker and every
//! gateway of a fleet reads from the same file, so any of them accepts any
//! other's nonce and none keeps a list. A nonce is good for its slot and
//! the next one (a client that just got one does not fall off at a slot's
//! end); a proof without a good nonce gets `use_dpop_nonce` and a fresh one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// How long one slot lasts: a nonce lives one to two of them.
pub const SLOT_S: i64 = 300;
/// The shortest key accepted from the file.
pub const MIN_KEY_BYTES: usize = 32;

/// The key nonces are made with; never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceKey(Vec<u8>);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// What a proof's nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Made for this slot.
    Current,
    /// Made for the slot before: accepted, and a fresh nonce goes with the answer.
    Previous,
    /// Missing, malformed, forged, or older: `use_dpop_nonce`.
    Refused,
}

impl NonceKey {
    pub fn new(secret: &[u8]) -> Result<NonceKey, String> {
        match secret.len() >= MIN_KEY_BYTES {
            true => Ok(NonceKey(secret.to_vec())),
            false => Err(format!(
                "holds a key of {} bytes: at least {MIN_KEY_BYTES} are needed",
                secret.len()
            )),
        }
    }

    /// The nonce of the slot `now_s` is in: base64url of the slot number
    /// (8 bytes) and 16 bytes of HMAC-SHA-256 over it.
    pub fn issue(&self, now_s: i64) -> String {
        let slot = now_s.div_euclid(SLOT_S);
        let mut raw = slot.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.tag(slot));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Judges a proof's `nonce` claim at `now_s`.
    pub fn check(&self, nonce: Option<&str>, now_s: i64) -> NonceCheck {
        let Some(raw) = nonce
            .filter(|n| n.len() == 32)
            .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
        else {
            return NonceCheck::Refused;
        };
        let Ok(slot) = <[u8; 8]>::try_from(&raw[..8]).map(i64::from_be_bytes) else {
            return NonceCheck::Refused;
        };
        let current = now_s.div_euclid(SLOT_S);
        let age = match current.checked_sub(slot) {
            Some(age @ (0 | 1)) => age,
            _ => return NonceCheck::Refused,
        };
        if !openssl::memcmp::eq(&raw[8..], &self.tag(slot)) {
            return NonceCheck::Refused;
        }
        match age {
            0 => NonceCheck::Current,
            _ => NonceCheck::Previous,
        }
    }

    fn tag(&self, slot: i64) -> [u8; 16] {
        let mut tag = [0u8; 16];
        let mac = PKey::hmac(&self.0)
            .and_then(|key| {
                let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
                signer.update(b"dpop-nonce\0")?;
                signer.update(&slot.to_be_bytes())?;
                signer.sign_to_vec()
            })
            .unwrap_or_default();
        // An OpenSSL failure leaves a tag of zeros under every key: no
        // nonce checks then (`memcmp` against a real MAC), none is forged.
        if mac.len() >= 16 {
            tag.copy_from_slice(&mac[..16]);
        }
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn nonces_live_one_to_two_slots_under_their_key() {
        let key = NonceKey::new(&[7; 32]).unwrap();
        let nonce = key.issue(NOW);
        assert_eq!(nonce.len(), 32);
        assert_eq!(key.check(Some(&nonce), NOW), NonceCheck::Current);
        let slot_end = (NOW.div_euclid(SLOT_S) + 1) * SLOT_S;
        assert_eq!(key.check(Some(&nonce), slot_end - 1), NonceCheck::Current);
        assert_eq!(key.check(Some(&nonce), slot_end), NonceCheck::Previous);
        assert_eq!(
            key.check(Some(&nonce), slot_end + SLOT_S),
            NonceCheck::Refused
        );
        // Not from the future, nor under another key, nor changed.
        assert_eq!(key.check(Some(&nonce), NOW - SLOT_S), NonceCheck::Refused);
        let other = NonceKey::new(&[8; 32]).unwrap();
        assert_eq!(other.check(Some(&nonce), NOW), NonceCheck::Refused);
        let mut changed = nonce.clone().into_bytes();
        changed[20] = if changed[20] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(key.check(Some(&changed), NOW), NonceCheck::Refused);
        for junk in [None, Some(""), Some("short"), Some(&"A".repeat(32)[..])] {
            assert_eq!(key.check(junk, NOW), NonceCheck::Refused, "{junk:?}");
        }
        assert!(NonceKey::new(&[1; 31]).is_err());
        assert_eq!(format!("{key:?}"), "NonceKey(..)");
    }
}
