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
//! The reader's policy governs: an entry keeps when its answer was obtained
//! and the writer's limits (its lifetime, never past the token's `exp`), and
//! each look-up applies the reading location's own `max_ttl` and stale
//! window to it ([`At`]). A purge leaves a cutoff for the token: an answer
//! obtained at or before it is not stored afterwards ([`purge_tag`]).
//!
//! The bucket of a key is a keyed hash (SipHash-1-3, a random key per
//! table) of its first 8 bytes, the token's tag: all the entries of one
//! token share a chain, and nobody who does not know the key can choose
//! tokens that land in another's chain.
//!
//! Workers can die at any instruction, also while they hold the lock (nginx
//! then force-unlocks it). Every change, including the slab allocator's own
//! bookkeeping, happens between setting and clearing `Table::changing`; the
//! next lock holder that finds it set knows the table may be half-changed
//! and starts afresh with an empty region ([`open`]): it is a cache. Making
//! that fresh table is itself marked until it is done, so a second death
//! inside the repair is repaired the same way.
//!
//! Nodes hold only part of the key digest, times and the encoded value, in
//! 56 bytes (see `layout.rs`); they link to each other by 32-bit offsets from
//! the region's start, and the shared mapping has the same address in every
//! worker and survives reloads, so the table's pointers to its region stay
//! valid.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{compiler_fence, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::oauth::cache::key::KeySecret;
use crate::oauth::cache::{CacheKey, CachePolicy, Lifetime};

mod change;
mod layout;
mod replay;
mod tagged;
use change::*;
pub use layout::*;
pub use replay::{remember, Remembered};
pub use tagged::keys_tagged;

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Hit(T),
    /// A hit late in the entry's life: serve it, and refresh it (this
    /// request only: the entry is marked as being refreshed).
    Due(T),
    /// Past the reader's fresh end, within its stale window, which ends at
    /// the time given: serve it only if the IdP fails before then.
    Stale(T, i64),
    /// Another worker is asking the IdP for this key.
    Pending,
    /// An entry this reader may not use (it may still serve a reader with
    /// a longer `max_ttl` or stale window: then it stays).
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
    /// An entry stands for the key that this reader may not use but others
    /// may, or there is no room for a mark: ask without marking it.
    Unmarked,
}

/// How [`open`] found the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    Ready,
    /// There was none (a new zone, or a worker died while making one): an
    /// empty one was made.
    Made,
    /// A worker died while changing it: the region was cleared.
    Repaired,
}

/// What a table made by [`open`] starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fresh {
    /// The key of the bucket hash: 16 random bytes drawn for this table.
    pub bucket_key: [u8; 16],
    /// The secret of the zone's cache keys: 16 more random bytes.
    pub key_secret: [u8; 16],
    /// Answers obtained at or before this time are not stored
    /// (`Table::floor_ms`): `i64::MIN` for a zone nginx has just created,
    /// the current time when a worker makes the table in place of one it
    /// found damaged or missing (the cutoffs that one held are lost).
    pub floor_ms: i64,
}

/// The table `root` points at, ready for use: made in an empty region when
/// there is none, and made afresh when a worker died while changing it.
/// `fresh` is asked only when a table is made. `None` when the region
/// cannot even hold an empty table.
///
/// `root` should be the word in the region that every worker reads (the
/// slab pool's `data`): making a table writes it twice, so that a worker
/// dying at any point of the making leaves no table or a marked one.
///
/// # Safety
/// `root` must be null or the value an earlier `open` on this slab left in
/// it, and the caller must hold the lock that guards the region.
pub unsafe fn open<S: Slab>(
    root: &mut *mut Table,
    slab: &mut S,
    zone_bytes: usize,
    fresh: impl FnOnce() -> Fresh,
) -> Option<(*mut Table, Opened)> {
    // SAFETY: `root` is null or what an earlier `open` left, and the lock is
    // held (this function's contract), as `open_in_steps` needs; `Live`
    // never stops halfway.
    unsafe { open_in_steps(root, slab, &mut Live, zone_bytes, fresh) }.unwrap_or(None)
}

/// [`open`], stopping where `steps` says.
///
/// # Safety
/// `root` must be null or the value an earlier `open` on this slab left in
/// it, and the caller must hold the lock that guards the region.
unsafe fn open_in_steps<S: Slab, D: Steps>(
    root: &mut *mut Table,
    slab: &mut S,
    steps: &mut D,
    zone_bytes: usize,
    fresh: impl FnOnce() -> Fresh,
) -> Result<Option<(*mut Table, Opened)>, Died> {
    let table = *root;
    // SAFETY: a non-null root is a table made here, by this version or by
    // another one that kept the magic number first (the caller's contract).
    let opened = unsafe {
        match table.is_null() || (*table).magic != LAYOUT_MAGIC {
            // None, or not a table of this layout: nothing in the region is usable.
            true => Opened::Made,
            false if (*table).changing.load(Ordering::Acquire) == 0 => {
                return Ok(Some((table, Opened::Ready)))
            }
            false => Opened::Repaired,
        }
    };
    // SAFETY: the caller holds the lock; whatever the region held is given up.
    let made = unsafe { make(root, slab, steps, zone_bytes, fresh())? };
    Ok(made.map(|table| (table, opened)))
}

/// The table `root` points at and how many changes began in it
/// (`Table::changes`), read without the lock; `None` when there is no
/// table of this layout. [`UNTOUCHED`] says it surely refuses nothing:
/// made with no floor and never changed since, it holds no cutoff. For the
/// Shared Signals list, checked on every request: a cutoff read under the
/// lock while the count was `n` ([`cutoff`], [`changes`]) still holds
/// while this reads `n` from the same table.
///
/// Races: a change counts itself before anything else, so a reader that
/// still sees the old count comes before that change, as if it had taken
/// the lock first. A table that a worker makes in place of a damaged one
/// (its floor refuses what came before) starts at a random count, and
/// repairs only follow a change, which counted itself in the old table
/// first; `make` nulls `root` before it frees the old table, and lays the
/// new one out where the old one lay (the first allocation of a reset
/// pool), so a reader that loaded `root` before finds the old table's
/// count, past any it saw under the lock, or the new one's.
///
/// # Safety
/// `root` must point at the word that [`open`] keeps the table in, in a
/// region mapped for as long as the call lasts.
pub unsafe fn changes_seen(root: *mut *mut Table) -> Option<(*mut Table, u64)> {
    // SAFETY: `root` is the table's word in a mapped region (this
    // function's contract), aligned as a pointer; others write it under
    // the lock, read here as an atomic word.
    let table = unsafe { AtomicPtr::from_ptr(root) }.load(Ordering::Acquire);
    // SAFETY: a non-null root points at a table made by `open` in the same
    // region; the magic number is read first, as every version lays it
    // out, and the count only in a table of this layout.
    let current = !table.is_null()
        && unsafe { ptr::read_volatile(ptr::addr_of!((*table).magic)) == LAYOUT_MAGIC };
    // SAFETY: as above: an atomic word of a table of this layout.
    current.then(|| (table, unsafe { (*table).changes.load(Ordering::SeqCst) }))
}

/// How many changes began in `table` (see [`changes_seen`]).
///
/// # Safety
/// `table` must be a table returned by [`open`], the lock held.
pub unsafe fn changes(table: *mut Table) -> u64 {
    // SAFETY: an atomic word of an open table (this function's contract).
    unsafe { (*table).changes.load(Ordering::SeqCst) }
}

/// Whether `table` was laid out by this version of the module.
///
/// # Safety
/// `table` must point at a table made by some version of the module.
pub unsafe fn has_current_layout(table: *const Table) -> bool {
    // SAFETY: every version keeps the magic number first.
    unsafe { (*table).magic == LAYOUT_MAGIC }
}

/// Empties the region, lays out an empty table in it and points `root` at
/// it. A death at any step leaves `root` null (the next [`open`] makes a
/// table again) or pointing at the new table still marked as changing (the
/// next `open` repairs it); the mark is cleared last, behind a fence.
///
/// # Safety
/// The caller holds the region's lock; nothing in the region is kept.
unsafe fn make<S: Slab, D: Steps>(
    root: &mut *mut Table,
    slab: &mut S,
    steps: &mut D,
    zone_bytes: usize,
    fresh: Fresh,
) -> Result<Option<*mut Table>, Died> {
    let nbuckets = (zone_bytes / BYTES_PER_BUCKET).clamp(16, 1 << 31);
    let nbuckets = 1usize << (usize::BITS - 1 - nbuckets.leading_zeros());
    // The old table goes first: the reset below frees its memory, and the
    // new table may be laid out over it.
    *root = ptr::null_mut();
    compiler_fence(Ordering::SeqCst);
    steps.step()?;
    slab.reset();
    steps.step()?;
    let table = slab.alloc(size_of::<Table>()).cast::<Table>();
    steps.step()?;
    let buckets = slab.alloc(nbuckets * size_of::<u32>()).cast::<u32>();
    steps.step()?;
    // Links are 32-bit offsets from the region's start (`Table::base`).
    if table.is_null() || buckets.is_null() || slab.capacity() > MAX_REGION_BYTES {
        return Ok(None);
    }
    let [k0, k1] = [&fresh.bucket_key[..8], &fresh.bucket_key[8..]]
        .map(|half| u64::from_le_bytes(half.try_into().expect("8 bytes")));
    // SAFETY: both allocations are ours and large enough; the table is
    // written whole, marked as changing, before anything points at it.
    unsafe {
        table.write(Table {
            magic: LAYOUT_MAGIC,
            changing: AtomicU32::new(1),
            mask: (nbuckets - 1) as u32,
            // A table made in place of a lost one has a floor: it refuses,
            // and its count starts where no count of the old one is.
            changes: AtomicU64::new(match fresh.floor_ms {
                i64::MIN => UNTOUCHED,
                _ => (k0 >> 2) | 1,
            }),
            base: slab.base(),
            buckets,
            queue: Link { prev: 0, next: 0 },
            stats: Stats::default(),
            bucket_key: [k0, k1],
            key_secret: KeySecret::from_bytes(fresh.key_secret).0,
            floor_ms: fresh.floor_ms,
        });
        steps.step()?;
        let head = change::head_of(table);
        (*table).queue = Link {
            prev: head,
            next: head,
        };
        steps.step()?;
        ptr::write_bytes(buckets, 0, nbuckets);
        steps.step()?;
        *root = table;
        steps.step()?;
        // Every store of the table before the mark is cleared.
        compiler_fence(Ordering::SeqCst);
        (*table).changing.store(0, Ordering::Release);
    }
    Ok(Some(table))
}

