//! The fleet's DPoP replay store (plain): a proof accepted by one gateway's
//! own store (`shm/table/replay.rs`) is also recorded in Redis with
//! `SET <name> 1 NX PX <ms>`, so that the same proof replayed at another
//! gateway of the fleet is refused. What the pipeline sends, and what its
//! replies say.
//!
//! The name is a keyed hash (`fleet::proof_name`) under every key the
//! gateway holds (the current one, then the old one during a rotation):
//! two gateways in the middle of a rotation, one writing under the new key
//! and one still under the old, both set the name of the key they share,
//! so one of them is told. A proof is new only when every `SET` took.
//!
//! A Shared Signals SET's `jti` is recorded the same way ([`set_commands`],
//! `fleet::set_name`), so that a SET replayed to another gateway of the
//! fleet is refused there; [`classify`] reads those replies too.

use crate::redis::failure::Failure;
use crate::redis::fleet::{self, FleetKeys};
use crate::redis::resp::{self, Reply};

/// Seconds a name is kept past the end of its proof's window: another
/// gateway whose clock is behind still accepts the proof that much longer
/// (its `iat` check is made with its own clock).
pub const CLOCK_MARGIN_S: i64 = 5;

/// What the fleet said about a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetReplay {
    /// Recorded now: no gateway of the fleet has accepted it before.
    New,
    /// A gateway of the fleet (maybe this one, by another worker) accepted
    /// it before: a replay.
    Replayed,
    /// No usable answer: the caller falls back to its own store's word.
    Failed(Failure),
}

/// The pipeline recording the proof `replay_id` of `tenant` (empty without
/// `auth_oauth2_token_shared_cache_tenant`) for the fleet, until the end of
/// its window, `until_s` (plus [`CLOCK_MARGIN_S`]), the clock being
/// `now_ms`; and how many replies it asks for.
pub fn commands(
    keys: &FleetKeys,
    prefix: &[u8],
    tenant: &[u8],
    replay_id: &[u8; 32],
    until_s: i64,
    now_ms: i64,
) -> (Vec<u8>, usize) {
    let until_ms = until_s.saturating_add(CLOCK_MARGIN_S).saturating_mul(1000);
    // At least a millisecond: `PX 0` is an error.
    let ttl = until_ms.saturating_sub(now_ms).max(1).to_string();
    let mut out = Vec::with_capacity(256);
    let mut count = 0;
    for key in keys.iter() {
        let name = fleet::proof_name(key, prefix, tenant, replay_id);
        resp::command(
            &mut out,
            &[b"SET", &name, b"1", b"NX", b"PX", ttl.as_bytes()],
        );
        count += 1;
    }
    (out, count)
}

/// The `SET NX PX` commands recording the SET `set_id` for the fleet for
/// `ttl_ms`, appended to `out`; how many replies they ask for.
pub fn set_commands(
    keys: &FleetKeys,
    prefix: &[u8],
    set_id: &[u8; 32],
    ttl_ms: i64,
    out: &mut Vec<u8>,
) -> usize {
    let ttl = ttl_ms.max(1).to_string();
    let mut count = 0;
    for key in keys.iter() {
        let name = fleet::set_name(key, prefix, set_id);
        resp::command(out, &[b"SET", &name, b"1", b"NX", b"PX", ttl.as_bytes()]);
        count += 1;
    }
    count
}

