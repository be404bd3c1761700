//! The cache table that lives in a shared-memory zone: a fixed bucket array
//! of chained nodes for lookup and an intrusive queue for eviction, every
//! operation touching a bounded number of nodes whatever the zone holds.
//! Plain Rust over any [`Slab`]: nginx's slab pool in `shm/zone.rs`, a test
//! allocator in the tests below. Callers hold the zone's lock.
//!
//! Eviction is second chance (CLOCK on the queue): a hit only marks its node
//! as used; the eviction at the queue's tail moves a marked node back to the
//! head instead of evicting it, so a hit writes to one cache line only.
//!
//! Workers can die at any instruction, also while they hold the lock (nginx
//! then force-unlocks it). Every change, including the slab allocator's own
//! bookkeeping, happens between setting and clearing `Table::changing`; the
//! next lock holder that finds it set knows the table may be half-changed
//! and starts afresh with an empty region ([`open`]): it is a cache.
//!
//! Nodes hold only the key digest, times and the encoded value; the shared
//! mapping has the same address in every worker and survives reloads, so the
//! pointers between nodes stay valid.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};

use crate::oauth::cache::{CacheKey, Lifetime};

/// Marks a table laid out by this version of the module.
/// Bump it with every change of `Table` or `Node` (the size checks below
/// catch most) or of what a key means: a reload keeps a zone of the same
/// magic and reads it as this version's.
pub const LAYOUT_MAGIC: u64 = u64::from_be_bytes(*b"oauth2c5");
const _: () = assert!(
    size_of::<Node>() == 104,
    "a new Node layout needs a new LAYOUT_MAGIC"
);
const _: () = assert!(
    size_of::<Table>() == 72,
    "a new Table layout needs a new LAYOUT_MAGIC"
);
/// Zone bytes per hash bucket: about two nodes per bucket when full.
const BYTES_PER_BUCKET: usize = 512;
/// Nodes one insert may evict to make room before giving up.
const MAX_EVICTIONS_PER_INSERT: usize = 64;
/// Marked nodes one insert may send back to the head before it evicts
/// whatever is at the tail.
const MAX_SECOND_CHANCES_PER_INSERT: usize = 64;
/// Expired nodes an insert reclaims from the queue's tail in passing.
const REAP_PER_INSERT: usize = 2;
/// The most nodes (entries and marks) one chain holds. A key made from a
/// token begins with the token's tag and the bucket is chosen by those
/// bytes, so all the entries of one token share a chain; a client that
/// controls many variants of one token's key (`cache_vary` values, exchange
/// parameters) or picks tokens for their tag could otherwise make one chain,
/// and every look-up in it, as long as it likes. An insert into a full chain
/// first removes one of its nodes (see [`Change::cap_chain`]).
pub const MAX_CHAIN: usize = 16;
/// The largest value stored. A hit copies its value while the zone's lock
/// is held, so this bounds how long one hit can hold up the others: a
/// 64 KiB phantom JWT with its claims fits, a copy of this size takes a few
/// microseconds.
pub const MAX_VALUE_BYTES: usize = 80 * 1024;

/// The allocator of the region the table lives in.
pub trait Slab {
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

#[repr(C)]
struct Link {
    prev: *mut Link,
    next: *mut Link,
}

#[repr(C)]
pub struct Table {
    magic: u64,
    /// Set while a lock holder changes the table or the slab under it.
    changing: AtomicU32,
    mask: usize,
    buckets: *mut *mut Node,
    /// The eviction queue's head: its `next` is the newest node, its `prev`
    /// the oldest.
    queue: Link,
    stats: Stats,
}

/// What the metrics page shows of a table; kept under the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub evictions: u64,
    /// Entries not stored: too large, or no room made within the bounds.
    pub refused: u64,
}

#[repr(C)]
struct Node {
    /// First field: a queue link is also a pointer to its node.
    queue: Link,
    next: *mut Node,
    key: [u8; 32],
    expires_ms: i64,
    /// Until when the entry may still be served when the IdP fails.
    stale_until_ms: i64,
    stored_ms: i64,
    len: u32,
    /// Set by a hit, cleared when the node gets its second chance.
    used: u32,
    /// A marker without a value: a worker is asking the IdP for this key
    /// until `expires_ms` (see [`claim`]).
    pending: u32,
    /// Until when a request refreshes this entry in the background.
    refreshing_until_ms: i64,
    // `len` bytes of value follow.
}

impl Node {
    /// Whether the node's key begins with `tag` (is the token's).
    ///
    /// # Safety
    /// `node` must be a live node.
    unsafe fn has_tag(node: *const Node, tag: &[u8]) -> bool {
        // SAFETY: guaranteed by the caller; the key is copied, not borrowed.
        let key = unsafe { (*node).key };
        key[..8] == tag[..8]
    }

    /// # Safety
    /// `node` must be a live node.
    unsafe fn value<'a>(node: *mut Node) -> &'a [u8] {
        // SAFETY: the value was allocated right after the node header.
        unsafe {
            core::slice::from_raw_parts(
                node.cast::<u8>().add(size_of::<Node>()),
                (*node).len as usize,
            )
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Hit(T),
    /// A hit late in the entry's life: serve it, and refresh it (this
    /// request only: the entry is marked as being refreshed).
    Due(T),
    /// Past its time, but kept to be served if the IdP fails.
    Stale(T),
    /// Another worker is asking the IdP for this key.
    Pending,
    Expired,
    Miss,
}

/// What [`claim`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker asks the IdP; the key is marked until the deadline.
    Claimed,
    /// Another worker asks already, or its answer just arrived: look again soon.
    Taken,
    /// A stale entry stands for the key: ask without marking it.
    Unmarked,
}

/// How [`open`] found the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    Ready,
    /// There was none (a new zone): an empty one was made.
    Made,
    /// A worker died while changing it: the region was cleared.
    Repaired,
}

