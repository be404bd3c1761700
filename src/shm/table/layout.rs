//! How the table lies in the zone: its header, its nodes and their kinds,
//! the bounds every operation keeps, and what the table asks of the region
//! it lives in (`Slab`) and of the tests (`Steps`).

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// Marks a table laid out by this version of the module.
/// Bump it with every change of `Table` or `Node` (the size checks below
/// catch most) or of what a key or a node means: a reload keeps a zone of
/// the same magic and reads it as this version's.
pub const LAYOUT_MAGIC: u64 = u64::from_be_bytes(*b"oauth2cb");
const _: () = assert!(
    size_of::<Node>() == 56,
    "a new Node layout needs a new LAYOUT_MAGIC"
);
const _: () = assert!(
    size_of::<Table>() == 120,
    "a new Table layout needs a new LAYOUT_MAGIC"
);
/// `Table::changes` of a table nothing changed yet: a value that no
/// other field, node or value of an older table is likely to leave there,
/// and that counting never reaches (its top bit is set).
pub const UNTOUCHED: u64 = u64::from_be_bytes(*b"\xf0voided\x0f");
/// The largest region a table can lie in: its links are 32-bit offsets
/// from the region's start in 8-byte units.
pub const MAX_REGION_BYTES: usize = 8 << 32;
/// Zone bytes per hash bucket: about two nodes per bucket when full.
pub(super) const BYTES_PER_BUCKET: usize = 512;
/// Nodes one insert may evict to make room before giving up.
pub(super) const MAX_EVICTIONS_PER_INSERT: usize = 64;
/// Marked nodes one insert may send back to the head before it evicts
/// whatever is at the tail.
pub(super) const MAX_SECOND_CHANCES_PER_INSERT: usize = 64;
/// Expired nodes an insert reclaims from the queue's tail in passing.
pub(super) const REAP_PER_INSERT: usize = 2;
/// The most nodes (entries, marks and cutoffs) one chain holds. A key made
/// from a token begins with the token's tag and the bucket is chosen by
/// those bytes, so all the entries of one token share a chain; a client that
/// controls many variants of one token's key (`cache_vary` values, exchange
/// parameters) could otherwise make one chain, and every look-up in it, as
/// long as it likes. An insert into a full chain first removes one of its
/// nodes (see `Change::cap_chain`).
pub const MAX_CHAIN: usize = 16;
/// The largest value stored. A hit copies its value while the zone's lock
/// is held, so this bounds how long one hit can hold up the others: a
/// 64 KiB phantom JWT with its claims fits, a copy of this size takes a few
/// microseconds.
pub const MAX_VALUE_BYTES: usize = 80 * 1024;

/// `Node::kind`: an answer, with its value.
pub(super) const ENTRY: u8 = 0;
/// `Node::kind`: a marker without a value: a worker is asking the IdP for
/// this key until `expires_ms` (see `claim`).
pub(super) const MARK: u8 = 1;
/// `Node::kind`: a purge's cutoff for the token whose tag begins its key:
/// answers obtained at or before `expires_ms` are not stored; kept until
/// `stale_until_ms` (see `purge_tag`). Found by its kind, never by its
/// key, so no key, whatever its bytes, is ever taken for a cutoff.
pub(super) const CUTOFF: u8 = 2;
/// Bytes 8..16 of a cutoff's key (after the tag): not a digest anyone made.
pub(super) const CUTOFF_FILL: [u8; 8] = *b"cutoff!!";
/// The bytes of a cache key a node keeps: the token's tag (bytes 0..8,
/// which choose the chain and name the token for a purge) and the first
/// 64 bits of the keyed hash after it (`oauth/cache/key.rs`). A wrong hit
/// needs another token with the same tag whose keyed hash, under a secret
/// only the zone knows, agrees in 64 bits: each try is a request, with odds
/// of 2^-64 against every entry of that tag (at most `MAX_CHAIN`).
pub(super) const KEPT_KEY_BYTES: usize = 16;

/// The allocator of the region the table lives in.
pub trait Slab {
    /// The region's start: every allocation lies past its first 8 bytes
    /// and within [`MAX_REGION_BYTES`] of it, 8-byte aligned.
    fn base(&self) -> *mut u8;
    /// `size` bytes aligned for a pointer, or null when the region is full.
    fn alloc(&mut self, size: usize) -> *mut u8;
    /// Returns an allocation made by `alloc`.
    fn free(&mut self, p: *mut u8);
    /// Forgets every allocation: the region is empty again.
    fn reset(&mut self);
    /// The largest allocation that could succeed in the empty region.
    fn capacity(&self) -> usize;
}

