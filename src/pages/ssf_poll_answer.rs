//! A poll's answer (`pages/ssf_poll.rs`), once in: its SETs checked as a
//! pushed one is (`oauth/ssf/set.rs`), with the receiver's `keys=` file or
//! the transmitter's fetched keys (`pages/ssf_poll_keys.rs`, which may
//! make the check wait), and applied (`pages/ssf_apply.rs`); then, with
//! the Redis tier, the fleet told of them (`pages/ssf_poll_fleet.rs`); the
//! SETs applied (and told) recorded and acknowledged by the next poll, the
//! refused ones reported in its `setErrs`, and the next poll scheduled.

use core::ptr;
use core::sync::atomic::Ordering;

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_http_request_t, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN,
};

use super::ssf_apply;
use super::ssf_poll_fleet::{self, Applied, Telling};
use super::ssf_poll_keys::{self, PollKeys};
use super::ssf_poll_state::{count, failed, main_conf, next, Answer, Batch, Poller, POLLER};
use crate::conf::LocationConf;
use crate::metrics::ssf_poll::PollResult;
use crate::nginx::req::now_ms;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::ssf::poll::{self, Note};
use crate::oauth::ssf::set::{self, Code, SetError};
use crate::redis::call::Failure;
use crate::redis::resp::Reply;
use crate::shm::table::Remembered;

/// A SET delivered under another SET's `jti`.
const KEY_MISMATCH: SetError = SetError::new(
    Code::InvalidRequest,
    "the SET's jti is not the one it was delivered under",
);

/// The write handler of the request that fetches the transmitter's keys:
/// the fetch (or the wait) ended, the check goes on from the settle timer.
pub(super) unsafe extern "C" fn resumed(_r: *mut ngx_http_request_t) {
    let poller = POLLER.load(Ordering::Relaxed);
    if poller.is_null() {
        return;
    }
    // SAFETY: as in `answered`.
    unsafe { ngx_add_timer(ptr::addr_of_mut!((*poller).settle), 1) };
}

/// Reads the poll's answer and checks its SETs; in `run`, the connections
/// with work to start.
pub(super) fn read(poller: &mut Poller, answer: Answer, run: &mut Vec<*mut ngx_connection_t>) {
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
        return failed(poller, result, &why);
    }
    let parsed = match poll::parse_answer(&answer.body) {
        Ok(parsed) => parsed,
        Err(e) => return failed(poller, PollResult::Malformed, e.describe()),
    };
    count(|m| m.ssf_poll_ids().map(|ids| ids.poll(PollResult::Ok)));
    poller.acks.clear();
    poller.errs.clear();
    poller.batch = Some(Batch {
        sets: parsed.sets.into(),
        applied: Vec::new(),
        skipped: 0,
        more: parsed.more_available,
        took_ms: u64::try_from(now_ms() - poller.started_ms).unwrap_or(0),
        conf: answer.conf,
    });
    go_on(poller, run);
}

/// Checks and applies the batch's SETs, until one waits for the
/// transmitter's keys (its request's connection in `run`); then, once all
/// were, tells the fleet (its call's connection in `run`) or acknowledges
/// them.
pub(super) fn go_on(poller: &mut Poller, run: &mut Vec<*mut ngx_connection_t>) {
    let Some(mut batch) = poller.batch.take() else {
        return;
    };
    let Some((main, receiver, poll)) =
        main_conf().and_then(|m| Some((m, m.ssf.as_ref()?, m.ssf_poll.as_ref()?)))
    else {
        return;
    };
    while let Some((jti, set)) = batch.sets.pop_front() {
        let keys = match batch.conf {
            Some(conf) => ssf_poll_keys::keys_for(
                &mut poller.flight,
                (poll.server, poller.log),
                conf,
                receiver,
                set.as_bytes(),
                Some(resumed),
            ),
            None => PollKeys::File,
        };
        let applied = match keys {
            PollKeys::File => take(poller, &jti, set.as_bytes(), receiver.keys.keys()),
            PollKeys::Ready(keys) => take(poller, &jti, set.as_bytes(), &keys),
            PollKeys::Again(conn) => {
                batch.sets.push_front((jti, set));
                poller.batch = Some(batch);
                return run.push(conn);
            }
            // Neither acknowledged nor refused: the transmitter sends it again.
            PollKeys::Unavailable => {
                batch.skipped += 1;
                main.counters
                    .add(receiver.metrics.delivery("unavailable"), 1);
                None
            }
        };
        batch.applied.extend(applied);
    }
    keys_note(poller, &batch);
    // The key fetch's request; a refresh of the set may still run on it.
    if let Some(flight) = poller.flight.take() {
        match flight.busy() {
            true => {
                run.push(flight.connection());
                poller.draining.push(flight);
                // SAFETY: the settle event is the poller's own.
                unsafe { ngx_add_timer(&mut poller.settle, 10) };
            }
            false => flight.finish(),
        }
    }
    run.extend(applied(poller, batch));
}

/// One line when SETs start to go unchecked for want of the transmitter's
/// keys, one when they are checked again.
fn keys_note(poller: &mut Poller, batch: &Batch) {
    let checked = batch.applied.len() + poller.errs.len();
    match (batch.skipped > 0, poller.keys_down, checked > 0) {
        (true, false, _) => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                poller.log,
                "auth_oauth2_token: SSF poll: {} SETs not checked: the transmitter's JWK Set cannot be had; not acknowledged, polled again",
                batch.skipped
            );
        }
        (false, true, true) => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                poller.log,
                "auth_oauth2_token: SSF poll: the transmitter's JWK Set is had again"
            );
        }
        _ => return,
    }
    poller.keys_down = batch.skipped > 0;
}

/// The batch's SETs all checked: the fleet told of those applied (the
/// connection of its call), or they are acknowledged and the next poll
/// scheduled.
fn applied(poller: &mut Poller, batch: Batch) -> Option<*mut ngx_connection_t> {
    let Batch {
        applied,
        skipped,
        more,
        took_ms,
        conf,
        ..
    } = batch;
    let fleet = main_conf().and_then(|main| Some((main.redis.as_ref()?, main.ssf.as_ref()?)));
    let uri = conf.and_then(LocationConf::shared_cache_uri);
    let (Some(uri), Some((redis, receiver)), false) = (uri, fleet, applied.is_empty()) else {
        for set in applied {
            acknowledge(poller, set);
        }
        scheduled(poller, more, took_ms, skipped);
        return None;
    };
    let (commands, telling) =
        ssf_poll_fleet::tell(redis, receiver, applied, (more, took_ms, skipped));
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

/// The next poll after an answer that worked, `untold` of whose SETs were
/// not acknowledged (the fleet was not told, no keys to check them): then
/// not before one `interval`, as the transmitter sends them again.
pub(super) fn scheduled(poller: &mut Poller, more: bool, took_ms: u64, untold: usize) {
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
pub(super) fn fleet_told(
    poller: &mut Poller,
    telling: Telling,
    result: Result<Vec<Reply>, Failure>,
) {
    let (more, took_ms, skipped) = (telling.more, telling.took_ms, telling.skipped);
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
    scheduled(poller, more, took_ms, untold + skipped);
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
fn take(poller: &mut Poller, jti: &str, set: &[u8], keys: &[Jwk]) -> Option<Applied> {
    let main = main_conf()?;
    let receiver = main.ssf.as_ref()?;
    let now = now_ms();
    let verified =
        set::verify(set, keys, &receiver.stream, now.div_euclid(1000)).and_then(|accepted| {
            match accepted.jti == jti {
                true => Ok(accepted),
                false => Err(KEY_MISMATCH),
            }
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
