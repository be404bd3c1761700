//! Redis Cluster's glue (`auth_oauth2_token_redis SEEDS ... cluster`): the
//! upstream's servers are seed nodes; each worker keeps its own slot map
//! (`redis/cluster.rs`), read with `CLUSTER SLOTS` from a seed (through
//! nginx's balancer, which skips a seed that is down) when its first call
//! starts, and again after a `-MOVED`, a `-CLUSTERDOWN`, or a call that
//! found no connection or no answer (a node down: the cluster may have
//! failed over), at most every 500 ms. A call goes to its slot's primary (`redis/upstream.rs`
//! points the upstream at it, as for Sentinel's primary); a slot the map
//! does not know goes to the seeds, which redirect. `-MOVED` and `-ASK`
//! send the call again to the node they name (from the post-subrequest
//! handler, with the caller's `done`), at most three times.

use core::cell::RefCell;
use std::net::SocketAddr;

use ngx::ffi::{NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::failure::Failure;
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
    /// The caller's commands (without `ASKING`) when the call sent them
    /// with `ASKING`; `None`: the call sent them as they are (no copy).
    commands: Option<Vec<u8>>,
    /// How many commands the caller's are.
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
/// Redis Cluster (`None` otherwise).
pub(super) fn first_hop(
    req: &Req<'_>,
    uri: &[u8],
    commands: &[u8],
    count: usize,
    background: bool,
) -> Option<Hop> {
    if !is_cluster(req) {
        return None;
    }
    let route = match cluster::call_slot(commands, count) {
        Some(slot) => Route::Slot(slot),
        None => Route::Seeds,
    };
    Some(Hop {
        route,
        hops: 0,
        commands: None,
        count,
        uri: uri.to_vec(),
        background,
    })
}

/// Whether this worker has no map yet (its first call asks for one).
pub(super) fn no_map() -> bool {
    MAP.with(|m| m.borrow().is_empty())
}

/// The node a call on its way `hop` goes to; `None`: the upstream's servers.
pub(super) fn target(hop: Option<&Hop>) -> Option<SocketAddr> {
    match hop?.route {
        Route::Seeds => None,
        Route::Slot(slot) => MAP.with(|m| m.borrow().node(slot)),
        Route::Node { to, .. } => Some(to),
    }
}

/// What becomes of a call of the cluster that ended.
pub(super) enum After {
    /// The caller's result.
    Done(Result<Vec<Reply>, Failure>),
    /// A redirection: send `wire` (`count` replies) again, on its way `hop`.
    Resend {
        wire: Vec<u8>,
        count: usize,
        hop: Hop,
    },
}

impl Hop {
    /// The location the call goes through (for the next call or a map read).
    pub(super) fn uri(&self) -> &[u8] {
        &self.uri
    }

    pub(super) fn background(&self) -> bool {
        self.background
    }
}

/// A call of the cluster on its way `hop` ended (`log`, its subrequest's
/// log; `sent`, what it sent): the result for the caller, or the call sent
/// again after a redirection; and whether the map is to be read again.
pub(super) fn after(
    log: *mut ngx::ffi::ngx_log_t,
    mut hop: Hop,
    sent: &[u8],
    result: Result<Vec<Reply>, Failure>,
) -> (After, bool) {
    let (slot, asking) = match hop.route {
        Route::Seeds => return (After::Done(result), false),
        Route::Slot(slot) => (slot, false),
        Route::Node { slot, asking, .. } => (slot, asking),
    };
    let replies = match result {
        // A node down, or hung: the cluster may have moved its slots.
        Err(failure) => {
            let refresh = matches!(failure, Failure::Connect | Failure::Timeout);
            return (After::Done(Err(failure)), refresh);
        }
        Ok(replies) if asking => match cluster::without_asking(replies) {
            Some(replies) => replies,
            None => return (After::Done(Err(Failure::Protocol)), false),
        },
        Ok(replies) => replies,
    };
    let to = match cluster::next(&replies, Some(slot), hop.hops) {
        Next::Done => {
            let down = cluster::says_down(&replies);
            return (After::Done(Ok(replies)), down);
        }
        Next::GiveUp => return (After::Done(Err(Failure::Redirected)), false),
        Next::Follow(to) => to,
    };
    let asking = matches!(to, Redirection::Ask { .. });
    let moved = matches!(to, Redirection::Moved { .. });
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
                log,
                "auth_oauth2_token: cluster: slot {slot} moved to {to}; reading the slot map again"
            );
        }
    }
    let own = hop.commands.take().unwrap_or_else(|| sent.to_vec());
    let (wire, commands) = match asking {
        true => (cluster::with_asking(&own, hop.count), Some(own)),
        false => (Some(own), None),
    };
    let Some(wire) = wire else {
        return (After::Done(Err(Failure::Redirected)), moved);
    };
    let count = hop.count * if asking { 2 } else { 1 };
    let next = Hop {
        route: Route::Node {
            slot,
            to: to.to(),
            asking,
        },
        hops: hop.hops + 1,
        commands,
        ..hop
    };
    (
        After::Resend {
            wire,
            count,
            hop: next,
        },
        moved,
    )
}

/// A read of the map through `uri`, unless one is running or was started
/// less than 500 ms ago: the command and its way (to the seeds). The
/// caller starts it in the background, with [`map_read`] for its replies
/// (or calls [`map_read`] with its failure when it cannot start).
pub(super) fn refresh(uri: &[u8]) -> Option<(Vec<u8>, Hop)> {
    if !REFRESHES.with(|r| r.borrow_mut().start(now_ms())) {
        return None;
    }
    let mut commands = Vec::with_capacity(32);
    resp::command(&mut commands, cluster::SLOTS_COMMAND);
    let hop = Hop {
        route: Route::Seeds,
        hops: 0,
        commands: None,
        count: 1,
        uri: uri.to_vec(),
        background: true,
    };
    Some((commands, hop))
}

/// `CLUSTER SLOTS` answered: the map is this worker's from now on, unless
/// it is refused (the last one stays).
pub(super) fn map_read(req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>) {
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
