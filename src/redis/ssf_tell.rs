//! What a Shared Signals SET applied on this gateway tells the fleet
//! (plain), whether it was pushed here (`pages/ssf_push.rs`) or polled by
//! this gateway (`pages/ssf_poll.rs`): its revocations added to the list
//! and published on the channel (`purge::pushed_commands`), then its `jti`
//! recorded in the fleet's replay store (`replay::set_commands`; last, so
//! that it took only if the messages before it were run). And what the
//! replies say: the SET is new to the fleet, a replay (the fleet had it
//! before), or the fleet was not told.

use crate::redis::failure::Failure;
use crate::redis::fleet::{FleetKeys, Pushed};
use crate::redis::purge;
use crate::redis::replay::{self, FleetReplay};
use crate::redis::resp::Reply;

/// Where the fleet is told: the keys that seal and name, the prefix of
/// the names, the list (sorted set) and the channel.
pub struct Fleet<'a> {
    pub keys: &'a FleetKeys,
    pub prefix: &'a [u8],
    pub list: &'a [u8],
    pub channel: &'a [u8],
}

/// How many replies one SET's commands ask for: the messages' (all
/// integers), then the replay store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replies {
    messages: usize,
    recorded: usize,
}

impl Replies {
    pub fn total(self) -> usize {
        self.messages + self.recorded
    }
}

/// Appends to `out` the commands telling `fleet` of one SET applied here
/// at `now_ms`: its revocations `pushed` (none: no messages), then the
/// `SET NX PX` of its name `set_id`, kept `keep_ms`.
pub fn commands(
    fleet: &Fleet<'_>,
    pushed: &[([u8; 8], Pushed)],
    set_id: &[u8; 32],
    keep_ms: i64,
    now_ms: i64,
    out: &mut Vec<u8>,
) -> Replies {
    let messages = match pushed.is_empty() {
        true => 0,
        false => {
            let (commands, messages) =
                purge::pushed_commands(fleet.keys, fleet.list, fleet.channel, pushed, now_ms);
            out.extend_from_slice(&commands);
            messages
        }
    };
    let recorded = replay::set_commands(fleet.keys, fleet.prefix, set_id, keep_ms, out);
    Replies { messages, recorded }
}

/// What the replies to one SET's commands say: `New` or `Replayed` when
/// Redis ran every message (every gateway was told) and the replay
/// store's `SET`s said so; `Failed` for anything else (an error reply
/// names its kind), never a pass.
pub fn told(replies: &[Reply], expected: Replies) -> FleetReplay {
    if replies.len() != expected.total() {
        return FleetReplay::Failed(Failure::Protocol);
    }
    let (messages, recorded) = replies.split_at(expected.messages);
    if let Some(other) = messages.iter().find(|r| !matches!(r, Reply::Integer(_))) {
        return FleetReplay::Failed(Failure::of_reply(other).unwrap_or(Failure::Protocol));
    }
    replay::classify(recorded, expected.recorded)
}

/// [`told`] for several SETs whose commands went in one pipeline, in
/// order: `replies` are all of theirs. Replies that do not add up fail
/// every SET.
pub fn told_each(replies: &[Reply], expected: &[Replies]) -> Vec<FleetReplay> {
    let total: usize = expected.iter().map(|e| e.total()).sum();
    if replies.len() != total {
        return vec![FleetReplay::Failed(Failure::Protocol); expected.len()];
    }
    let mut rest = replies;
    expected
        .iter()
        .map(|e| {
            let (mine, after) = rest.split_at(e.total());
            rest = after;
            told(mine, *e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::fleet::{self, FleetKey};
    use crate::redis::resp;

    fn keys() -> FleetKeys {
        FleetKeys {
            current: FleetKey::from_secret(&[4; 32]).unwrap(),
            old: None,
        }
    }

    const PUSHED: Pushed = Pushed {
        at_ms: 1000,
        keep_until_ms: 9000,
    };

    #[test]
    fn the_messages_then_the_replay_store() {
        let keys = keys();
        let fleet = Fleet {
            keys: &keys,
            prefix: b"p:",
            list: b"p:ssf",
            channel: b"p:purge",
        };
        let mut out = Vec::new();
        let one = commands(
            &fleet,
            &[([1; 8], PUSHED)],
            &[9; 32],
            60_000,
            1500,
            &mut out,
        );
        assert_eq!(one.total(), 5);
        // No revocation: the replay store's `SET` only.
        let none = commands(&fleet, &[], &[8; 32], 60_000, 1500, &mut out);
        assert_eq!(none.total(), 1);
        let sent = resp::read_commands(&out, 6);
        let words: Vec<&[u8]> = sent.iter().map(|c| c[0].as_slice()).collect();
        assert_eq!(
            words,
            [
                &b"ZADD"[..],
                b"PUBLISH",
                b"ZREMRANGEBYSCORE",
                b"PEXPIREAT",
                b"SET",
                b"SET"
            ]
        );
        assert_eq!(sent[4][1], fleet::set_name(&keys.current, b"p:", &[9; 32]));
        assert_eq!(sent[5][1], fleet::set_name(&keys.current, b"p:", &[8; 32]));
        assert_eq!(
            sent[4][2..],
            [&b"1"[..], b"NX", b"PX", b"60000"].map(<[u8]>::to_vec)
        );
    }

    #[test]
    fn replies_say_new_replayed_or_failed_per_set() {
        let ok = || Reply::Status(b"OK".to_vec());
        let int = || Reply::Integer(1);
        let one = Replies {
            messages: 4,
            recorded: 1,
        };
        let bare = Replies {
            messages: 0,
            recorded: 1,
        };
        assert_eq!(
            told(&[int(), int(), int(), int(), ok()], one),
            FleetReplay::New
        );
        assert_eq!(
            told(&[int(), int(), int(), int(), Reply::Bulk(None)], one),
            FleetReplay::Replayed
        );
        // A message Redis did not run: the fleet was not told, whatever
        // the replay store said.
        assert_eq!(
            told(
                &[int(), Reply::Error(b"OOM no".to_vec()), int(), int(), ok()],
                one
            ),
            FleetReplay::Failed(Failure::ErrorReply("OOM".into()))
        );
        assert_eq!(
            told(&[int(), ok(), int(), int(), ok()], one),
            FleetReplay::Failed(Failure::Protocol)
        );
        assert_eq!(told(&[ok()], one), FleetReplay::Failed(Failure::Protocol));
        assert_eq!(
            told_each(
                &[int(), int(), int(), int(), ok(), Reply::Bulk(None)],
                &[one, bare]
            ),
            [FleetReplay::New, FleetReplay::Replayed]
        );
        // Replies that do not add up: no SET was told.
        assert_eq!(
            told_each(&[int(), int(), int(), int(), ok()], &[one, bare]),
            [
                FleetReplay::Failed(Failure::Protocol),
                FleetReplay::Failed(Failure::Protocol)
            ]
        );
    }
}