/// The table `root` points at, ready for use: made in an empty region when
/// there is none, and made afresh when a worker died while changing it.
/// `None` when the region cannot even hold an empty table.
///
/// # Safety
/// `root` must be null or the value an earlier `open` on this slab left in
/// it, and the caller must hold the lock that guards the region.
pub unsafe fn open<S: Slab>(
    root: &mut *mut Table,
    slab: &mut S,
    zone_bytes: usize,
) -> Option<(*mut Table, Opened)> {
    let table = *root;
    // SAFETY: a non-null root is a table made here (the caller's contract).
    unsafe {
        if !table.is_null() && (*table).magic == LAYOUT_MAGIC {
            if (*table).changing.load(Ordering::Acquire) == 0 {
                return Some((table, Opened::Ready));
            }
            slab.reset();
            return make(root, slab, zone_bytes).map(|t| (t, Opened::Repaired));
        }
        if !table.is_null() {
            // Not a table of this layout: nothing in the region is usable.
            slab.reset();
        }
        make(root, slab, zone_bytes).map(|t| (t, Opened::Made))
    }
}

/// Whether `table` was laid out by this version of the module.
///
/// # Safety
/// `table` must point at a table made by some version of the module.
pub unsafe fn has_current_layout(table: *const Table) -> bool {
    // SAFETY: every version keeps the magic number first.
    unsafe { (*table).magic == LAYOUT_MAGIC }
}

/// Lays out an empty table in the slab and points `root` at it.
///
/// # Safety
/// The caller holds the region's lock; nothing else in it is in use.
unsafe fn make<S: Slab>(
    root: &mut *mut Table,
    slab: &mut S,
    zone_bytes: usize,
) -> Option<*mut Table> {
    let nbuckets = (zone_bytes / BYTES_PER_BUCKET).max(16);
    let nbuckets = 1usize << (usize::BITS - 1 - nbuckets.leading_zeros());
    let table = slab.alloc(size_of::<Table>()).cast::<Table>();
    let buckets = slab
        .alloc(nbuckets * size_of::<*mut Node>())
        .cast::<*mut Node>();
    if table.is_null() || buckets.is_null() {
        return None;
    }
    // SAFETY: both allocations are ours and large enough; the head links
    // to itself once the table is in place.
    unsafe {
        ptr::write_bytes(buckets, 0, nbuckets);
        table.write(Table {
            magic: LAYOUT_MAGIC,
            changing: AtomicU32::new(0),
            mask: nbuckets - 1,
            buckets,
            queue: Link {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
            stats: Stats::default(),
        });
        let head = ptr::addr_of_mut!((*table).queue);
        (*head).prev = head;
        (*head).next = head;
    }
    *root = table;
    Some(table)
}

/// A change in progress: `changing` stays set until `done`, also if the
/// change stops halfway (a dying worker leaves it set).
struct Change<'t, S: Slab, D: Steps> {
    table: *mut Table,
    slab: &'t mut S,
    steps: &'t mut D,
}

impl<'t, S: Slab, D: Steps> Change<'t, S, D> {
    /// # Safety
    /// `table` must be a table returned by [`open`], the lock held.
    unsafe fn begin(table: *mut Table, slab: &'t mut S, steps: &'t mut D) -> Self {
        // SAFETY: guaranteed by the caller.
        unsafe { (*table).changing.store(1, Ordering::Release) };
        // No store of the change may be moved before the mark.
        compiler_fence(Ordering::SeqCst);
        Change { table, slab, steps }
    }

    fn done(self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: the table outlives the change (see `begin`).
        unsafe { (*self.table).changing.store(0, Ordering::Release) };
    }

    fn step(&mut self) -> Result<(), Died> {
        self.steps.step()
    }

    /// # Safety
    /// The table's chains hold only live nodes.
    unsafe fn bucket(&self, key: &[u8; 32]) -> *mut *mut Node {
        // SAFETY: guaranteed by the caller.
        unsafe { bucket_of(self.table, key[..8].try_into().expect("8 bytes")) }
    }

    /// Makes room in `key`'s chain for one more node: when it holds
    /// [`MAX_CHAIN`] nodes already, removes one, so a look-up never walks
    /// more than `MAX_CHAIN` nodes. The one removed is the last node in the
    /// chain with the same first 8 bytes (the same token) as `key`, or the
    /// chain's last node when there is none: a new node goes to the front of
    /// its chain, so the last is the one inserted longest ago, and a token
    /// that fills a chain pushes out its own entries before another's. One
    /// walk of the chain and one removal: bounded work.
    ///
    /// # Safety
    /// The table's chains hold only live nodes; `key`'s own node, if any,
    /// was removed already.
    unsafe fn cap_chain(&mut self, key: &[u8; 32]) -> Result<(), Died> {
        // SAFETY: chains hold live nodes of this table.
        unsafe {
            let mut len = 0;
            let mut last = ptr::null_mut::<Node>();
            let mut last_of_token = ptr::null_mut::<Node>();
            let mut node = *self.bucket(key);
            while !node.is_null() {
                len += 1;
                last = node;
                if Node::has_tag(node, key) {
                    last_of_token = node;
                }
                node = (*node).next;
            }
            if len < MAX_CHAIN {
                return Ok(());
            }
            let victim = match last_of_token.is_null() {
                true => last,
                false => last_of_token,
            };
            let was_entry = (*victim).pending == 0;
            self.remove(victim)?;
            if was_entry {
                (*self.table).stats.evictions += 1;
            }
            Ok(())
        }
    }

    /// Unlinks `node` from its chain and the queue and frees it. A node not
    /// found in its chain means the table is damaged: `Err`, and the change
    /// is left marked, so the next holder clears the table.
    ///
    /// # Safety
    /// `node` must be a node of this table, linked in the queue.
    unsafe fn remove(&mut self, node: *mut Node) -> Result<(), Died> {
        // SAFETY: chains and the queue hold live nodes of this table.
        unsafe {
            let mut link = self.bucket(&(*node).key);
            while *link != node {
                if (*link).is_null() {
                    return Err(Died);
                }
                link = ptr::addr_of_mut!((**link).next);
            }
            *link = (*node).next;
            self.step()?;
            unlink(ptr::addr_of_mut!((*node).queue));
            self.step()?;
            let was_entry = (*node).pending == 0;
            self.slab.free(node.cast());
            if was_entry {
                (*self.table).stats.entries = (*self.table).stats.entries.saturating_sub(1);
            }
            self.step()
        }
    }