/// The time at or before which an answer about the token with `tag` must
/// not be used: the cutoff of its last purge, or a later time when the
/// table lost track of cutoffs (see `Table::floor_ms`). `None` when there
/// is none. For a caller that holds an answer it will not store (one read
/// from the shared tier, say): an answer obtained at or before this time
/// predates a purge.
///
/// # Safety
/// `table` must be a table returned by [`open`], the lock held.
pub unsafe fn cutoff(table: *mut Table, tag: &[u8; 8]) -> Option<i64> {
    // SAFETY: `table` was returned by `open` and the lock is held (this
    // function's contract), as `refused_until` needs.
    let until = unsafe { refused_until(table, bucket_of(table, *tag), tag) };
    (until != i64::MIN).then_some(until)
}

/// The secret of the zone's cache keys, fixed when the table was made.
///
/// # Safety
/// `table` must be a table returned by [`open`], the lock held.
pub unsafe fn key_secret(table: *mut Table) -> KeySecret {
    // SAFETY: `table` was returned by `open` (this function's contract);
    // the secret is written whole before the table is published.
    KeySecret(unsafe { (*table).key_secret })
}

/// Marks `key` as being asked by this worker until `deadline_ms`, unless
/// another worker's mark, or an entry the reader `at` may use (an answer
/// that just arrived), is there already. Cross-worker coalescing: the other
/// workers' requests wait for the entry instead of asking the IdP too; a
/// mark whose worker died ends at its deadline. An entry this reader may
/// not use but another may (a longer `max_ttl`, a stale window) stays: the
/// worker asks unmarked, and its answer replaces the entry. A mark never
/// evicts an answer: in a chain full of entries and cutoffs the worker asks
/// unmarked.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn claim<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    at: At,
    deadline_ms: i64,
) -> Result<Claim, Died> {
    let now_ms = at.now_ms;
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held (this
    // function's contract); its chains hold only live nodes, and a new
    // node is fully written before it is linked.
    unsafe {
        let bucket = bucket_of(table, key.tag());
        let node = find_in(table, bucket, key);
        if !node.is_null() {
            match (*node).kind {
                MARK if now_ms < (*node).expires_ms() => return Ok(Claim::Taken),
                ENTRY if now_ms < Node::fresh_end(node, at.max_ttl_ms) => return Ok(Claim::Taken),
                ENTRY if now_ms < (*node).stale_until_ms() => return Ok(Claim::Unmarked),
                _ => {}
            }
        }
        let mut change = Change::begin(table, slab, steps);
        if !node.is_null() {
            change.remove_in(bucket, node)?;
        }
        if !change.cap_chain(bucket, &key.tag(), Room::MarksOnly)? {
            change.done();
            return Ok(Claim::Unmarked);
        }
        let mark = change.slab.alloc(size_of::<Node>()).cast::<Node>();
        change.step()?;
        if mark.is_null() {
            // No room for a mark: ask unmarked rather than evict for it.
            change.done();
            return Ok(Claim::Unmarked);
        }
        let times = Times {
            stored_ms: now_ms,
            expires_ms: deadline_ms,
            stale_until_ms: deadline_ms,
        };
        mark.write(Node::new(MARK, &key.0, times, 0));
        change.link(bucket, mark)?;
        change.done();
        Ok(Claim::Claimed)
    }
}

/// Takes this worker's mark off `key` when its answer is not stored.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn release<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
) -> Result<(), Died> {
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held (this
    // function's contract); its chains hold only live nodes.
    unsafe {
        let bucket = bucket_of(table, key.tag());
        let node = find_in(table, bucket, key);
        if node.is_null() || (*node).kind != MARK {
            return Ok(());
        }
        let mut change = Change::begin(table, slab, steps);
        change.remove_in(bucket, node)?;
        change.done();
        Ok(())
    }
}

/// Removes every entry and mark whose key begins with `tag`: all the
/// entries of the token with that tag, in every policy, and the marks of
/// the workers asking the IdP about it. They all share the tag's chain (the
/// bucket is chosen by a key's first 8 bytes), so the work is one walk of
/// that chain, at most [`MAX_CHAIN`] nodes, never a scan of the table.
///
/// It also leaves the token's cutoff: from now on an answer about the token
/// obtained at or before `cutoff_ms` (an IdP call under way during the
/// purge, an entry of the shared tier written before it) is not stored
/// ([`insert`] refuses it) until `keep_until_ms`. A cutoff already there is
/// raised, never lowered, and by 1 ms at least: every purge moves it. When the cutoff finds no room, or leaves the
/// table before `keep_until_ms`, or at it, the table's floor takes its
/// time (`Table::floor_ms`): later answers obtained before it are refused
/// for every token, so `keep_until_ms` trades memory for precision, never
/// safety. Returns how many entries (not marks) it removed.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
pub unsafe fn purge_tag<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    tag: &[u8; 8],
    cutoff_ms: i64,
    keep_until_ms: i64,
) -> Result<usize, Died> {
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held (this
    // function's contract); chains hold only live nodes, and a new node
    // is fully written before it is linked.
    unsafe {
        // Every purge moves the cutoff, by 1 ms at least: whoever saw the
        // cutoff before can tell that a purge came since (two purges in one
        // millisecond are two purges).
        let bucket = bucket_of(table, *tag);
        let cutoff_ms = cutoff_ms.max(refused_until(table, bucket, tag).saturating_add(1));
        let mut change = Change::begin(table, slab, steps);
        let mut removed = 0;
        let mut cutoff = ptr::null_mut::<Node>();
        // `link` is the bucket or the `next` of a node that stays; removing
        // the node it points at makes it point at the one after.
        let mut link = bucket;
        while *link != 0 {
            let node = node_at(table, *link);
            let ours = Node::has_tag(node, tag);
            if !ours || (*node).kind == CUTOFF {
                if ours {
                    cutoff = node;
                }
                link = ptr::addr_of_mut!((*node).next);
                continue;
            }
            if (*node).kind == ENTRY {
                removed += 1;
            }
            change.remove_in(bucket, node)?;
        }
        if !cutoff.is_null() {
            // A cutoff's time is its `stored_ms` (its `expires` is 0 from it).
            let stale_until_ms = (*cutoff).stale_until_ms().max(keep_until_ms);
            (*cutoff).stored_ms = (*cutoff).expires_ms().max(cutoff_ms);
            (*cutoff).expires = 0;
            change.step()?;
            (*cutoff).stale_until = Node::delta((*cutoff).stored_ms, stale_until_ms);
            change.step()?;
            change.done();
            return Ok(removed);
        }
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(tag);
        key[8..16].copy_from_slice(&CUTOFF_FILL);
        change.cap_chain(bucket, tag, Room::Any)?;
        let node = change.alloc_evicting(size_of::<Node>())?;
        if node.is_null() {
            change.raise_floor(cutoff_ms)?;
            change.done();
            return Ok(removed);
        }
        let times = Times {
            stored_ms: cutoff_ms,
            expires_ms: cutoff_ms,
            stale_until_ms: keep_until_ms,
        };
        node.write(Node::new(CUTOFF, &key, times, 0));
        change.step()?;
        change.link(bucket, node)?;
        (*table).stats.cutoffs += 1;
        change.step()?;
        change.done();
        Ok(removed)
    }
}

/// The table's counters.
///
/// # Safety
/// `table` must be a table returned by [`open`], the lock held.
pub unsafe fn stats(table: *mut Table) -> Stats {
    // SAFETY: `table` was returned by `open` and the lock is held (this
    // function's contract); its counters are plain words.
    unsafe { (*table).stats }
}

/// Who looks, and when: the reading location's own policy, applied to
/// whatever entry it finds, whoever wrote it.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub now_ms: i64,
    /// The reader's `max_ttl`, counted from when the entry's answer was
    /// obtained (a reload may have lowered it; a sibling location may have
    /// a longer one).
    pub max_ttl_ms: i64,
    /// The reader's `stale_if_error`: how long past its fresh end an entry
    /// may still be served when the IdP fails; 0: never.
    pub stale_ms: i64,
    /// `refresh`: from what share of its life a hit is due for a refresh (0: never).
    pub refresh_pct: u8,
    /// How long a refresh keeps the others from starting another.
    pub refresh_for_ms: i64,
}

impl At {
    /// A reader with `policy`, at `now_ms`.
    pub fn reading(policy: &CachePolicy, now_ms: i64, refresh_for_ms: i64) -> At {
        At {
            now_ms,
            max_ttl_ms: policy.max_ttl_ms,
            stale_ms: policy.stale_if_error_ms,
            refresh_pct: policy.refresh_pct,
            refresh_for_ms,
        }
    }
}

