//! `auth_oauth2_token_ssf_poll`: the Shared Signals receiver polls its
//! transmitter (RFC 8936) from worker 0, on a timer, outside any client
//! request. Each poll is a POST of `oauth/ssf/poll.rs`'s JSON body to the
//! poll location (its `proxy_pass` names the transmitter), made as the
//! module's other IdP calls are: an in-memory subrequest
//! (`nginx/subrequest.rs`), here of a request with no client
//! (`nginx/detached.rs`). Every SET of the answer is checked by
//! `oauth/ssf/set.rs` and applied by `pages/ssf_apply.rs`, as a pushed one
//! is; the next poll acknowledges the SETs applied (or seen before) and
//! reports the refused ones in `setErrs`. Polls that fail back off
//! (`poll::Schedule`), with one log line when an outage starts and one when
//! it ends.
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
//! settle timer -> the request freed; the answer read, the SETs applied;
//!                 with the Redis tier, its call started (the flight);
//!                 else the next tick armed
//! call ends -> its replies kept, the settle timer armed
//! settle timer -> the request freed; the SETs the fleet was told of
//!                 recorded and acknowledged, the next tick armed

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t, ngx_int_t, ngx_log_t,
    ngx_msec_t, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SINGLE,
    NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use super::ssf_apply;
use super::ssf_poll_fleet::{self, Applied, Telling};
use crate::conf::MainConf;
use crate::metrics::ssf_poll::PollResult;
use crate::module::Module;
use crate::nginx::detached::Detached;
use crate::nginx::req::{now_ms, Req};
use crate::nginx::subrequest;
use crate::oauth::ssf::poll::{self, Note, PollRequest, Schedule};
use crate::oauth::ssf::set::{self, Code, SetError};
use crate::redis::call::Failure;
use crate::redis::resp::Reply;
use crate::shm::table::Remembered;

/// A SET delivered under another SET's `jti`.
const KEY_MISMATCH: SetError = SetError::new(
    Code::InvalidRequest,
    "the SET's jti is not the one it was delivered under",
);

/// What a poll's subrequest brought back, copied out of it.
struct Answer {
    rc: ngx_int_t,
    status: usize,
    body: Vec<u8>,
    /// The poll location's Redis tier, when it has one.
    fleet_uri: Option<&'static [u8]>,
}

struct Poller {
    schedule: Schedule,
    /// What the next poll says of the last answer's SETs.
    acks: Vec<String>,
    errs: Vec<(String, SetError)>,
    /// The poll in flight: its request, and its answer once in.
    flight: Option<Detached>,
    /// When the poll in flight started (ms).
    started_ms: i64,
    answer: Option<Answer>,
    /// The fleet's call in flight, and its replies once in.
    telling: Option<Telling>,
    told: Option<Result<Vec<Reply>, Failure>>,
    /// The last call left SETs the fleet was not told of.
    fleet_down: bool,
    tick: ngx_event_t,
    settle: ngx_event_t,
    log: *mut ngx_log_t,
}

/// Worker 0's poller, made by `init_process`.
static POLLER: AtomicPtr<Poller> = AtomicPtr::new(ptr::null_mut());

fn main_conf() -> Option<&'static MainConf> {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }
}

fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

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
        fleet_uri: sr.location_conf().and_then(|conf| conf.shared_cache_uri()),
    };
    // SAFETY: `poller` is this worker's, alive until exit_process (which
    // leaves it alive while a poll is in flight); the settle event is its own.
    unsafe {
        (*poller).answer = Some(answer);
        ngx_add_timer(ptr::addr_of_mut!((*poller).settle), 1);
    }
}

/// The request in flight is freed, and the poll's answer or the fleet's
/// replies read.
unsafe extern "C" fn on_settle(ev: *mut ngx_event_t) {
    // SAFETY: the settle event's data is the poller (init_process), alive
    // until exit_process, which takes the event out of the timer tree.
    let poller = unsafe { &mut *(*ev).data.cast::<Poller>() };
    if poller.flight.as_ref().is_some_and(Detached::busy) {
        // SAFETY: the settle event is the poller's own.
        unsafe { ngx_add_timer(ev, 10) };
        return;
    }
    if let Some(flight) = poller.flight.take() {
        flight.finish();
    }
    if let Some(telling) = poller.telling.take() {
        let told = poller.told.take().unwrap_or(Err(Failure::Internal(500)));
        return fleet_told(poller, telling, told);
    }
    let Some(answer) = poller.answer.take() else {
        return;
    };
    if let Some(conn) = read(poller, answer) {
        // SAFETY: `conn` is the connection of the fleet's call just
        // started, whose parts stay in the poller's flight until the settle
        // timer; the poller's `&mut` is not used after `read`.
        unsafe { Detached::run_posted(conn) };
    }
}

