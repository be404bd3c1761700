//! The state of worker 0's Shared Signals poll (`pages/ssf_poll.rs`): the
//! poller (what the next poll acknowledges, the request in flight, the
//! answer and the fleet's replies once in, the backoff), and what a poll
//! that failed does: counted, logged once per outage, retried later.

use core::ptr;
use core::sync::atomic::AtomicPtr;
use std::collections::VecDeque;

use ngx::ffi::{ngx_add_timer, ngx_event_t, ngx_int_t, ngx_log_t, ngx_msec_t, NGX_LOG_WARN};
use ngx::http::HttpModuleMainConf;

use super::ssf_poll_fleet::{Applied, Telling};
use crate::conf::{LocationConf, MainConf};
use crate::metrics::ssf_poll::PollResult;
use crate::module::Module;
use crate::nginx::detached::Detached;
use crate::oauth::ssf::poll::{self, Note, Schedule};
use crate::oauth::ssf::set::SetError;
use crate::redis::call::Failure;
use crate::redis::resp::Reply;

/// What a poll's subrequest brought back, copied out of it.
pub(super) struct Answer {
    pub(super) rc: ngx_int_t,
    pub(super) status: usize,
    pub(super) body: Vec<u8>,
    /// The poll location's configuration.
    pub(super) conf: Option<&'static LocationConf>,
}

/// The SETs of an answer: those still to be checked (the transmitter's
/// keys are being fetched), and those applied.
pub(super) struct Batch {
    pub(super) sets: VecDeque<(String, String)>,
    pub(super) applied: Vec<Applied>,
    /// SETs not checked: no keys to be had.
    pub(super) skipped: usize,
    pub(super) more: bool,
    pub(super) took_ms: u64,
    pub(super) conf: Option<&'static LocationConf>,
}

pub(super) struct Poller {
    pub(super) schedule: Schedule,
    /// What the next poll says of the last answer's SETs.
    pub(super) acks: Vec<String>,
    pub(super) errs: Vec<(String, SetError)>,
    /// The poll in flight: its request, and its answer once in.
    pub(super) flight: Option<Detached>,
    /// When the poll in flight started (ms).
    pub(super) started_ms: i64,
    pub(super) answer: Option<Answer>,
    /// The answer being checked, while the transmitter's keys are fetched
    /// on the request in flight.
    pub(super) batch: Option<Batch>,
    /// Requests whose last subrequest (a key set's refresh in the
    /// background) has not ended yet; finished once it has.
    pub(super) draining: Vec<Detached>,
    /// The last answer had SETs not checked for want of keys.
    pub(super) keys_down: bool,
    /// The fleet's call in flight, and its replies once in.
    pub(super) telling: Option<Telling>,
    pub(super) told: Option<Result<Vec<Reply>, Failure>>,
    /// The last call left SETs the fleet was not told of.
    pub(super) fleet_down: bool,
    pub(super) tick: ngx_event_t,
    pub(super) settle: ngx_event_t,
    pub(super) log: *mut ngx_log_t,
}

/// Worker 0's poller, made by `init_process`.
pub(super) static POLLER: AtomicPtr<Poller> = AtomicPtr::new(ptr::null_mut());

pub(super) fn main_conf() -> Option<&'static MainConf> {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }
}

pub(super) fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

/// after the backoff. What the next poll acknowledges is kept.
pub(super) fn failed(poller: &mut Poller, result: PollResult, why: &str) {
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

pub(super) fn next(poller: &mut Poller, wait_ms: u64) {
    if exiting() {
        return;
    }
    // SAFETY: the tick event is the poller's own, alive until exit_process.
    unsafe { ngx_add_timer(&mut poller.tick, wait_ms.max(1) as ngx_msec_t) };
}

/// Counts one in the series `which` picks, when configured.
pub(super) fn count(which: impl FnOnce(&crate::metrics::Catalogue) -> Option<usize>) {
    if let Some(main) = main_conf() {
        if let Some(id) = which(&main.metrics) {
            main.counters.add(id, 1);
        }
    }
}