/// Finds `key` and judges its entry by the reader's policy `at`. The
/// reader's fresh end is the writer's end or `max_ttl` after the answer was
/// obtained, whichever is first: before it, a hit (marked as used, handed
/// to `read`); from it until its stale window ends (`stale_ms` later, never
/// past the writer's stale limit, which never passes the token's `exp`),
/// `Stale`; then `Expired`. An expired entry is removed only once it is past
/// the writer's stale limit, of no use to any reader; before that it stays
/// for the readers with a longer `max_ttl` or stale window. An entry `read`
/// rejects is removed.
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
        stale_ms,
        refresh_pct,
        refresh_for_ms,
    } = at;
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held (this
    // function's contract); its chains hold only live nodes.
    unsafe {
        let bucket = bucket_of(table, key.tag());
        let node = find_in(table, bucket, key);
        if node.is_null() {
            return Ok(Lookup::Miss);
        }
        if (*node).kind == MARK {
            if now_ms < (*node).expires_ms() {
                return Ok(Lookup::Pending);
            }
            let mut change = Change::begin(table, slab, steps);
            change.remove_in(bucket, node)?;
            change.done();
            return Ok(Lookup::Miss);
        }
        let fresh_end = Node::fresh_end(node, max_ttl_ms);
        let stale_end = (*node)
            .stale_until_ms()
            .min(fresh_end.saturating_add(stale_ms.max(0)));
        let fresh = now_ms < fresh_end;
        let found = match fresh || now_ms < stale_end {
            // An entry this reader may not use is not read.
            false => Lookup::Expired,
            true => match read(Node::value(node)) {
                Some(value) if !fresh => return Ok(Lookup::Stale(value, stale_end)),
                Some(value) => {
                    (*node).used = 1;
                    let life = fresh_end - (*node).stored_ms;
                    let due = refresh_pct > 0
                        && now_ms >= (*node).stored_ms + life * i64::from(refresh_pct) / 100
                        && now_ms >= (*node).refreshing_until_ms();
                    if due {
                        // One word, under the lock: one request refreshes.
                        (*node).refreshing_until =
                            Node::delta((*node).stored_ms, now_ms + refresh_for_ms);
                        return Ok(Lookup::Due(value));
                    }
                    return Ok(Lookup::Hit(value));
                }
                None => Lookup::Miss,
            },
        };
        if matches!(found, Lookup::Expired) && now_ms < (*node).stale_until_ms() {
            return Ok(found);
        }
        let mut change = Change::begin(table, slab, steps);
        change.remove_in(bucket, node)?;
        change.done();
        Ok(found)
    }
}