    /// The tail node that may be evicted: marked nodes on the way get their
    /// second chance (back to the head, unmarked), a bounded number of them.
    ///
    /// # Safety
    /// The queue holds live nodes.
    unsafe fn victim(&mut self) -> Result<Option<*mut Node>, Died> {
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
                unlink(ptr::addr_of_mut!((*node).queue));
                self.step()?;
                push_front(self.table, node);
                self.step()?;
            }
            Ok(oldest(self.table))
        }
    }
}

/// The chain slot of keys that begin with `tag`.
///
/// # Safety
/// `table` must be a table returned by [`open`].
unsafe fn bucket_of(table: *mut Table, tag: [u8; 8]) -> *mut *mut Node {
    // SAFETY: the index is masked to the bucket array's length.
    unsafe {
        let hash = u64::from_le_bytes(tag);
        (*table).buckets.add(hash as usize & (*table).mask)
    }
}

/// # Safety
/// `link` must be linked in a queue.
unsafe fn unlink(link: *mut Link) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*(*link).prev).next = (*link).next;
        (*(*link).next).prev = (*link).prev;
        (*link).prev = ptr::null_mut();
        (*link).next = ptr::null_mut();
    }
}

/// # Safety
/// `node` must be a live node not linked in the queue.
unsafe fn push_front(table: *mut Table, node: *mut Node) {
    // SAFETY: guaranteed by the caller; the head is part of the table.
    unsafe {
        let head = ptr::addr_of_mut!((*table).queue);
        let link = ptr::addr_of_mut!((*node).queue);
        (*link).prev = head;
        (*link).next = (*head).next;
        (*(*head).next).prev = link;
        (*head).next = link;
    }
}

/// # Safety
/// `table` must be a table returned by [`open`].
unsafe fn oldest(table: *mut Table) -> Option<*mut Node> {
    // SAFETY: the head is part of the table; its prev is the tail.
    unsafe {
        let head = ptr::addr_of_mut!((*table).queue);
        let last = (*head).prev;
        (last != head).then_some(last.cast::<Node>())
    }
}

/// # Safety
/// `table` must be a table returned by [`open`].
unsafe fn find(table: *mut Table, key: &CacheKey) -> *mut Node {
    // SAFETY: chains hold only live nodes of this table.
    unsafe {
        let mut node = *bucket_of(table, key.tag());
        while !node.is_null() && (*node).key != key.0 {
            node = (*node).next;
        }
        node
    }
}

/// Marks `key` as being asked by this worker until `deadline_ms`, unless
/// another worker's mark (or a fresh entry) is there already. Cross-worker
/// coalescing: the other workers' requests wait for the entry instead of
/// asking the IdP too; a mark whose worker died ends at its deadline.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn claim<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    now_ms: i64,
    deadline_ms: i64,
) -> Result<Claim, Died> {
    // SAFETY: guaranteed by the caller; a new node is fully written before
    // it is linked.
    unsafe {
        let node = find(table, key);
        if !node.is_null() && now_ms < (*node).expires_ms {
            return Ok(Claim::Taken);
        }
        if !node.is_null() && (*node).pending == 0 && now_ms < (*node).stale_until_ms {
            return Ok(Claim::Unmarked);
        }
        let mut change = Change::begin(table, slab, steps);
        if !node.is_null() {
            change.remove(node)?;
        }
        change.cap_chain(&key.0)?;
        let mark = change.slab.alloc(size_of::<Node>()).cast::<Node>();
        change.step()?;
        if mark.is_null() {
            // No room for a mark: ask unmarked rather than evict for it.
            change.done();
            return Ok(Claim::Unmarked);
        }
        mark.write(Node {
            queue: Link {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
            next: ptr::null_mut(),
            key: key.0,
            expires_ms: deadline_ms,
            stale_until_ms: deadline_ms,
            stored_ms: now_ms,
            len: 0,
            used: 0,
            pending: 1,
            refreshing_until_ms: 0,
        });
        let bucket = change.bucket(&key.0);
        (*mark).next = *bucket;
        change.step()?;
        *bucket = mark;
        change.step()?;
        push_front(table, mark);
        change.step()?;
        change.done();
        Ok(Claim::Claimed)
    }
}

/// Takes this worker's mark off `key` when its answer is not stored.
///
/// # Safety
/// As for [`claim`].
pub unsafe fn release<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
) -> Result<(), Died> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let node = find(table, key);
        if node.is_null() || (*node).pending == 0 {
            return Ok(());
        }
        let mut change = Change::begin(table, slab, steps);
        change.remove(node)?;
        change.done();
        Ok(())
    }
}

/// Removes every node whose key begins with `tag`: all the entries of the
/// token with that tag, in every policy, and the marks of the workers
/// asking the IdP about it. They all share the tag's chain (the bucket is
/// chosen by a key's first 8 bytes), so the work is one walk of that chain,
/// at most [`MAX_CHAIN`] nodes, never a scan of the table. Returns how many
/// entries (not marks) it removed. A worker whose mark is removed still
/// stores its answer when it comes (an answer the IdP gave before the
/// purge reached it: the caller's purge must come after the revocation).
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn purge_tag<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    tag: &[u8; 8],
) -> Result<usize, Died> {
    // SAFETY: guaranteed by the caller; chains hold only live nodes.
    unsafe {
        let bucket = bucket_of(table, *tag);
        let mut node = *bucket;
        while !node.is_null() && !Node::has_tag(node, tag) {
            node = (*node).next;
        }
        if node.is_null() {
            // Nothing of the token: the table is not even marked.
            return Ok(0);
        }
        let mut change = Change::begin(table, slab, steps);
        let mut removed = 0;
        // `link` is the bucket or the `next` of a node that stays; removing
        // the node it points at makes it point at the one after.
        let mut link = bucket;
        while !(*link).is_null() {
            let node = *link;
            if !Node::has_tag(node, tag) {
                link = ptr::addr_of_mut!((*node).next);
                continue;
            }
            if (*node).pending == 0 {
                removed += 1;
            }
            change.remove(node)?;
        }
        change.done();
        Ok(removed)
    }
}

