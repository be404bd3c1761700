//! `auth_oauth2_token_ssf_poll`: the Shared Signals receiver polls its
//! transmitter (RFC 8936) from worker 0, on a timer, outside any client
//! request. Each poll is a POST of `oauth/ssf/poll.rs`'s JSON body to the
//! poll location (its `proxy_pass` names the transmitter), made as the
//! module's other IdP calls are: an in-memory subrequest
//! (`nginx/subrequest.rs`), here of a request with no client
//! (`nginx/detached.rs`). Every SET of the answer is checked by
//! `oauth/ssf/set.rs` and applied by `pages/ssf_apply.rs`, as a pushed one
//! is (`pages/ssf_poll_answer.rs`); the next poll acknowledges the SETs
//! applied (or seen before) and reports the refused ones in `setErrs`.
//! Polls that fail back off (`poll::Schedule`, `pages/ssf_poll_state.rs`),
//! with one log line when an outage starts and one when it ends.
//!
//! With the Redis tier (`auth_oauth2_token_shared_cache` in the poll
//! location), the fleet is told of the SETs applied, as of a pushed one
//! (`redis/ssf_tell.rs`: the revocations on the list and the channel, the
//! `jti` in the fleet's replay store), in one Redis call made as a
//! subrequest of a second request with no client; a SET is recorded and
//! acknowledged only once the fleet was told (or had it already: another
//! gateway polling the same stream, or this one's earlier try whose
//! answer was lost). One the fleet was not told is not acknowledged: the
//! transmitter sends it again, one `interval` later at the soonest, and
//! applying it again changes nothing.
//!
//! tick timer -> the request, its subrequest started (the flight)
//! subrequest ends -> its answer copied out, the settle timer armed
//! settle timer -> the request freed; the answer read, the SETs checked
//!                 and applied; with `keys_request=`, the transmitter's
//!                 keys maybe fetched first on a request of their own (the
//!                 flight; its end arms the settle timer, which goes on
//!                 with the check); with the Redis tier, its call started
//!                 (the flight); else the next tick armed
//! call ends -> its replies kept, the settle timer armed
//! settle timer -> the request freed; the SETs the fleet was told of
//!                 recorded and acknowledged, the next tick armed

use core::ptr;
use core::sync::atomic::Ordering;

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t, ngx_int_t, NGX_OK,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use super::ssf_poll_answer::{fleet_told, go_on, read};
use super::ssf_poll_state::{exiting, failed, main_conf, Answer, Poller, POLLER};
use crate::metrics::ssf_poll::PollResult;
use crate::module::Module;
use crate::nginx::detached::Detached;
use crate::nginx::req::{now_ms, Req};
use crate::nginx::subrequest;
use crate::oauth::ssf::poll::{PollRequest, Schedule};
use crate::redis::call::Failure;

/// `init_process`: worker 0 polls when a poll location is configured.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx sets which process this is before it calls init_process.
    let (process, worker) = unsafe { (ngx::ffi::ngx_process as u32, ngx::ffi::ngx_worker) };
    if (process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE) || worker != 0 {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: nginx calls init_process in the new process with its cycle,
    // whose main conf and log live as long as it.
    let (main, log) = unsafe { (Module::main_conf(&*cycle), (*cycle).log) };
    let Some(conf) = main.and_then(|m| m.ssf_poll.as_ref()) else {
        return NGX_OK as ngx_int_t;
    };
    let poller = Box::into_raw(Box::new(Poller {
        schedule: Schedule::new(conf.interval_ms),
        acks: Vec::new(),
        errs: Vec::new(),
        flight: None,
        started_ms: 0,
        answer: None,
        batch: None,
        draining: Vec::new(),
        keys_down: false,
        telling: None,
        told: None,
        fleet_down: false,
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        tick: unsafe { core::mem::zeroed() },
        // SAFETY: as above.
        settle: unsafe { core::mem::zeroed() },
        log,
    }));
    // SAFETY: `poller` was just leaked, and is freed only by exit_process,
    // after it took these events out of the timer tree; they are its own.
    let events = unsafe {
        [
            (&mut (*poller).tick, on_tick as unsafe extern "C" fn(_)),
            (&mut (*poller).settle, on_settle),
        ]
    };
    for (ev, handler) in events {
        ev.data = poller.cast();
        ev.handler = Some(handler);
        ev.log = log;
        ev.set_cancelable(1);
    }
    POLLER.store(poller, Ordering::Relaxed);
    // SAFETY: the tick event is the poller's own, alive until exit_process.
    unsafe { ngx_add_timer(ptr::addr_of_mut!((*poller).tick), 1) };
    NGX_OK as ngx_int_t
}

/// `exit_process`: stops polling. A poll still in flight is left to the
/// process's end (its subrequest may still refer to its request).
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    let poller = POLLER.swap(ptr::null_mut(), Ordering::Relaxed);
    if poller.is_null() {
        return;
    }
    // SAFETY: `poller` was leaked by init_process in this process; its
    // timers are removed, and it is dropped only when no poll is in flight.
    unsafe {
        for ev in [
            ptr::addr_of_mut!((*poller).tick),
            ptr::addr_of_mut!((*poller).settle),
        ] {
            if (*ev).timer_set() != 0 {
                ngx_del_timer(ev);
            }
        }
        if (*poller).flight.is_none() {
            drop(Box::from_raw(poller));
        }
    }
}

