//! A cache zone in nginx shared memory: a fixed bucket array of chained
//! nodes for lookup and an intrusive queue for eviction, both in the zone's
//! slab pool and guarded by its mutex. Every operation touches a bounded
//! number of nodes, whatever the zone holds.
//!
//! Eviction is second chance (CLOCK on the queue): a hit only marks its node
//! as used; the eviction at the queue's tail moves a marked node back to the
//! head instead of evicting it. A hit thereby writes to one cache line, the
//! node's own, where moving it to the front of an LRU list would also write
//! to its two neighbours: random cache misses that made hits over 100,000
//! entries measurably slower than over one.
//!
//! Nodes hold only the key digest, an expiry and the encoded value; the
//! shared mapping has the same address in every worker and survives reloads,
//! so the pointers between nodes stay valid.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ngx::ffi::{
    ngx_int_t, ngx_queue_init, ngx_queue_insert_after, ngx_queue_remove, ngx_queue_t,
    ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc_locked,
    ngx_slab_calloc_locked, ngx_slab_free_locked, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG,
    NGX_OK,
};

use crate::oauth::cache::CacheKey;

/// Marks a table laid out by this version of the module.
const LAYOUT_MAGIC: u64 = u64::from_be_bytes(*b"oauth2c3");
/// Zone bytes per hash bucket: about two nodes per bucket when full.
const BYTES_PER_BUCKET: usize = 512;
/// Nodes one insert may evict to make room before giving up.
const MAX_EVICTIONS_PER_INSERT: usize = 64;
/// Marked nodes one insert may send back to the head before it evicts
/// whatever is at the tail.
const MAX_SECOND_CHANCES_PER_INSERT: usize = 64;
/// Expired nodes an insert reclaims from the LRU tail in passing.
const REAP_PER_INSERT: usize = 2;

#[repr(C)]
struct Table {
    magic: u64,
    lru: ngx_queue_t,
    buckets: *mut *mut Node,
    mask: usize,
}

#[repr(C)]
struct Node {
    /// First field: a queue link is also a pointer to its node.
    lru: ngx_queue_t,
    next: *mut Node,
    key: [u8; 32],
    expires_ms: i64,
    len: u32,
    /// Set by a hit, cleared when the node gets its second chance.
    used: u32,
    // `len` bytes of value follow.
}

impl Node {
    /// # Safety
    /// `node` must be a live node of a table.
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

pub enum Lookup<T> {
    Hit(T),
    Expired,
    Miss,
}

/// The smallest zone accepted: the same floor nginx's own zones use.
///
/// # Safety
/// Reads nginx's page size, set before configuration is parsed.
pub unsafe fn min_zone_size() -> usize {
    // SAFETY: ngx_pagesize is initialised by ngx_os_init before any config.
    8 * unsafe { ngx::ffi::ngx_pagesize }
}

/// Holds the zone mutex for as long as it lives.
struct Locked {
    pool: *mut ngx_slab_pool_t,
    table: *mut Table,
}

impl Locked {
    /// # Safety
    /// `zone` must be a zone initialised by [`init_zone`].
    unsafe fn new(zone: *mut ngx_shm_zone_t) -> Locked {
        // SAFETY: an initialised zone's mapping starts with its slab pool,
        // whose `data` is our table.
        unsafe {
            let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
            ngx_shmtx_lock(&mut (*pool).mutex);
            Locked {
                pool,
                table: (*pool).data.cast(),
            }
        }
    }

    unsafe fn bucket(&self, key: &CacheKey) -> *mut *mut Node {
        // SAFETY: the index is masked to the bucket array's length.
        unsafe {
            (*self.table)
                .buckets
                .add(key.bucket_hash() as usize & (*self.table).mask)
        }
    }

    unsafe fn find(&self, key: &CacheKey) -> *mut Node {
        // SAFETY: chains only hold live nodes of this table.
        unsafe {
            let mut node = *self.bucket(key);
            while !node.is_null() && (*node).key != key.0 {
                node = (*node).next;
            }
            node
        }
    }

    unsafe fn remove(&mut self, node: *mut Node) {
        // SAFETY: `node` is live and linked in its bucket chain and the LRU.
        unsafe {
            let mut link = self.bucket(&CacheKey((*node).key));
            while *link != node {
                link = ptr::addr_of_mut!((**link).next);
            }
            *link = (*node).next;
            ngx_queue_remove(ptr::addr_of_mut!((*node).lru));
            ngx_slab_free_locked(self.pool, node.cast());
        }
    }

    /// The node at the queue's tail, if any.
    unsafe fn oldest(&self) -> Option<*mut Node> {
        // SAFETY: the LRU head is part of the table; its prev is the tail.
        unsafe {
            let head = ptr::addr_of_mut!((*self.table).lru);
            let last = (*head).prev;
            (last != head).then_some(last.cast::<Node>())
        }
    }

    /// The tail node that may be evicted: marked nodes on the way get their
    /// second chance (back to the head, unmarked), a bounded number of them.
    unsafe fn victim(&self) -> Option<*mut Node> {
        // SAFETY: nodes in the queue are live.
        unsafe {
            for _ in 0..MAX_SECOND_CHANCES_PER_INSERT {
                let node = self.oldest()?;
                if (*node).used == 0 {
                    return Some(node);
                }
                (*node).used = 0;
                self.to_head(node);
            }
            self.oldest()
        }
    }

