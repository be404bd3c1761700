//! A call to Redis, as the request flow makes it: an in-memory subrequest
//! to the internal location with `auth_oauth2_token_redis_pass`, whose
//! content handler (`redis/upstream.rs`) sends the pipeline and reads the
//! replies into the call; the post-subrequest handler hands them over.
//!
//! The call lives in the request pool and is found from the subrequest
//! through its record, as the value the subrequest was started with
//! (`nginx/subrequest.rs`): the module's context slot of the subrequest
//! belongs to the ACCESS/PREACCESS code.
//!
//! A failed call is logged here ([`note_failure`]): at most one line per
//! kind of failure every 10 s per worker, never per request.

use core::cell::RefCell;
use core::ptr::NonNull;
use std::rc::Rc;

use ngx::ffi::{
    ngx_int_t, ngx_log_t, NGX_HTTP_BAD_GATEWAY, NGX_HTTP_GATEWAY_TIME_OUT, NGX_LOG_ERR,
};
use ngx::http::HttpModuleMainConf;

use super::cluster_route::{self, After, Hop};
use super::deadline::Deadline;
pub use super::failure::Failure;
use super::failure::{self, KINDS, LOG_INTERVAL_S};
use crate::metrics::Catalogue;
use crate::module::Module;
use crate::nginx::req::Req;
use crate::nginx::subrequest;
use crate::redis::resp::{Limits, Reader, Reply};
use crate::resilience::log_gate::LogGate;

// The plain codes `Failure::of_ending` reads are nginx's.
const _: () = assert!(
    failure::BAD_GATEWAY == NGX_HTTP_BAD_GATEWAY as isize
        && failure::GATEWAY_TIME_OUT == NGX_HTTP_GATEWAY_TIME_OUT as isize
);

