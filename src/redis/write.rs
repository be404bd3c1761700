//! What a write of an answer sends to the Redis tier (plain): `HSET` of the
//! sealed entry into its token's hash, then what sets the hash's lifetime.
//!
//! One hash holds the answers of every policy about a token, each with its
//! own lifetime sealed inside (every reader checks it), so the hash's TTL
//! must cover the longest of them: a write only ever extends it.
//! `PEXPIRE key ms NX` gives a hash without a TTL (a new one) this one, and
//! `PEXPIRE key ms GT` a longer one where it had a shorter (Redis 7.0 and
//! later, Valkey). A server that refuses those options (Redis before 7.0,
//! some proxies) gets the plain `PEXPIRE`, as before: the last writer's
//! lifetime, so a short-lived policy's write can drop a longer one's
//! entries early; a miss, never a pass.
//!
//! Each worker starts not knowing which kind of server it writes to: its
//! writes send the plain `PEXPIRE` and then a `GT` of the same lifetime,
//! which changes nothing where it is understood (a TTL is never greater
//! than itself) and is refused where it is not. The first clear answer
//! decides, until nginx reloads.

use crate::redis::fleet::{self, FleetKey, TierEntry};
use crate::redis::resp::{self, Reply};

/// What this worker knows of the server's `PEXPIRE` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Not known yet: plain `PEXPIRE`, then a `GT` that asks.
    Probing,
    /// `NX` and `GT` are understood: writes only extend a hash's TTL.
    Extends,
    /// They are refused: writes set the TTL (the last writer's).
    Replaces,
}

impl Expiry {
    /// What a `u8` kept between requests stands for ([`Expiry::code`]).
    pub fn from_code(code: u8) -> Expiry {
        match code {
            1 => Expiry::Extends,
            2 => Expiry::Replaces,
            _ => Expiry::Probing,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Expiry::Probing => 0,
            Expiry::Extends => 1,
            Expiry::Replaces => 2,
        }
    }
}

/// The pipeline writing the answer `found`, sealed under `key` for its
/// place (`slot`, `field`), to live `ttl_ms` more at least, and how many
/// replies it asks for.
pub fn entry_commands(
    expiry: Expiry,
    key: &FleetKey,
    (slot, field): (&[u8], &[u8]),
    found: &TierEntry,
    ttl_ms: i64,
) -> (Vec<u8>, usize) {
    let sealed = fleet::seal_entry(
        key,
        slot,
        field,
        found.obtained_ms,
        found.fresh_until_ms,
        found.stale_until_ms,
        &found.entry,
    );
    commands(expiry, slot, field, &sealed, ttl_ms)
}

/// The pipeline writing `sealed` at `field` of the hash `slot`, which must
/// live `ttl_ms` more at least, and how many replies it asks for.
pub fn commands(
    expiry: Expiry,
    slot: &[u8],
    field: &[u8],
    sealed: &[u8],
    ttl_ms: i64,
) -> (Vec<u8>, usize) {
    let ttl = ttl_ms.to_string();
    let ttl = ttl.as_bytes();
    let mut out = Vec::with_capacity(sealed.len() + 256);
    resp::command(&mut out, &[b"HSET", slot, field, sealed]);
    match expiry {
        Expiry::Probing => {
            resp::command(&mut out, &[b"PEXPIRE", slot, ttl]);
            resp::command(&mut out, &[b"PEXPIRE", slot, ttl, b"GT"]);
            (out, 3)
        }
        Expiry::Extends => {
            resp::command(&mut out, &[b"PEXPIRE", slot, ttl, b"NX"]);
            resp::command(&mut out, &[b"PEXPIRE", slot, ttl, b"GT"]);
            (out, 3)
        }
        Expiry::Replaces => {
            resp::command(&mut out, &[b"PEXPIRE", slot, ttl]);
            (out, 2)
        }
    }
}

/// Whether an error reply says the server does not know `PEXPIRE`'s options
/// (Redis 6: "wrong number of arguments"; others: a syntax error or an
/// unsupported option), rather than refusing the write for another reason
/// (`-NOPERM`, `-OOM`, `-READONLY`, ...).
fn refuses_options(reply: &Reply) -> bool {
    let Reply::Error(text) = reply else {
        return false;
    };
    let text = text.to_ascii_lowercase();
    let says = |words: &[u8]| text.windows(words.len()).any(|w| w == words);
    text.starts_with(b"err")
        && (says(b"wrong number of arguments")
            || says(b"syntax error")
            || says(b"unsupported option"))
}

