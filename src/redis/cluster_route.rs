//! Redis Cluster's glue (`auth_oauth2_token_redis SEEDS ... cluster`): the
//! upstream's servers are seed nodes; each worker keeps its own slot map
//! (`redis/cluster.rs`), read with `CLUSTER SLOTS` from a seed (through
//! nginx's balancer, which skips a seed that is down) when its first call
//! starts, and again after a `-MOVED`, or a call that found no connection
//! or no answer (a node down: the cluster may have failed over), at most
//! every 500 ms. A call goes to its slot's primary (`redis/upstream.rs`
//! points the upstream at it, as for Sentinel's primary); a slot the map
//! does not know goes to the seeds, which redirect. `-MOVED` and `-ASK`
//! send the call again to the node they name (from the post-subrequest
//! handler, with the caller's `done`), at most three times.

use core::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use ngx::ffi::{NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::call::{self, Call, Done, Failure};
use super::peers::Peer;
use crate::nginx::req::Req;
use crate::redis::cluster::{self, Next, Redirection, Refreshes, SlotMap};
use crate::redis::resp::{self, Reply};
use crate::resilience::log_gate::LogGate;

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The upstream's servers, through nginx's balancer: the map's reads.
    Seeds,
    /// The primary the map names for the slot (the seeds if none).
    Slot(u16),
    /// Where a redirection for the slot sent the call (after `ASKING`).
    Node {
        slot: u16,
        to: SocketAddr,
        asking: bool,
    },
}

/// A call's way through the cluster: where it goes now, how many
/// redirections it followed, and what it sends again after one.
pub(super) struct Hop {
    route: Route,
    hops: u8,
    /// The caller's commands (without `ASKING`) and how many.
    commands: Vec<u8>,
    count: usize,
    uri: Vec<u8>,
    background: bool,
}

thread_local! {
    /// This worker's map (nginx runs the module on one thread per worker).
    static MAP: RefCell<SlotMap> = RefCell::new(SlotMap::default());
    static REFRESHES: RefCell<Refreshes> = RefCell::new(Refreshes::default());
    /// Lines about maps (a new one is always told): one refused (1), a
    /// slot moved (2).
    static GATE: RefCell<LogGate<3>> = RefCell::new(LogGate::default());
}

fn is_cluster(req: &Req<'_>) -> bool {
    req.main_conf()
        .and_then(|m| m.redis.as_ref())
        .is_some_and(|t| t.cluster)
}

/// Whether a line of `kind` may be written now (one per 10 s per worker).
fn allow_line(kind: usize) -> bool {
    let now_s = (now_ms() / 1000) as u64;
    GATE.with(|g| g.borrow_mut().allow(kind, now_s, 10))
}

fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

/// The way of a new call of `count` `commands` through `uri`, with
/// Redis Cluster (`None` otherwise). A worker without a map asks for one.
pub(super) fn first_hop(
    req: &mut Req<'_>,
    uri: &[u8],
    commands: &[u8],
    count: usize,
    background: bool,
) -> Option<Hop> {
    if !is_cluster(req) {
        return None;
    }
    if MAP.with(|m| m.borrow().is_empty()) {
        refresh(req, uri);
    }
    let route = match cluster::call_slot(commands, count) {
        Some(slot) => Route::Slot(slot),
        None => Route::Seeds,
    };
    Some(Hop {
        route,
        hops: 0,
        commands: commands.to_vec(),
        count,
        uri: uri.to_vec(),
        background,
    })
}

/// The node `call` goes to; `None`: the upstream's servers.
pub(super) fn target(call: &Call) -> Option<Peer> {
    let to = match call.hop.as_ref()?.route {
        Route::Seeds => None,
        Route::Slot(slot) => MAP.with(|m| m.borrow().node(slot)),
        Route::Node { to, .. } => Some(to),
    }?;
    Some(Peer::of(to))
}

