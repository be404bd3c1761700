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
    // SAFETY: nginx calls this in the master, before any worker of this cycle
    // runs, with the zone mapped, its slab pool initialised, and `data` as
    // `declare` set it. Workers of the previous cycle only touch slots
    // below `len`, and only atomically, as the breakers' words cleared here are.
    unsafe {
        let main = &mut *(*zone).data.cast::<MainConf>();
        // The registry is the one allocation of the zone's slab pool.
        let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        let mut header = (*pool).data.cast::<Header>();
        if header.is_null() {
            header = ngx_slab_calloc(pool, size_of::<Header>()).cast::<Header>();
            if header.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*header).magic = MAGIC;
            (*pool).data = header.cast();
        }
        if (*header).magic != MAGIC {
            return NGX_ERROR as ngx_int_t;
        }
        let slots = core::ptr::addr_of_mut!((*header).slots).cast::<Slot>();
        let capacity = CAPACITY;
        let mut known: HashMap<[u8; 32], usize> = HashMap::new();
        for i in 0..(*header).len as usize {
            known.insert((*slots.add(i)).key, i);
        }
        let catalogue: &Catalogue = &main.metrics;
        let mut pointers = Vec::with_capacity(catalogue.len());
        let mut dropped = 0;
        for id in 0..catalogue.len() {
            let key = CacheKey::from_parts(&[catalogue.name(id).as_bytes()]).0;
            let index = match known.get(&key) {
                Some(&i) => {
                    if catalogue.resets_on_reload(id) {
                        (*slots.add(i)).value.store(0, Ordering::Release);
                    }
                    Some(i)
                }
                None if ((*header).len as usize) < capacity => {
                    let i = (*header).len as usize;
                    slots.add(i).write(Slot {
                        key,
                        value: AtomicU64::new(0),
                    });
                    (*header).len += 1;
                    known.insert(key, i);
                    Some(i)
                }
                None => None,
            };
            pointers.push(match index {
                // SAFETY: the slot is in the counters zone, mapped at the same
                // address in every process of the cycle and never unmapped
                // while they run; its value is only touched atomically.
                Some(i) => Some(&*core::ptr::addr_of!((*slots.add(i)).value)),
                None => {
                    dropped += 1;
                    None
                }
            });
        }
        if dropped > 0 {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                (*zone).shm.log,
                "auth_oauth2_token: the metrics zone is full; {dropped} series are not counted until nginx restarts"
            );
        }
        main.counters = Counters::new(pointers);
        NGX_OK as ngx_int_t
    }
}
