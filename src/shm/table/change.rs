//! A change to the table in progress (`Change`: marked from `begin` to
//! `done`, stoppable after every step for the death tests) and the chain and
//! queue primitives it is made of: the keyed bucket hash, links, look-ups
//! by key and by a token's cutoff.

use core::ptr;
use core::sync::atomic::{compiler_fence, Ordering};

use super::layout::*;
use crate::oauth::cache::key::sip_round;
use crate::oauth::cache::CacheKey;

/// Which nodes [`Change::cap_chain`] may remove from a full chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// For an answer or a cutoff: an entry or a mark, or a cutoff when the
    /// chain holds nothing else.
    Any,
    /// For a mark: other marks only; a mark never evicts an answer.
    MarksOnly,
}

/// A change in progress: `changing` stays set until `done`, also if the
/// change stops halfway (a dying worker leaves it set).
pub(super) struct Change<'t, S: Slab, D: Steps> {
    pub(super) table: *mut Table,
    pub(super) slab: &'t mut S,
    pub(super) steps: &'t mut D,
}

impl<'t, S: Slab, D: Steps> Change<'t, S, D> {
    /// # Safety
    /// `table` must be a table returned by `table::open`, the lock held.
    pub(super) unsafe fn begin(table: *mut Table, slab: &'t mut S, steps: &'t mut D) -> Self {
        // SAFETY: `table` is an open table and its lock is held (this
        // function's contract); `changes` and `changing` are atomic words
        // of it. The count goes first (readers without the lock trust it,
        // `table::changes_seen`), so a change that dies halfway is counted.
        // Only the lock holder writes it.
        unsafe {
            let count = match (*table).changes.load(Ordering::Relaxed) {
                UNTOUCHED => 1,
                n => n.wrapping_add(1),
            };
            (*table).changes.store(count, Ordering::SeqCst);
            (*table).changing.store(1, Ordering::Release);
        }
        // No store of the change may be moved before the mark.
        compiler_fence(Ordering::SeqCst);
        Change { table, slab, steps }
    }

    pub(super) fn done(self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: the table outlives the change (see `begin`).
        unsafe { (*self.table).changing.store(0, Ordering::Release) };
    }

    pub(super) fn step(&mut self) -> Result<(), Died> {
        self.steps.step()
    }

    /// The bucket of keys that begin with `tag`.
    pub(super) fn bucket(&self, tag: [u8; 8]) -> *mut u32 {
        // SAFETY: the change's table is open (`begin`), its lock held while
        // the change lives; `bucket_of` only indexes its bucket array.
        unsafe { bucket_of(self.table, tag) }
    }

    /// Raises the table's floor to `ms` (see `Table::floor_ms`).
    pub(super) fn raise_floor(&mut self, ms: i64) -> Result<(), Died> {
        // SAFETY: the table outlives the change; one word, under the mark.
        unsafe { (*self.table).floor_ms = (*self.table).floor_ms.max(ms) };
        self.step()
    }

