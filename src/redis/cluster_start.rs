//! With `cluster`: each worker reads the slot map when it starts, so that
//! its first calls go straight to their slots' primaries. Worker start
//! cannot make a subrequest; a timer makes a request with no client
//! (`nginx/detached.rs`, as the Shared Signals poll does) in the server block
//! of the first location with `auth_oauth2_token_redis_pass`, and from it
//! the map's read (`call::read_slot_map`: `CLUSTER SLOTS` to the seeds,
//! through the upstream). Until a map is in, the read is tried again after
//! a backoff (500 ms, doubling to 5 s; the reads' own spacing is 500 ms);
//! a map read by the worker's first call (`redis/call.rs`) ends it too.
//! Nothing waits for it: the worker serves requests meanwhile.
//!
//! tick timer   -> the request, the map's read started (`flight`)
//! read ended   -> the settle timer armed (nginx is finishing the request)
//! settle timer -> the request freed; no map yet: the tick after the backoff

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t, ngx_int_t, ngx_log_t,
    ngx_msec_t, NGX_OK, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use super::{call, cluster_route};
use crate::module::Module;
use crate::nginx::detached::Detached;
use crate::nginx::req::Req;

/// The first wait before the read is tried again, and the longest.
const FIRST_BACKOFF_MS: u64 = 500;
const MAX_BACKOFF_MS: u64 = 5000;

struct Starter {
    /// The read in flight: its request.
    flight: Option<Detached>,
    backoff_ms: u64,
    tick: ngx_event_t,
    settle: ngx_event_t,
    log: *mut ngx_log_t,
}

/// This worker's starter, made by `init_process`.
static STARTER: AtomicPtr<Starter> = AtomicPtr::new(ptr::null_mut());

fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

/// Where the read goes: the Redis location's path and server block, with
/// `cluster` (`None` otherwise).
fn route() -> Option<(&'static [u8], *mut core::ffi::c_void)> {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    let main = unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }?;
    if !main.redis.as_ref().is_some_and(|t| t.cluster) {
        return None;
    }
    let (uri, server) = main.redis_pass_at.as_ref()?;
    Some((uri.as_slice(), *server))
}

/// `init_process`: every worker reads the map, with `cluster`.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx sets which process this is before it calls init_process.
    let process = unsafe { ngx::ffi::ngx_process as u32 };
    if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
        return NGX_OK as ngx_int_t;
    }
    if route().is_none() {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: nginx calls init_process in the new process with its cycle,
    // whose log lives as long as it.
    let log = unsafe { (*cycle).log };
    let starter = Box::into_raw(Box::new(Starter {
        flight: None,
        backoff_ms: FIRST_BACKOFF_MS,
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        tick: unsafe { core::mem::zeroed() },
        // SAFETY: as above.
        settle: unsafe { core::mem::zeroed() },
        log,
    }));
    // SAFETY: `starter` was just leaked, and is freed only by exit_process,
    // after it took these events out of the timer tree; they are its own.
    let events = unsafe {
        [
            (&mut (*starter).tick, on_tick as unsafe extern "C" fn(_)),
            (&mut (*starter).settle, on_settle),
        ]
    };
    for (ev, handler) in events {
        ev.data = starter.cast();
        ev.handler = Some(handler);
        ev.log = log;
        ev.set_cancelable(1);
    }
    STARTER.store(starter, Ordering::Relaxed);
    // SAFETY: the tick event is the starter's own, alive until exit_process.
    unsafe { ngx_add_timer(ptr::addr_of_mut!((*starter).tick), 1) };
    NGX_OK as ngx_int_t
}

/// `exit_process`: stops trying. A read still in flight is left to the
/// process's end (its subrequest may still refer to its request).
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    let starter = STARTER.swap(ptr::null_mut(), Ordering::Relaxed);
    if starter.is_null() {
        return;
    }
    // SAFETY: `starter` was leaked by init_process in this process; its
    // timers are removed, and it is dropped only when no read is in flight.
    unsafe {
        for ev in [
            ptr::addr_of_mut!((*starter).tick),
            ptr::addr_of_mut!((*starter).settle),
        ] {
            if (*ev).timer_set() != 0 {
                ngx_del_timer(ev);
            }
        }
        if (*starter).flight.is_none() {
            drop(Box::from_raw(starter));
        }
    }
}

/// Starts a read of the map, unless the worker has one.
unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    // SAFETY: the tick event's data is the starter (init_process), alive
    // until exit_process, which takes the event out of the timer tree; the
    // `&mut` ends before nginx runs the subrequest (whose end may reach
    // the starter through STARTER at once).
    let starter = unsafe { &mut *(*ev).data.cast::<Starter>() };
    if exiting() || starter.flight.is_some() || !cluster_route::no_map() {
        return;
    }
    let Some(conn) = start(starter) else {
        return again(starter);
    };
    // SAFETY: `conn` is the connection of the read just started, whose
    // parts stay in the starter's flight until the settle timer.
    unsafe { Detached::run_posted(conn) };
}

/// Makes the request and starts the read from it; the connection to run
/// it on, or `None` when it did not start.
fn start(starter: &mut Starter) -> Option<*mut ngx_connection_t> {
    let (uri, server) = route()?;
    // SAFETY: the server context was kept by the directive from the
    // running cycle's configuration; the log is the cycle's.
    let flight = unsafe { Detached::new(server.cast(), starter.log) }?;
    // SAFETY: the request was just made by `Detached::new` and lives until
    // `finish`.
    let started =
        unsafe { Req::with(flight.request(), |req| call::read_slot_map(req, uri, ended)) };
    if started.is_err() {
        flight.finish();
        return None;
    }
    let conn = flight.connection();
    starter.flight = Some(flight);
    Some(conn)
}

/// The read ended: the rest waits for the settle timer.
fn ended(_req: &mut Req<'_>) {
    let starter = STARTER.load(Ordering::Relaxed);
    if starter.is_null() {
        return;
    }
    // SAFETY: `starter` is this worker's, alive until exit_process (which
    // leaves it alive while a read is in flight); the settle event is its own.
    unsafe { ngx_add_timer(ptr::addr_of_mut!((*starter).settle), 1) };
}

/// The read's request is freed; without a map, the read is tried again.
unsafe extern "C" fn on_settle(ev: *mut ngx_event_t) {
    // SAFETY: the settle event's data is the starter (init_process), alive
    // until exit_process, which takes the event out of the timer tree.
    let starter = unsafe { &mut *(*ev).data.cast::<Starter>() };
    if let Some(flight) = starter.flight.take() {
        flight.finish();
    }
    if cluster_route::no_map() {
        again(starter);
    }
}

/// The tick after the backoff, which doubles.
fn again(starter: &mut Starter) {
    if exiting() {
        return;
    }
    let wait = starter.backoff_ms;
    starter.backoff_ms = (wait * 2).min(MAX_BACKOFF_MS);
    // SAFETY: the tick event is the starter's own, alive until exit_process.
    unsafe { ngx_add_timer(&mut starter.tick, wait as ngx_msec_t) };
}
