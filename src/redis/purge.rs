//! What a purge sends to the Redis tier (plain): one pipeline of two
//! commands, `DEL` of the token's hash under every key (the current one,
//! then the old one during a rotation, so that an entry written before the
//! rotation goes too), then `PUBLISH` of the token's tag and the purge's
//! time, sealed with the current key, on the purge channel for the other
//! gateways (whose subscribers refuse a message too old to be this purge).

use crate::redis::fleet::{self, FleetKeys};
use crate::redis::resp::{self, Limits, Reply};

/// How many replies [`commands`] asks for.
pub const REPLIES: usize = 2;

/// The pipeline (RESP) purging `token`, whose tag is `tag`, from the tier
/// with key `prefix` at `now_ms`, and telling the gateways subscribed to
/// `channel`.
pub fn commands(
    keys: &FleetKeys,
    prefix: &[u8],
    channel: &[u8],
    token: &[u8],
    tag: &[u8; 8],
    now_ms: i64,
) -> Vec<u8> {
    let mut commands = Vec::with_capacity(512);
    let slots: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| fleet::token_slot(k, prefix, token))
        .collect();
    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(slots.iter().map(Vec::as_slice));
    resp::command(&mut commands, &del);
    let message = fleet::seal_purge(&keys.current, channel, tag, now_ms);
    resp::command(&mut commands, &[b"PUBLISH", channel, &message]);
    commands
}

/// The pipeline (RESP) telling the fleet of revocations the IdP pushed
/// here at `now_ms`, each sealed with the current key: added to the sorted
/// set `list` (scored by how long it is kept, for the gateways that
/// subscribe later) and `PUBLISH`ed on `channel` (for those subscribed
/// now); then the set's revocations no longer kept are removed and the set
/// lives as long as its last. Returns the commands and how many replies
/// they ask for (all integers).
pub fn pushed_commands(
    keys: &FleetKeys,
    list: &[u8],
    channel: &[u8],
    revocations: &[([u8; 8], fleet::Pushed)],
    now_ms: i64,
) -> (Vec<u8>, usize) {
    let mut commands = Vec::with_capacity(256 * revocations.len() + 128);
    let mut last_kept = now_ms;
    for (tag, pushed) in revocations {
        let message = fleet::seal_pushed(&keys.current, channel, tag, now_ms, *pushed);
        let score = pushed.keep_until_ms.to_string();
        resp::command(&mut commands, &[b"ZADD", list, score.as_bytes(), &message]);
        resp::command(&mut commands, &[b"PUBLISH", channel, &message]);
        last_kept = last_kept.max(pushed.keep_until_ms);
    }
    let (now, last) = (now_ms.to_string(), last_kept.to_string());
    resp::command(
        &mut commands,
        &[b"ZREMRANGEBYSCORE", list, b"-inf", now.as_bytes()],
    );
    resp::command(&mut commands, &[b"PEXPIREAT", list, last.as_bytes()]);
    (commands, 2 * revocations.len() + 2)
}

/// The most revocations a subscriber reads from the list (those kept
/// longest first).
pub const MAX_LISTED: usize = 16_384;
/// What the list's reply may hold: one array of sealed messages.
pub const LISTING: Limits = Limits {
    depth: 1,
    array: MAX_LISTED,
    values: MAX_LISTED + 1,
    keep: 256,
};