/// What the replies to [`commands`] (`expected` of them) say: `+OK` to
/// every `SET` is a new proof; a nil to any (the name was there) a replay;
/// an error reply, another reply, or a count that is not the one asked
/// for, a failure (the error's kind, else `Protocol`).
pub fn classify(replies: &[Reply], expected: usize) -> FleetReplay {
    if replies.len() != expected || expected == 0 {
        return FleetReplay::Failed(Failure::Protocol);
    }
    let mut replayed = false;
    for reply in replies {
        match reply {
            Reply::Status(status) if status.as_slice() == b"OK" => {}
            Reply::Bulk(None) => replayed = true,
            other => {
                return FleetReplay::Failed(Failure::of_reply(other).unwrap_or(Failure::Protocol))
            }
        }
    }
    match replayed {
        true => FleetReplay::Replayed,
        false => FleetReplay::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::fleet::FleetKey;
    use crate::redis::resp::Parsed;
    use proptest::prelude::*;

    fn keys(old: bool) -> FleetKeys {
        FleetKeys {
            current: FleetKey::from_secret(&[1; 32]).unwrap(),
            old: old.then(|| FleetKey::from_secret(&[2; 32]).unwrap()),
        }
    }

    /// The commands of a pipeline, as a server would read them (an array
    /// of bulk strings each).
    fn parse(bytes: &[u8], count: usize) -> Vec<Vec<Vec<u8>>> {
        let Parsed::Done { replies, used } = resp::parse(bytes, count) else {
            panic!("not {count} commands");
        };
        assert_eq!(used, bytes.len());
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Array(Some(words)) => words
                    .into_iter()
                    .map(|w| match w {
                        Reply::Bulk(Some(w)) => w,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_set_nx_px_per_key_until_the_window_ends_plus_the_margin() {
        let id = [7; 32];
        let (bytes, count) = commands(&keys(false), b"oauth2:", b"", &id, 1_000, 990_500);
        assert_eq!(count, 1);
        let sent = parse(&bytes, 1);
        let name = fleet::proof_name(&keys(false).current, b"oauth2:", b"", &id);
        let ttl = ((1_000 + CLOCK_MARGIN_S) * 1000 - 990_500).to_string();
        assert_eq!(
            sent[0],
            [&b"SET"[..], &name, b"1", b"NX", b"PX", ttl.as_bytes()]
        );
        // With the old key of a rotation: its name too, after the current's.
        let (bytes, count) = commands(&keys(true), b"oauth2:", b"", &id, 1_000, 990_500);
        assert_eq!(count, 2);
        let sent = parse(&bytes, 2);
        assert_eq!(sent[0][1], name);
        let old = fleet::proof_name(keys(true).old.as_ref().unwrap(), b"oauth2:", b"", &id);
        assert_eq!(sent[1][1], old);
        assert_ne!(old, name);
        // A window already over (a clock ahead of the proof's): a
        // millisecond, never `PX 0` or a negative time.
        let (bytes, _) = commands(&keys(false), b"p:", b"", &id, 1_000, 2_000_000);
        assert_eq!(parse(&bytes, 1)[0][5], b"1");
    }

    #[test]
    fn a_sets_jti_is_one_set_nx_px_per_key_under_a_name_of_its_own() {
        let id = [7; 32];
        let mut out = b"before".to_vec();
        let count = set_commands(&keys(true), b"p:", &id, 420_000, &mut out);
        assert_eq!(count, 2);
        let sent = parse(&out[6..], 2);
        let name = fleet::set_name(&keys(true).current, b"p:", &id);
        assert_eq!(sent[0], [&b"SET"[..], &name, b"1", b"NX", b"PX", b"420000"]);
        assert!(name.starts_with(b"{p:ssf}j:"));
        assert_ne!(
            name,
            fleet::proof_name(&keys(true).current, b"p:", b"", &id)
        );
        let old = fleet::set_name(keys(true).old.as_ref().unwrap(), b"p:", &id);
        assert_eq!(sent[1][1], old);
        // Never `PX 0`.
        let mut out = Vec::new();
        set_commands(&keys(false), b"p:", &id, 0, &mut out);
        assert_eq!(parse(&out, 1)[0][5], b"1");
    }

    #[test]
    fn names_hide_the_proof_and_keep_tenants_and_keys_apart() {
        let id = [9; 32];
        let k = keys(true);
        let name = fleet::proof_name(&k.current, b"oauth2:", b"acme", &id);
        assert!(name.starts_with(b"oauth2:d:"));
        assert_eq!(name.len(), b"oauth2:d:".len() + 64);
        assert!(!name.windows(4).any(|w| w == b"acme"));
        assert!(!name.windows(32).any(|w| w == id));
        for other in [
            fleet::proof_name(&k.current, b"oauth2:", b"", &id),
            fleet::proof_name(&k.current, b"oauth2:", b"acme2", &id),
            fleet::proof_name(&k.current, b"oauth2:", b"acme", &[8; 32]),
            fleet::proof_name(k.old.as_ref().unwrap(), b"oauth2:", b"acme", &id),
        ] {
            assert_ne!(other[b"oauth2:d:".len()..], name[b"oauth2:d:".len()..]);
        }
        // Another prefix changes the prefix only.
        let other = fleet::proof_name(&k.current, b"x:", b"acme", &id);
        assert_eq!(other[b"x:d:".len()..], name[b"oauth2:d:".len()..]);
    }

    #[test]
    fn replies_tell_new_replayed_or_failed() {
        let ok = || Reply::Status(b"OK".to_vec());
        let nil = || Reply::Bulk(None);
        assert_eq!(classify(&[ok()], 1), FleetReplay::New);
        assert_eq!(classify(&[ok(), ok()], 2), FleetReplay::New);
        assert_eq!(classify(&[nil()], 1), FleetReplay::Replayed);
        // Either name there is a replay (a rotation in progress).
        assert_eq!(classify(&[ok(), nil()], 2), FleetReplay::Replayed);
        assert_eq!(classify(&[nil(), ok()], 2), FleetReplay::Replayed);
        // Errors: their kind, whatever came before.
        assert_eq!(
            classify(&[Reply::Error(b"READONLY You can't write".to_vec())], 1),
            FleetReplay::Failed(Failure::ErrorReply("READONLY".into()))
        );
        assert_eq!(
            classify(
                &[nil(), Reply::Error(b"OOM command not allowed".to_vec())],
                2
            ),
            FleetReplay::Failed(Failure::ErrorReply("OOM".into()))
        );
        // Anything else a SET does not answer is garbage, never a pass.
        for other in [
            Reply::Status(b"QUEUED".to_vec()),
            Reply::Status(b"ok".to_vec()),
            Reply::Integer(1),
            Reply::Bulk(Some(b"OK".to_vec())),
            Reply::Bulk(Some(b"1".to_vec())),
            Reply::Array(None),
            Reply::Array(Some(vec![ok()])),
            Reply::Skipped(1 << 20),
        ] {
            assert_eq!(
                classify(core::slice::from_ref(&other), 1),
                FleetReplay::Failed(Failure::Protocol),
                "{other:?}"
            );
        }
        // Too few or too many replies.
        assert_eq!(classify(&[], 1), FleetReplay::Failed(Failure::Protocol));
        assert_eq!(classify(&[], 0), FleetReplay::Failed(Failure::Protocol));
        assert_eq!(
            classify(&[ok(), ok()], 1),
            FleetReplay::Failed(Failure::Protocol)
        );
        assert_eq!(classify(&[ok()], 2), FleetReplay::Failed(Failure::Protocol));
    }

    /// Replies a server (or something posing as one) may send.
    fn any_reply() -> impl Strategy<Value = Reply> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..6);
        prop_oneof![
            Just(Reply::Status(b"OK".to_vec())),
            Just(Reply::Bulk(None)),
            bytes().prop_map(Reply::Status),
            bytes().prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(bytes()).prop_map(Reply::Bulk),
            Just(Reply::Array(None)),
            any::<usize>().prop_map(Reply::Skipped),
        ]
    }

    proptest! {
        /// A proof is new only when every `SET` said `+OK`, and a replay
        /// only when the rest did and one said nil: never a pass on
        /// anything else.
        #[test]
        fn only_ok_to_every_set_is_new(
            replies in proptest::collection::vec(any_reply(), 0..4),
            expected in 0usize..4,
        ) {
            let ok = |r: &Reply| *r == Reply::Status(b"OK".to_vec());
            let nil = |r: &Reply| *r == Reply::Bulk(None);
            let counted = replies.len() == expected && expected > 0;
            let said = classify(&replies, expected);
            prop_assert_eq!(
                said == FleetReplay::New,
                counted && replies.iter().all(ok)
            );
            prop_assert_eq!(
                said == FleetReplay::Replayed,
                counted && replies.iter().all(|r| ok(r) || nil(r)) && replies.iter().any(nil)
            );
        }
    }
}