/// A call of the cluster ended (`sr`, its subrequest): its result for the
/// caller, or `None` when a redirection sent it on (the next call has
/// `done`). `done` stays when the call could not be sent on.
pub(super) fn after(
    sr: &mut Req<'_>,
    hop: Hop,
    result: Result<Vec<Reply>, Failure>,
    done: &mut Option<Done>,
) -> Option<Result<Vec<Reply>, Failure>> {
    let (slot, asking) = match hop.route {
        Route::Seeds => return Some(result),
        Route::Slot(slot) => (slot, false),
        Route::Node { slot, asking, .. } => (slot, asking),
    };
    let replies = match result {
        Err(failure) => {
            // A node down, or hung: the cluster may have moved its slots.
            if matches!(failure, Failure::Connect | Failure::Timeout) {
                if let Some(mut parent) = sr.parent() {
                    refresh(&mut parent, &hop.uri);
                }
            }
            return Some(Err(failure));
        }
        Ok(replies) if asking => match cluster::without_asking(replies) {
            Some(replies) => replies,
            None => return Some(Err(Failure::Protocol)),
        },
        Ok(replies) => replies,
    };
    let to = match cluster::next(&replies, Some(slot), hop.hops) {
        Next::Done => return Some(Ok(replies)),
        Next::GiveUp => return Some(Err(Failure::Redirected)),
        Next::Follow(to) => to,
    };
    let Some(mut parent) = sr.parent() else {
        return Some(Err(Failure::Redirected));
    };
    let asking = matches!(to, Redirection::Ask { .. });
    if let Redirection::Moved { slot, to } = to {
        // Told when the map named another node (not while it learns).
        let known = MAP.with(|m| {
            let mut m = m.borrow_mut();
            let known = m.node(slot).is_some_and(|node| node != to);
            m.moved(slot, to);
            known
        });
        if known && allow_line(2) {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                sr.log(),
                "auth_oauth2_token: cluster: slot {slot} moved to {to}; reading the slot map again"
            );
        }
        refresh(&mut parent, &hop.uri);
    }
    let wire = match asking {
        true => cluster::with_asking(&hop.commands, hop.count),
        false => Some(hop.commands.clone()),
    };
    let (Some(wire), Some(caller)) = (wire, done.take()) else {
        return Some(Err(Failure::Redirected));
    };
    let count = hop.count * if asking { 2 } else { 1 };
    // The caller's `done` comes back here if the next call cannot start.
    let kept = Rc::new(RefCell::new(Some(caller)));
    let inner = Rc::clone(&kept);
    let forward: Done = Box::new(move |req, result| {
        if let Some(caller) = inner.borrow_mut().take() {
            caller(req, result);
        }
    });
    let uri = hop.uri.clone();
    let next = Hop {
        route: Route::Node {
            slot,
            to: to.to(),
            asking,
        },
        hops: hop.hops + 1,
        ..hop
    };
    let background = next.background;
    match call::launch(
        &mut parent,
        &uri,
        &wire,
        count,
        background,
        forward,
        Some(next),
    ) {
        Ok(()) => None,
        Err(()) => {
            *done = kept.borrow_mut().take();
            Some(Err(Failure::Internal(500)))
        }
    }
}

/// Reads the map again from a seed, in the background of `req` (a main
/// request), unless a read is running or was started less than 500 ms ago.
fn refresh(req: &mut Req<'_>, uri: &[u8]) {
    if !REFRESHES.with(|r| r.borrow_mut().start(now_ms())) {
        return;
    }
    let mut commands = Vec::with_capacity(32);
    resp::command(&mut commands, cluster::SLOTS_COMMAND);
    let hop = Hop {
        route: Route::Seeds,
        hops: 0,
        commands: Vec::new(),
        count: 1,
        uri: uri.to_vec(),
        background: true,
    };
    let done: Done = Box::new(map_read);
    if call::launch(req, uri, &commands, 1, true, done, Some(hop)).is_err() {
        REFRESHES.with(|r| r.borrow_mut().ended());
    }
}

/// `CLUSTER SLOTS` answered: the map is this worker's from now on, unless
/// it is refused (the last one stays).
fn map_read(req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>) {
    REFRESHES.with(|r| r.borrow_mut().ended());
    // A failure was logged by the call.
    let Ok(replies) = result else {
        return;
    };
    let parsed = match replies.first() {
        Some(reply) => SlotMap::parse(reply),
        None => Err("no reply".into()),
    };
    let log = req.log();
    match parsed {
        Ok(map) => {
            let (ranges, primaries) = map.size();
            let changed = MAP.with(|m| {
                let mut m = m.borrow_mut();
                let changed = *m != map;
                *m = map;
                changed
            });
            if changed {
                ngx::ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "auth_oauth2_token: cluster: slot map read: {ranges} ranges on {primaries} primaries"
                );
            }
        }
        Err(why) => {
            if allow_line(1) {
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "auth_oauth2_token: cluster: a slot map was refused ({why}); the last one stays"
                );
            }
        }
    }
}