/// Starts a poll.
unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    // SAFETY: the tick event's data is the poller (init_process), alive
    // until exit_process, which takes the event out of the timer tree.
    let poller = unsafe { (*ev).data.cast::<Poller>() };
    // SAFETY: as above; the `&mut` ends before nginx runs the subrequest
    // (whose end may reach the poller through POLLER at once).
    let Some(conn) = start(unsafe { &mut *poller }) else {
        return;
    };
    // SAFETY: `conn` is the connection of the poll just started, whose
    // parts stay in the poller's flight until the settle timer.
    unsafe { Detached::run_posted(conn) };
}

/// Makes the poll's request and its subrequest; the connection to run it
/// on, or `None` when there is no poll to run (logged and rescheduled).
fn start(poller: &mut Poller) -> Option<*mut ngx_connection_t> {
    if exiting() || poller.flight.is_some() {
        return None;
    }
    let conf = main_conf()?.ssf_poll.as_ref()?;
    // SAFETY: the server context was kept by the directive from the
    // running cycle's configuration; the log is the cycle's.
    let Some(flight) = (unsafe { Detached::new(conf.server.cast(), poller.log) }) else {
        failed(
            poller,
            PollResult::Unavailable,
            "cannot allocate the poll's request",
        );
        return None;
    };
    let body = PollRequest {
        max_events: conf.max_events,
        return_immediately: conf.return_immediately,
        acks: &poller.acks,
        errs: &poller.errs,
    }
    .body();
    // SAFETY: the request was just made by `Detached::new` and lives until
    // `finish`.
    let started = unsafe {
        Req::with(flight.request(), |req| {
            let mut sr = subrequest::start(req, &conf.uri, false, (), answered).ok()?;
            subrequest::make_post(&mut sr, &body)?;
            sr.push_header(b"Content-Type", b"content-type", b"application/json")?;
            sr.push_header(b"Accept", b"accept", b"application/json")?;
            if let Some(token) = &conf.bearer {
                let value = sr.pool_copy(&[&b"Bearer "[..], token].concat())?;
                sr.push_header(b"Authorization", b"authorization", value)?;
            }
            subrequest::make_room_for_answer(&mut sr, conf.max_size)
        })
    };
    if started.is_none() {
        flight.finish();
        failed(
            poller,
            PollResult::Unavailable,
            "cannot allocate the poll's request",
        );
        return None;
    }
    let conn = flight.connection();
    poller.flight = Some(flight);
    poller.started_ms = now_ms();
    Some(conn)
}

/// The subrequest ended: its answer is copied out, and the rest waits for
/// the settle timer (nginx is still finishing the request).
fn answered(sr: &mut Req<'_>, _: &mut (), rc: ngx_int_t) {
    let poller = POLLER.load(Ordering::Relaxed);
    if poller.is_null() {
        return;
    }
    let answer = Answer {
        rc,
        status: sr.status(),
        body: subrequest::answer(sr).to_vec(),
        conf: sr.location_conf(),
    };
    // SAFETY: `poller` is this worker's, alive until exit_process (which
    // leaves it alive while a poll is in flight); the settle event is its own.
    unsafe {
        (*poller).answer = Some(answer);
        ngx_add_timer(ptr::addr_of_mut!((*poller).settle), 1);
    }
}

/// The request in flight is freed, and the poll's answer or the fleet's
/// replies read; or the answer's check goes on once the transmitter's keys
/// were fetched.
unsafe extern "C" fn on_settle(ev: *mut ngx_event_t) {
    // SAFETY: the settle event's data is the poller (init_process), alive
    // until exit_process, which takes the event out of the timer tree.
    let poller = unsafe { &mut *(*ev).data.cast::<Poller>() };
    let (done, draining): (Vec<Detached>, Vec<Detached>) =
        poller.draining.drain(..).partition(|d| !d.busy());
    done.into_iter().for_each(Detached::finish);
    poller.draining = draining;
    let busy = poller.flight.as_ref().is_some_and(Detached::busy);
    if busy || !poller.draining.is_empty() {
        // SAFETY: the settle event is the poller's own.
        unsafe { ngx_add_timer(ev, 10) };
    }
    if busy {
        return;
    }
    let mut run = Vec::new();
    if let Some(telling) = poller.telling.take() {
        if let Some(flight) = poller.flight.take() {
            flight.finish();
        }
        let told = poller.told.take().unwrap_or(Err(Failure::Internal(500)));
        fleet_told(poller, telling, told);
    } else if let Some(answer) = poller.answer.take() {
        if let Some(flight) = poller.flight.take() {
            flight.finish();
        }
        read(poller, answer, &mut run);
    } else if poller.batch.is_some() {
        go_on(poller, &mut run);
    }
    for conn in run {
        // SAFETY: `conn` is the connection of a request just given work
        // (the fleet's call, a key fetch), whose parts stay in the poller
        // until a settle timer finishes them; the poller's `&mut` is not
        // used after the calls above.
        unsafe { Detached::run_posted(conn) };
    }
}