/// Stores `value` under `key` for its `lifetime` (fresh, then stale for the
/// IdP's failures), an answer obtained at `obtained_ms` (when the IdP was
/// asked, or when the shared tier's writer asked it): readers count their
/// `max_ttl` from then. Replaces any entry for the key and evicts entries
/// not used lately when the region is full; `now_ms` decides which nodes
/// are of no use any more and are reclaimed in passing. `Ok(false)` when
/// the entry was not stored: obtained at or before the token's cutoff
/// ([`cutoff`]; then nothing changes), too large ever to fit (nothing is
/// evicted for it), or no room made within the bounds.
///
/// # Safety
/// `table` must be a table returned by [`open`] on `slab`, the lock held.
#[allow(clippy::too_many_arguments)]
pub unsafe fn insert<S: Slab, D: Steps>(
    table: *mut Table,
    slab: &mut S,
    steps: &mut D,
    key: &CacheKey,
    value: &[u8],
    lifetime: Lifetime,
    obtained_ms: i64,
    now_ms: i64,
) -> Result<bool, Died> {
    let tag = key.tag();
    // SAFETY: `table` was returned by `open` and the lock is held (this
    // function's contract); a look, no change.
    let bucket = unsafe { bucket_of(table, tag) };
    // SAFETY: as above; `bucket` is the tag's.
    if obtained_ms <= unsafe { refused_until(table, bucket, &tag) } {
        return Ok(false);
    }
    let size = size_of::<Node>() + value.len();
    if value.len() > MAX_VALUE_BYTES || size > slab.capacity() {
        // SAFETY: `table` was returned by `open` and the lock is held (this
        // function's contract); a counter of it is raised, no link changed.
        unsafe { (*table).stats.refused += 1 };
        return Ok(false);
    }
    let Ok(len) = u32::try_from(value.len()) else {
        return Ok(false);
    };
    // SAFETY: `table` was returned by `open` on `slab` and the lock is held (this
    // function's contract), as `Change::begin` needs; a new node is fully
    // written before it is linked.
    unsafe {
        let mut change = Change::begin(table, slab, steps);
        let existing = find_in(table, bucket, key);
        if !existing.is_null() {
            change.remove_in(bucket, existing)?;
        }
        change.cap_chain(bucket, &tag, Room::Any)?;
        change.reap(now_ms)?;
        let node = change.alloc_evicting(size)?;
        if node.is_null() {
            (*table).stats.refused += 1;
            change.done();
            return Ok(false);
        }
        let times = Times {
            stored_ms: obtained_ms,
            expires_ms: lifetime.fresh_until,
            stale_until_ms: lifetime.stale_until.max(lifetime.fresh_until),
        };
        node.write(Node::new(ENTRY, &key.0, times, len));
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            node.cast::<u8>().add(size_of::<Node>()),
            value.len(),
        );
        change.step()?;
        change.link(bucket, node)?;
        (*table).stats.entries += 1;
        change.step()?;
        change.done();
        Ok(true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A slab with a byte budget: allocations past it fail, as a full
    /// zone's do. Its blocks come from one arena of its own (first fit,
    /// freed blocks merged), twice the budget, so that the budget, not the
    /// arena's fragments, is what runs out.
    pub(super) struct TestSlab {
        budget: usize,
        used: usize,
        /// Counts each allocation as nginx's slab pool takes it: a power of
        /// two from 8 bytes up to 2 KiB, whole 4 KiB pages above.
        chunks: bool,
        arena: Box<[u64]>,
        /// Free ranges of the arena: start to length, in bytes.
        free: std::collections::BTreeMap<usize, usize>,
        live: HashMap<usize, usize>,
    }

    impl TestSlab {
        fn new(budget: usize) -> TestSlab {
            let mut slab = TestSlab {
                budget,
                used: 0,
                chunks: false,
                arena: vec![0u64; (2 * budget + 4096) / 8].into_boxed_slice(),
                free: Default::default(),
                live: HashMap::new(),
            };
            slab.reset();
            slab
        }
    }

    impl Slab for TestSlab {
        fn base(&self) -> *mut u8 {
            self.arena.as_ptr().cast_mut().cast()
        }
        fn alloc(&mut self, size: usize) -> *mut u8 {
            let size = match (self.chunks, size) {
                (false, _) => size,
                (true, 0..=2048) => size.max(8).next_power_of_two(),
                (true, _) => size.next_multiple_of(4096),
            };
            if self.used + size > self.budget {
                return ptr::null_mut();
            }
            let rounded = size.max(1).next_multiple_of(8);
            let Some((&start, &len)) = self.free.iter().find(|(_, len)| **len >= rounded) else {
                return ptr::null_mut();
            };
            self.free.remove(&start);
            if len > rounded {
                self.free.insert(start + rounded, len - rounded);
            }
            self.used += size;
            self.live.insert(start, size);
            // SAFETY: the range lies in the arena (it was a free range of it).
            unsafe { self.base().add(start) }
        }
        fn free(&mut self, p: *mut u8) {
            // SAFETY: `p` came from `alloc`, in the arena.
            let start = unsafe { p.offset_from(self.base()) } as usize;
            let size = self.live.remove(&start).expect("a live allocation");
            self.used -= size;
            let mut start = start;
            let mut len = size.max(1).next_multiple_of(8);
            if let Some((&before, &blen)) = self.free.range(..start).next_back() {
                if before + blen == start {
                    self.free.remove(&before);
                    start = before;
                    len += blen;
                }
            }
            if let Some(after) = self.free.remove(&(start + len)) {
                len += after;
            }
            self.free.insert(start, len);
        }
        fn reset(&mut self) {
            self.live.clear();
            self.used = 0;
            self.free.clear();
            // The first 8 bytes are the region's own (offset 0 is no node).
            self.free.insert(8, self.arena.len() * 8 - 8);
        }
        fn capacity(&self) -> usize {
            self.budget
        }
    }

    /// Dies at the `n`-th step.
    pub(crate) struct DieAt(pub(crate) usize);

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

    pub(super) const NOW: i64 = 1_000_000;
    const TTL: i64 = 300_000;
    /// The bucket key of the tests' tables (the model test draws its own).
    const TEST_KEY: [u8; 16] = *b"tests bucket key";

    /// A reader with `max_ttl_ms` and no stale window.
    fn at(now_ms: i64, max_ttl_ms: i64) -> At {
        reader(now_ms, max_ttl_ms, 0)
    }

    fn reader(now_ms: i64, max_ttl_ms: i64, stale_ms: i64) -> At {
        At {
            now_ms,
            max_ttl_ms,
            stale_ms,
            refresh_pct: 0,
            refresh_for_ms: 0,
        }
    }

    pub(super) fn fresh(until: i64) -> Lifetime {
        Lifetime {
            fresh_until: until,
            stale_until: until,
        }
    }

    pub(super) fn key(n: u32) -> CacheKey {
        CacheKey::from_parts(&[&n.to_le_bytes()])
    }

    /// The `n`-th key of the token whose tag is `tag`.
    pub(super) fn tagged(tag: [u8; 8], n: u32) -> CacheKey {
        let mut key = key(n);
        key.0[..8].copy_from_slice(&tag);
        key
    }

    const TAG: [u8; 8] = *b"tokentag";

    /// A budget for the table and `n` nodes of 10-byte values (128 buckets
    /// for the 64 KiB the tests' zones claim).
    pub(crate) fn room_for(n: usize) -> usize {
        size_of::<Table>() + 128 * size_of::<u32>() + n * (size_of::<Node>() + 10)
    }

    pub(crate) struct Zone {
        pub(super) root: *mut Table,
        slab: TestSlab,
        /// The zone's size, as nginx would give it to `open`.
        bytes: usize,
        /// What a table made by `open` starts with.
        pub(super) fresh: Fresh,
    }

    impl Zone {
        fn new(budget: usize) -> Zone {
            Zone::with_key(budget, TEST_KEY)
        }

        pub(crate) fn with_key(budget: usize, bucket_key: [u8; 16]) -> Zone {
            Zone::made(TestSlab::new(budget), 64 * 1024, bucket_key)
        }

        /// A zone of `size` bytes as nginx lays it out: the slab pool's
        /// own header, slots and page descriptors (24 bytes a 4 KiB page)
        /// come first, and every allocation takes a whole chunk.
        fn like_nginx(size: usize) -> Zone {
            let pages = (size - 4096) / (4096 + 24);
            let mut slab = TestSlab::new(pages * 4096);
            slab.chunks = true;
            Zone::made(slab, size, TEST_KEY)
        }

        fn made(slab: TestSlab, bytes: usize, bucket_key: [u8; 16]) -> Zone {
            let mut zone = Zone {
                root: ptr::null_mut(),
                slab,
                bytes,
                fresh: Fresh {
                    bucket_key,
                    key_secret: *b"test key secret!",
                    floor_ms: i64::MIN,
                },
            };
            assert_eq!(zone.open().1, Opened::Made);
            zone
        }

        /// The table, opened, and the slab it lives on.
        pub(super) fn parts(&mut self) -> (*mut Table, &mut TestSlab) {
            let (table, _) = self.open();
            (table, &mut self.slab)
        }

        pub(super) fn open(&mut self) -> (*mut Table, Opened) {
            self.open_with(&mut Live)
                .expect("live")
                .expect("room for a table")
        }

        pub(crate) fn open_with<D: Steps>(
            &mut self,
            steps: &mut D,
        ) -> Result<Option<(*mut Table, Opened)>, Died> {
            let fresh = self.fresh;
            // SAFETY: root is null or what open left; one thread, no lock needed.
            unsafe { open_in_steps(&mut self.root, &mut self.slab, steps, self.bytes, || fresh) }
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
            self.insert_at(steps, key, value, fresh(NOW + TTL), NOW, NOW)
        }

        pub(crate) fn insert_at<D: Steps>(
            &mut self,
            steps: &mut D,
            key: &CacheKey,
            value: &[u8],
            lifetime: Lifetime,
            obtained_ms: i64,
            now_ms: i64,
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
                    lifetime,
                    obtained_ms,
                    now_ms,
                )
            }
        }

        /// Looks `key` up, reading a hit with `read`.
        pub(crate) fn lookup_with<T>(
            &mut self,
            key: &CacheKey,
            at: At,
            read: impl FnOnce(&[u8]) -> Option<T>,
        ) -> Lookup<T> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { lookup(table, &mut self.slab, &mut Live, key, at, read) }.expect("live")
        }

        pub(super) fn look<D: Steps>(
            &mut self,
            steps: &mut D,
            key: &CacheKey,
            at: At,
        ) -> Result<Lookup<Vec<u8>>, Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { lookup(table, &mut self.slab, steps, key, at, |v| Some(v.to_vec())) }
        }

        fn get_key(&mut self, key: &CacheKey) -> Lookup<Vec<u8>> {
            self.look(&mut Live, key, at(NOW + 1, TTL)).expect("live")
        }

        pub(crate) fn claim_at<D: Steps>(
            &mut self,
            steps: &mut D,
            key: &CacheKey,
            at: At,
            deadline_ms: i64,
        ) -> Result<Claim, Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { claim(table, &mut self.slab, steps, key, at, deadline_ms) }
        }

        fn claim_key(&mut self, key: &CacheKey) -> Claim {
            self.claim_at(&mut Live, key, at(NOW, TTL), NOW + 5_000)
                .expect("live")
        }

        pub(crate) fn release_with<D: Steps>(
            &mut self,
            steps: &mut D,
            key: &CacheKey,
        ) -> Result<(), Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { release(table, &mut self.slab, steps, key) }
        }

        pub(crate) fn purge_at<D: Steps>(
            &mut self,
            steps: &mut D,
            tag: [u8; 8],
            cutoff_ms: i64,
            keep_until_ms: i64,
        ) -> Result<usize, Died> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened on this slab.
            unsafe { purge_tag(table, &mut self.slab, steps, &tag, cutoff_ms, keep_until_ms) }
        }

        fn purge_with<D: Steps>(&mut self, steps: &mut D, tag: [u8; 8]) -> Result<usize, Died> {
            self.purge_at(steps, tag, NOW, NOW + TTL)
        }

        fn purge(&mut self, tag: [u8; 8]) -> usize {
            self.purge_with(&mut Live, tag).expect("live")
        }

        pub(crate) fn cutoff(&mut self, tag: [u8; 8]) -> Option<i64> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened.
            unsafe { cutoff(table, &tag) }
        }

        /// `n` tags other than `tag` whose keys share its chain.
        pub(super) fn neighbours(&mut self, tag: [u8; 8], n: usize) -> Vec<[u8; 8]> {
            let (table, _) = self.open();
            // SAFETY: the table was just opened.
            let mine = unsafe { bucket_of(table, tag) };
            (0u64..)
                .map(|i| (i | 0x6e00_0000_0000_0000).to_le_bytes())
                // SAFETY: the table was just opened; `bucket_of` only
                // indexes its bucket array.
                .filter(|other| *other != tag && unsafe { bucket_of(table, *other) } == mine)
                .take(n)
                .collect()
        }

        /// How many nodes the chain of keys beginning with `tag` holds.
        fn chain_len(&mut self, tag: [u8; 8]) -> usize {
            let (table, _) = self.open();
            // SAFETY: the table was just opened; its chains hold live nodes.
            unsafe {
                let mut node = node_at(table, *bucket_of(table, tag));
                let mut len = 0;
                while !node.is_null() {
                    len += 1;
                    node = node_at(table, (*node).next);
                }
                len
            }
        }

        pub(super) fn stats(&mut self) -> Stats {
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
            self.look(steps, &key(n), at(now, TTL))
        }

        fn get(&mut self, n: u32) -> Lookup<Vec<u8>> {
            self.get_with(&mut Live, n, NOW + 1).expect("live")
        }

        /// Walks every chain and the queue: both hold the same nodes, each
        /// once, in the chain of their tag; the slab holds exactly those
        /// plus the table's own two; the entry counter counts the entries.
        /// Returns how many entries and marks there are (cutoffs: see
        /// [`Zone::cutoffs`]).
        pub(super) fn check(&mut self) -> usize {
            self.census().0
        }

        /// How many cutoffs the table holds.
        pub(crate) fn cutoffs(&mut self) -> usize {
            self.census().1
        }

        fn census(&mut self) -> (usize, usize) {
            let (table, _) = self.open();
            // SAFETY: the table is consistent (that is what is checked).
            unsafe {
                let mut in_chains = Vec::new();
                let (mut entries, mut cutoffs) = (0, 0);
                for b in 0..=(*table).mask as usize {
                    let mut node = node_at(table, *(*table).buckets.add(b));
                    while !node.is_null() {
                        assert_eq!(
                            bucket_of(table, (*node).tag()),
                            (*table).buckets.add(b),
                            "in the chain of its tag"
                        );
                        match (*node).kind {
                            ENTRY => entries += 1,
                            MARK => {}
                            CUTOFF => cutoffs += 1,
                            kind => panic!("a node of kind {kind}"),
                        }
                        in_chains.push(node as usize);
                        node = node_at(table, (*node).next);
                    }
                }
                let head = head_of(table);
                let mut in_queue = Vec::new();
                let mut link = (*table).queue.next;
                while link != head {
                    assert_eq!(
                        (*link_at(table, (*link_at(table, link)).next)).prev,
                        link,
                        "queue links agree"
                    );
                    in_queue.push(node_at(table, link) as usize);
                    link = (*link_at(table, link)).next;
                }
                in_chains.sort_unstable();
                in_queue.sort_unstable();
                assert_eq!(in_chains, in_queue);
                assert_eq!(self.slab.live.len(), in_chains.len() + 2);
                assert_eq!((*table).stats.entries, entries, "the entry counter");
                (in_chains.len() - cutoffs, cutoffs)
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

    /// An entry written by a location with a stale window: fresh for 1 s,
    /// stale until 5 s after it was obtained (at NOW).
    fn written_with_a_stale_window(z: &mut Zone) {
        let lifetime = Lifetime {
            fresh_until: NOW + 1_000,
            stale_until: NOW + 5_000,
        };
        assert_eq!(
            z.insert_at(&mut Live, &key(1), b"one", lifetime, NOW, NOW),
            Ok(true)
        );
    }

    #[test]
    fn an_entry_past_its_time_is_stale_for_a_reader_with_a_stale_window() {
        let mut z = Zone::new(1 << 20);
        written_with_a_stale_window(&mut z);
        let look = |z: &mut Zone, now| z.look(&mut Live, &key(1), reader(now, TTL, 30_000));
        assert_eq!(look(&mut z, NOW + 500), Ok(Lookup::Hit(b"one".to_vec())));
        assert_eq!(
            look(&mut z, NOW + 1_000),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 5_000))
        );
        assert_eq!(
            look(&mut z, NOW + 4_999),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 5_000)),
            "never past the writer's stale limit (never past exp)"
        );
        assert_eq!(z.check(), 1, "a stale entry stays");
        assert_eq!(look(&mut z, NOW + 5_000), Ok(Lookup::Expired));
        assert_eq!(z.check(), 0);
    }

    #[test]
    fn a_reader_without_a_stale_window_never_gets_stale() {
        let mut z = Zone::new(1 << 20);
        written_with_a_stale_window(&mut z);
        let strict = |z: &mut Zone, now| z.look(&mut Live, &key(1), reader(now, TTL, 0));
        let lenient = |z: &mut Zone, now| z.look(&mut Live, &key(1), reader(now, TTL, 30_000));
        assert_eq!(strict(&mut z, NOW + 999), Ok(Lookup::Hit(b"one".to_vec())));
        assert_eq!(
            strict(&mut z, NOW + 1_000),
            Ok(Lookup::Expired),
            "the writer's stale window is not the reader's"
        );
        assert_eq!(z.check(), 1, "kept for the readers that have one");
        assert_eq!(
            lenient(&mut z, NOW + 1_001),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 5_000))
        );
        assert_eq!(strict(&mut z, NOW + 4_999), Ok(Lookup::Expired));
        assert_eq!(z.check(), 1);
        assert_eq!(strict(&mut z, NOW + 5_000), Ok(Lookup::Expired));
        assert_eq!(z.check(), 0, "of no use to any reader: removed");
    }

    #[test]
    fn the_readers_stale_window_counts_from_its_own_fresh_end() {
        let mut z = Zone::new(1 << 20);
        // The writer's: fresh for 60 s, stale until 120 s.
        let lifetime = Lifetime {
            fresh_until: NOW + 60_000,
            stale_until: NOW + 120_000,
        };
        assert_eq!(
            z.insert_at(&mut Live, &key(1), b"one", lifetime, NOW, NOW),
            Ok(true)
        );
        // max_ttl 10 s and 5 s of stale window: fresh until 10 s, stale until 15 s.
        let short = |z: &mut Zone, now| z.look(&mut Live, &key(1), reader(now, 10_000, 5_000));
        assert_eq!(short(&mut z, NOW + 9_999), Ok(Lookup::Hit(b"one".to_vec())));
        assert_eq!(
            short(&mut z, NOW + 10_000),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 15_000))
        );
        assert_eq!(
            short(&mut z, NOW + 14_999),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 15_000))
        );
        assert_eq!(short(&mut z, NOW + 15_000), Ok(Lookup::Expired));
        assert_eq!(z.check(), 1, "the writer's location still uses it");
        // A window longer than the writer's ends where the writer's does.
        let long = |z: &mut Zone, now| z.look(&mut Live, &key(1), reader(now, TTL, 600_000));
        assert_eq!(long(&mut z, NOW + 59_999), Ok(Lookup::Hit(b"one".to_vec())));
        assert_eq!(
            long(&mut z, NOW + 60_000),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 120_000))
        );
        assert_eq!(
            long(&mut z, NOW + 119_999),
            Ok(Lookup::Stale(b"one".to_vec(), NOW + 120_000))
        );
        assert_eq!(long(&mut z, NOW + 120_000), Ok(Lookup::Expired));
        assert_eq!(z.check(), 0);
    }

    #[test]
    fn a_claim_judges_an_entry_by_the_readers_policy() {
        let mut z = Zone::new(1 << 20);
        assert_eq!(
            z.insert_at(&mut Live, &key(1), b"one", fresh(NOW + 60_000), NOW, NOW),
            Ok(true)
        );
        let claim_at = |z: &mut Zone, at: At| {
            z.claim_at(&mut Live, &key(1), at, at.now_ms + 5_000)
                .expect("live")
        };
        assert_eq!(
            claim_at(&mut z, at(NOW + 1, TTL)),
            Claim::Taken,
            "an answer this reader may use: look again"
        );
        // A reader with max_ttl 10 s may not use it, its writer may: the
        // reader asks unmarked (it would otherwise wait for a mark that
        // never comes), and the entry stays.
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 10_000, 10_000)),
            Ok(Lookup::Expired)
        );
        assert_eq!(claim_at(&mut z, at(NOW + 10_000, 10_000)), Claim::Unmarked);
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 10_001, TTL)),
            Ok(Lookup::Hit(b"one".to_vec()))
        );
        // Past the writer's end: replaced by the mark.
        assert_eq!(claim_at(&mut z, at(NOW + 60_000, TTL)), Claim::Claimed);
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 60_001, TTL)),
            Ok(Lookup::Pending)
        );
        assert_eq!(z.check(), 1);
        assert_eq!(z.stats().entries, 0);
    }

    #[test]
    fn max_ttl_counts_from_when_the_answer_was_obtained() {
        let mut z = Zone::new(1 << 20);
        // An answer the shared tier's writer obtained 250 s ago, stored now
        // with a writer's lifetime that would last another 300 s.
        assert_eq!(
            z.insert_at(
                &mut Live,
                &key(1),
                b"old",
                fresh(NOW + TTL),
                NOW - 250_000,
                NOW
            ),
            Ok(true)
        );
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 49_999, TTL)),
            Ok(Lookup::Hit(b"old".to_vec()))
        );
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 50_000, TTL)),
            Ok(Lookup::Expired),
            "max_ttl after it was obtained, not after it was stored"
        );
        // One obtained now lives the whole max_ttl.
        assert_eq!(
            z.insert_at(&mut Live, &key(2), b"new", fresh(NOW + TTL), NOW, NOW),
            Ok(true)
        );
        assert_eq!(
            z.look(&mut Live, &key(2), at(NOW + 50_000, TTL)),
            Ok(Lookup::Hit(b"new".to_vec()))
        );
    }

    #[test]
    fn one_worker_claims_a_key_the_others_find_it_pending() {
        let mut z = Zone::new(1 << 20);
        let claim_at = |z: &mut Zone, now: i64| {
            z.claim_at(&mut Live, &key(1), at(now, TTL), now + 5_000)
                .unwrap()
        };
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
        z.release_with(&mut Live, &key(2)).unwrap();
        z.release_with(&mut Live, &key(1)).unwrap();
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 1),
            Ok(Lookup::Hit(b"one".to_vec())),
            "a release takes off marks, not entries"
        );
        let mut z = Zone::new(1 << 20);
        assert_eq!(claim_at(&mut z, NOW), Claim::Claimed);
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 6_000),
            Ok(Lookup::Miss),
            "past its deadline"
        );
        assert_eq!(claim_at(&mut z, NOW + 6_001), Claim::Claimed);
        z.release_with(&mut Live, &key(1)).unwrap();
        assert_eq!(
            z.get_with(&mut Live, 1, NOW + 6_002),
            Ok(Lookup::Miss),
            "released"
        );
        assert_eq!(z.check(), 0);
        assert_eq!(z.stats().entries, 0, "marks are not entries");
    }

    #[test]
    fn a_claim_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| {
            z.claim_at(steps, &key(9), at(NOW, TTL), NOW + 5_000)
                .map(|_| ())
        });
    }

    #[test]
    fn a_hit_late_in_life_is_due_for_one_refresh() {
        let mut z = Zone::new(1 << 20);
        assert!(z.insert(1, b"one"));
        let look = |z: &mut Zone, now: i64| {
            let at = At {
                now_ms: now,
                max_ttl_ms: TTL,
                stale_ms: 0,
                refresh_pct: 80,
                refresh_for_ms: 5_000,
            };
            z.look(&mut Live, &key(1), at)
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
        // Stored at NOW to live until NOW + TTL; a reload lowered max_ttl to 10 s.
        assert_eq!(
            z.look(&mut Live, &key(1), at(NOW + 10_000, 10_000)),
            Ok(Lookup::Expired)
        );
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
        let stats = z.stats();
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
        let stats = z.stats();
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
            assert_eq!(z.cutoffs(), 0);
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
        let neighbour = z.neighbours(TAG, 1)[0];
        for n in 0..5 {
            assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"mine").unwrap());
        }
        for n in 0..3 {
            assert!(z
                .insert_key(&mut Live, &tagged(neighbour, n), b"neighbour")
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
                z.get_key(&tagged(neighbour, n)),
                Lookup::Hit(b"neighbour".to_vec())
            );
        }
        for n in 0..20 {
            assert_eq!(z.get(n), Lookup::Hit(b"other".to_vec()));
        }
        assert_eq!(z.stats().entries, before - 5);
        assert_eq!(z.chain_len(TAG), 4, "the neighbour's and the cutoff");
        assert_eq!(z.check(), 23);
        assert_eq!(z.cutoffs(), 1);
        assert_eq!(z.purge(TAG), 0, "a second purge finds nothing");
        assert_eq!(z.cutoffs(), 1, "and raises the cutoff it left");
    }

    #[test]
    fn purge_of_an_absent_tag_removes_nothing_but_leaves_its_cutoff() {
        let mut z = Zone::new(1 << 20);
        assert_eq!(z.purge(TAG), 0, "an empty table");
        assert_eq!(z.cutoff(TAG), Some(NOW));
        let neighbour = z.neighbours(TAG, 1)[0];
        assert!(z
            .insert_key(&mut Live, &tagged(neighbour, 1), b"n")
            .unwrap());
        assert!(z.insert(1, b"one"));
        assert_eq!(z.cutoff(neighbour), None, "a cutoff is the token's own");
        assert_eq!(z.get_key(&tagged(neighbour, 1)), Lookup::Hit(b"n".to_vec()));
        assert_eq!(z.check(), 2);
        assert_eq!(z.cutoffs(), 1);
    }

    #[test]
    fn purge_survives_death_at_every_step() {
        survives_death_at_every_step_in(room_for(8), |z, steps| {
            let neighbour = z.neighbours(TAG, 1)[0];
            for n in 0..2 {
                assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"mine").unwrap());
            }
            assert!(z
                .insert_key(&mut Live, &tagged(neighbour, 0), b"n")
                .unwrap());
            // Between the two entries of the tag in the chain.
            assert!(z.insert_key(&mut Live, &tagged(TAG, 2), b"mine").unwrap());
            z.purge_with(steps, TAG)
                .map(|removed| assert_eq!(removed, 3))
        });
    }

    #[test]
    fn a_purge_that_evicts_for_its_cutoff_survives_death_at_every_step() {
        // Four entries fill the zone: the cutoff evicts one of them.
        survives_death_at_every_step(|z, steps| {
            z.purge_with(steps, TAG)
                .map(|removed| assert_eq!(removed, 0))
        });
        let mut z = Zone::new(room_for(4));
        for n in 0..4 {
            assert!(z.insert(n, b"0123456789"));
        }
        assert_eq!(z.purge(TAG), 0);
        assert_eq!((z.check(), z.cutoffs()), (3, 1));
    }

    #[test]
    fn a_raised_cutoff_survives_death_at_every_step() {
        survives_death_at_every_step(|z, steps| {
            assert_eq!(z.purge_at(&mut Live, TAG, NOW - 10, NOW), Ok(0));
            z.purge_at(steps, TAG, NOW, NOW + TTL).map(|_| ())
        });
    }

    #[test]
    fn a_purge_refuses_answers_obtained_before_its_cutoff() {
        let mut z = Zone::new(1 << 20);
        let neighbour = z.neighbours(TAG, 1)[0];
        let put = |z: &mut Zone, key: &CacheKey, value: &[u8], obtained: i64| {
            z.insert_at(&mut Live, key, value, fresh(NOW + TTL), obtained, NOW + 200)
                .unwrap()
        };
        let get =
            |z: &mut Zone, key: &CacheKey| z.look(&mut Live, key, at(NOW + 200, TTL)).unwrap();
        assert!(put(&mut z, &tagged(TAG, 0), b"a", NOW));
        assert!(put(&mut z, &tagged(TAG, 1), b"b", NOW));
        assert!(put(&mut z, &tagged(neighbour, 0), b"n", NOW));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 100, NOW + TTL), Ok(2));
        assert_eq!(z.cutoff(TAG), Some(NOW + 100));
        assert_eq!(z.cutoff(neighbour), None);
        let before = z.stats();
        // An IdP call under way during the purge answers after it.
        assert!(!put(&mut z, &tagged(TAG, 0), b"late", NOW + 50));
        assert!(
            !put(&mut z, &tagged(TAG, 0), b"late", NOW + 100),
            "at the cutoff too"
        );
        assert_eq!(z.stats(), before, "nothing evicted, nothing counted");
        assert_eq!(get(&mut z, &tagged(TAG, 0)), Lookup::Miss);
        assert!(put(&mut z, &tagged(TAG, 0), b"after", NOW + 101));
        assert_eq!(get(&mut z, &tagged(TAG, 0)), Lookup::Hit(b"after".to_vec()));
        // A refused answer leaves the entry there alone.
        assert!(!put(&mut z, &tagged(TAG, 0), b"late", NOW + 99));
        assert_eq!(get(&mut z, &tagged(TAG, 0)), Lookup::Hit(b"after".to_vec()));
        // Other tokens are not concerned.
        assert!(put(&mut z, &tagged(neighbour, 1), b"n", NOW));
        // A cutoff is raised, never lowered, and every purge moves it.
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 50, NOW + 10), Ok(1));
        assert_eq!(z.cutoff(TAG), Some(NOW + 101));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 150, NOW + TTL), Ok(0));
        assert_eq!(z.cutoff(TAG), Some(NOW + 150));
        assert!(!put(&mut z, &tagged(TAG, 3), b"late", NOW + 150));
        assert_eq!(z.cutoffs(), 1);
        assert_eq!(z.check(), 2);
    }

    #[test]
    fn a_cutoff_is_neither_an_entry_nor_a_mark() {
        let mut z = Zone::new(1 << 20);
        assert_eq!(z.purge(TAG), 0);
        // A key with the very bytes of the cutoff's is an ordinary key.
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&TAG);
        bytes[8..16].copy_from_slice(&CUTOFF_FILL);
        let same = CacheKey(bytes);
        assert_eq!(z.get_key(&same), Lookup::Miss);
        assert_eq!(z.claim_key(&same), Claim::Claimed);
        assert_eq!(z.get_key(&same), Lookup::Pending);
        z.release_with(&mut Live, &same).unwrap();
        assert_eq!(z.get_key(&same), Lookup::Miss);
        assert_eq!(z.stats().entries, 0);
        assert_eq!(
            z.insert_at(&mut Live, &same, b"v", fresh(NOW + TTL), NOW + 1, NOW + 1),
            Ok(true)
        );
        assert_eq!(z.get_key(&same), Lookup::Hit(b"v".to_vec()));
        assert_eq!((z.check(), z.cutoffs()), (1, 1));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 2, NOW + TTL), Ok(1));
        assert_eq!((z.check(), z.cutoffs()), (0, 1));
        assert_eq!(z.cutoff(TAG), Some(NOW + 2));
    }

    #[test]
    fn a_cutoff_leaving_the_table_raises_the_floor() {
        let mut z = Zone::new(1 << 20);
        assert_eq!(z.purge_at(&mut Live, TAG, NOW, NOW + 1_000), Ok(0));
        let other = |n| key(n);
        let put = |z: &mut Zone, n, obtained, now| {
            z.insert_at(&mut Live, &other(n), b"v", fresh(now + TTL), obtained, now)
                .unwrap()
        };
        assert!(put(&mut z, 1, NOW - 10, NOW + 500), "another token's");
        // Past its keep time the cutoff is reaped by an insert...
        assert!(put(&mut z, 2, NOW - 10, NOW + 2_000));
        assert_eq!(z.cutoffs(), 0);
        // ...and its time stays, for every token.
        assert_eq!(z.cutoff(TAG), Some(NOW));
        assert_eq!(z.cutoff(other(3).tag()), Some(NOW));
        assert!(!put(&mut z, 3, NOW - 10, NOW + 2_001));
        assert!(!put(&mut z, 3, NOW, NOW + 2_001));
        assert!(put(&mut z, 3, NOW + 1, NOW + 2_001));
        // A cutoff that finds no room leaves its time as the floor at once.
        let mut z = Zone::new(room_for(0));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 7, NOW + TTL), Ok(0));
        assert_eq!((z.check(), z.cutoffs()), (0, 0));
        assert_eq!(z.cutoff(other(1).tag()), Some(NOW + 7));
    }

    #[test]
    fn a_full_chain_gives_up_its_cutoffs_last() {
        let mut z = Zone::new(1 << 20);
        let others = z.neighbours(TAG, MAX_CHAIN);
        assert_eq!(z.purge(TAG), 0);
        for tag in &others[..MAX_CHAIN - 1] {
            assert!(z.insert_key(&mut Live, &tagged(*tag, 0), b"n").unwrap());
        }
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert!(z
            .insert_key(&mut Live, &tagged(others[MAX_CHAIN - 1], 0), b"n")
            .unwrap());
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.cutoffs(), 1, "an entry went, not the cutoff");
        assert_eq!(z.get_key(&tagged(others[0], 0)), Lookup::Miss, "the oldest");
        assert_eq!(z.cutoff(TAG), Some(NOW));
        // A chain of cutoffs only gives up its oldest, whose time becomes the floor.
        let mut z = Zone::new(1 << 20);
        let others = z.neighbours(TAG, MAX_CHAIN);
        for (i, tag) in others.iter().enumerate() {
            assert_eq!(
                z.purge_at(&mut Live, *tag, NOW + i as i64, NOW + TTL),
                Ok(0)
            );
        }
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 100, NOW + TTL), Ok(0));
        assert_eq!((z.chain_len(TAG), z.cutoffs()), (MAX_CHAIN, MAX_CHAIN));
        assert_eq!(z.cutoff(TAG), Some(NOW + 100));
        assert_eq!(z.cutoff(others[0]), Some(NOW), "kept by the floor");
        assert_eq!(z.cutoff(others[1]), Some(NOW + 1));
        assert_eq!(z.cutoff(key(1).tag()), Some(NOW));
    }

    #[test]
    fn a_chain_holds_at_most_max_chain_nodes() {
        let mut z = Zone::new(1 << 20);
        let neighbour = z.neighbours(TAG, 1)[0];
        assert!(z
            .insert_key(&mut Live, &tagged(neighbour, 0), b"n")
            .unwrap());
        for n in 0..MAX_CHAIN as u32 + 10 {
            assert!(z.insert_key(&mut Live, &tagged(TAG, n), b"v").unwrap());
            assert!(z.chain_len(TAG) <= MAX_CHAIN);
        }
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        // The token pushed out its own oldest entries, not its neighbour's.
        assert_eq!(z.get_key(&tagged(neighbour, 0)), Lookup::Hit(b"n".to_vec()));
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
        // A mark never evicts an answer: in a chain full of them the
        // worker asks unmarked.
        assert_eq!(z.claim_key(&tagged(TAG, 50)), Claim::Unmarked);
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.get_key(&tagged(TAG, 11)), Lookup::Hit(b"v".to_vec()));
        assert_eq!(z.get_key(&tagged(TAG, 50)), Lookup::Miss);
        assert_eq!(z.check(), MAX_CHAIN);
        // A chain full of other tokens' entries gives up its last.
        let mut z = Zone::new(1 << 20);
        let others = z.neighbours(TAG, MAX_CHAIN);
        for tag in &others {
            assert!(z.insert_key(&mut Live, &tagged(*tag, 0), b"n").unwrap());
        }
        assert!(z.insert_key(&mut Live, &tagged(TAG, 0), b"v").unwrap());
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.get_key(&tagged(others[0], 0)), Lookup::Miss, "the oldest");
        assert_eq!(z.get_key(&tagged(TAG, 0)), Lookup::Hit(b"v".to_vec()));
        assert_eq!(z.check(), MAX_CHAIN);
    }

    #[test]
    fn junk_marks_never_evict_an_answer() {
        // A victim's answer in a chain that other tokens' answers fill:
        // however many junk tokens claim keys there, it stays.
        let mut z = Zone::new(1 << 20);
        let others = z.neighbours(TAG, MAX_CHAIN + 40);
        assert!(z.insert_key(&mut Live, &tagged(TAG, 0), b"victim").unwrap());
        for tag in &others[..MAX_CHAIN - 1] {
            assert!(z.insert_key(&mut Live, &tagged(*tag, 0), b"n").unwrap());
        }
        for tag in &others[MAX_CHAIN - 1..] {
            assert_eq!(z.claim_key(&tagged(*tag, 0)), Claim::Unmarked);
        }
        assert_eq!(z.get_key(&tagged(TAG, 0)), Lookup::Hit(b"victim".to_vec()));
        assert_eq!(z.stats().evictions, 0);
        // With marks in the chain, a new mark replaces the oldest mark.
        let mut z = Zone::new(1 << 20);
        assert!(z.insert_key(&mut Live, &tagged(TAG, 0), b"victim").unwrap());
        for tag in &others[..7] {
            assert!(z.insert_key(&mut Live, &tagged(*tag, 0), b"n").unwrap());
        }
        for tag in &others[7..MAX_CHAIN] {
            assert_eq!(z.claim_key(&tagged(*tag, 0)), Claim::Claimed);
        }
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(z.claim_key(&tagged(others[40], 0)), Claim::Claimed);
        assert_eq!(z.chain_len(TAG), MAX_CHAIN);
        assert_eq!(
            z.get_key(&tagged(others[7], 0)),
            Lookup::Miss,
            "the oldest mark"
        );
        assert_eq!(z.get_key(&tagged(others[40], 0)), Lookup::Pending);
        assert_eq!(z.get_key(&tagged(TAG, 0)), Lookup::Hit(b"victim".to_vec()));
        for tag in &others[..7] {
            assert_eq!(z.get_key(&tagged(*tag, 0)), Lookup::Hit(b"n".to_vec()));
        }
        assert_eq!(z.check(), MAX_CHAIN);
    }

    #[test]
    #[allow(deprecated)]
    fn siphash_is_siphash() {
        use std::hash::Hasher;
        // The 2-4 variant against the standard library's SipHasher (the
        // same construction, documented as SipHash-2-4); the table uses
        // the same rounds, 1 and 3 of them.
        for (k0, k1, word) in [
            (0, 0, 0),
            (
                0x0706_0504_0302_0100,
                0x0f0e_0d0c_0b0a_0908,
                0x0706_0504_0302_0100,
            ),
            (u64::MAX, 1, 0xdead_beef),
            (0x1234, 0x5678_9abc_def0, u64::MAX),
        ] {
            let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
            std.write(&word.to_le_bytes());
            assert_eq!(siphash::<2, 4>([k0, k1], word), std.finish());
        }
        assert_ne!(siphash::<1, 3>([1, 2], 3), siphash::<2, 4>([1, 2], 3));
    }

    #[test]
    fn the_bucket_of_a_tag_depends_on_the_tables_key() {
        // Tags an attacker would pick for TAG's chain under the unkeyed
        // index (its low bits): they spread over the keyed table.
        let crafted: Vec<[u8; 8]> = (0..64u64)
            .map(|i| (u64::from_le_bytes(TAG) ^ (i << 32)).to_le_bytes())
            .collect();
        for bucket_key in [TEST_KEY, *b"another 16 bytes"] {
            let mut z = Zone::with_key(1 << 20, bucket_key);
            let (table, _) = z.open();
            // SAFETY: the table was just opened.
            let with_tag = crafted
                .iter()
                .filter(|tag| unsafe { bucket_of(table, **tag) == bucket_of(table, TAG) })
                .count();
            assert!(with_tag < 8, "{with_tag} of 64 in the victim's chain");
        }
        let (mut a, mut b) = (
            Zone::with_key(1 << 20, TEST_KEY),
            Zone::with_key(1 << 20, *b"another 16 bytes"),
        );
        let ((ta, _), (tb, _)) = (a.open(), b.open());
        let index = |table: *mut Table, tag| {
            // SAFETY: both tables are open.
            unsafe { bucket_of(table, tag).offset_from((*table).buckets) }
        };
        let same = crafted
            .iter()
            .filter(|tag| index(ta, **tag) == index(tb, **tag))
            .count();
        assert!(same < 8, "{same} of 64 in the same bucket under both keys");
    }

    /// A zone whose table a worker left marked inside an insert, with four
    /// entries and a cutoff; a worker makes its next table at NOW + 10.
    fn damaged() -> Zone {
        let mut z = Zone::new(room_for(8));
        for n in 0..4 {
            assert!(z.insert(n, b"0123456789"));
        }
        assert_eq!(z.purge_at(&mut Live, TAG, NOW - 5, NOW + TTL), Ok(0));
        assert_eq!(z.insert_with(&mut DieAt(3), 9, b"0123456789"), Err(Died));
        z.fresh.floor_ms = NOW + 10;
        z
    }

    /// After any number of deaths in repairs: the next `open` repairs or
    /// makes the table, and it is [`usable`].
    fn usable_after_repairs(z: &mut Zone) {
        let (_, opened) = z.open();
        assert_ne!(opened, Opened::Ready, "the damage is noticed");
        usable(z);
    }

    /// An empty, consistent table that refuses what the lost cutoffs
    /// refused (and all answers obtained before it was made), and works.
    fn usable(z: &mut Zone) {
        assert_eq!((z.check(), z.cutoffs()), (0, 0));
        assert_eq!(z.stats(), Stats::default());
        let put = |z: &mut Zone, key: &CacheKey, obtained| {
            z.insert_at(
                &mut Live,
                key,
                b"after",
                fresh(NOW + TTL),
                obtained,
                NOW + 20,
            )
            .unwrap()
        };
        assert!(
            !put(z, &tagged(TAG, 1), NOW - 6),
            "the lost cutoff's answers"
        );
        assert!(
            !put(z, &key(1), NOW + 10),
            "any answer obtained before the repair"
        );
        assert!(put(z, &key(1), NOW + 11));
        assert!(put(z, &tagged(TAG, 1), NOW + 11));
        assert_eq!(z.get_key(&key(1)), Lookup::Hit(b"after".to_vec()));
        assert_eq!(z.get_key(&tagged(TAG, 1)), Lookup::Hit(b"after".to_vec()));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW + 12, NOW + TTL), Ok(1));
        assert_eq!(z.get_key(&tagged(TAG, 1)), Lookup::Miss);
        assert_eq!((z.check(), z.cutoffs()), (1, 1));
        assert_eq!(z.open().1, Opened::Ready);
    }

    fn changes_now(z: &mut Zone) -> Option<u64> {
        // SAFETY: the root word of this test's zone.
        unsafe { changes_seen(&mut z.root) }.map(|(_, n)| n)
    }

    fn refuses_nothing_now(z: &mut Zone) -> bool {
        changes_now(z) == Some(UNTOUCHED)
    }

    #[test]
    fn only_a_new_table_never_changed_refuses_nothing_without_the_lock() {
        let mut z = Zone::new(room_for(8));
        assert!(refuses_nothing_now(&mut z), "a new zone's empty table");
        let (table, opened) = z.open();
        assert_eq!(opened, Opened::Ready);
        // SAFETY: the table was just opened.
        let found = unsafe { cutoff(table, &TAG) };
        assert_eq!(found, None, "looking changes nothing");
        assert!(refuses_nothing_now(&mut z));
        // The first change of any kind clears it for good.
        assert!(z.insert(1, b"value"));
        assert!(!refuses_nothing_now(&mut z));
        let mut z = Zone::new(room_for(8));
        assert_eq!(z.purge_at(&mut Live, TAG, NOW - 5, NOW + TTL), Ok(0));
        assert!(!refuses_nothing_now(&mut z), "a revocation");
        // A change that dies before anything else leaves it clear, and
        // the repaired table (it has a floor) too.
        let mut z = Zone::new(room_for(8));
        assert_eq!(
            z.purge_at(&mut DieAt(0), TAG, NOW - 5, NOW + TTL),
            Err(Died)
        );
        assert!(!refuses_nothing_now(&mut z), "a change died in it");
        z.fresh.floor_ms = NOW + 10;
        assert_eq!(z.open().1, Opened::Repaired);
        assert!(!refuses_nothing_now(&mut z), "a repaired table refuses");
        // No table, or another layout's: ask under the lock.
        let mut z = Zone::new(room_for(8));
        let table = z.root;
        z.root = ptr::null_mut();
        assert_eq!(changes_now(&mut z), None);
        z.root = table;
        // SAFETY: the table of this test's zone, used by no one else.
        unsafe { (*table).magic = u64::from_be_bytes(*b"oauth2c9") };
        assert_eq!(changes_now(&mut z), None);
    }

    #[test]
    fn every_change_is_counted_before_it_begins_and_a_repair_moves_the_count_away() {
        let mut z = Zone::new(room_for(8));
        let (table, _) = z.open();
        // Reads change nothing, and count nothing.
        // SAFETY: the table was just opened.
        unsafe { cutoff(table, &TAG) };
        assert_eq!(changes_now(&mut z), Some(UNTOUCHED));
        assert!(z.insert(1, b"value"));
        assert_eq!(changes_now(&mut z), Some(1));
        assert!(z.purge_at(&mut Live, TAG, NOW - 5, NOW + TTL).is_ok());
        let counted = changes_now(&mut z).expect("a table");
        assert!(counted > 1, "a purge is counted: {counted}");
        // SAFETY: the table is still the zone's, used by no one else.
        let under_lock = unsafe { changes(z.root) };
        assert_eq!(under_lock, counted, "the same under the lock");
        // A change that dies is counted before anything else.
        for die_at in 0..3 {
            let before = changes_now(&mut z).expect("a table");
            assert_eq!(
                z.purge_at(&mut DieAt(die_at), TAG, NOW - 4, NOW + TTL),
                Err(Died)
            );
            assert!(changes_now(&mut z).expect("a table") > before);
            // The repaired table, laid where the old one lay, starts at a
            // count that has nothing to do with the old one's.
            let damaged = z.root;
            z.fresh.floor_ms = NOW + 10;
            z.fresh.bucket_key = [die_at as u8 + 7; 16];
            assert_eq!(z.open().1, Opened::Repaired);
            // A reader without the lock may still hold the old pointer:
            // the new count is what it reads there.
            assert_eq!(z.root, damaged, "the new table lies where the old one lay");
            let start = changes_now(&mut z).expect("a table");
            assert_eq!(start, (u64::from_le_bytes([die_at as u8 + 7; 8]) >> 2) | 1);
            assert!(start > 1 && start < 1 << 62);
        }
    }

    /// Whether the region is as a death must leave it: no table, or a table
    /// marked as changing.
    fn no_table_or_marked(z: &Zone) -> bool {
        // SAFETY: a non-null root is a table of this test's zone.
        z.root.is_null() || unsafe { (*z.root).changing.load(Ordering::Relaxed) } != 0
    }

    #[test]
    fn a_repair_survives_death_at_every_step_and_so_does_the_next() {
        let mut steps = None;
        for first in 0.. {
            let mut z = damaged();
            match z.open_with(&mut DieAt(first)) {
                Ok(opened) => {
                    assert_eq!(opened.map(|(_, how)| how), Some(Opened::Repaired));
                    usable(&mut z);
                    steps = Some(first);
                    break;
                }
                Err(Died) => assert!(no_table_or_marked(&z), "step {first}"),
            }
            usable_after_repairs(&mut z);
            // A second death, at every step of the next repair.
            for second in 0.. {
                let mut z = damaged();
                assert_eq!(z.open_with(&mut DieAt(first)), Err(Died));
                match z.open_with(&mut DieAt(second)) {
                    Ok(opened) => {
                        assert!(opened.is_some());
                        usable(&mut z);
                        break;
                    }
                    Err(Died) => assert!(no_table_or_marked(&z), "steps {first}, {second}"),
                }
                usable_after_repairs(&mut z);
            }
        }
        assert_eq!(steps, Some(8), "a repair has 8 steps");
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
            *bucket_of(table, key(1).tag()) = 0;
        }
        assert_eq!(z.get(1), Lookup::Miss);
        let (table, _) = z.open();
        let node = oldest_for_test(table);
        // Removing it through the chain finds null and reports damage.
        // SAFETY: the table was just opened again, by this test's only
        // user; `node` is its one node, still in the queue.
        let removed = unsafe { Change::begin(table, &mut z.slab, &mut Live).remove(node) };
        assert_eq!(removed, Err(Died));
        assert_eq!(z.open().1, Opened::Repaired);
        assert_eq!(z.check(), 0);
    }

    /// The typical claims of `scripts/cache-sizing.pl`: a UUID `sub`,
    /// three scopes, a client id, `exp`.
    fn typical_entry() -> Vec<u8> {
        use crate::oauth::cache::CachedIntrospection;
        use crate::oauth::introspection::{IntrospectionResult, TokenClaims};
        use crate::oauth::named_claims::NamedClaims;
        CachedIntrospection::encode(&IntrospectionResult::Active(TokenClaims {
            named: NamedClaims::new(
                Some("6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a"),
                Some("openid profile orders:read"),
                Some("web-app-1234"),
            ),
            exp: Some(4_102_444_800),
            ..TokenClaims::default()
        }))
    }

    /// The zone's density for typical claims: their encoded value and the
    /// node header take one 128-byte slab chunk (over 8,000 entries a
    /// megabyte, DIRECTIVES.md), with room to spare for a longer scope or
    /// client id. An encoding or a header that grows past these bounds
    /// fails here, before it halves what a zone holds.
    #[test]
    fn a_typical_entry_takes_one_128_byte_chunk() {
        const TYPICAL_VALUE_BOUND: usize = 62;
        const NODE_BOUND: usize = 56;
        const CHUNK: usize = 128;
        let value = typical_entry().len();
        assert!(
            value <= TYPICAL_VALUE_BOUND,
            "a typical value takes {value} bytes"
        );
        assert!(size_of::<Node>() <= NODE_BOUND);
        let chunk = (size_of::<Node>() + value).next_power_of_two();
        assert!(chunk <= CHUNK, "a typical entry takes a {chunk}-byte chunk");
    }

    /// A 1 MiB zone, laid out and rounded as nginx's slab pool does it,
    /// filled with more typical entries than it holds: at least 8,000 stay
    /// (the bucket array, the chains' bound and the evictions included),
    /// and the newest of them are all found.
    #[test]
    fn a_megabyte_holds_8000_typical_entries() {
        let mut z = Zone::like_nginx(1 << 20);
        let value = typical_entry();
        for n in 0..10_000 {
            assert!(z.insert(n, &value), "{n}");
        }
        let held = z.stats().entries;
        assert!(held >= 8_000, "a megabyte holds {held} entries");
        assert_eq!(z.check() as u64, held);
        for n in (10_000 - 8_000)..10_000 {
            assert!(matches!(z.get(n), Lookup::Hit(_)), "{n}");
        }
    }

    /// The cache keys' secret is the one the table was made with, kept
    /// through every change; a table made afresh has the new one.
    #[test]
    fn the_key_secret_is_the_tables_own() {
        let mut z = Zone::new(1 << 20);
        let secret = KeySecret::from_bytes(z.fresh.key_secret);
        let (table, _) = z.open();
        // SAFETY: the table was just opened.
        assert_eq!(unsafe { key_secret(table) }, secret);
        for n in 0..100 {
            assert!(z.insert(n, b"value"));
        }
        let (table, _) = z.open();
        // SAFETY: as above.
        assert_eq!(unsafe { key_secret(table) }, secret);
        z.fresh.key_secret = *b"a second secret!";
        // SAFETY: as above; the mark makes the next open repair the table.
        unsafe { (*table).changing.store(1, Ordering::Release) };
        let (table, opened) = z.open();
        assert_eq!(opened, Opened::Repaired);
        // SAFETY: as above.
        let now = unsafe { key_secret(table) };
        assert_eq!(now, KeySecret::from_bytes(*b"a second secret!"));
        assert_ne!(now, secret);
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
        assert_eq!(z.check(), 0);
    }
}

