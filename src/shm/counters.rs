//! The metrics' counters in a shared-memory zone of their own, so every
//! worker's work adds up and a reload keeps the counts. A registry of
//! (series digest, value) slots: the master appends the series the
//! configuration defines when a cycle starts (reusing the slot of a series
//! it already had), and workers only ever add to a slot atomically, without
//! a lock. A worker that dies mid-add leaves a whole value behind. The
//! circuit breakers' state lives here too, and starts again from zero in
//! every cycle: a reload closes every breaker (`Catalogue::resets_on_reload`).

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc, ngx_slab_pool_t,
    ngx_str_t, NGX_ERROR, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::HttpModule;

use crate::conf::MainConf;
use crate::metrics::{Catalogue, Counters};
use crate::module::Module;
use crate::oauth::cache::CacheKey;

pub const ZONE_NAME: &str = "auth_oauth2_token_metrics";
const ZONE_SIZE: usize = 1024 * 1024 + 64 * 1024;
const MAGIC: u64 = u64::from_be_bytes(*b"oauth2m1");

/// Slots the registry has room for: about 26,000 series (50 zones and 50
/// endpoints of both kinds take some 2,500).
const CAPACITY: usize = 26_000;

#[repr(C)]
struct Header {
    magic: u64,
    len: u64,
    slots: [Slot; CAPACITY],
}

#[repr(C)]
struct Slot {
    key: [u8; 32],
    value: AtomicU64,
}

/// Declares the counters zone for this configuration; called at
/// postconfiguration, when the catalogue is complete.
///
/// # Safety
/// `cf` must be the http configuration; `main` its MainConf, which lives as
/// long as the cycle.
pub unsafe fn declare(cf: *mut ngx_conf_t, main: *mut MainConf) -> Option<()> {
    // SAFETY: `cf` is the http configuration and `main` its MainConf,
    // alive with the cycle (this function's contract); nginx keeps the
    // name's pointer, which is static.
    unsafe {
        let mut name = ngx_str_t {
            len: ZONE_NAME.len(),
            data: ZONE_NAME.as_ptr().cast_mut(),
        };
        let tag = Module::module() as *const _ as *mut c_void;
        let zone = ngx_shared_memory_add(cf, &mut name, ZONE_SIZE, tag);
        if zone.is_null() {
            return None;
        }
        (*zone).init = Some(init_zone);
        (*zone).data = main.cast();
        Some(())
    }
}

/// nginx's init callback: registers the catalogue's series in the zone
/// (new, or kept from the previous cycle, but for the breakers' state,
/// cleared) and points the cycle's counters at their slots.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old_data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this in the master, before any worker of this
    // cycle runs, with the zone mapped, its slab pool initialised, and
    // `data` as `declare` set it: the MainConf, alive with the cycle.
    let (main, pool, log) = unsafe {
        let main = &mut *(*zone).data.cast::<MainConf>();
        (
            main,
            (*zone).shm.addr.cast::<ngx_slab_pool_t>(),
            (*zone).shm.log,
        )
    };
    // SAFETY: `pool` is the zone's initialised slab pool (above).
    let Some(header) = (unsafe { registry(pool) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: `header` is the zone's registry, in the master before any
    // worker of this cycle runs (above).
    let (pointers, dropped) = unsafe { register(header, &main.metrics) };
    if dropped > 0 {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "auth_oauth2_token: the metrics zone is full; {dropped} series are not counted until nginx restarts"
        );
    }
    main.counters = Counters::new(pointers);
    NGX_OK as ngx_int_t
}

/// The registry of the zone whose slab pool is `pool`, made on first use:
/// the one allocation of the pool. `None`: no room, or not a registry.
///
/// # Safety
/// `pool` is an initialised slab pool that only the caller uses now.
unsafe fn registry(pool: *mut ngx_slab_pool_t) -> Option<*mut Header> {
    // SAFETY: `pool` is initialised and the caller's alone (this
    // function's contract); its `data` is null or the registry made here,
    // and a new one comes zeroed from ngx_slab_calloc.
    unsafe {
        let mut header = (*pool).data.cast::<Header>();
        if header.is_null() {
            header = ngx_slab_calloc(pool, size_of::<Header>()).cast::<Header>();
            if header.is_null() {
                return None;
            }
            (*header).magic = MAGIC;
            (*pool).data = header.cast();
        }
        ((*header).magic == MAGIC).then_some(header)
    }
}

/// Gives every series of `catalogue` a slot in the registry (its own from
/// the previous cycle, else a new one): the counters' pointers, and how many
/// series found no room.
///
/// # Safety
/// `header` is the zone's registry, in the master of a starting cycle:
/// workers of the previous cycle only touch slots below `len`, and only
/// atomically, as the breakers' words cleared here are.
unsafe fn register(
    header: *mut Header,
    catalogue: &Catalogue,
) -> (Vec<Option<&'static AtomicU64>>, usize) {
    // SAFETY: `header` is the registry (this function's contract); its
    // slots are its own memory.
    let slots = unsafe { core::ptr::addr_of_mut!((*header).slots).cast::<Slot>() };
    // SAFETY: `header` is the registry (this function's contract); `len`
    // is written only by the master, which runs this before any worker of
    // the cycle, and read by no worker.
    let len = unsafe { &mut (*header).len };
    let mut known: HashMap<[u8; 32], usize> = HashMap::new();
    for i in 0..*len as usize {
        // SAFETY: slot `i` is below `len`, written; its key is not changed.
        known.insert(unsafe { (*slots.add(i)).key }, i);
    }
    let mut pointers = Vec::with_capacity(catalogue.len());
    let mut dropped = 0;
    for id in 0..catalogue.len() {
        let key = CacheKey::from_parts(&[catalogue.name(id).as_bytes()]).0;
        let index = match known.get(&key) {
            Some(&i) => Some(i),
            None if (*len as usize) < CAPACITY => {
                let i = *len as usize;
                // SAFETY: slot `i` is within the registry's capacity and
                // beyond `len`: no process uses it yet.
                unsafe {
                    slots.add(i).write(Slot {
                        key,
                        value: AtomicU64::new(0),
                    })
                };
                *len += 1;
                known.insert(key, i);
                Some(i)
            }
            None => None,
        };
        let Some(i) = index else {
            dropped += 1;
            pointers.push(None);
            continue;
        };
        // SAFETY: the slot is in the counters zone, mapped at the same
        // address in every process of the cycle and never unmapped while
        // they run; its value is only touched atomically.
        let value = unsafe { &*core::ptr::addr_of!((*slots.add(i)).value) };
        if catalogue.resets_on_reload(id) {
            value.store(0, Ordering::Release);
        }
        pointers.push(Some(value));
    }
    (pointers, dropped)
}
