//! The DPoP replay store's one operation on a table of its own zone:
//! record a proof's name until the proof could no longer be accepted, and
//! say whether it was recorded already. Unlike a cache, the store never
//! forgets a live name to make room: when there is none (the slab is full,
//! or the name's chain holds `MAX_CHAIN` live names), the proof is refused
//! (`Full`) rather than accepted unrecorded. Names past their time are
//! reclaimed in passing (the queue's tail, and the chain walked), so a store
//! sized for the traffic of one window never fills. Every change is marked,
//! as the cache's are: a worker that dies halfway leaves a table the next
//! lock holder clears (the names it held are lost; see SECURITY.md).

use core::mem::size_of;

use super::change::{bucket_of, find_in, Change};
use super::layout::{node_at, Died, Node, Slab, Steps, Table, Times, ENTRY, MAX_CHAIN};
use crate::oauth::cache::CacheKey;

/// What [`remember`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// The name is new: recorded until its time.
    New,
    /// The name is recorded and its time has not passed: a replay.
    Seen,
    /// No room to record it without forgetting a live name.
    Full,
}

/// Records `key` until `until_ms` unless it is recorded and live at `now_ms`.
///
/// # Safety
/// `table` must be a table returned by `table::open` on `slab`, the lock held.
pub unsafe fn remember<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    until_ms: i64,
    now_ms: i64,
) -> Result<Remembered, Died> {
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held
    // (this function's contract); a new node is fully written before it is
    // linked, and chains hold only live nodes of this table.
    unsafe {
        let bucket = bucket_of(table, key.tag());
        let existing = find_in(table, bucket, key);
        if !existing.is_null() && (*existing).kind == ENTRY && now_ms < (*existing).expires_ms() {
            return Ok(Remembered::Seen);
        }
        let mut change = Change::begin(table, slab, steps);
        if !existing.is_null() {
            change.remove_in(bucket, existing)?;
        }
        change.reap(now_ms)?;
        // The chain: names past their time go; a chain of live names is full.
        let mut live = 0;
        let mut node = node_at(table, *bucket);
        while !node.is_null() {
            let next = node_at(table, (*node).next);
            match (*node).stale_until_ms() <= now_ms {
                true => change.remove_in(bucket, node)?,
                false => live += 1,
            }
            node = next;
        }
        if live >= MAX_CHAIN {
            change.done();
            return Ok(Remembered::Full);
        }
        let node = change.alloc(size_of::<Node>())?;
        if node.is_null() {
            (*table).stats.refused += 1;
            change.done();
            return Ok(Remembered::Full);
        }
        let times = Times {
            stored_ms: now_ms,
            expires_ms: until_ms,
            stale_until_ms: until_ms,
        };
        node.write(Node::new(ENTRY, &key.0, times, 0));
        change.step()?;
        change.link(bucket, node)?;
        (*table).stats.entries += 1;
        change.step()?;
        change.done();
        Ok(Remembered::New)
    }
}