/// Reads the poll's answer and applies its SETs; the connection of the
/// fleet's call when one was started (else the next poll is scheduled).
fn read(poller: &mut Poller, answer: Answer) -> Option<*mut ngx_connection_t> {
    let (result, why) = match (answer.status, answer.rc) {
        (200, 0) => (PollResult::Ok, String::new()),
        (0, _) => (
            PollResult::Unavailable,
            "the transmitter cannot be reached or did not answer in time".to_string(),
        ),
        (500.., _) => (
            PollResult::Unavailable,
            format!("the transmitter answered {}", answer.status),
        ),
        // nginx ended the subrequest with an error after the status came.
        (200, _) => (
            PollResult::Malformed,
            "the answer could not be read whole (larger than max_size, or cut)".to_string(),
        ),
        (400..=499, _) => (
            PollResult::Refused,
            format!("the transmitter answered {}", answer.status),
        ),
        (status, _) => (
            PollResult::Malformed,
            format!("the transmitter answered {status}"),
        ),
    };
    if result != PollResult::Ok {
        failed(poller, result, &why);
        return None;
    }
    let parsed = match poll::parse_answer(&answer.body) {
        Ok(parsed) => parsed,
        Err(e) => {
            failed(poller, PollResult::Malformed, e.describe());
            return None;
        }
    };
    count(|m| m.ssf_poll_ids().map(|ids| ids.poll(PollResult::Ok)));
    poller.acks.clear();
    poller.errs.clear();
    let applied: Vec<Applied> = parsed
        .sets
        .iter()
        .filter_map(|(jti, set)| take(poller, jti, set.as_bytes()))
        .collect();
    let took_ms = u64::try_from(now_ms() - poller.started_ms).unwrap_or(0);
    let more = parsed.more_available;
    let fleet = main_conf().and_then(|main| Some((main.redis.as_ref()?, main.ssf.as_ref()?)));
    let (Some(uri), Some((redis, receiver)), false) = (answer.fleet_uri, fleet, applied.is_empty())
    else {
        for set in applied {
            acknowledge(poller, set);
        }
        scheduled(poller, more, took_ms, 0);
        return None;
    };
    let (commands, telling) = ssf_poll_fleet::tell(redis, receiver, applied, more, took_ms);
    let done = |result| {
        let poller = POLLER.load(Ordering::Relaxed);
        if poller.is_null() {
            return;
        }
        // SAFETY: as in `answered`.
        unsafe {
            (*poller).told = Some(result);
            ngx_add_timer(ptr::addr_of_mut!((*poller).settle), 1);
        }
    };
    match ssf_poll_fleet::start(poller.log, uri, &commands, &telling, done) {
        Some(flight) => {
            let conn = flight.connection();
            poller.flight = Some(flight);
            poller.telling = Some(telling);
            Some(conn)
        }
        None => {
            fleet_told(poller, telling, Err(Failure::Internal(500)));
            None
        }
    }
}

/// The next poll after an answer that worked, `untold` of whose SETs the
/// fleet was not told (then not before one `interval`: the transmitter
/// sends them again).
fn scheduled(poller: &mut Poller, more: bool, took_ms: u64, untold: usize) {
    let owed = !poller.acks.is_empty() || !poller.errs.is_empty();
    let (mut wait, note) = poller.schedule.answered(more, owed, took_ms);
    if untold > 0 {
        let interval = main_conf()
            .and_then(|main| main.ssf_poll.as_ref())
            .map_or(poll::MAX_BACKOFF_MS, |conf| conf.interval_ms);
        wait = wait.max(interval);
    }
    if let Some(Note::Recovered { failures }) = note {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            poller.log,
            "auth_oauth2_token: SSF poll: the transmitter answers again (after {failures} failed polls)"
        );
    }
    next(poller, wait);
}