/// Where a worker may die in the middle of a change. Production code never
/// does ([`Live`]); the tests stop an operation after each step.
pub trait Steps {
    fn step(&mut self) -> Result<(), Died>;
}

/// The operation stopped halfway, as if its worker had died.
#[derive(Debug, PartialEq, Eq)]
pub struct Died;

/// Runs every operation to its end.
pub struct Live;

impl Steps for Live {
    #[inline(always)]
    fn step(&mut self) -> Result<(), Died> {
        Ok(())
    }
}

/// A link of the eviction queue: the offsets (see [`Table::base`]) of the
/// links before and after it, each a node's first field or the queue's
/// head in the table.
#[repr(C, align(8))]
pub(super) struct Link {
    pub(super) prev: u32,
    pub(super) next: u32,
}

#[repr(C)]
pub struct Table {
    pub(super) magic: u64,
    /// Set while a lock holder changes the table or the slab under it.
    pub(super) changing: AtomicU32,
    /// The number of buckets, less one (a power of two).
    pub(super) mask: u32,
    /// How many changes began in the table: [`UNTOUCHED`] while nothing
    /// ever changed a table made with no floor (a new zone's: it holds
    /// nothing and refuses nothing), then 1, 2, ...; a table made in place
    /// of a lost one starts at a random value below 2^62. Every change
    /// counts itself before it marks `changing`, and nothing sets it back,
    /// so a reader without the lock that finds the count it saw when it
    /// read the table under the lock knows nothing changed since
    /// ([`changes_seen`]).
    ///
    /// [`changes_seen`]: super::changes_seen
    pub(super) changes: AtomicU64,
    /// The region's start (`Slab::base`): every link, chain and bucket
    /// holds a 32-bit offset from it in 8-byte units, 0 for none. The
    /// shared mapping has the same address in every worker and across
    /// reloads, as nginx's own slab pool assumes.
    pub(super) base: *mut u8,
    /// The offset of each chain's first node.
    pub(super) buckets: *mut u32,
    /// The eviction queue's head: its `next` is the newest node, its `prev`
    /// the oldest.
    pub(super) queue: Link,
    pub(super) stats: Stats,
    /// The key of the bucket hash (`bucket_of`), drawn when the table was made.
    pub(super) bucket_key: [u64; 2],
    /// The secret of the zone's cache keys (`oauth/cache/key.rs`
    /// `KeySecret`), drawn when the table was made and never changed: a
    /// worker reads it under the lock and keeps a copy.
    pub(super) key_secret: [u64; 2],
    /// Answers obtained at or before this time are not stored, whatever
    /// their token. A cutoff that leaves the table (past its time, evicted,
    /// pushed out of a full chain) raises it to its own time, and a table
    /// made in place of a damaged one starts with it at the time it was
    /// made (`Fresh::floor_ms`): a cutoff is never simply forgotten.
    pub(super) floor_ms: i64,
}

/// What the metrics page shows of a table; kept under the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub evictions: u64,
    /// Entries not stored: too large, or no room made within the bounds.
    pub refused: u64,
    /// Cutoffs held: purges, or the revocations of a Shared Signals list.
    pub cutoffs: u64,
}

/// A node: 56 bytes, its value right after it. Its times are kept as
/// milliseconds from `stored_ms`, in 32 bits: a time further than 24 days
/// from it is kept as the nearest one within (see [`Node::delta`]).
#[repr(C)]
pub(super) struct Node {
    /// First field: a queue link's offset is also its node's.
    pub(super) queue: Link,
    /// The next node of the chain (an offset), 0 at its end.
    pub(super) next: u32,
    pub(super) len: u32,
    /// The first [`KEPT_KEY_BYTES`] of the node's cache key.
    pub(super) key: [u8; KEPT_KEY_BYTES],
    /// When the entry's answer was obtained: readers count their `max_ttl`
    /// from it.
    pub(super) stored_ms: i64,
    /// An entry's end as its writer set it (never past the token's `exp`);
    /// a mark's deadline; a cutoff's time.
    pub(super) expires: i32,
    /// Until when an entry may still be served when the IdP fails (the
    /// writer's `stale_if_error`, never past `exp`); for every kind, the
    /// time from which the node is of no use to anyone and may be reaped.
    pub(super) stale_until: i32,
    /// Until when a request refreshes this entry in the background.
    pub(super) refreshing_until: i32,
    /// [`ENTRY`], [`MARK`] or [`CUTOFF`].
    pub(super) kind: u8,
    /// Set by a hit, cleared when the node gets its second chance.
    pub(super) used: u8,
    // `len` bytes of value follow.
}

/// The times of a new node, in ms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub(super) stored_ms: i64,
    pub(super) expires_ms: i64,
    pub(super) stale_until_ms: i64,
}

