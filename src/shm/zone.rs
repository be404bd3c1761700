//! A cache table in an nginx shared-memory zone: the zone's slab pool is the
//! table's [`Slab`], its mutex the lock every operation holds, and a table
//! left half-changed by a worker that died is cleared by the next one. The
//! random keys of a table's bucket hash and of its cache keys are drawn
//! here, when it is made; each worker keeps a copy of the latter.

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_int_t, ngx_log_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc_locked,
    ngx_slab_free_locked, ngx_slab_init, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_LOG_ERR,
    NGX_OK,
};

use crate::conf::MainConf;
use crate::metrics::ZoneGauges;
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::key::KeySecret;
use crate::oauth::cache::{CacheKey, Lifetime};
use crate::shm::table::{self, At, Claim, Fresh, Live, Lookup, Opened, Remembered, Slab, Table};

pub use crate::oauth::cache::flow::PURGE_CUTOFF_KEEP_MS;

/// Why a zone of `size` bytes cannot hold a table, for the directive's
/// error: below the floor nginx's own zones use (8 pages), or past the
/// largest region a table's 32-bit links reach (`MAX_REGION_BYTES`).
///
/// # Safety
/// Reads nginx's page size, set before configuration is parsed.
pub unsafe fn zone_size_error(size: usize) -> Option<String> {
    // SAFETY: ngx_pagesize is initialised by ngx_os_init before any config.
    let min = 8 * unsafe { ngx::ffi::ngx_pagesize };
    match size {
        _ if size < min => Some(format!("too small: at least {min} bytes")),
        _ if size > table::MAX_REGION_BYTES => Some(format!(
            "too large: at most {} bytes ({}g)",
            table::MAX_REGION_BYTES,
            table::MAX_REGION_BYTES >> 30
        )),
        _ => None,
    }
}

/// A zone's slab pool, used with its mutex held.
pub(super) struct SlabPool(*mut ngx_slab_pool_t);

impl Slab for SlabPool {
    fn base(&self) -> *mut u8 {
        // The pool's own header is at its start: no chunk is there, and
        // the whole zone lies after it (a zone's size is bounded by
        // `MAX_REGION_BYTES`: `table::open` makes no table otherwise).
        self.0.cast()
    }

    fn alloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: the pool is initialised and its mutex held (see `Locked`).
        unsafe { ngx_slab_alloc_locked(self.0, size).cast() }
    }

    fn free(&mut self, p: *mut u8) {
        // SAFETY: the pool is initialised and its mutex held (see `Locked`);
        // `p` came from `alloc` on this pool.
        unsafe { ngx_slab_free_locked(self.0, p.cast()) }
    }

    fn reset(&mut self) {
        // SAFETY: the pool is initialised and its mutex held (see `Locked`).
        // ngx_slab_init rebuilds the pool's page and slot
        // lists from its fixed fields (start of slots, end, min_shift) and
        // leaves the mutex alone; no worker keeps a pointer into the pool
        // between two lock holds (the table is reached through `data`).
        unsafe {
            ngx_slab_init(self.0);
            // Full zones are normal for a cache: eviction handles them quietly.
            (*self.0).set_log_nomem(0);
        }
    }

    fn capacity(&self) -> usize {
        // SAFETY: the pool's bounds are fixed once it is initialised.
        unsafe { (*self.0).end.offset_from((*self.0).start) as usize }
    }
}

/// A key of a new table (its bucket hash's, its cache keys'): 16 bytes from
/// OpenSSL's generator (getrandom), else from `/dev/urandom`. With neither
/// (never seen on Linux) the time and the process id stand in: the cache
/// still works, only a client who guesses them can aim tokens at one chain
/// again, or make two keys of one zone meet.
fn random_key() -> [u8; 16] {
    use std::io::Read;
    let mut key = [0u8; 16];
    if openssl::rand::rand_bytes(&mut key).is_ok() {
        return key;
    }
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .is_ok()
    {
        return key;
    }
    static DRAWN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let drawn = DRAWN.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = [
        &nanos.to_le_bytes()[..],
        &std::process::id().to_le_bytes()[..],
        &drawn.to_le_bytes()[..],
    ]
    .concat();
    CacheKey::from_parts(&[&seed]).0[..16]
        .try_into()
        .expect("16 bytes")
}