/// Called once per call, from the post-subrequest handler, with the parent
/// request (for waited calls nginx then runs the parent's phase handler
/// again). `Ok` holds one reply per command of the caller, in order; an
/// `-ERR` among them is a `Reply::Error` (see [`error_reply`]). A
/// `Failure` was already logged ([`note_failure`]).
type Done = Box<dyn FnOnce(&mut Req<'_>, Result<Vec<Reply>, Failure>)>;

/// One call's state, in the request pool.
pub struct Call {
    /// The caller's commands, RESP-encoded.
    pub(super) commands: Vec<u8>,
    /// How many replies they ask for.
    pub(super) count: usize,
    done: Option<Done>,
    /// What the upstream made of the replies (set by `redis/upstream.rs`).
    pub(super) outcome: Option<Result<Vec<Reply>, Failure>>,
    /// The replies read so far, the reader that keeps its place between
    /// the upstream's reads, and how many bytes of the upstream's buffer it
    /// was given (`redis/upstream.rs`).
    pub(super) replies: Vec<Reply>,
    pub(super) reader: Reader,
    pub(super) fed: usize,
    /// When the call gives up, and whether it did.
    pub(super) deadline: Deadline,
    /// With Redis Cluster: where the call goes, and what sends it again
    /// elsewhere (`redis/cluster_route.rs`).
    pub(super) hop: Option<Hop>,
    /// With Redis Cluster: the index of the call's node among the
    /// upstream's servers, when it is one (`redis/cluster_peer.rs` steers
    /// the balancer there).
    pub(super) server: Option<usize>,
}

/// Starts a call: `commands` (RESP, `count` commands) after the
/// configured `AUTH`/`SELECT`, through the internal location `uri` (a
/// location of this server with `auth_oauth2_token_redis_pass`). `req` is
/// not itself an in-memory subrequest (the tier's requests are main
/// requests, the purge page a client's).
///
/// Waited (`background == false`): return `NGX_AGAIN` from the phase
/// handler; `done` runs when the replies are in, then nginx runs the phase
/// handler again. Background: the client's request never waits for it (a
/// write to the Redis tier).
pub fn start(
    req: &mut Req<'_>,
    uri: &[u8],
    commands: &[u8],
    count: usize,
    background: bool,
    done: impl FnOnce(&mut Req<'_>, Result<Vec<Reply>, Failure>) + 'static,
) -> Result<(), ()> {
    let hop = cluster_route::first_hop(req, uri, commands, count, background);
    // A worker learns the cluster's map with its first call.
    if hop.is_some() && cluster_route::no_map() {
        read_map(req, uri);
    }
    launch(req, uri, commands, count, background, Box::new(done), hop)
}

/// Reads the cluster's slot map again in the background of `req` (a main
/// request), unless a read is running or recent (`redis/cluster_route.rs`).
fn read_map(req: &mut Req<'_>, uri: &[u8]) {
    let Some((commands, hop)) = cluster_route::refresh(uri) else {
        return;
    };
    let done: Done = Box::new(cluster_route::map_read);
    if launch(req, uri, &commands, 1, true, done, Some(hop)).is_err() {
        cluster_route::map_read(req, Err(Failure::Internal(500)));
    }
}

/// Reads the cluster's slot map from the seeds through `uri`, as a waited
/// call of `req` (a request with no client, `nginx/detached.rs`); `then`
/// runs once it ended, the map taken or not. `Err` when none started (one
/// is running or recent, `redis/cluster_route.rs`, or no memory).
pub fn read_slot_map(
    req: &mut Req<'_>,
    uri: &[u8],
    then: impl FnOnce(&mut Req<'_>) + 'static,
) -> Result<(), ()> {
    let (commands, hop) = cluster_route::refresh(uri).ok_or(())?;
    let done: Done = Box::new(move |req, result| {
        cluster_route::map_read(req, result);
        then(req);
    });
    let started = launch(req, uri, &commands, 1, false, done, Some(hop));
    if started.is_err() {
        cluster_route::map_read(req, Err(Failure::Internal(500)));
    }
    started
}

/// Starts the subrequest of a call whose commands are sent as `wire`
/// (`count` replies): [`start`]'s, and each of its redirections'
/// (`redis/cluster_route.rs`).
fn launch(
    req: &mut Req<'_>,
    uri: &[u8],
    wire: &[u8],
    count: usize,
    background: bool,
    done: Done,
    hop: Option<Hop>,
) -> Result<(), ()> {
    let call = Call {
        commands: wire.to_vec(),
        count,
        done: Some(done),
        outcome: None,
        replies: Vec::new(),
        reader: Reader::new(Limits::CALLS),
        fed: 0,
        deadline: Deadline::new(),
        hop,
        server: None,
    };
    // Kept in the request pool, which every subrequest shares and which
    // outlives them; dropped with it (its deadline disarmed first).
    subrequest::start(req, uri, background, call, call_done).map(|_| ())
}

/// The call a subrequest makes, when it is one of ours: a Call in the
/// request's pool.
pub(super) fn of(req: &Req<'_>) -> Option<NonNull<Call>> {
    subrequest::data_of::<Call>(req)
}

/// The subrequest is finalized: the replies (or the failure) go to the caller.
fn call_done(sr: &mut Req<'_>, call: &mut Call, rc: ngx_int_t) {
    call.deadline.disarm();
    let result = match call.outcome.take() {
        Some(outcome) => outcome,
        None => Err(Failure::of_ending(call.deadline.passed, rc, sr.status())),
    };
    // With Redis Cluster, a redirection sends the call on elsewhere (with
    // its `done`), and a failure may mean the slots moved.
    let result = match call.hop.take() {
        Some(hop) => match follow(sr, call, hop, result) {
            Some(result) => result,
            None => return,
        },
        None => result,
    };
    if let Err(failure) = &result {
        note_failure(sr.log(), failure);
    }
    if let (Some(done), Some(mut parent)) = (call.done.take(), sr.parent()) {
        done(&mut parent, result);
    }
}

/// A call of the cluster ended (`sr`, its subrequest): its result for the
/// caller, or `None` when a redirection sent it on (the next call has the
/// caller's `done`); the map is read again when the cluster may have changed.
fn follow(
    sr: &mut Req<'_>,
    call: &mut Call,
    hop: Hop,
    result: Result<Vec<Reply>, Failure>,
) -> Option<Result<Vec<Reply>, Failure>> {
    let uri = hop.uri().to_vec();
    let (after, refresh) = cluster_route::after(sr.log(), hop, &call.commands, result);
    let mut parent = sr.parent();
    if let (true, Some(parent)) = (refresh, parent.as_mut()) {
        read_map(parent, &uri);
    }
    let (wire, count, hop) = match after {
        After::Done(result) => return Some(result),
        After::Resend { wire, count, hop } => (wire, count, hop),
    };
    let (Some(mut parent), Some(caller)) = (parent, call.done.take()) else {
        return Some(Err(Failure::Redirected));
    };
    // The caller's `done` comes back here if the next call cannot start.
    let kept = Rc::new(RefCell::new(Some(caller)));
    let inner = Rc::clone(&kept);
    let forward: Done = Box::new(move |req, result| {
        if let Some(caller) = inner.borrow_mut().take() {
            caller(req, result);
        }
    });
    let background = hop.background();
    match launch(
        &mut parent,
        &uri,
        &wire,
        count,
        background,
        forward,
        Some(hop),
    ) {
        Ok(()) => None,
        Err(()) => {
            call.done = kept.borrow_mut().take();
            Some(Err(Failure::Internal(500)))
        }
    }
}

thread_local! {
    /// This worker's gate (nginx runs the module on one thread per worker).
    static GATE: RefCell<LogGate<KINDS>> = RefCell::new(LogGate::default());
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts `failure` in `oauth2_token_shared_cache_failures_total` and logs
/// it at `error`, unless a line about the same kind was logged by this
/// worker in the last 10 s. With Sentinel, a failure that may mean the
/// primary moved asks the sentinels again.
pub fn note_failure(log: *mut ngx_log_t, failure: &Failure) {
    // With Sentinel, a primary that cannot be reached or refuses writes
    // (a demoted one) may have moved: the sentinels are asked again.
    if matches!(failure, Failure::Connect | Failure::Timeout)
        || matches!(failure, Failure::ErrorReply(kind) if kind == "READONLY")
    {
        super::sentinel_watch::reask();
    }
    // SAFETY: a worker's cycle is set up before any request or event runs;
    // the main conf lives as long as the cycle.
    if let Some(main) = unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) } {
        main.counters
            .add(Catalogue::shared_failure(failure.metric()), 1);
    }
    let allowed = GATE.with(|gate| {
        gate.borrow_mut()
            .allow(failure.slot(), now_s(), LOG_INTERVAL_S)
    });
    if !allowed || log.is_null() {
        return;
    }
    ngx::ngx_log_error!(NGX_LOG_ERR, log, "{}", failure.log_line());
}

/// The failure an `-ERR` reply to the caller's own commands stands for,
/// `None` for any other reply: `note_failure(log, &f)` logs it.
pub fn error_reply(reply: &Reply) -> Option<Failure> {
    Failure::of_reply(reply)
}
