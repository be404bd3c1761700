//! The Shared Signals receiver's revocation list (`auth_oauth2_token_ssf_receiver`):
//! a cache table in a zone of its own whose cutoffs are the revocations
//! ("tokens with this tag issued at or before T are refused"), read and
//! written under the zone's lock like the cache zones (`zone.rs`), except
//! that a request reads without it whether the list was never changed since
//! nginx made it (then nothing is refused), or whether it changed since
//! this worker last read the token's cutoffs (`table::changes_seen`).
//!
//! Its index, in a zone of its own (`index=`), says which tokens carry
//! which list keys: one entry per (list key, token tag), written when a
//! token's answer is stored in a cache zone and keyed to begin with the
//! list key, so that a revocation reads its subject's tokens from a few
//! chains (`INDEX_CHAINS`) and drops their cache entries (`drop_entries`),
//! never scanning a zone. It is a cache: an entry it evicts, or loses to a worker's death,
//! only leaves that token's entries in place, still refused on every hit.

use core::cell::RefCell;

use ngx::ffi::ngx_shm_zone_t;

use super::table::{self, Live};
use super::zone::{self, Locked};
use crate::conf::ssf::SsfReceiver;
use crate::conf::MainConf;
use crate::oauth::cache::{CacheKey, Lifetime};
use crate::oauth::ssf::memo::CutoffMemo;
use crate::oauth::ssf::{index_key, index_tags, indexed_token, Marks};

thread_local! {
    /// This worker's memory of the list's cutoffs (`oauth/ssf/memo.rs`).
    static MEMO: RefCell<CutoffMemo> = const { RefCell::new(CutoffMemo::new()) };
}

/// Whether the revocation list in `zone` refuses a token with `marks`
/// (`Marks::refused`). Without the lock when the list was never changed
/// since nginx made it (nothing is refused) or when this worker read each
/// of the tags' cutoffs since the list last changed (`CutoffMemo`);
/// otherwise the cutoffs are read under the lock, and kept. A zone that
/// cannot be used refuses: the list is unknown, so nothing is known to be
/// issued after its cutoffs.
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
#[inline(never)] // its cost stays a line of its own in a profile
pub unsafe fn revoked(zone: *mut ngx_shm_zone_t, marks: &Marks) -> bool {
    if marks.tags().is_empty() {
        return false;
    }
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `changes_seen` needs.
    if let Some((list, changes)) = unsafe { zone::changes_seen(zone) } {
        if changes == table::UNTOUCHED {
            return false;
        }
        let known = MEMO.with_borrow(|memo| {
            marks.refused_as_known(|tag| memo.get(list as usize, changes, tag))
        });
        if let Some(refused) = known {
            return refused;
        }
    }
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::keyless` needs; the table is read while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(locked) = Locked::keyless(zone) else {
            return true;
        };
        let (list, changes) = (locked.table, table::changes(locked.table));
        MEMO.with_borrow_mut(|memo| {
            marks.refused(|tag| {
                let until = table::cutoff(list, tag);
                memo.put(list as usize, changes, *tag, until);
                until
            })
        })
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
    // contract), as `Locked::keyless` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::keyless(zone) else {
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

/// How many revocations the list in `zone` holds (its table's cutoffs);
/// 0 when the zone cannot be used.
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
pub unsafe fn count(zone: *mut ngx_shm_zone_t) -> u64 {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::keyless` needs; the table's counters are read
    // while `locked` holds the zone's mutex.
    unsafe { Locked::keyless(zone).map_or(0, |locked| table::stats(locked.table).cutoffs) }
}

/// Notes in the index in `zone` that the token whose cache keys begin with
/// `token_tag` carries the list keys of `marks`, until `until_ms`. Entries
/// that find no room are not noted (the index is a cache).
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
pub unsafe fn index(
    zone: *mut ngx_shm_zone_t,
    marks: &Marks,
    token_tag: &[u8; 8],
    until_ms: i64,
    now_ms: i64,
) {
    if marks.tags().is_empty() {
        return;
    }
    let life = Lifetime {
        fresh_until: until_ms,
        stale_until: until_ms,
    };
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::keyless` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::keyless(zone) else {
            return;
        };
        for tag in marks.tags() {
            let key = CacheKey(index_key(tag, token_tag));
            let table = locked.table;
            let _ = table::insert(
                table,
                &mut locked.pool,
                &mut Live,
                &key,
                &[],
                life,
                now_ms,
                now_ms,
            );
        }
    }
}

/// The tags of the tokens the index in `zone` names for the list key
/// `tag` at `now_ms`: `INDEX_CHAINS` chains read.
///
/// # Safety
/// `zone` must be a zone initialised by `zone::init_zone`.
pub unsafe fn indexed(zone: *mut ngx_shm_zone_t, tag: &[u8; 8], now_ms: i64) -> Vec<[u8; 8]> {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::keyless` needs; the table is read while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(locked) = Locked::keyless(zone) else {
            return Vec::new();
        };
        index_tags(tag)
            .iter()
            .flat_map(|chain| {
                table::keys_tagged(locked.table, chain, now_ms)
                    .into_iter()
                    .filter_map(|key| indexed_token(&key, chain))
            })
            .collect()
    }
}

/// After the revocation of `tag`: drops this gateway's cache entries of
/// the tokens the receiver's index names for it (each token's purge,
/// `zone::purge_tag_everywhere`). Returns how many entries went.
pub fn drop_entries(main: &MainConf, receiver: &SsfReceiver, tag: &[u8; 8], now_ms: i64) -> usize {
    let Some(index) = receiver.index_zone else {
        return 0;
    };
    // SAFETY: the index zone was declared by the receiver's directive and
    // initialised by nginx before any request or worker event runs.
    let tokens = unsafe { indexed(index.cast(), tag, now_ms) };
    tokens
        .iter()
        .map(|token| zone::purge_tag_everywhere(main, token))
        .sum()
}