/// nginx's cached time, in ms since the epoch.
fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

/// Holds the zone's mutex for as long as it lives, with its table open.
pub(super) struct Locked {
    pub(super) pool: SlabPool,
    pub(super) table: *mut Table,
}

impl Locked {
    /// `None` when the zone cannot hold even an empty table.
    ///
    /// # Safety
    /// `zone` must be a zone initialised by [`init_zone`].
    pub(super) unsafe fn new(zone: *mut ngx_shm_zone_t) -> Option<Locked> {
        // SAFETY: as `keyless` needs (this function's contract).
        let locked = unsafe { Locked::keyless(zone)? };
        // A table made afresh (here or by another worker) has a new
        // secret: the copy follows it at every lock.
        // SAFETY: the table is open and its lock held.
        note_secret(zone, unsafe { table::key_secret(locked.table) });
        Some(locked)
    }

    /// [`Locked::new`] for a zone whose keys are not made with its secret
    /// (the Shared Signals list and index: theirs are digests of claims),
    /// so this worker's copy of it is not looked up.
    ///
    /// # Safety
    /// `zone` must be a zone initialised by [`init_zone`].
    pub(super) unsafe fn keyless(zone: *mut ngx_shm_zone_t) -> Option<Locked> {
        // SAFETY: an initialised zone's mapping starts with its slab pool,
        // whose `data` is the table `table::open` made (or null, when a
        // worker died while making one); `open` writes it in place.
        unsafe {
            let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
            ngx_shmtx_lock(&mut (*pool).mutex);
            let mut slab = SlabPool(pool);
            let root = &mut *ptr::addr_of_mut!((*pool).data).cast::<*mut Table>();
            // A table a worker makes replaces one that was damaged or lost:
            // the cutoffs it held are gone, so it refuses what was obtained
            // before it.
            let fresh = || Fresh {
                bucket_key: random_key(),
                key_secret: random_key(),
                floor_ms: now_ms(),
            };
            let opened = table::open(root, &mut slab, (*zone).shm.size, fresh);
            let Some((table, how)) = opened else {
                ngx_shmtx_unlock(&mut (*pool).mutex);
                return None;
            };
            if how != Opened::Ready {
                log_repair(zone, (*zone).shm.log);
            }
            Some(Locked { pool: slab, table })
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: locked in `new`.
        unsafe { ngx_shmtx_unlock(&mut (*self.pool.0).mutex) };
    }
}

thread_local! {
    /// This worker's copy of each zone's key secret (`table::key_secret`),
    /// by zone, taken whenever it holds the zone's lock: keys are made
    /// before the look-up that takes it. A copy older than a table made
    /// afresh makes keys that find nothing, until the next lock.
    static SECRETS: RefCell<Vec<(*mut ngx_shm_zone_t, KeySecret)>> =
        const { RefCell::new(Vec::new()) };
}

fn note_secret(zone: *mut ngx_shm_zone_t, secret: KeySecret) {
    SECRETS.with_borrow_mut(|known| match known.iter_mut().find(|(z, _)| *z == zone) {
        Some(entry) => entry.1 = secret,
        None => known.push((zone, secret)),
    });
}

fn known_secret(zone: *mut ngx_shm_zone_t) -> Option<KeySecret> {
    SECRETS.with_borrow(|known| known.iter().find(|(z, _)| *z == zone).map(|e| e.1))
}

fn log_repair(zone: *mut ngx_shm_zone_t, log: *mut ngx_log_t) {
    // SAFETY: the zone and its log live as long as the cycle.
    let name = unsafe { String::from_utf8_lossy((*zone).shm.name.as_bytes()).into_owned() };
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "auth_oauth2_token: zone \"{name}\" was left half-changed by a worker that died; its entries were dropped"
    );
}