    /// Makes room in the chain `bucket` of `tag`'s keys for one more node: when it holds
    /// [`MAX_CHAIN`] nodes already, removes one that `room` allows, so a
    /// look-up never walks more than `MAX_CHAIN` nodes. The one removed is
    /// the last such node in the chain with the same first 8 bytes (the
    /// same token) as the new one, or the chain's last such node when there is
    /// none: a new node goes to the front of its chain, so the last is the
    /// one inserted longest ago, and a token that fills a chain pushes out
    /// its own nodes before another's. Cutoffs go only when the chain holds
    /// nothing else, and only for an answer or a cutoff. `Ok(false)` when
    /// the chain is full and nothing may go. One walk of the chain and one
    /// removal: bounded work.
    ///
    /// # Safety
    /// The table's chains hold only live nodes; `bucket` is `tag`'s; the new
    /// node's key's own node, if any, was removed already.
    pub(super) unsafe fn cap_chain(
        &mut self,
        bucket: *mut u32,
        tag: &[u8; 8],
        room: Room,
    ) -> Result<bool, Died> {
        // SAFETY: chains hold live nodes of this table.
        unsafe {
            let mut len = 0;
            let mut last = ptr::null_mut::<Node>();
            let mut last_of_token = ptr::null_mut::<Node>();
            let mut last_cutoff = ptr::null_mut::<Node>();
            let mut node = node_at(self.table, *bucket);
            while !node.is_null() {
                len += 1;
                let may_go = match (*node).kind {
                    ENTRY => room == Room::Any,
                    MARK => true,
                    _ => false,
                };
                if may_go {
                    last = node;
                    if Node::has_tag(node, tag) {
                        last_of_token = node;
                    }
                } else if (*node).kind == CUTOFF {
                    last_cutoff = node;
                }
                node = node_at(self.table, (*node).next);
            }
            if len < MAX_CHAIN {
                return Ok(true);
            }
            let victim = match (last_of_token.is_null(), last.is_null(), room) {
                (false, _, _) => last_of_token,
                (true, false, _) => last,
                (true, true, Room::Any) if !last_cutoff.is_null() => last_cutoff,
                _ => return Ok(false),
            };
            self.evict(victim)?;
            Ok(true)
        }
    }

    /// Removes `node` to make room for another: counted when it is an entry.
    ///
    /// # Safety
    /// `node` must be a node of this table, linked in the queue.
    pub(super) unsafe fn evict(&mut self, node: *mut Node) -> Result<(), Died> {
        // SAFETY: `node` is a node of the change's table, linked in the
        // queue (this function's contract, as `remove` needs).
        unsafe {
            if (*node).kind == ENTRY {
                (*self.table).stats.evictions += 1;
            }
            self.remove(node)
        }
    }

    /// Unlinks `node` from its chain and the queue and frees it; a cutoff
    /// leaves its time in the table's floor first. A node not found in its
    /// chain means the table is damaged: `Err`, and the change is left
    /// marked, so the next holder clears the table.
    ///
    /// # Safety
    /// `node` must be a node of this table, linked in the queue.
    pub(super) unsafe fn remove(&mut self, node: *mut Node) -> Result<(), Died> {
        // SAFETY: as `remove_in` needs (this function's contract), with the
        // bucket of the node's own tag.
        unsafe { self.remove_in(self.bucket((*node).tag()), node) }
    }

    /// [`remove`](Self::remove), for a node in the chain `bucket`.
    ///
    /// # Safety
    /// `node` must be a node of this table, linked in the queue, and
    /// `bucket` the bucket of its tag.
    pub(super) unsafe fn remove_in(
        &mut self,
        bucket: *mut u32,
        node: *mut Node,
    ) -> Result<(), Died> {
        // SAFETY: chains and the queue hold live nodes of this table.
        unsafe {
            if (*node).kind == CUTOFF {
                self.raise_floor((*node).expires_ms())?;
            }
            let off = off_of(self.table, node);
            let mut link = bucket;
            while *link != off {
                if *link == 0 {
                    return Err(Died);
                }
                link = ptr::addr_of_mut!((*node_at(self.table, *link)).next);
            }
            *link = (*node).next;
            self.step()?;
            unlink(self.table, off);
            self.step()?;
            let kind = (*node).kind;
            self.slab.free(node.cast());
            let stats = &mut (*self.table).stats;
            match kind {
                ENTRY => stats.entries = stats.entries.saturating_sub(1),
                CUTOFF => stats.cutoffs = stats.cutoffs.saturating_sub(1),
                _ => {}
            }
            self.step()
        }
    }

