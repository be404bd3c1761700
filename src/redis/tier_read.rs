//! Which entry of the Redis tier answers a question: the replies to the
//! reads at its names (under the current key, then the old one), judged by
//! the reader. Plain: the glue logs the failures it is told of.

use crate::oauth::cache::slot::{TierNames, TierRead};
use crate::oauth::cache::CachePolicy;
use crate::redis::failure::Failure;
use crate::redis::fleet::{self, FleetKeys};
use crate::redis::resp::Reply;

/// The first entry among the replies that opens and is fresh for this
/// reader's `policy` (its `max_ttl` counted from when the IdP gave the
/// answer); the flow then reads it with the checks a fresh answer gets.
/// What does not open goes to `note` as undecryptable and is passed over;
/// an error reply goes to `note` and makes the read a miss.
pub fn first_fresh(
    keys: &FleetKeys,
    policy: &CachePolicy,
    names: &TierNames,
    replies: Vec<Reply>,
    now_ms: i64,
    mut note: impl FnMut(Failure),
) -> TierRead {
    for ((key, (slot, field)), reply) in keys.iter().zip(&names.places).zip(replies) {
        match reply {
            Reply::Bulk(Some(sealed)) => match fleet::open_entry(key, slot, field, &sealed) {
                Some(found)
                    if policy.serves_fresh(found.obtained_ms, found.fresh_until_ms, now_ms) =>
                {
                    return TierRead::Found(found);
                }
                Some(_) => {}
                None => note(Failure::Undecryptable),
            },
            Reply::Bulk(None) => {}
            other => {
                note(Failure::of_reply(&other).unwrap_or(Failure::Protocol));
                return TierRead::Missed;
            }
        }
    }
    TierRead::Missed
}