/// Finds `key` (see `table::lookup`) and, unless it is served (a hit),
/// the token's cutoff under the same lock (see `table::cutoff`); a zone
/// that cannot be used is a miss whose cutoff is `Some(i64::MAX)`.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn lookup<T>(
    zone: *mut ngx_shm_zone_t,
    key: &CacheKey,
    at: At,
    read: impl FnOnce(&[u8]) -> Option<T>,
) -> (Lookup<T>, Option<i64>) {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return (Lookup::Miss, Some(i64::MAX));
        };
        let table = locked.table;
        let found = table::lookup(table, &mut locked.pool, &mut Live, key, at, read)
            .unwrap_or(Lookup::Miss);
        let cutoff = match found {
            Lookup::Hit(_) | Lookup::Due(_) => None,
            _ => table::cutoff(table, &key.tag()),
        };
        (found, cutoff)
    }
}

/// Stores `value`, an answer obtained at `obtained_ms`, under `key` (see
/// `table::insert`); false when it was not stored (obtained at or before
/// the token's purge cutoff, too large, no room), which the request does
/// not notice.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn insert(
    zone: *mut ngx_shm_zone_t,
    key: &CacheKey,
    value: &[u8],
    lifetime: Lifetime,
    obtained_ms: i64,
    now_ms: i64,
) -> bool {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return false;
        };
        let table = locked.table;
        table::insert(
            table,
            &mut locked.pool,
            &mut Live,
            key,
            value,
            lifetime,
            obtained_ms,
            now_ms,
        )
        .unwrap_or(false)
    }
}

/// Removes every entry and mark of the token whose tag is `tag` and leaves
/// its cutoff (see `table::purge_tag`): answers about it obtained at or
/// before `cutoff_ms` are not stored until `keep_until_ms` (nor after, by
/// the table's floor). One chain walked, never the whole zone. Returns how
/// many entries it removed; a zone that cannot be used holds none.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn purge_tag(
    zone: *mut ngx_shm_zone_t,
    tag: &[u8; 8],
    cutoff_ms: i64,
    keep_until_ms: i64,
) -> usize {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return 0;
        };
        let table = locked.table;
        table::purge_tag(
            table,
            &mut locked.pool,
            &mut Live,
            tag,
            cutoff_ms,
            keep_until_ms,
        )
        .unwrap_or(0)
    }
}

/// The time at or before which an answer about the token with `tag` must
/// not be used (see `table::cutoff`), for an answer that is not stored
/// here; `None` when there is none. A zone that cannot be used says
/// `Some(i64::MAX)`: nothing is known to be after its cutoff.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn cutoff(zone: *mut ngx_shm_zone_t, tag: &[u8; 8]) -> Option<i64> {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(locked) = Locked::new(zone) else {
            return Some(i64::MAX);
        };
        table::cutoff(locked.table, tag)
    }
}

/// Removes the entries of the token with `tag` from every cache zone: what
/// a purge does on this gateway, and what a purge message from the Redis
/// tier's channel does. Returns how many entries it removed.
pub fn purge_tag_everywhere(main: &MainConf, tag: &[u8; 8]) -> usize {
    let tp = ngx::ffi::ngx_timeofday();
    let now = tp.sec * 1000 + tp.msec as i64;
    let keep = now.saturating_add(PURGE_CUTOFF_KEEP_MS);
    main.zones
        .iter()
        // SAFETY: every zone in the main conf was set up by a directive and
        // initialised by nginx before any request or worker event runs.
        .map(|(_, z)| unsafe { purge_tag(z.cast(), tag, now, keep) })
        .sum()
}