/// The replay store's operation (`table/replay.rs`), on the tests' zones.
#[cfg(test)]
mod replay_tests {
    use super::tests::{key, room_for, DieAt, Zone, NOW};
    use super::*;

    fn remember_in(zone: &mut Zone, n: u32, until: i64, now: i64) -> Remembered {
        let (table, slab) = zone.parts();
        // SAFETY: the table was just opened on this slab.
        unsafe { remember(table, slab, &mut Live, &key(n), until, now) }.unwrap()
    }

    #[test]
    fn a_name_is_new_once_while_it_lives() {
        let mut zone = Zone::with_key(room_for(8), *b"replay store key");
        assert_eq!(remember_in(&mut zone, 1, NOW + 60, NOW), Remembered::New);
        assert_eq!(
            remember_in(&mut zone, 1, NOW + 60, NOW + 59),
            Remembered::Seen
        );
        assert_eq!(remember_in(&mut zone, 2, NOW + 60, NOW), Remembered::New);
        // Past its time, the name may be recorded again (no proof with it
        // would pass the iat window by then anyway).
        assert_eq!(
            remember_in(&mut zone, 1, NOW + 200, NOW + 60),
            Remembered::New
        );
    }

    #[test]
    fn a_full_store_refuses_rather_than_forgets() {
        let mut zone = Zone::with_key(room_for(4), *b"replay store key");
        let mut stored = Vec::new();
        for n in 0..64 {
            match remember_in(&mut zone, n, NOW + 60, NOW) {
                Remembered::New => stored.push(n),
                Remembered::Full => break,
                Remembered::Seen => panic!("{n} seen"),
            }
        }
        assert!(!stored.is_empty() && stored.len() < 64);
        let next = stored.len() as u32;
        assert_eq!(
            remember_in(&mut zone, next, NOW + 60, NOW),
            Remembered::Full
        );
        // Nothing recorded was forgotten to make room.
        for n in &stored {
            assert_eq!(
                remember_in(&mut zone, *n, NOW + 60, NOW + 1),
                Remembered::Seen
            );
        }
        // Once their time has passed, the names make room again.
        assert_eq!(
            remember_in(&mut zone, next, NOW + 200, NOW + 60),
            Remembered::New
        );
    }