/// The table's counters.
///
/// # Safety
/// `table` must be a table returned by [`open`], the lock held.
pub unsafe fn stats(table: *mut Table) -> Stats {
    // SAFETY: guaranteed by the caller.
    unsafe { (*table).stats }
}

/// What a look-up needs to know besides the key.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub now_ms: i64,
    /// The location's `max_ttl` (a reload may have lowered it).
    pub max_ttl_ms: i64,
    /// `refresh`: from what share of its life a hit is due for a refresh (0: never).
    pub refresh_pct: u8,
    /// How long a refresh keeps the others from starting another.
    pub refresh_for_ms: i64,
}

/// Finds `key`; a live entry is marked as used and handed to `read`. An
/// entry past its expiry, or stored longer ago than `max_ttl_ms` (a reload
/// may have lowered it), or one `read` rejects, is removed.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn lookup<T, S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    at: At,
    read: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<Lookup<T>, Died> {
    let At {
        now_ms,
        max_ttl_ms,
        refresh_pct,
        refresh_for_ms,
    } = at;
    // SAFETY: guaranteed by the caller.
    unsafe {
        let node = find(table, key);
        if node.is_null() {
            return Ok(Lookup::Miss);
        }
        if (*node).pending != 0 {
            if now_ms < (*node).expires_ms {
                return Ok(Lookup::Pending);
            }
            let mut change = Change::begin(table, slab, steps);
            change.remove(node)?;
            change.done();
            return Ok(Lookup::Miss);
        }
        let expired =
            (*node).expires_ms <= now_ms || now_ms.saturating_sub((*node).stored_ms) >= max_ttl_ms;
        // Stale only once past its own time (not when cut short by a lower
        // max_ttl), and until its stale limit.
        let stale = (*node).expires_ms <= now_ms && now_ms < (*node).stale_until_ms;
        // An expired entry is not read: it is removed.
        let value = match expired && !stale {
            true => None,
            false => read(Node::value(node)),
        };
        let found = match (expired && !stale, value) {
            (true, _) => Lookup::Expired,
            (false, Some(value)) if stale => return Ok(Lookup::Stale(value)),
            (false, Some(value)) => {
                (*node).used = 1;
                let life = (*node).expires_ms - (*node).stored_ms;
                let due = refresh_pct > 0
                    && now_ms >= (*node).stored_ms + life * i64::from(refresh_pct) / 100
                    && now_ms >= (*node).refreshing_until_ms;
                if due {
                    // One word, under the lock: one request refreshes.
                    (*node).refreshing_until_ms = now_ms + refresh_for_ms;
                    return Ok(Lookup::Due(value));
                }
                return Ok(Lookup::Hit(value));
            }
            (false, None) => Lookup::Miss,
        };
        let mut change = Change::begin(table, slab, steps);
        change.remove(node)?;
        change.done();
        Ok(found)
    }
}