    /// Reclaims up to [`REAP_PER_INSERT`] nodes of no use to anyone from
    /// the queue's tail.
    ///
    /// # Safety
    /// The queue holds live nodes.
    pub(super) unsafe fn reap(&mut self, now_ms: i64) -> Result<(), Died> {
        // SAFETY: nodes in the queue are live.
        unsafe {
            for _ in 0..REAP_PER_INSERT {
                match oldest(self.table) {
                    Some(node) if (*node).stale_until_ms() <= now_ms => self.remove(node)?,
                    _ => break,
                }
            }
            Ok(())
        }
    }

    /// The tail node that may be evicted: marked nodes on the way get their
    /// second chance (back to the head, unmarked), a bounded number of them.
    ///
    /// # Safety
    /// The queue holds live nodes.
    pub(super) unsafe fn victim(&mut self) -> Result<Option<*mut Node>, Died> {
        // SAFETY: nodes in the queue are live.
        unsafe {
            for _ in 0..MAX_SECOND_CHANCES_PER_INSERT {
                let Some(node) = oldest(self.table) else {
                    return Ok(None);
                };
                if (*node).used == 0 {
                    return Ok(Some(node));
                }
                (*node).used = 0;
                self.step()?;
                unlink(self.table, off_of(self.table, node));
                self.step()?;
                push_front(self.table, node);
                self.step()?;
            }
            Ok(oldest(self.table))
        }
    }

    /// Room for a node of `size` bytes, or null: nothing is evicted for it.
    pub(super) fn alloc(&mut self, size: usize) -> Result<*mut Node, Died> {
        let node = self.slab.alloc(size).cast::<Node>();
        self.step()?;
        Ok(node)
    }

    /// `size` bytes for a node, evicting nodes not used lately (a bounded
    /// number) when the region is full; null when no room was made.
    ///
    /// # Safety
    /// The queue holds live nodes.
    pub(super) unsafe fn alloc_evicting(&mut self, size: usize) -> Result<*mut Node, Died> {
        // SAFETY: nodes in the queue are live.
        unsafe {
            let mut node = self.slab.alloc(size).cast::<Node>();
            self.step()?;
            let mut evictions = 0;
            while node.is_null() && evictions < MAX_EVICTIONS_PER_INSERT {
                let Some(victim) = self.victim()? else {
                    break;
                };
                self.evict(victim)?;
                evictions += 1;
                node = self.slab.alloc(size).cast::<Node>();
                self.step()?;
            }
            Ok(node)
        }
    }

    /// Puts a node written whole at the front of its chain, `bucket`, and
    /// of the queue.
    ///
    /// # Safety
    /// `node` must be a live node linked nowhere, whose key's bucket is
    /// `bucket`.
    pub(super) unsafe fn link(&mut self, bucket: *mut u32, node: *mut Node) -> Result<(), Died> {
        // SAFETY: `node` is a live node linked nowhere, in `bucket`'s chain
        // (this function's contract); the lock is held while the change lives.
        unsafe {
            (*node).next = *bucket;
            self.step()?;
            *bucket = off_of(self.table, node);
            self.step()?;
            push_front(self.table, node);
            self.step()
        }
    }
}

