//! The Shared Signals receiver's revocation list (`auth_oauth2_token_ssf_receiver`):
//! a cache table in a zone of its own whose cutoffs are the revocations
//! ("tokens with this tag issued at or before T are refused"), read and
//! written under the zone's lock like the cache zones (`zone.rs`).

use ngx::ffi::ngx_shm_zone_t;

use super::table::{self, Live};
use super::zone::Locked;
use crate::oauth::ssf::Marks;

/// Whether the revocation list in `zone` refuses a token with `marks`
/// (`Marks::refused`): its tags' cutoffs read under one lock. A zone that
/// cannot be used refuses: the list is unknown, so nothing is known to be
/// issued after its cutoffs.
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
pub unsafe fn revoked(zone: *mut ngx_shm_zone_t, marks: &Marks) -> bool {
    // Nothing to look up: no lock.
    if marks.tags().is_empty() {
        return false;
    }
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is read while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(locked) = Locked::new(zone) else {
            return true;
        };
        marks.refused(|tag| table::cutoff(locked.table, tag))
    }
}

/// Puts a revocation in the list in `zone`: tokens with `tag` issued at or
/// before `at_ms` are refused until `keep_until_ms` (the table's cutoff,
/// `table::purge_tag`). One already there at or after `at_ms` is left as
/// it is, so a SET delivered twice changes nothing. False when the zone
/// cannot be used.
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
pub unsafe fn revoke(
    zone: *mut ngx_shm_zone_t,
    tag: &[u8; 8],
    at_ms: i64,
    keep_until_ms: i64,
) -> bool {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return false;
        };
        let table = locked.table;
        if table::cutoff(table, tag).is_some_and(|until| until >= at_ms) {
            return true;
        }
        table::purge_tag(
            table,
            &mut locked.pool,
            &mut Live,
            tag,
            at_ms,
            keep_until_ms,
        )
        .is_ok()
    }
}