/// The revocations of the list (`ZRANGE`'s reply) that `open` opens and
/// that are still kept at `now_ms`: they go on the reader's revocation
/// list, whenever they were sent (applying one twice changes nothing, so
/// neither the channel's freshness window nor its replay memory applies).
pub fn still_kept(
    listed: Vec<Reply>,
    open: impl Fn(&[u8]) -> Option<fleet::Purge>,
    now_ms: i64,
) -> Vec<fleet::Purge> {
    listed
        .into_iter()
        .filter_map(|reply| match reply {
            Reply::Bulk(Some(sealed)) => open(&sealed),
            _ => None,
        })
        .filter(|purge| purge.pushed.is_some_and(|p| p.keep_until_ms > now_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::fleet::FleetKey;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_secret(&[byte; 32]).unwrap()
    }

    fn read(commands: &[u8]) -> Vec<Vec<Vec<u8>>> {
        resp::read_commands(commands, REPLIES)
    }

    #[test]
    fn deletes_the_token_under_every_key_and_publishes_its_tag() {
        let keys = FleetKeys {
            current: key(2),
            old: Some(key(1)),
        };
        let tag = [7; 8];
        let commands = read(&commands(&keys, b"gw:", b"gw:purge", b"tok", &tag, 1234));
        let [del, publish] = &commands[..] else {
            panic!("{commands:?}");
        };
        assert_eq!(
            del,
            &[
                b"DEL".to_vec(),
                fleet::token_slot(&key(2), b"gw:", b"tok"),
                fleet::token_slot(&key(1), b"gw:", b"tok"),
            ]
        );
        assert_eq!(publish[..2], [b"PUBLISH".to_vec(), b"gw:purge".to_vec()]);
        assert_eq!(publish.len(), 3);
        // Sealed with the current key: a gateway that has only the new
        // secret opens it; the token itself is not in it.
        let only_new = FleetKeys {
            current: key(2),
            old: None,
        };
        assert_eq!(
            fleet::open_purge(&only_new, b"gw:purge", &publish[2]),
            Some(fleet::Purge {
                tag,
                purged_at_ms: 1234,
                pushed: None,
            })
        );
        assert!(!publish[2].windows(3).any(|w| w == b"tok"));
    }

    #[test]
    fn pushed_revocations_are_published_one_each_sealed() {
        let keys = FleetKeys {
            current: key(2),
            old: Some(key(1)),
        };
        let pushed = fleet::Pushed {
            at_ms: 1000,
            keep_until_ms: 9000,
        };
        let (sent, replies) = pushed_commands(
            &keys,
            b"gw:ssf",
            b"gw:purge",
            &[([1; 8], pushed), ([2; 8], pushed)],
            1500,
        );
        assert_eq!(replies, 6);
        let commands = resp::read_commands(&sent, replies);
        assert_eq!(commands.len(), 6);
        for (pair, tag) in commands.chunks(2).zip([[1; 8], [2; 8]]) {
            let [zadd, publish] = pair else { panic!() };
            assert_eq!(
                zadd[..3],
                [b"ZADD".to_vec(), b"gw:ssf".to_vec(), b"9000".to_vec()]
            );
            assert_eq!(publish[..2], [b"PUBLISH".to_vec(), b"gw:purge".to_vec()]);
            assert_eq!(zadd[3], publish[2], "the same sealed message");
            assert_eq!(
                fleet::open_purge(&keys, b"gw:purge", &publish[2]),
                Some(fleet::Purge {
                    tag,
                    purged_at_ms: 1500,
                    pushed: Some(pushed),
                })
            );
        }
        assert_eq!(
            commands[4],
            [&b"ZREMRANGEBYSCORE"[..], b"gw:ssf", b"-inf", b"1500"].map(<[u8]>::to_vec)
        );
        assert_eq!(
            commands[5],
            [&b"PEXPIREAT"[..], b"gw:ssf", b"9000"].map(<[u8]>::to_vec)
        );
    }

    #[test]
    fn without_an_old_key_one_hash_is_deleted() {
        let keys = FleetKeys {
            current: key(3),
            old: None,
        };
        let commands = read(&commands(
            &keys,
            b"oauth2:",
            b"oauth2:purge",
            b"t",
            &[0; 8],
            0,
        ));
        assert_eq!(
            commands[0],
            [
                b"DEL".to_vec(),
                fleet::token_slot(&key(3), b"oauth2:", b"t")
            ]
        );
        assert_eq!(commands[1][0], b"PUBLISH");
    }
}