/// SipHash (Aumasson and Bernstein) of one 64-bit word under a 128-bit key,
/// with `C` compression and `D` finalization rounds, as the paper defines
/// it for an 8-byte message: the word, then the length block (8 << 56).
pub(super) fn siphash<const C: usize, const D: usize>(key: [u64; 2], word: u64) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    for block in [word, 8u64 << 56] {
        v[3] ^= block;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= block;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The chain slot of keys that begin with `tag`: SipHash-1-3 of the tag
/// under the table's random key. The tag is an unkeyed hash of the token
/// that anyone can compute, so an index taken from its bits would let a
/// client pick junk tokens that share a victim's chain; a keyed PRF of it
/// does not, as long as the key stays in the zone. SipHash is made for
/// exactly this (hash-flooding resistance with a secret key, small inputs);
/// 1-3 rounds, as Rust's own `HashMap` uses, because whoever probes learns
/// at most which of their own tokens share a chain, by timing, never a
/// hash value: five SipRounds, a few nanoseconds beside the key's SHA-256.
///
/// # Safety
/// `table` must be a table returned by `table::open`.
pub(super) unsafe fn bucket_of(table: *mut Table, tag: [u8; 8]) -> *mut u32 {
    // SAFETY: the index is masked to the bucket array's length.
    unsafe {
        let hash = siphash::<1, 3>((*table).bucket_key, u64::from_le_bytes(tag));
        (*table).buckets.add(hash as usize & (*table).mask as usize)
    }
}

/// The offset of the queue's head.
///
/// # Safety
/// `table` must be a table returned by `table::open`.
pub(super) unsafe fn head_of(table: *mut Table) -> u32 {
    // SAFETY: the head is a field of the table, which lies in its region.
    unsafe { off_of(table, ptr::addr_of!((*table).queue)) }
}

/// # Safety
/// `off` must be a link linked in `table`'s queue.
pub(super) unsafe fn unlink(table: *mut Table, off: u32) {
    // SAFETY: `off` is linked in the queue (this function's contract), so
    // its neighbours are live links of it (the head or a node's).
    unsafe {
        let link = link_at(table, off);
        (*link_at(table, (*link).prev)).next = (*link).next;
        (*link_at(table, (*link).next)).prev = (*link).prev;
        (*link).prev = 0;
        (*link).next = 0;
    }
}

/// # Safety
/// `node` must be a live node not linked in the queue.
pub(super) unsafe fn push_front(table: *mut Table, node: *mut Node) {
    // SAFETY: `node` is a live node outside the queue (this function's
    // contract); the head is part of the table, and its `next` a live link.
    unsafe {
        let head_off = head_of(table);
        let head = link_at(table, head_off);
        let off = off_of(table, node);
        let link = ptr::addr_of_mut!((*node).queue);
        (*link).prev = head_off;
        (*link).next = (*head).next;
        (*link_at(table, (*head).next)).prev = off;
        (*head).next = off;
    }
}

/// # Safety
/// `table` must be a table returned by `table::open`.
pub(super) unsafe fn oldest(table: *mut Table) -> Option<*mut Node> {
    // SAFETY: the head is part of the table; its prev is the tail.
    unsafe {
        let last = (*table).queue.prev;
        (last != head_of(table)).then(|| node_at(table, last))
    }
}

/// The entry or mark of `key` (never a cutoff) in its chain, `bucket`, or null.
///
/// # Safety
/// `table` must be a table returned by `table::open`, `bucket` the bucket
/// of `key`'s tag.
pub(super) unsafe fn find_in(table: *mut Table, bucket: *mut u32, key: &CacheKey) -> *mut Node {
    // SAFETY: chains hold only live nodes of this table.
    unsafe {
        let mut node = node_at(table, *bucket);
        while !node.is_null() && (!(*node).is_key(&key.0) || (*node).kind == CUTOFF) {
            node = node_at(table, (*node).next);
        }
        node
    }
}

/// The time at or before which answers about the token with `tag` are not
/// stored: its purge's cutoff (the one in `bucket`, the tag's chain) or the
/// table's floor, whichever is later.
///
/// # Safety
/// `table` must be a table returned by `table::open`, `bucket` the bucket
/// of `tag`.
pub(super) unsafe fn refused_until(table: *mut Table, bucket: *mut u32, tag: &[u8; 8]) -> i64 {
    // SAFETY: `table` is an open table (this function's contract), whose
    // chains hold only live nodes.
    unsafe {
        let mut node = node_at(table, *bucket);
        while !node.is_null() && ((*node).kind != CUTOFF || !Node::has_tag(node, tag)) {
            node = node_at(table, (*node).next);
        }
        let floor = (*table).floor_ms;
        match node.is_null() {
            true => floor,
            false => floor.max((*node).expires_ms()),
        }
    }
}