    unsafe fn to_head(&self, node: *mut Node) {
        // SAFETY: `node` is live and linked in the queue.
        unsafe {
            ngx_queue_remove(ptr::addr_of_mut!((*node).lru));
            ngx_queue_insert_after(
                ptr::addr_of_mut!((*self.table).lru),
                ptr::addr_of_mut!((*node).lru),
            );
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: locked in `new`.
        unsafe { ngx_shmtx_unlock(&mut (*self.pool).mutex) };
    }
}

/// Finds `key`; a live entry is marked as used and handed to `read` under
/// the lock. An expired entry, or one `read` rejects, is removed.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn lookup<T>(
    zone: *mut ngx_shm_zone_t,
    key: &CacheKey,
    now_ms: i64,
    read: impl FnOnce(&[u8]) -> Option<T>,
) -> Lookup<T> {
    // SAFETY: the lock is held for every access to the table below.
    unsafe {
        let mut locked = Locked::new(zone);
        let node = locked.find(key);
        if node.is_null() {
            return Lookup::Miss;
        }
        if (*node).expires_ms <= now_ms {
            locked.remove(node);
            return Lookup::Expired;
        }
        match read(Node::value(node)) {
            Some(value) => {
                (*node).used = 1;
                Lookup::Hit(value)
            }
            None => {
                locked.remove(node);
                Lookup::Miss
            }
        }
    }
}

/// Stores `value` under `key` until `expires_ms`, replacing any entry for the
/// key and evicting entries not used lately when the zone is full.
/// Returns false only if no room could be made; the request goes on anyway.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn insert(
    zone: *mut ngx_shm_zone_t,
    key: &CacheKey,
    value: &[u8],
    expires_ms: i64,
    now_ms: i64,
) -> bool {
    let Ok(len) = u32::try_from(value.len()) else {
        return false;
    };
    // SAFETY: the lock is held for every access to the table below; a new
    // node is fully written before it is linked.
    unsafe {
        let mut locked = Locked::new(zone);
        let existing = locked.find(key);
        if !existing.is_null() {
            locked.remove(existing);
        }
        for _ in 0..REAP_PER_INSERT {
            match locked.oldest() {
                Some(node) if (*node).expires_ms <= now_ms => locked.remove(node),
                _ => break,
            }
        }

        let size = size_of::<Node>() + value.len();
        let mut node = ngx_slab_alloc_locked(locked.pool, size).cast::<Node>();
        let mut evictions = 0;
        while node.is_null() && evictions < MAX_EVICTIONS_PER_INSERT {
            let Some(victim) = locked.victim() else { break };
            locked.remove(victim);
            evictions += 1;
            node = ngx_slab_alloc_locked(locked.pool, size).cast::<Node>();
        }
        if node.is_null() {
            return false;
        }

        node.write(Node {
            lru: ngx_queue_t {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
            next: ptr::null_mut(),
            key: key.0,
            expires_ms,
            len,
            used: 0,
        });
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            node.cast::<u8>().add(size_of::<Node>()),
            value.len(),
        );
        let bucket = locked.bucket(key);
        (*node).next = *bucket;
        *bucket = node;
        ngx_queue_insert_after(
            ptr::addr_of_mut!((*locked.table).lru),
            ptr::addr_of_mut!((*node).lru),
        );
        true
    }
}

/// nginx's init callback for the zone: builds the table in a new zone, or
/// keeps the existing one when a reload finds the zone unchanged.
pub unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old_data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this once per cycle with the zone mapped and its
    // slab pool initialised; `old_data` is what we stored in the previous cycle.
    unsafe {
        let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        if !old_data.is_null() || (*zone).shm.exists != 0 {
            let table = (*pool).data.cast::<Table>();
            if table.is_null() || (*table).magic != LAYOUT_MAGIC {
                ngx::ngx_log_error!(
                    NGX_LOG_EMERG,
                    (*zone).shm.log,
                    "auth_oauth2_token: zone \"{}\" was made by another version of the module; restart nginx",
                    String::from_utf8_lossy((*zone).shm.name.as_bytes())
                );
                return NGX_ERROR as ngx_int_t;
            }
            (*zone).data = table.cast();
            return NGX_OK as ngx_int_t;
        }

        // Full zones are normal for a cache: eviction handles them quietly.
        (*pool).set_log_nomem(0);
        let nbuckets = ((*zone).shm.size / BYTES_PER_BUCKET).max(16);
        let nbuckets = 1usize << (usize::BITS - 1 - nbuckets.leading_zeros());
        let table = ngx_slab_alloc_locked(pool, size_of::<Table>()).cast::<Table>();
        let buckets =
            ngx_slab_calloc_locked(pool, nbuckets * size_of::<*mut Node>()).cast::<*mut Node>();
        if table.is_null() || buckets.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        table.write(Table {
            magic: LAYOUT_MAGIC,
            lru: ngx_queue_t {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
            buckets,
            mask: nbuckets - 1,
        });
        ngx_queue_init(ptr::addr_of_mut!((*table).lru));
        (*pool).data = table.cast();
        (*zone).data = table.cast();
        NGX_OK as ngx_int_t
    }
}
