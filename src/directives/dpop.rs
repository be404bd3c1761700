//! DPoP: `dpop_require`, `dpop_algorithms`, `dpop_window`, `dpop_origin`,
//! `dpop_nonce_key_file`, `client_cert_from` and
//! `dpop_replay_zone` (declared here, as is the default replay zone of a
//! location that checks tokens without naming one).

use core::ffi::c_void;

use ngx::ffi::{ngx_conf_t, ngx_shared_memory_add, ngx_str_t};
use ngx::http::HttpModule;

use super::call::{args_of, flag, handler, set_once};
use crate::conf::dpop::{self, DEFAULT_REPLAY_ZONE, DEFAULT_REPLAY_ZONE_SIZE};
use crate::conf::secret_from_file_contents;
use crate::module::Module;
use crate::oauth::dpop::nonce::NonceKey;
use crate::shm::{counters, zone};

handler!(set_dpop_require, |c| set_once(
    &mut c.conf.dpop.require,
    flag(c.arg)?
));

handler!(set_dpop_algorithms, |c| {
    let algorithms = dpop::parse_algorithms(&args_of(c))?;
    set_once(&mut c.conf.dpop.algorithms, algorithms)
});

handler!(set_dpop_window, |c| {
    let window = dpop::parse_window(c.arg)?;
    set_once(&mut c.conf.dpop.window_s, window)
});

handler!(set_dpop_origin, |c| {
    let origin = dpop::parse_origin(c.arg)?;
    set_once(&mut c.conf.dpop.origin, origin)
});

handler!(set_dpop_nonce_key_file, |c| {
    let contents = c.read_secret_file("", c.arg)?;
    let key = NonceKey::new(&secret_from_file_contents(&contents))?;
    set_once(&mut c.conf.dpop.nonce_key, key)
});

handler!(set_client_cert_from, |c| {
    let fronts = dpop::parse_cert_fronts(&args_of(c))?;
    set_once(&mut c.conf.dpop.client_cert_from, fronts)
});

handler!(set_dpop_replay_zone, |c| {
    let (name, size) = dpop::parse_replay_zone(c.arg)?;
    if name == counters::ZONE_NAME.as_bytes() {
        return Err("cannot use the zone name of the module's metrics".into());
    }
    // SAFETY: nginx sets its page size before it parses any configuration.
    if let Some(error) = unsafe { zone::zone_size_error(size) } {
        return Err(format!("zone is {error}"));
    }
    // SAFETY: cf is the configuration being parsed (see `Call`).
    let zone = unsafe { replay_zone(c.cf, &name, size) }
        .ok_or("cannot use this zone (see the message above)")?;
    set_once(&mut c.conf.dpop.replay_zone, zone)
});

/// The replay store's zone `name` of `size` bytes, declared (or found, when
/// declared already with that size): a table of its own, never one of the
/// caches' (a purge does not reach it). `None`: nginx refused it (logged).
///
/// # Safety
/// `cf` must be the configuration being parsed or merged.
pub unsafe fn replay_zone(cf: *mut ngx_conf_t, name: &[u8], size: usize) -> Option<*mut c_void> {
    // SAFETY: `cf` is the configuration being parsed or merged (this
    // function's contract), with its pool. The name is copied into that
    // pool, which lives as long as the cycle that keeps a
    // pointer to it; the zone nginx returns is ours to set up until the
    // cycle initialises it.
    unsafe {
        let mut name = ngx_str_t::from_bytes((*cf).pool, name)?;
        let tag = Module::module() as *const _ as *mut c_void;
        let shm_zone = ngx_shared_memory_add(cf, &mut name, size, tag);
        if shm_zone.is_null() {
            return None;
        }
        (*shm_zone).init.get_or_insert(zone::init_zone);
        Some(shm_zone.cast())
    }
}

/// The default replay zone, for a location that checks tokens and names none.
///
/// # Safety
/// `cf` must be the configuration being parsed or merged.
pub unsafe fn default_replay_zone(cf: *mut ngx_conf_t) -> Option<*mut c_void> {
    // SAFETY: `cf` is the configuration being parsed or merged (this
    // function's contract), as `replay_zone` needs.
    unsafe { replay_zone(cf, DEFAULT_REPLAY_ZONE.as_bytes(), DEFAULT_REPLAY_ZONE_SIZE) }
}