/// The fleet's call ended: the SETs it told (or that the fleet had) are
/// recorded and acknowledged, the others left for the transmitter to send
/// again, with one line when such an outage starts and one when it ends.
fn fleet_told(poller: &mut Poller, telling: Telling, result: Result<Vec<Reply>, Failure>) {
    let (more, took_ms) = (telling.more, telling.took_ms);
    let (told, untold) = ssf_poll_fleet::sort(telling, result, poller.log);
    for set in told {
        acknowledge(poller, set);
    }
    match (untold > 0, poller.fleet_down) {
        (true, false) => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                poller.log,
                "auth_oauth2_token: SSF poll: {untold} SETs applied here but the Redis tier was not told: not acknowledged, polled again"
            );
        }
        (false, true) => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                poller.log,
                "auth_oauth2_token: SSF poll: the Redis tier is told again"
            );
        }
        _ => {}
    }
    poller.fleet_down = untold > 0;
    scheduled(poller, more, took_ms, untold);
}

/// Records a SET applied here and acknowledges it in the next poll.
fn acknowledge(poller: &mut Poller, set: Applied) {
    let Some(main) = main_conf() else {
        return;
    };
    let Some(receiver) = main.ssf.as_ref() else {
        return;
    };
    match ssf_apply::record(
        receiver,
        &set.accepted,
        set.now,
        poller.log,
        &main.counters,
        set.dropped,
    ) {
        Remembered::New | Remembered::Full => {
            main.counters.add(receiver.metrics.delivery("accepted"), 1);
        }
        // Delivered again (our acknowledgement was lost): acknowledged again.
        Remembered::Seen => {}
    }
    poller.acks.push(set.accepted.jti);
}

/// One SET of an answer, checked and applied as a pushed one: what waits
/// to be recorded and acknowledged, or `None` when its `jti` went to the
/// next poll's `setErrs` (or nowhere: the list could not be written).
fn take(poller: &mut Poller, jti: &str, set: &[u8]) -> Option<Applied> {
    let main = main_conf()?;
    let receiver = main.ssf.as_ref()?;
    let now = now_ms();
    let verified = set::verify(
        set,
        receiver.keys.keys(),
        &receiver.stream,
        now.div_euclid(1000),
    )
    .and_then(|accepted| match accepted.jti == jti {
        true => Ok(accepted),
        false => Err(KEY_MISMATCH),
    });
    let accepted = match verified {
        Ok(accepted) => accepted,
        Err(error) => {
            main.counters.add(receiver.metrics.refusal(error.code), 1);
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                poller.log,
                "auth_oauth2_token: polled SET refused: {error}"
            );
            poller.errs.push((jti.to_string(), error));
            return None;
        }
    };
    // A list that cannot be written: neither acknowledged nor refused, so
    // the transmitter delivers it again.
    let Some((pushed, dropped)) = ssf_apply::revoke_all(main, receiver, &accepted, now, poller.log)
    else {
        main.counters
            .add(receiver.metrics.delivery("unavailable"), 1);
        return None;
    };
    Some(Applied {
        accepted,
        now,
        dropped,
        pushed,
    })
}

/// A poll that failed: counted, logged when an outage starts, retried
/// after the backoff. What the next poll acknowledges is kept.
fn failed(poller: &mut Poller, result: PollResult, why: &str) {
    count(|m| m.ssf_poll_ids().map(|ids| ids.poll(result)));
    let (wait, note) = poller.schedule.failed();
    if note == Some(Note::Down) {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            poller.log,
            "auth_oauth2_token: SSF poll failed: {why}; retrying with a backoff of up to {}s",
            poll::MAX_BACKOFF_MS.max(wait) / 1000
        );
    }
    next(poller, wait);
}

fn next(poller: &mut Poller, wait_ms: u64) {
    if exiting() {
        return;
    }
    // SAFETY: the tick event is the poller's own, alive until exit_process.
    unsafe { ngx_add_timer(&mut poller.tick, wait_ms.max(1) as ngx_msec_t) };
}

/// Counts one in the series `which` picks, when configured.
fn count(which: impl FnOnce(&crate::metrics::Catalogue) -> Option<usize>) {
    if let Some(main) = main_conf() {
        if let Some(id) = which(&main.metrics) {
            main.counters.add(id, 1);
        }
    }
}
