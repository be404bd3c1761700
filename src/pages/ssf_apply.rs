//! What a verified SET does, however it came (pushed to
//! `pages/ssf_push.rs` or polled by `pages/ssf_poll.rs`): its revocations
//! go on this gateway's list (`shm/revocations.rs`), then its `jti` is
//! recorded in the replay store, and each applied SET gets one log line
//! (its events and the revocations' tags, never a subject) and its events
//! counted.

use ngx::ffi::{ngx_log_t, NGX_LOG_ERR, NGX_LOG_INFO};

use crate::conf::ssf::SsfReceiver;
use crate::metrics::Counters;
use crate::oauth::cache::CacheKey;
use crate::oauth::ssf::set::{Accepted, LEEWAY_S};
use crate::redis::fleet::Pushed;
use crate::shm::table::Remembered;
use crate::shm::{revocations, zone};

/// Puts the SET's revocations on the list, each kept `token_lifetime`
/// from `now`; what was put, for the Redis tier. `None` (logged) when the
/// list's zone cannot be used: nothing is recorded, the SET is to be
/// delivered again.
pub fn revoke_all(
    receiver: &SsfReceiver,
    accepted: &Accepted,
    now: i64,
    log: *mut ngx_log_t,
) -> Option<Vec<([u8; 8], Pushed)>> {
    let keep_until_ms = now.saturating_add(receiver.token_lifetime_ms);
    let mut pushed = Vec::with_capacity(accepted.revocations.len());
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
        pushed.push((
            revocation.tag,
            Pushed {
                at_ms,
                keep_until_ms,
            },
        ));
    }
    Some(pushed)
}

/// Records the SET's `jti` after its revocations are in (a worker that
/// dies before this leaves the SET unrecorded, and the transmitter's
/// retry applies it again, which changes nothing, rather than being called
/// a replay). A new `jti` (or one the full store could not keep) is logged
/// and its events counted; `Seen` is a SET received before.
pub fn record(
    receiver: &SsfReceiver,
    accepted: &Accepted,
    now: i64,
    log: *mut ngx_log_t,
    counters: &Counters,
) -> Remembered {
    let name = CacheKey::from_parts(&[
        b"ssf-jti",
        receiver.stream.issuer.as_bytes(),
        accepted.jti.as_bytes(),
    ]);
    let until = now.saturating_add((receiver.stream.max_age_s + 2 * LEEWAY_S) * 1000);
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
    log_applied(log, accepted);
    for event in &accepted.events {
        counters.add(receiver.metrics.event(*event), 1);
    }
    remembered
}

/// One line per event: its type, and the revocations' tags (digests of the
/// subjects, never their names).
fn log_applied(log: *mut ngx_log_t, accepted: &Accepted) {
    let tags: Vec<String> = accepted
        .revocations
        .iter()
        .map(|r| r.tag.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    for event in &accepted.events {
        ngx::ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "auth_oauth2_token: SET accepted: event {}, {} revocations at iat {} (subject tags {})",
            event.label(),
            accepted.revocations.len(),
            accepted.iat_s,
            tags.join(",")
        );
    }
}