/// Stores `value` under `key` for its `lifetime` (fresh, then stale for the
/// IdP's failures), replacing any entry for the key and
/// evicting entries not used lately when the region is full.
/// `Ok(false)` when the entry could not be stored: too large ever to fit
/// (then nothing is evicted for it), or no room made within the bounds.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn insert<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    value: &[u8],
    lifetime: Lifetime,
    now_ms: i64,
) -> Result<bool, Died> {
    let size = size_of::<Node>() + value.len();
    if value.len() > MAX_VALUE_BYTES || size > slab.capacity() {
        // SAFETY: guaranteed by the caller; a counter, no link.
        unsafe { (*table).stats.refused += 1 };
        return Ok(false);
    }
    let Ok(len) = u32::try_from(value.len()) else {
        return Ok(false);
    };
    // SAFETY: guaranteed by the caller; a new node is fully written before
    // it is linked.
    unsafe {
        let mut change = Change::begin(table, slab, steps);
        let existing = find(table, key);
        if !existing.is_null() {
            change.remove(existing)?;
        }
        change.cap_chain(&key.0)?;
        for _ in 0..REAP_PER_INSERT {
            match oldest(table) {
                Some(node) if (*node).stale_until_ms <= now_ms => change.remove(node)?,
                _ => break,
            }
        }
        let mut node = change.slab.alloc(size).cast::<Node>();
        change.step()?;
        let mut evictions = 0;
        while node.is_null() && evictions < MAX_EVICTIONS_PER_INSERT {
            let Some(victim) = change.victim()? else {
                break;
            };
            change.remove(victim)?;
            (*table).stats.evictions += 1;
            evictions += 1;
            node = change.slab.alloc(size).cast::<Node>();
            change.step()?;
        }
        if node.is_null() {
            (*table).stats.refused += 1;
            change.done();
            return Ok(false);
        }
        node.write(Node {
            queue: Link {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
            next: ptr::null_mut(),
            key: key.0,
            expires_ms: lifetime.fresh_until,
            stale_until_ms: lifetime.stale_until.max(lifetime.fresh_until),
            stored_ms: now_ms,
            len,
            used: 0,
            pending: 0,
            refreshing_until_ms: 0,
        });
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            node.cast::<u8>().add(size_of::<Node>()),
            value.len(),
        );
        change.step()?;
        let bucket = change.bucket(&key.0);
        (*node).next = *bucket;
        change.step()?;
        *bucket = node;
        change.step()?;
        push_front(table, node);
        (*table).stats.entries += 1;
        change.step()?;
        change.done();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A slab over the system allocator with a byte budget: allocations past
    /// it fail, as a full zone's do.
    struct TestSlab {
        budget: usize,
        used: usize,
        live: HashMap<usize, (usize, Vec<u64>)>,
    }

    impl TestSlab {
        fn new(budget: usize) -> TestSlab {
            TestSlab {
                budget,
                used: 0,
                live: HashMap::new(),
            }
        }
    }

    impl Slab for TestSlab {
        fn alloc(&mut self, size: usize) -> *mut u8 {
            if self.used + size > self.budget {
                return ptr::null_mut();
            }
            let mut block = vec![0u64; size.div_ceil(8)];
            let p = block.as_mut_ptr().cast::<u8>();
            self.used += size;
            self.live.insert(p as usize, (size, block));
            p
        }
        fn free(&mut self, p: *mut u8) {
            let (size, _) = self.live.remove(&(p as usize)).expect("a live allocation");
            self.used -= size;
        }
        fn reset(&mut self) {
            self.live.clear();
            self.used = 0;
        }
        fn capacity(&self) -> usize {
            self.budget
        }
    }

    /// Dies at the `n`-th step.
    struct DieAt(usize);

    impl Steps for DieAt {
        fn step(&mut self) -> Result<(), Died> {
            match self.0 {
                0 => Err(Died),
                _ => {
                    self.0 -= 1;
                    Ok(())
                }
            }
        }
    }

    const NOW: i64 = 1_000_000;

    fn at(now_ms: i64, max_ttl_ms: i64) -> At {
        At {
            now_ms,
            max_ttl_ms,
            refresh_pct: 0,
            refresh_for_ms: 0,
        }
    }

    fn fresh(until: i64) -> Lifetime {
        Lifetime {
            fresh_until: until,
            stale_until: until,
        }
    }
    const TTL: i64 = 300_000;

    fn key(n: u32) -> CacheKey {
        CacheKey::from_parts(&[&n.to_le_bytes()])
    }

    /// The `n`-th key of the token whose tag is `tag`.
    fn tagged(tag: [u8; 8], n: u32) -> CacheKey {
        let mut key = key(n);
        key.0[..8].copy_from_slice(&tag);
        key
    }

    const TAG: [u8; 8] = *b"tokentag";
    /// Another token whose keys share `TAG`'s bucket (the 128 buckets of
    /// the tests' zones take the low bits of the first byte).
    const NEIGHBOUR: [u8; 8] = *b"tokentaX";

    /// A budget for the table and `n` nodes of 10-byte values (128 buckets
    /// for the 64 KiB the tests' zones claim).
    fn room_for(n: usize) -> usize {
        size_of::<Table>() + 128 * size_of::<*mut Node>() + n * (size_of::<Node>() + 10)
    }

    struct Zone {
        root: *mut Table,
        slab: TestSlab,
    }

    impl Zone {
        fn new(budget: usize) -> Zone {
            let mut zone = Zone {
                root: ptr::null_mut(),
                slab: TestSlab::new(budget),
            };
            assert_eq!(zone.open().1, Opened::Made);
            zone
        }

        fn open(&mut self) -> (*mut Table, Opened) {
            // SAFETY: root is null or what open left; one thread, no lock needed.
            unsafe { open(&mut self.root, &mut self.slab, 64 * 1024) }.expect("room for a table")
        }

        fn insert_with<D: Steps>(
            &mut self,
            steps: &mut D,
            n: u32,
            value: &[u8],
        ) -> Result<bool, Died> {
            self.insert_key(steps, &key(n), value)
        }

        fn insert_key<D: Steps>(
            &mut self,
            steps: &mut D,
            key: &CacheKey,
            value: &[u8],
        ) -> Result<bool, Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe {
                insert(
                    table,
                    &mut self.slab,
                    steps,
                    key,
                    value,
                    fresh(NOW + TTL),
                    NOW,
                )
            }
        }

        fn get_key(&mut self, key: &CacheKey) -> Lookup<Vec<u8>> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe {
                lookup(
                    table,
                    &mut self.slab,
                    &mut Live,
                    key,
                    at(NOW + 1, TTL),
                    |v| Some(v.to_vec()),
                )
            }
            .expect("live")
        }

        fn claim_key(&mut self, key: &CacheKey) -> Claim {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { claim(table, &mut self.slab, &mut Live, key, NOW, NOW + 5_000) }.expect("live")
        }

        fn purge_with<D: Steps>(&mut self, steps: &mut D, tag: [u8; 8]) -> Result<usize, Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { purge_tag(table, &mut self.slab, steps, &tag) }
        }

        fn purge(&mut self, tag: [u8; 8]) -> usize {
            self.purge_with(&mut Live, tag).expect("live")
        }

        /// How many nodes the chain of keys beginning with `tag` holds.
        fn chain_len(&mut self, tag: [u8; 8]) -> usize {
            let (table, _) = self.open();
            // SAFETY: the table was just opened; its chains hold live nodes.
            unsafe {
                let mut node = *bucket_of(table, tag);
                let mut len = 0;
                while !node.is_null() {
                    len += 1;
                    node = (*node).next;
                }
                len
            }
        }

        fn stats(&mut self) -> Stats {
            let (table, _) = self.open();
            // SAFETY: the table was just opened.
            unsafe { stats(table) }
        }

        fn insert(&mut self, n: u32, value: &[u8]) -> bool {
            self.insert_with(&mut Live, n, value).expect("live")
        }

        fn get_with<D: Steps>(
            &mut self,
            steps: &mut D,
            n: u32,
            now: i64,
        ) -> Result<Lookup<Vec<u8>>, Died> {
            let (table, _) = self.open();
            // SAFETY: as above.
            unsafe {
                lookup(table, &mut self.slab, steps, &key(n), at(now, TTL), |v| {
                    Some(v.to_vec())
                })
            }
        }

        fn get(&mut self, n: u32) -> Lookup<Vec<u8>> {
            self.get_with(&mut Live, n, NOW + 1).expect("live")
        }

        /// Walks every chain and the queue: both hold the same nodes, each
        /// once, and the slab holds exactly those plus the table's own two.
        fn check(&mut self) -> usize {
            let (table, _) = self.open();
            // SAFETY: the table is consistent (that is what is checked).
            unsafe {
                let mut in_chains = Vec::new();
                for b in 0..=(*table).mask {
                    let mut node = *(*table).buckets.add(b);
                    while !node.is_null() {
                        in_chains.push(node as usize);
                        node = (*node).next;
                    }
                }
                let head = ptr::addr_of_mut!((*table).queue);
                let mut in_queue = Vec::new();
                let mut link = (*head).next;
                while link != head {
                    assert_eq!((*(*link).next).prev, link, "queue links agree");
                    in_queue.push(link as usize);
                    link = (*link).next;
                }
                in_chains.sort_unstable();
                in_queue.sort_unstable();
                assert_eq!(in_chains, in_queue);
                assert_eq!(self.slab.live.len(), in_chains.len() + 2);
                in_chains.len()
            }
        }
    }

    #[test]
    fn stores_finds_replaces_and_expires() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        assert_eq!(z.get(1), Lookup::Hit(b"one".to_vec()));
        assert_eq!(z.get(2), Lookup::Miss);
        assert!(z.insert(1, b"uno"));
        assert_eq!(z.get(1), Lookup::Hit(b"uno".to_vec()));
        assert_eq!(z.check(), 1);
        assert_eq!(z.get_with(&mut Live, 1, NOW + TTL), Ok(Lookup::Expired));
        assert_eq!(z.check(), 0);
    }

    #[test]
    fn an_expired_entry_is_removed_unread() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        let (table, _) = z.open();
        // SAFETY: the zone's table, used by this test alone.
        let found = unsafe {
            lookup(
                table,
                &mut z.slab,
                &mut Live,
                &key(1),
                at(NOW + TTL, TTL),
                |_| -> Option<()> { panic!("an expired entry was read") },
            )
        };
        assert_eq!(found, Ok(Lookup::Expired));
        assert_eq!(z.check(), 0);
    }

    #[test]
    fn an_entry_past_its_time_is_stale_until_its_stale_limit() {
        let mut z = Zone::new(1 << 20);
        let (table, _) = z.open();
        // SAFETY: the table was just opened on this slab.
        let stored = unsafe {
            insert(
                table,
                &mut z.slab,
                &mut Live,
                &key(1),
                b"one",
                Lifetime {
                    fresh_until: NOW + 1_000,
                    stale_until: NOW + 5_000,
                },
                NOW,
            )
        };
        assert_eq!(stored, Ok(true));
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 500),
            Ok(Lookup::Hit(b"one".to_vec()))
        );
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 1_000),
            Ok(Lookup::Stale(b"one".to_vec()))
        );
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 4_999),
            Ok(Lookup::Stale(b"one".to_vec()))
        );
        assert_eq!(z.check(), 1, "a stale entry stays");
        assert_eq!(z.get_with(&mut Live, 1, NOW + 5_000), Ok(Lookup::Expired));
        assert_eq!(z.check(), 0);
    }

    #[test]
    fn one_worker_claims_a_key_the_others_find_it_pending() {
        let mut z = Zone::new(1 << 20);
        let (table, _) = z.open();
        let claim_at = |z: &mut Zone, now: i64| {
            let (table, _) = z.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { claim(table, &mut z.slab, &mut Live, &key(1), now, now + 5_000) }.unwrap()
        };
        let _ = table;
        assert_eq!(claim_at(&mut z, NOW), Claim::Claimed);
        assert_eq!(
            claim_at(&mut z, NOW + 1),
            Claim::Taken,
            "a second worker waits"
        );
        assert_eq!(z.get_with(&mut Live, 1, NOW + 2), Ok(Lookup::Pending));
        assert_eq!(z.check(), 1);
        // The answer replaces the mark.
        assert!(z.insert(1, b"one"));
        assert_eq!(z.get(1), Lookup::Hit(b"one".to_vec()));
        assert_eq!(
            claim_at(&mut z, NOW + 3),
            Claim::Taken,
            "a fresh entry: look again"
        );
        // A mark whose worker died ends at its deadline.
        assert_eq!(claim_at(&mut z, NOW), Claim::Taken);
        let (table, _) = z.open();
        // SAFETY: as above.
        unsafe { release(table, &mut z.slab, &mut Live, &key(2)) }.unwrap();
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 1),
            Ok(Lookup::Hit(b"one".to_vec()))
        );
        let mut z = Zone::new(1 << 20);
        assert_eq!(claim_at(&mut z, NOW), Claim::Claimed);
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 6_000),
            Ok(Lookup::Miss),
            "past its deadline"
        );
        assert_eq!(claim_at(&mut z, NOW + 6_001), Claim::Claimed);
        let (table, _) = z.open();
        // SAFETY: as above.
        unsafe { release(table, &mut z.slab, &mut Live, &key(1)) }.unwrap();
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 6_002),
            Ok(Lookup::Miss),
            "released"
        );
        assert_eq!(z.check(), 0);
        let (table, _) = z.open();
        assert_eq!(
            // SAFETY: as above.
            unsafe { stats(table) }.entries,
            0,
            "marks are not entries"
        );
    }

    #[test]
    fn a_claim_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| {
            let (table, _) = z.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { claim(table, &mut z.slab, steps, &key(9), NOW, NOW + 5_000) }.map(|_| ())
        });
    }

    #[test]
    fn a_hit_late_in_life_is_due_for_one_refresh() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        let look = |z: &mut Zone, now: i64| {
            let (table, _) = z.open();
            let at = At {
                now_ms: now,
                max_ttl_ms: TTL,
                refresh_pct: 80,
                refresh_for_ms: 5_000,
            };
            // SAFETY: the table was just opened on this slab.
            unsafe {
                lookup(table, &mut z.slab, &mut Live, &key(1), at, |v| {
                    Some(v.to_vec())
                })
            }
        };
        assert_eq!(
            look(&mut z, NOW + TTL * 79 / 100),
            Ok(Lookup::Hit(b"one".to_vec()))
        );
        assert_eq!(
            look(&mut z, NOW + TTL * 80 / 100),
            Ok(Lookup::Due(b"one".to_vec()))
        );
        assert_eq!(
            look(&mut z, NOW + TTL * 80 / 100 + 1),
            Ok(Lookup::Hit(b"one".to_vec())),
            "one refresh at a time"
        );
        assert_eq!(
            look(&mut z, NOW + TTL * 80 / 100 + 5_000),
            Ok(Lookup::Due(b"one".to_vec())),
            "a refresh that never came is retried"
        );
    }

    #[test]
    fn a_lower_max_ttl_bounds_entries_stored_before_it() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        let (table, _) = z.open();
        // Stored at NOW to live until NOW + TTL; a reload lowered max_ttl to 10 s.
        // SAFETY: the table was just opened on this slab.
        let found = unsafe {
            lookup(
                table,
                &mut z.slab,
                &mut Live,
                &key(1),
                at(NOW + 10_000, 10_000),
                |v| Some(v.to_vec()),
            )
        };
        assert_eq!(found, Ok(Lookup::Expired));
    }

    #[test]
    fn a_full_region_evicts_the_oldest_unused_entries() {
        let mut z = Zone::new(room_for(4));
        for n in 0..4 {
            assert!(z.insert(n, b"0123456789"));
        }
        // Entry 0 is used: it gets a second chance; 1 goes instead.
        assert!(matches!(z.get(0), Lookup::Hit(_)));
        assert!(z.insert(4, b"0123456789"));
        assert!(matches!(z.get(0), Lookup::Hit(_)));
        assert_eq!(z.get(1), Lookup::Miss);
        assert_eq!(z.check(), 4);
        let (table, _) = z.open();
        // SAFETY: the table was just opened.
        let stats = unsafe { stats(table) };
        assert_eq!((stats.entries, stats.evictions, stats.refused), (4, 1, 0));
    }

    #[test]
    fn values_over_the_bound_are_not_stored() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, &vec![1u8; MAX_VALUE_BYTES]));
        assert!(!z.insert(2, &vec![2u8; MAX_VALUE_BYTES + 1]));
        assert_eq!(z.get(2), Lookup::Miss);
        assert_eq!(z.check(), 1);
    }

    #[test]
    fn an_entry_that_can_never_fit_evicts_nothing() {
        let mut z = Zone::new(8192);
        assert!(z.insert(1, b"small"));
        assert!(!z.insert(2, &vec![0u8; 9000]));
        assert_eq!(z.get(1), Lookup::Hit(b"small".to_vec()));
        assert_eq!(z.check(), 1);
        let (table, _) = z.open();
        // SAFETY: the table was just opened.
        let stats = unsafe { stats(table) };
        assert_eq!((stats.entries, stats.evictions, stats.refused), (1, 0, 1));
    }

    /// Runs `op` on a table with a few entries, dying at each step in turn;
    /// the next operation must find the table consistent (cleared) and usable.
    fn survives_death_at_every_step(op: impl Fn(&mut Zone, &mut DieAt) -> Result<(), Died>) {
        survives_death_at_every_step_in(room_for(4), op)
    }

    /// The same in a zone of `budget` bytes (room for what `op` adds).
    fn survives_death_at_every_step_in(
        budget: usize,
        op: impl Fn(&mut Zone, &mut DieAt) -> Result<(), Died>,
    ) {
        for at in 0.. {
            let mut z = Zone::new(budget);
            for n in 0..4 {
                assert!(z.insert(n, b"0123456789"));
            }
            assert!(
                matches!(z.get(0), Lookup::Hit(_)),
                "entry 0 gets a second chance"
            );
            if op(&mut z, &mut DieAt(at)).is_ok() {
                assert!(at > 0, "the operation has steps");
                return;
            }
            let (_, opened) = z.open();
            assert_eq!(opened, Opened::Repaired, "death at step {at} is noticed");
            assert_eq!(z.check(), 0, "the table is cleared");
            assert!(z.insert(7, b"after"), "and usable");
            assert_eq!(z.get(7), Lookup::Hit(b"after".to_vec()));
            assert_eq!(z.check(), 1);
        }
    }

    #[test]
    fn insert_that_evicts_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| z.insert_with(steps, 9, b"0123456789").map(|_| ()));
    }

    #[test]
    fn replacing_insert_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| z.insert_with(steps, 2, b"01234").map(|_| ()));
    }

    #[test]
    fn removing_lookup_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| z.get_with(steps, 2, NOW + TTL).map(|_| ()));
    }

    #[test]
    fn purge_removes_every_entry_of_a_tag_and_nothing_else() {
        let mut z = Zone::new(1 << 20);
        for n in 0..5 {
            assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"mine").unwrap());
        }
        for n in 0..3 {
            assert!(z
                .insert_key(&mut Live, &tagged(NEIGHBOUR, n), b"neighbour")
                .unwrap());
        }
        for n in 0..20 {
            assert!(z.insert(n, b"other"));
        }
        // A worker asking the IdP about the token: its mark goes too.
        assert_eq!(z.claim_key(&tagged(TAG, 99)), Claim::Claimed);
        assert_eq!(z.chain_len(TAG), 9, "the neighbour shares the chain");
        let before = z.stats().entries;
        assert_eq!(z.purge(TAG), 5, "entries, not marks");
        for n in 0..5 {
            assert_eq!(z.get_key(&tagged(TAG, n)), Lookup::Miss);
        }
        assert_eq!(
            z.get_key(&tagged(TAG, 99)),
            Lookup::Miss,
            "the mark is gone"
        );
        for n in 0..3 {
            assert_eq!(
                z.get_key(&tagged(NEIGHBOUR, n)),
                Lookup::Hit(b"neighbour".to_vec())
            );
        }
        for n in 0..20 {
            assert_eq!(z.get(n), Lookup::Hit(b"other".to_vec()));
        }
        assert_eq!(z.stats().entries, before - 5);
        assert_eq!(z.chain_len(TAG), 3);
        assert_eq!(z.check(), 23);
        assert_eq!(z.purge(TAG), 0, "a second purge finds nothing");
    }

    #[test]
    fn purge_of_an_absent_tag_removes_nothing_and_changes_nothing() {
        let mut z = Zone::new(1 << 20);
        assert_eq!(z.purge(TAG), 0, "an empty table");
        assert!(z
            .insert_key(&mut Live, &tagged(NEIGHBOUR, 1), b"n")
            .unwrap());
        assert!(z.insert(1, b"one"));
        // Dying at the first step would be noticed if it took any.
        assert_eq!(z.purge_with(&mut DieAt(0), TAG), Ok(0));
        assert_eq!(z.open().1, Opened::Ready, "the table was not marked");
        assert_eq!(z.get_key(&tagged(NEIGHBOUR, 1)), Lookup::Hit(b"n".to_vec()));
        assert_eq!(z.check(), 2);
    }

    #[test]
    fn purge_survives_death_at_every_step() {
        survives_death_at_every_step_in(room_for(8), |z, steps| {
            for n in 0..2 {
                assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"mine").unwrap());
            }
            assert!(z
                .insert_key(&mut Live, &tagged(NEIGHBOUR, 0), b"n")
                .unwrap());
            // Between the two entries of the tag in the chain.
            assert!(z.insert_key(&mut Live, &tagged(TAG, 2), b"mine").unwrap());
            z.purge_with(steps, TAG)
                .map(|removed| assert_eq!(removed, 3))
        });
    }

    #[test]
    fn a_chain_holds_at_most_max_chain_nodes() {
        let mut z = Zone::new(1 << 20);
        assert!(z
            .insert_key(&mut Live, &tagged(NEIGHBOUR, 0), b"n")
            .unwrap());
        for n in 0..MAX_CHAIN as u32 + 10 {
            assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"v").unwrap());
            assert!(z.chain_len(TAG) <= MAX_CHAIN);
        }
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        // The token pushed out its own oldest entries, not its neighbour's.
        assert_eq!(z.get_key(&tagged(NEIGHBOUR, 0)), Lookup::Hit(b"n".to_vec()));
        for n in 0..11 {
            assert_eq!(z.get_key(&tagged(TAG, n)), Lookup::Miss, "entry {n}");
        }
        for n in 11..MAX_CHAIN as u32 + 10 {
            assert_eq!(z.get_key(&tagged(TAG, n)), Lookup::Hit(b"v".to_vec()));
        }
        assert_eq!(z.stats().evictions, 11);
        // Replacing an entry of a full chain removes nothing else.
        assert!(z.insert_key(&mut Live, &tagged(TAG, 20), b"w").unwrap());
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.get_key(&tagged(TAG, 11)), Lookup::Hit(b"v".to_vec()));
        // Marks count too.
        assert_eq!(z.claim_key(&tagged(TAG, 50)), Claim::Claimed);
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.get_key(&tagged(TAG, 11)), Lookup::Miss);
        assert_eq!(z.get_key(&tagged(TAG, 50)), Lookup::Pending);
        assert_eq!(z.check(), MAX_CHAIN);
        // A chain full of other tokens' entries gives up its last.
        let mut z = Zone::new(1 << 20);
        for n in 0..MAX_CHAIN as u8 {
            let mut tag = NEIGHBOUR;
            tag[7] = n;
            assert!(z.insert_key(&mut Live, &tagged(tag, 0), b"n").unwrap());
        }
        assert!(z.insert_key(&mut Live, &tagged(TAG, 0), b"v").unwrap());
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        let mut first = NEIGHBOUR;
        first[7] = 0;
        assert_eq!(z.get_key(&tagged(first, 0)), Lookup::Miss, "the oldest");
        assert_eq!(z.get_key(&tagged(TAG, 0)), Lookup::Hit(b"v".to_vec()));
        assert_eq!(z.check(), MAX_CHAIN);
    }

    #[test]
    fn an_insert_into_a_full_chain_survives_death_at_every_step() {
        survives_death_at_every_step_in(room_for(MAX_CHAIN + 6), |z, steps| {
            for n in 0..MAX_CHAIN as u32 {
                assert!(z
                    .insert_key(&mut Live, &tagged(TAG, n), b"0123456789")
                    .unwrap());
            }
            z.insert_key(steps, &tagged(TAG, 100), b"0123456789")
                .map(|stored| assert!(stored))
        });
    }

    #[test]
    fn a_damaged_chain_is_noticed_not_followed() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        let (table, _) = z.open();
        // A node left in the queue but no longer in its chain (a worker died
        // between the two unlinks under an older layout).
        // SAFETY: the table was just opened; one node is in it.
        unsafe {
            let b = key(1).bucket_hash() as usize & (*table).mask;
            *(*table).buckets.add(b) = ptr::null_mut();
        }
        assert_eq!(z.get(1), Lookup::Miss);
        let (table, _) = z.open();
        let node = oldest_for_test(table);
        // Removing it through the chain finds null and reports damage.
        // SAFETY: as above.
        let removed = unsafe { Change::begin(table, &mut z.slab, &mut Live).remove(node) };
        assert_eq!(removed, Err(Died));
        assert_eq!(z.open().1, Opened::Repaired);
        assert_eq!(z.check(), 0);
    }

    fn oldest_for_test(table: *mut Table) -> *mut Node {
        // SAFETY: the table is open and holds a node.
        unsafe { oldest(table) }.expect("a node")
    }

    #[test]
    fn a_table_of_another_layout_is_replaced() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        // SAFETY: the root is the table open made.
        unsafe {
            assert!(has_current_layout(z.root));
            (*z.root).magic = 0;
            assert!(!has_current_layout(z.root));
        }
        let (_, opened) = z.open();
        assert_eq!(opened, Opened::Made);
    }
}
