//! The poll's telling of the fleet (`pages/ssf_poll.rs`), with the Redis
//! tier: the SETs a poll's answer brought, applied here, wait for one
//! Redis call (`redis/ssf_tell.rs`'s commands for each, in one pipeline)
//! made as a subrequest of a request with no client of its own
//! (`nginx/detached.rs`); its replies say which SETs the fleet was told of
//! (or had already), to be recorded and acknowledged, and which not.

use ngx::ffi::ngx_log_t;

use super::ssf_apply::{self, PushedRevocation};
use crate::conf::ssf::SsfReceiver;
use crate::conf::{MainConf, RedisTier};
use crate::module::Module;
use crate::nginx::detached::Detached;
use crate::nginx::req::Req;
use crate::oauth::ssf::set::Accepted;
use crate::redis::call::{self, Failure};
use crate::redis::replay::FleetReplay;
use crate::redis::resp::Reply;
use crate::redis::ssf_tell::{self, Replies};
use ngx::http::HttpModuleMainConf;

/// A SET applied here, not recorded yet: when, the cache entries it
/// dropped, the revocations it put on the list.
pub struct Applied {
    pub accepted: Accepted,
    pub now: i64,
    pub dropped: usize,
    pub pushed: Vec<PushedRevocation>,
}

/// The SETs of an answer the fleet is being told of, and what the answer
/// said for the next poll's schedule.
pub struct Telling {
    sets: Vec<(Applied, Replies)>,
    pub more: bool,
    pub took_ms: u64,
    /// The answer's SETs not checked (no keys to be had).
    pub skipped: usize,
}

fn main_conf() -> Option<&'static MainConf> {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }
}

/// The commands telling the fleet, through the Redis tier `redis`, of the
/// SETs `applied` by `receiver`, and what waits for their replies (with
/// what the answer said: more to come, the time it took, SETs skipped).
pub fn tell(
    redis: &RedisTier,
    receiver: &SsfReceiver,
    applied: Vec<Applied>,
    (more, took_ms, skipped): (bool, u64, usize),
) -> (Vec<u8>, Telling) {
    let mut commands = Vec::new();
    let sets = applied
        .into_iter()
        .map(|set| {
            let replies = ssf_apply::tell_fleet(
                redis,
                receiver,
                &set.accepted,
                &set.pushed,
                set.now,
                &mut commands,
            );
            (set, replies)
        })
        .collect();
    let telling = Telling {
        sets,
        more,
        took_ms,
        skipped,
    };
    (commands, telling)
}

/// Starts the call through the Redis tier's location `uri` (of the poll's
/// server block), as the subrequest of a request of its own, which is
/// returned: run its posted requests, and finish it after `done` ran (with
/// the replies, or the failure the call logged).
pub fn start(
    log: *mut ngx_log_t,
    uri: &[u8],
    commands: &[u8],
    telling: &Telling,
    done: impl FnOnce(Result<Vec<Reply>, Failure>) + 'static,
) -> Option<Detached> {
    let conf = main_conf()?.ssf_poll.as_ref()?;
    let count = telling.sets.iter().map(|(_, r)| r.total()).sum();
    // SAFETY: the server context was kept by the directive from the
    // running cycle's configuration; the log is the cycle's.
    let flight = unsafe { Detached::new(conf.server.cast(), log) }?;
    // SAFETY: the request was just made by `Detached::new` and lives until
    // `finish`.
    let started = unsafe {
        Req::with(flight.request(), |req| {
            call::start(req, uri, commands, count, false, |_, result| done(result))
        })
    };
    if started.is_err() {
        flight.finish();
        return None;
    }
    Some(flight)
}

/// What the call said of each SET: those the fleet was told of (or had
/// already: another gateway polling the same stream, or this one's earlier
/// try whose replies were lost), and how many it was not told of (counted
/// as `unavailable` deliveries; an error reply noted once, a failed call
/// was by itself).
pub fn sort(
    telling: Telling,
    result: Result<Vec<Reply>, Failure>,
    log: *mut ngx_log_t,
) -> (Vec<Applied>, usize) {
    let expected: Vec<Replies> = telling.sets.iter().map(|(_, r)| *r).collect();
    let said = match &result {
        Ok(replies) => ssf_tell::told_each(replies, &expected),
        Err(failure) => vec![FleetReplay::Failed(failure.clone()); expected.len()],
    };
    let mut noted = result.is_err();
    let mut untold = 0;
    let mut told = Vec::with_capacity(said.len());
    for ((set, _), said) in telling.sets.into_iter().zip(said) {
        match said {
            FleetReplay::New | FleetReplay::Replayed => told.push(set),
            FleetReplay::Failed(failure) => {
                untold += 1;
                if !noted {
                    call::note_failure(log, &failure);
                    noted = true;
                }
            }
        }
    }
    if let Some((main, receiver)) = main_conf().and_then(|m| Some((m, m.ssf.as_ref()?))) {
        let id = receiver.metrics.delivery("unavailable");
        main.counters.add(id, untold as u64);
    }
    (told, untold)
}