/// What the replies to a write sent as `sent` teach: what to send next
/// time, and the first error reply that is a failure to note (the probe's
/// refused `GT` is not one).
pub fn learn(sent: Expiry, replies: &[Reply]) -> (Expiry, Option<&Reply>) {
    let failure = |skip: Option<usize>| {
        replies
            .iter()
            .enumerate()
            .find(|(i, r)| matches!(r, Reply::Error(_)) && Some(*i) != skip)
            .map(|(_, r)| r)
    };
    match sent {
        Expiry::Probing => match replies.get(2) {
            Some(Reply::Integer(_)) => (Expiry::Extends, failure(None)),
            Some(reply) if refuses_options(reply) => (Expiry::Replaces, failure(Some(2))),
            _ => (Expiry::Probing, failure(None)),
        },
        // A server that stopped taking them (a fail-over to an older one):
        // that write's hash may have no TTL; its entry's sealed lifetime
        // still bounds what it serves.
        Expiry::Extends if replies.iter().skip(1).any(refuses_options) => {
            (Expiry::Replaces, failure(None))
        }
        sent => (sent, failure(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands as lists of words.
    fn read(commands: &[u8], count: usize) -> Vec<Vec<String>> {
        resp::read_commands(commands, count)
            .into_iter()
            .map(|args| {
                args.into_iter()
                    .map(|a| String::from_utf8(a).unwrap())
                    .collect()
            })
            .collect()
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn each_kind_of_server_gets_its_commands() {
        let hset = words(&["HSET", "oauth2:t:ab", "f1", "sealed"]);
        let (out, n) = commands(Expiry::Probing, b"oauth2:t:ab", b"f1", b"sealed", 1500);
        assert_eq!(
            read(&out, n),
            [
                hset.clone(),
                words(&["PEXPIRE", "oauth2:t:ab", "1500"]),
                words(&["PEXPIRE", "oauth2:t:ab", "1500", "GT"]),
            ]
        );
        let (out, n) = commands(Expiry::Extends, b"oauth2:t:ab", b"f1", b"sealed", 1500);
        assert_eq!(
            read(&out, n),
            [
                hset.clone(),
                words(&["PEXPIRE", "oauth2:t:ab", "1500", "NX"]),
                words(&["PEXPIRE", "oauth2:t:ab", "1500", "GT"]),
            ]
        );
        let (out, n) = commands(Expiry::Replaces, b"oauth2:t:ab", b"f1", b"sealed", 1500);
        assert_eq!(
            read(&out, n),
            [hset, words(&["PEXPIRE", "oauth2:t:ab", "1500"])]
        );
    }

    fn err(text: &str) -> Reply {
        Reply::Error(text.as_bytes().to_vec())
    }

    #[test]
    fn the_probe_learns_which_server_answers() {
        let redis7 = [Reply::Integer(1), Reply::Integer(1), Reply::Integer(0)];
        assert_eq!(learn(Expiry::Probing, &redis7), (Expiry::Extends, None));
        let redis6 = [
            Reply::Integer(1),
            Reply::Integer(1),
            err("ERR wrong number of arguments for 'pexpire' command"),
        ];
        assert_eq!(learn(Expiry::Probing, &redis6), (Expiry::Replaces, None));
        for other in [err("ERR syntax error"), err("ERR Unsupported option GT")] {
            let replies = [Reply::Integer(1), Reply::Integer(1), other];
            assert_eq!(learn(Expiry::Probing, &replies).0, Expiry::Replaces);
        }
        // Refused for another reason: nothing learnt, the refusal is noted.
        let oom = [err("OOM command not allowed"), err("OOM x"), err("OOM y")];
        assert_eq!(
            learn(Expiry::Probing, &oom),
            (Expiry::Probing, Some(&oom[0]))
        );
        let noperm = [
            Reply::Integer(1),
            Reply::Integer(1),
            err("NOPERM this user has no permissions"),
        ];
        assert_eq!(
            learn(Expiry::Probing, &noperm),
            (Expiry::Probing, Some(&noperm[2]))
        );
        assert_eq!(learn(Expiry::Probing, &[]), (Expiry::Probing, None));
        // A failed HSET is noted even when the probe learnt something.
        let readonly = [
            err("READONLY You can't write against a read only replica."),
            err("ERR wrong number of arguments for 'pexpire' command"),
            err("ERR wrong number of arguments for 'pexpire' command"),
        ];
        assert_eq!(
            learn(Expiry::Probing, &readonly),
            (Expiry::Replaces, Some(&readonly[0]))
        );
    }

    #[test]
    fn a_server_that_stops_taking_the_options_is_written_as_before() {
        let fine = [Reply::Integer(0), Reply::Integer(0), Reply::Integer(1)];
        assert_eq!(learn(Expiry::Extends, &fine), (Expiry::Extends, None));
        let older = [
            Reply::Integer(1),
            err("ERR wrong number of arguments for 'pexpire' command"),
            err("ERR wrong number of arguments for 'pexpire' command"),
        ];
        assert_eq!(
            learn(Expiry::Extends, &older),
            (Expiry::Replaces, Some(&older[1]))
        );
        let plain = [Reply::Integer(1), Reply::Integer(1)];
        assert_eq!(learn(Expiry::Replaces, &plain), (Expiry::Replaces, None));
        for e in [Expiry::Probing, Expiry::Extends, Expiry::Replaces] {
            assert_eq!(Expiry::from_code(e.code()), e);
        }
        assert_eq!(Expiry::from_code(9), Expiry::Probing);
    }
}