    #[test]
    fn a_worker_dying_halfway_leaves_a_table_the_next_one_clears() {
        for die_at in 0..12 {
            let mut zone = Zone::with_key(room_for(8), *b"replay store key");
            assert_eq!(remember_in(&mut zone, 1, NOW + 60, NOW), Remembered::New);
            let (table, slab) = zone.parts();
            // SAFETY: the table was just opened on this slab.
            let result =
                unsafe { remember(table, slab, &mut DieAt(die_at), &key(2), NOW + 60, NOW) };
            let (_, opened) = zone.open();
            match result {
                Ok(_) => assert_eq!(opened, Opened::Ready, "{die_at}"),
                Err(Died) => assert_eq!(opened, Opened::Repaired, "{die_at}"),
            }
        }
    }
}

/// The keys of a tag's live entries (`table/tagged.rs`).
#[cfg(test)]
mod tagged_tests {
    use super::tests::{fresh, room_for, tagged, Zone, NOW};
    use super::*;

    #[test]
    fn a_tags_live_entries_and_nobody_elses() {
        let mut zone = Zone::with_key(room_for(16), *b"tagged keys key!");
        let (alice, bob) = (*b"alice...", *b"bob.....");
        let (table, slab) = zone.parts();
        for (key, until) in [
            (tagged(alice, 1), NOW + 60),
            (tagged(alice, 2), NOW + 60),
            (tagged(alice, 3), NOW - 1),
            (tagged(bob, 1), NOW + 60),
        ] {
            // SAFETY: the table was just opened on this slab.
            let stored = unsafe {
                insert(
                    table,
                    slab,
                    &mut Live,
                    &key,
                    b"",
                    fresh(until),
                    NOW - 10,
                    NOW - 10,
                )
            };
            assert_eq!(stored, Ok(true));
        }
        // SAFETY: as above.
        let mut keys = unsafe { keys_tagged(table, &alice, NOW) };
        keys.sort();
        let kept = |key: CacheKey| -> [u8; 16] { key.0[..16].try_into().expect("16 bytes") };
        let mut want = vec![kept(tagged(alice, 1)), kept(tagged(alice, 2))];
        want.sort();
        assert_eq!(keys, want);
        // SAFETY: as above.
        assert!(unsafe { keys_tagged(table, b"nobody..", NOW) }.is_empty());
    }

    #[test]
    fn cutoffs_are_counted_while_they_stay() {
        let mut zone = Zone::with_key(room_for(16), *b"cutoff count key");
        let (table, slab) = zone.parts();
        // SAFETY: the table was just opened on this slab.
        unsafe {
            for tag in [*b"alice...", *b"bob.....", *b"alice..."] {
                purge_tag(table, slab, &mut Live, &tag, NOW, NOW + 60).unwrap();
            }
            assert_eq!(stats(table).cutoffs, 2);
            // Past their time, the next insert reclaims them.
            let later = NOW + 1_000;
            let key = tagged(*b"carol...", 1);
            let stored = insert(
                table,
                slab,
                &mut Live,
                &key,
                b"",
                fresh(later + 60),
                later,
                later,
            );
            assert_eq!(stored, Ok(true));
            assert_eq!(stats(table).cutoffs, 0);
            assert_eq!(stats(table).entries, 1);
        }
    }
}

#[cfg(test)]
mod model;