/// nginx's init callback for the zone: builds the table in a new zone, or
/// keeps the existing one when a reload finds the zone unchanged. A table of
/// another layout (another version of the module) cannot be shared with the
/// old workers that still use it: nginx must be restarted. A zone without a
/// table (a worker died while making one) gets one from its next user.
///
/// # Safety
/// Called by nginx only, with a zone this module declared.
pub unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old_data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this once per cycle with the zone mapped and its
    // slab pool initialised at its start; `data` not null tells the next
    // cycle the zone is set up.
    let (pool, exists, log) = unsafe {
        let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        (*zone).data = pool.cast();
        (pool, (*zone).shm.exists != 0, (*zone).shm.log)
    };
    // `old_data` is what this function stored in the previous cycle.
    if !old_data.is_null() || exists {
        // SAFETY: the pool's `data` is null or a table `table::open` made,
        // which begins with the magic number of its module's version.
        let table = unsafe { (*pool).data.cast::<Table>() };
        // SAFETY: `table` is such a table (above).
        if !table.is_null() && !unsafe { table::has_current_layout(table) } {
            // SAFETY: the zone's name lives as long as the cycle.
            let name = unsafe { String::from_utf8_lossy((*zone).shm.name.as_bytes()) };
            ngx::ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "auth_oauth2_token: zone \"{name}\" was made by another version of the module; restart nginx"
            );
            return NGX_ERROR as ngx_int_t;
        }
        return NGX_OK as ngx_int_t;
    }
    // A new zone: nothing was purged in it yet.
    let fresh = || Fresh {
        bucket_key: random_key(),
        key_secret: random_key(),
        floor_ms: i64::MIN,
    };
    // SAFETY: a new zone's pool is used by no worker yet, so no lock is
    // needed; its `data` is set to null before `open` makes the table there.
    let opened = unsafe {
        (*pool).set_log_nomem(0);
        let mut slab = SlabPool(pool);
        (*pool).data = ptr::null_mut();
        let root = &mut *ptr::addr_of_mut!((*pool).data).cast::<*mut Table>();
        table::open(root, &mut slab, (*zone).shm.size, fresh)
    };
    match opened {
        Some(_) => NGX_OK as ngx_int_t,
        None => NGX_ERROR as ngx_int_t,
    }
}

/// What the metrics page shows of a zone: its table's counters, the bytes
/// of its slab pool in use, and its size.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn gauges(zone: *mut ngx_shm_zone_t) -> ZoneGauges {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table and the pool's page
    // counters are read while `locked` holds the zone's mutex.
    unsafe {
        let size = (*zone).shm.size as u64;
        let Some(locked) = Locked::new(zone) else {
            return ZoneGauges {
                size_bytes: size,
                ..ZoneGauges::default()
            };
        };
        let stats = table::stats(locked.table);
        let pool = locked.pool.0;
        let pages = (*pool).last.offset_from((*pool).pages) as u64;
        let free = (*pool).pfree as u64;
        ZoneGauges {
            entries: stats.entries,
            bytes_used: pages.saturating_sub(free) * ngx::ffi::ngx_pagesize as u64,
            size_bytes: size,
            evictions: stats.evictions,
            refused: stats.refused,
        }
    }
}

/// Marks `key` as being asked by this worker, a reader with the policy
/// `at` (see `table::claim`); a zone that cannot be used leaves it unmarked.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn claim(zone: *mut ngx_shm_zone_t, key: &CacheKey, at: At, deadline_ms: i64) -> Claim {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return Claim::Unmarked;
        };
        let table = locked.table;
        table::claim(table, &mut locked.pool, &mut Live, key, at, deadline_ms)
            .unwrap_or(Claim::Unmarked)
    }
}

/// Takes this worker's mark off `key` (see `table::release`).
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn release(zone: *mut ngx_shm_zone_t, key: &CacheKey) {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        if let Some(mut locked) = Locked::new(zone) {
            let table = locked.table;
            let _ = table::release(table, &mut locked.pool, &mut Live, key);
        }
    }
}

/// Records a DPoP proof's name in a replay store's zone until `until_ms`
/// (see `table::remember`); a zone that cannot be used, or a worker's
/// death halfway, is `Full`: the proof is refused, never accepted unrecorded.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn remember(
    zone: *mut ngx_shm_zone_t,
    key: &CacheKey,
    until_ms: i64,
    now_ms: i64,
) -> Remembered {
    // SAFETY: `zone` was initialised by `init_zone` (this function's
    // contract), as `Locked::new` needs; the table is used while `locked`
    // holds the zone's mutex.
    unsafe {
        let Some(mut locked) = Locked::new(zone) else {
            return Remembered::Full;
        };
        let table = locked.table;
        table::remember(table, &mut locked.pool, &mut Live, key, until_ms, now_ms)
            .unwrap_or(Remembered::Full)
    }
}

