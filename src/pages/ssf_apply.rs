//! What a verified SET does, however it came (pushed to
//! `pages/ssf_push.rs` or polled by `pages/ssf_poll.rs`): its revocations
//! go on this gateway's list (`shm/revocations.rs`) and their subjects'
//! cache entries are dropped (the receiver's index), then its `jti` is
//! recorded in the replay store, and each applied SET gets one log line
//! (its events and the revocations' tags, never a subject) and its events
//! counted.

use ngx::ffi::{ngx_log_t, NGX_LOG_ERR, NGX_LOG_INFO};

use crate::conf::ssf::SsfReceiver;
use crate::conf::{MainConf, RedisTier};
use crate::metrics::Counters;
use crate::oauth::cache::CacheKey;
use crate::oauth::ssf::set::{Accepted, LEEWAY_S};
use crate::redis::fleet::Pushed;
use crate::redis::ssf_tell::{self, Fleet, Replies};
use crate::shm::table::Remembered;
use crate::shm::{revocations, zone};

/// A revocation put on this gateway's list, by its tag, for the Redis tier.
pub type PushedRevocation = ([u8; 8], Pushed);

/// Puts the SET's revocations on the list, each kept `token_lifetime`
/// from `now`, and drops the cache entries the index names for their
/// subjects; what was put, for the Redis tier, and how many entries went.
/// `None` (logged) when the list's zone cannot be used: nothing is
/// recorded, the SET is to be delivered again.
pub fn revoke_all(
    main: &MainConf,
    receiver: &SsfReceiver,
    accepted: &Accepted,
    now: i64,
    log: *mut ngx_log_t,
) -> Option<(Vec<PushedRevocation>, usize)> {
    let keep_until_ms = now.saturating_add(receiver.token_lifetime_ms);
    let mut pushed = Vec::with_capacity(accepted.revocations.len());
    let mut dropped = 0;
    for revocation in &accepted.revocations {
        let at_ms = revocation.at_s.saturating_mul(1000);
        // SAFETY: the receiver's zone was declared by its directive and
        // initialised by nginx before any request or worker event runs.
        if !unsafe {
            revocations::revoke(receiver.zone.cast(), &revocation.tag, at_ms, keep_until_ms)
        } {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "auth_oauth2_token: SET not applied: the revocation list's zone cannot be used"
            );
            return None;
        }
        dropped += revocations::drop_entries(main, receiver, &revocation.tag, now);
        pushed.push((
            revocation.tag,
            Pushed {
                at_ms,
                keep_until_ms,
            },
        ));
    }
    Some((pushed, dropped))
}

/// The name of the SET's `jti` in the replay stores (this gateway's and
/// the fleet's), and how long it is kept there.
pub fn jti_name(receiver: &SsfReceiver, accepted: &Accepted) -> (CacheKey, i64) {
    let name = CacheKey::from_parts(&[
        b"ssf-jti",
        receiver.stream.issuer.as_bytes(),
        accepted.jti.as_bytes(),
    ]);
    (name, (receiver.stream.max_age_s + 2 * LEEWAY_S) * 1000)
}

/// Appends to `out` the commands that tell the fleet, through the Redis
/// tier `redis`, of the SET applied here at `now` (`pushed`, what
/// `revoke_all` put on the list): `redis/ssf_tell.rs`. Read the replies
/// with `ssf_tell::told`.
pub fn tell_fleet(
    redis: &RedisTier,
    receiver: &SsfReceiver,
    accepted: &Accepted,
    pushed: &[PushedRevocation],
    now: i64,
    out: &mut Vec<u8>,
) -> Replies {
    let (list, channel) = (redis.revocation_list(), redis.channel());
    let fleet = Fleet {
        keys: &redis.keys,
        prefix: &redis.prefix,
        list: &list,
        channel: &channel,
    };
    let (set_id, keep_ms) = jti_name(receiver, accepted);
    ssf_tell::commands(&fleet, pushed, &set_id.0, keep_ms, now, out)
}

/// Records the SET's `jti` after its revocations are in (a worker that
/// dies before this leaves the SET unrecorded, and the transmitter's
/// retry applies it again, which changes nothing, rather than being called
/// a replay). A new `jti` (or one the full store could not keep) is logged
/// with the `dropped` cache entries and its events counted; `Seen` is a SET
/// received before.
pub fn record(
    receiver: &SsfReceiver,
    accepted: &Accepted,
    now: i64,
    log: *mut ngx_log_t,
    counters: &Counters,
    dropped: usize,
) -> Remembered {
    let (name, keep_ms) = jti_name(receiver, accepted);
    let until = now.saturating_add(keep_ms);
    // SAFETY: the receiver's zone was declared by its directive and
    // initialised by nginx before any request or worker event runs.
    let remembered = unsafe { zone::remember(receiver.zone.cast(), &name, until, now) };
    match remembered {
        Remembered::New => {}
        Remembered::Seen => return remembered,
        Remembered::Full => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "auth_oauth2_token: SET applied but its jti not recorded: the revocation list's zone is full"
            );
        }
    }
    log_applied(log, accepted, dropped);
    for event in &accepted.events {
        counters.add(receiver.metrics.event(*event), 1);
    }
    remembered
}

/// One line per event: its type, the revocations' tags (digests of the
/// subjects, never their names), and the cache entries they dropped here.
fn log_applied(log: *mut ngx_log_t, accepted: &Accepted, dropped: usize) {
    let tags: Vec<String> = accepted
        .revocations
        .iter()
        .map(|r| r.tag.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    for event in &accepted.events {
        ngx::ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "auth_oauth2_token: SET accepted: event {}, {} revocations at iat {} (subject tags {}), {} cache entries dropped",
            event.label(),
            accepted.revocations.len(),
            accepted.iat_s,
            tags.join(","),
            dropped
        );
    }
}