impl Node {
    /// A node linked nowhere, of `kind`, with `key`'s kept bytes, `times`
    /// and a value of `len` bytes; its refresh mark unset.
    pub(super) fn new(kind: u8, key: &[u8; 32], times: Times, len: u32) -> Node {
        let at = |ms| Node::delta(times.stored_ms, ms);
        Node {
            queue: Link { prev: 0, next: 0 },
            next: 0,
            len,
            key: key[..KEPT_KEY_BYTES].try_into().expect("16 bytes"),
            stored_ms: times.stored_ms,
            expires: at(times.expires_ms),
            stale_until: at(times.stale_until_ms),
            refreshing_until: i32::MIN,
            kind,
            used: 0,
        }
    }

    /// `ms` as kept in a node stored at `stored_ms`: its distance from it,
    /// saturated at 24 days either way. An entry's or a mark's end that far
    /// ahead comes sooner (the entry is asked again sooner, a cutoff leaves
    /// for the floor sooner: never a later answer served).
    pub(super) fn delta(stored_ms: i64, ms: i64) -> i32 {
        ms.saturating_sub(stored_ms)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    /// See the field.
    pub(super) fn expires_ms(&self) -> i64 {
        self.stored_ms.saturating_add(i64::from(self.expires))
    }

    /// See the field.
    pub(super) fn stale_until_ms(&self) -> i64 {
        self.stored_ms.saturating_add(i64::from(self.stale_until))
    }

    /// See the field.
    pub(super) fn refreshing_until_ms(&self) -> i64 {
        self.stored_ms
            .saturating_add(i64::from(self.refreshing_until))
    }

    /// Whether the node's key is `key` (its kept bytes).
    pub(super) fn is_key(&self, key: &[u8; 32]) -> bool {
        self.key[..] == key[..KEPT_KEY_BYTES]
    }

    /// The node's tag: its key's first 8 bytes.
    pub(super) fn tag(&self) -> [u8; 8] {
        self.key[..8].try_into().expect("8 bytes")
    }

    /// Whether the node's key begins with `tag` (is the token's).
    ///
    /// # Safety
    /// `node` must be a live node.
    pub(super) unsafe fn has_tag(node: *const Node, tag: &[u8]) -> bool {
        // SAFETY: `node` is a live node (this function's contract); its key
        // is copied, not borrowed.
        let key = unsafe { (*node).key };
        key[..8] == tag[..8]
    }

    /// # Safety
    /// `node` must be a live node.
    pub(super) unsafe fn value<'a>(node: *mut Node) -> &'a [u8] {
        // SAFETY: the value was allocated right after the node header.
        unsafe {
            core::slice::from_raw_parts(
                node.cast::<u8>().add(size_of::<Node>()),
                (*node).len as usize,
            )
        }
    }

    /// The end of an entry's fresh life for a reader whose `max_ttl` is
    /// `max_ttl_ms`: the writer's end, or `max_ttl` after the answer was
    /// obtained, whichever comes first.
    ///
    /// # Safety
    /// `node` must be a live entry.
    pub(super) unsafe fn fresh_end(node: *const Node, max_ttl_ms: i64) -> i64 {
        // SAFETY: `node` is a live entry (this function's contract); two of
        // its words are read.
        unsafe {
            (*node)
                .expires_ms()
                .min((*node).stored_ms.saturating_add(max_ttl_ms))
        }
    }
}

/// The node at `off` in `table`'s region, or null for 0.
///
/// # Safety
/// `table` must be an open table and `off` 0 or the offset of one of its
/// nodes.
#[inline(always)]
pub(super) unsafe fn node_at(table: *const Table, off: u32) -> *mut Node {
    match off {
        0 => core::ptr::null_mut(),
        // SAFETY: the offset was taken from a node of this region (the
        // contract), which lies within `MAX_REGION_BYTES` of its base.
        _ => unsafe { (*table).base.add(off as usize * 8).cast() },
    }
}

/// The queue link at `off`: a node's, or the head's in the table.
///
/// # Safety
/// As [`node_at`], for an offset not 0.
#[inline(always)]
pub(super) unsafe fn link_at(table: *const Table, off: u32) -> *mut Link {
    // SAFETY: as `node_at` (the contract).
    unsafe { (*table).base.add(off as usize * 8).cast() }
}

/// The offset of `p`, a node or link in `table`'s region.
///
/// # Safety
/// `p` must lie in the region, 8-byte aligned (`Slab::base`).
#[inline(always)]
pub(super) unsafe fn off_of<T>(table: *const Table, p: *const T) -> u32 {
    // SAFETY: both lie in one region (the contract), `p` past its base.
    unsafe { (p.cast::<u8>().offset_from((*table).base) as usize / 8) as u32 }
}