/// The table in `zone` and its count of changes (`table::changes_seen`),
/// read without its lock: what was read at a count holds while it stays.
///
/// # Safety
/// `zone` must be a zone initialised by [`init_zone`].
pub unsafe fn changes_seen(zone: *mut ngx_shm_zone_t) -> Option<(*mut Table, u64)> {
    // SAFETY: an initialised zone's mapping (this function's contract)
    // starts with its slab pool, whose `data` is the word `table::open`
    // keeps the table in, mapped as long as the cycle lives.
    unsafe {
        let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        table::changes_seen(ptr::addr_of_mut!((*pool).data).cast())
    }
}

/// A cache zone as the cache flow uses it: one of this module's zones,
/// initialised by nginx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmZone(*mut ngx_shm_zone_t);

impl ShmZone {
    /// # Safety
    /// `zone` must be a zone initialised by [`init_zone`] (a cache
    /// directive's zone or a DPoP replay store's, once nginx has run its
    /// init callback), which lives as long as the cycle.
    pub unsafe fn new(zone: *mut ngx_shm_zone_t) -> ShmZone {
        ShmZone(zone)
    }

    /// The secret of this zone's cache keys (`oauth/cache/key.rs`): this
    /// worker's copy, taken under the zone's lock the first time. A zone
    /// too small for a table has none: it finds and keeps nothing, so any
    /// key does (zeros).
    pub fn key_secret(self) -> KeySecret {
        if let Some(secret) = known_secret(self.0) {
            return secret;
        }
        // SAFETY: `self.0` is a zone initialised by `init_zone`
        // (`ShmZone::new`'s contract); the lock is released at once, and
        // taking it noted the secret.
        drop(unsafe { Locked::new(self.0) });
        known_secret(self.0).unwrap_or_default()
    }

    /// Records a DPoP proof's name in this zone, a replay store, until
    /// `until_ms` (see [`remember`]).
    pub fn remember(self, key: &CacheKey, until_ms: i64, now_ms: i64) -> Remembered {
        // SAFETY: `self.0` is a zone initialised by `init_zone`
        // (`ShmZone::new`'s contract), alive for the whole cycle.
        unsafe { remember(self.0, key, until_ms, now_ms) }
    }
}

// SAFETY (every call below): `self.0` is a zone initialised by `init_zone`
// (`ShmZone::new`'s contract), alive for the whole cycle; each function
// takes the zone's lock for itself.
impl CacheZone for ShmZone {
    fn lookup<T>(
        self,
        key: &CacheKey,
        at: At,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> (Lookup<T>, Option<i64>) {
        // SAFETY: see the impl.
        unsafe { lookup(self.0, key, at, read) }
    }

    fn claim(self, key: &CacheKey, at: At, until_ms: i64) -> Claim {
        // SAFETY: see the impl.
        unsafe { claim(self.0, key, at, until_ms) }
    }

    fn release(self, key: &CacheKey) {
        // SAFETY: see the impl.
        unsafe { release(self.0, key) }
    }

    fn insert(
        self,
        key: &CacheKey,
        entry: &[u8],
        lifetime: Lifetime,
        obtained_ms: i64,
        now_ms: i64,
    ) -> bool {
        // SAFETY: see the impl.
        unsafe { insert(self.0, key, entry, lifetime, obtained_ms, now_ms) }
    }

    fn cutoff(self, tag: &[u8; 8]) -> Option<i64> {
        // SAFETY: see the impl.
        unsafe { cutoff(self.0, tag) }
    }

    fn purge_tag(self, tag: &[u8; 8], cutoff_ms: i64, keep_until_ms: i64) {
        // SAFETY: see the impl.
        unsafe { purge_tag(self.0, tag, cutoff_ms, keep_until_ms) };
    }
}
