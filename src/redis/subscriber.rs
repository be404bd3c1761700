//! The revocation channel's glue: worker 0 of each gateway subscribes to
//! `<prefix>purge` on the Redis tier and drops the token of every message
//! it applies from this gateway's zones (`shm/zone.rs`). One non-blocking
//! connection, outside any request, whose steps (what to send, what the
//! replies mean, which messages to apply, when to ping and when to
//! reconnect) are the plain `redis/subscription.rs`: this file feeds it the
//! connection's events with nginx's clock and carries out its actions,
//! counting them in the metrics (`metrics/channel.rs`). Every timer is
//! cancelable, so a graceful shutdown never waits for it.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t,
    ngx_handle_read_event, ngx_handle_write_event, ngx_int_t, ngx_log_t, ngx_str_t, NGX_AGAIN,
    NGX_LOG_CRIT, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SINGLE,
    NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use crate::metrics::channel::ChannelIds;
use crate::metrics::Counters;
use crate::module::Module;
use crate::redis::fleet::{self, Purge};
use crate::redis::subscription::{Action, Event, Note, Subscription, Trouble};
use crate::shm::{revocations, zone};

use super::peers::{self, peers_of, Peer};
use super::sentinel_watch;
use super::tls;

/// Whether the tier's server is the primary Sentinel names.
fn sentinel() -> bool {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }
        .and_then(|m| m.redis.as_ref())
        .is_some_and(|t| t.sentinel.is_some())
}

const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 16 * 1024;

struct Subscriber {
    peers: Vec<Peer>,
    /// The server connected to when it is not one of the upstream's: with
    /// Sentinel, the primary (copied at each connect; the upstream's servers
    /// are the sentinels, never subscribed to); with Redis Cluster, the node
    /// a redirection named.
    elsewhere: Option<Peer>,
    /// With Sentinel, no connection was tried yet: waiting for a primary.
    waiting: bool,
    /// The conversation's steps (plain, `redis/subscription.rs`).
    steps: Subscription,
    conn: *mut ngx_connection_t,
    /// The connection is being opened: its first write event says it is.
    connecting: bool,
    /// What the steps asked to send, and how much of it went.
    out: Vec<u8>,
    sent: usize,
    retry: ngx_event_t,
    /// The steps' watch over the connection (handshake and PING deadlines).
    watch: ngx_event_t,
    /// The channel's series in the metrics.
    ids: Option<ChannelIds>,
    /// The cycle's log, for our own lines.
    log: *mut ngx_log_t,
    /// A copy at `crit`, for the connection: nginx's own line per failed
    /// attempt would repeat every few seconds during an outage.
    quiet_log: ngx_log_t,
}

/// This worker's subscriber (worker 0 only), made by `init_process`.
static SUBSCRIBER: AtomicPtr<Subscriber> = AtomicPtr::new(ptr::null_mut());

/// `init_process`: worker 0 subscribes when the Redis tier is configured.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx sets which process this is before it calls init_process.
    let (process, worker) = unsafe { (ngx::ffi::ngx_process as u32, ngx::ffi::ngx_worker) };
    if (process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE) || worker != 0 {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: nginx calls init_process in the new process with its cycle,
    // whose main conf and log live as long as it.
    let (main, log) = unsafe { (Module::main_conf(&*cycle), (*cycle).log) };
    let Some(tier) = main.and_then(|m| m.redis.as_ref()) else {
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the tier's upstream was set up by nginx's upstream init
    // (init_main_conf) before any process started.
    let peers = unsafe { peers_of(tier.upstream.cast()) };
    if peers.is_empty() {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "auth_oauth2_token: revocation channel: the Redis upstream has no usable server"
        );
        return NGX_OK as ngx_int_t;
    }
    let steps = Subscription::new(
        &tier.preamble,
        tier.preamble_replies,
        &tier.channel(),
        peers.len(),
        Box::new(open),
    );
    // With a Shared Signals receiver, the revocations other gateways were
    // pushed are read first, every time the channel is subscribed.
    let steps = match main.is_some_and(|m| m.ssf.is_some()) {
        true => steps.with_list(&tier.revocation_list(), tier.cluster),
        false => steps,
    };
    // SAFETY: `log` is the cycle's, live (above); it is copied.
    let mut quiet_log = unsafe { *log };
    quiet_log.log_level = NGX_LOG_CRIT as ngx::ffi::ngx_uint_t;
    let mut sub = Box::new(Subscriber {
        peers,
        elsewhere: None,
        waiting: sentinel(),
        steps,
        conn: ptr::null_mut(),
        connecting: false,
        out: Vec::new(),
        sent: 0,
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        retry: unsafe { core::mem::zeroed() },
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        watch: unsafe { core::mem::zeroed() },
        ids: main.and_then(|m| m.metrics.channel_ids()),
        log,
        quiet_log,
    });
    // The names stay where they are: each is a Vec's heap bytes.
    for peer in &mut sub.peers {
        peer.name_str = ngx_str_t {
            len: peer.name.len(),
            data: peer.name.as_mut_ptr(),
        };
    }
    let ids = sub.ids;
    let sub = Box::into_raw(sub);
    // SAFETY: `sub` was just leaked, and is freed only by exit_process,
    // after it took these events out of the timer tree; they are its own.
    let events = unsafe {
        [
            (&mut (*sub).retry, on_retry as unsafe extern "C" fn(_)),
            (&mut (*sub).watch, on_watch),
        ]
    };
    for (ev, handler) in events {
        ev.data = sub.cast();
        ev.handler = Some(handler);
        ev.log = log;
        ev.set_cancelable(1);
    }
    SUBSCRIBER.store(sub, Ordering::Relaxed);
    // Down until subscribed (the gauge outlives a reload, and the
    // worker 0 before this one).
    gauge(ids, false);
    // With Sentinel, the first connection waits for the primary's address
    // (`primary_known`).
    if sentinel() {
        sentinel_watch::on_primary(primary_known);
        if sentinel_watch::with_primary(|p| p.is_none()) {
            return NGX_OK as ngx_int_t;
        }
    }
    // SAFETY: `sub` is this worker's subscriber, leaked just above and
    // freed only by exit_process.
    unsafe { run(sub, Event::Timer) };
    NGX_OK as ngx_int_t
}

/// With Sentinel, a primary is known: the first connection opens now
/// (later ones follow the steps' own timers).
fn primary_known() {
    let sub = SUBSCRIBER.load(Ordering::Relaxed);
    // SAFETY: `sub` is this worker's subscriber when not null, alive until
    // exit_process, which clears SUBSCRIBER first.
    unsafe {
        if sub.is_null() || !(*sub).waiting {
            return;
        }
        (*sub).waiting = false;
        run(sub, Event::Timer);
    }
}

/// `exit_process`: closes the channel.
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    let sub = SUBSCRIBER.swap(ptr::null_mut(), Ordering::Relaxed);
    if sub.is_null() {
        return;
    }
    // SAFETY: sub was leaked by init_process in this process and is
    // dropped once, here; its events are removed before it goes.
    unsafe {
        close(sub);
        let retry = ptr::addr_of_mut!((*sub).retry);
        if (*retry).timer_set() != 0 {
            ngx_del_timer(retry);
        }
        drop(Box::from_raw(sub));
    }
}

fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

/// nginx's cached time, as purge messages carry it (ms since the epoch).
fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

/// Opens a message with the keys of this worker's configuration.
fn open(message: &[u8]) -> Option<Purge> {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    let main = unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }?;
    let redis = main.redis.as_ref()?;
    fleet::open_purge(&redis.keys, &redis.channel(), message)
}

/// Applies `f` to the metrics' counters and the channel's series `ids`,
/// when the configuration has them.
fn metrics(ids: Option<ChannelIds>, f: impl FnOnce(&Counters, ChannelIds)) {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    let Some(main) = (unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }) else {
        return;
    };
    if let Some(ids) = ids {
        f(&main.counters, ids);
    }
}

fn gauge(ids: Option<ChannelIds>, up: bool) {
    metrics(ids, |counters, ids| counters.set(ids.up(), u64::from(up)));
}

/// Feeds `event` to the steps and carries out what they ask, in order.
///
/// # Safety
/// `sub` must be this worker's subscriber.
unsafe fn run(sub: *mut Subscriber, event: Event<'_>) {
    // SAFETY: `sub` is this worker's subscriber (this function's contract),
    // alive until exit_process; the `&mut` lasts for the call. No reference
    // into it is held across the calls below, which may run the steps
    // again (a connection that fails at once).
    let (actions, ids, log) =
        unsafe { ((*sub).steps.handle(now_ms(), event), (*sub).ids, (*sub).log) };
    for action in actions {
        match action {
            // SAFETY: `sub` is this worker's subscriber (this function's contract).
            Action::Connect(server) => unsafe { connect(sub, server, None) },
            // SAFETY: as above.
            Action::ConnectTo(node) => unsafe { connect(sub, 0, Some(Peer::of(node))) },
            // SAFETY: `sub` is this worker's subscriber (this function's contract); the
            // `&mut` ends before `send`.
            Action::Send(bytes) => unsafe {
                let s = &mut *sub;
                s.out.drain(..s.sent.min(s.out.len()));
                s.sent = 0;
                s.out.extend_from_slice(&bytes);
                send(sub);
            },
            Action::Purge(purge) => revoked(&purge),
            Action::Count(delivery) => {
                let count =
                    |counters: &Counters, ids: ChannelIds| counters.add(ids.messages(delivery), 1);
                metrics(ids, count);
            }
            // A worker on its way out leaves the gauge to the new one.
            Action::Up(_) if exiting() => {}
            Action::Up(up) => gauge(ids, up),
            Action::Log(note) => {
                let level = match note {
                    Note::Subscribed => NGX_LOG_INFO,
                    Note::SubscribedAgain => NGX_LOG_NOTICE,
                    Note::Down(_) | Note::Refused { .. } => NGX_LOG_WARN,
                };
                ngx::ngx_log_error!(level, log, "auth_oauth2_token: {note}");
            }
            Action::Close => {
                // SAFETY: `sub` is this worker's subscriber (this function's contract).
                unsafe { close(sub) };
                if exiting() {
                    return;
                }
            }
            // SAFETY: the watch event is the subscriber's own, which lives
            // until exit_process (this function's contract).
            Action::Watch(ms) => unsafe {
                ngx_add_timer(ptr::addr_of_mut!((*sub).watch), ms as ngx::ffi::ngx_msec_t);
            },
            // SAFETY: the retry event is the subscriber's own, which lives
            // until exit_process (this function's contract).
            Action::RetryAfter(ms) => unsafe {
                ngx_add_timer(ptr::addr_of_mut!((*sub).retry), ms as ngx::ffi::ngx_msec_t);
            },
        }
    }
}

/// Opens a connection to the server with index `server` (or to `node`);
/// the steps hear `Connected` once it is open, `Failed` if it cannot be.
///
/// # Safety
/// `sub` must be this worker's subscriber, without a connection.
unsafe fn connect(sub: *mut Subscriber, server: usize, node: Option<Peer>) {
    if exiting() {
        return;
    }
    // SAFETY: `sub` is this worker's subscriber (this function's contract);
    // `s` is not used once `run` is called below.
    let s = unsafe { &mut *sub };
    let index = server % s.peers.len();
    let peer = if node.is_some() || sentinel() {
        // The node named, or the primary the sentinels named, if any yet.
        s.elsewhere = node.or_else(|| {
            sentinel_watch::with_primary(|p| {
                p.map(|p| Peer {
                    sockaddr: p.sockaddr.clone(),
                    socklen: p.socklen,
                    name: p.name.clone(),
                    name_str: ngx_str_t::empty(),
                })
            })
        });
        let Some(peer) = s.elsewhere.as_mut() else {
            let trouble = Trouble::CannotConnect("the primary (no sentinel named it yet)".into());
            // SAFETY: `sub` is this worker's subscriber; `s` is not used after.
            return unsafe { run(sub, Event::Failed(trouble)) };
        };
        peer.name_str = ngx_str_t {
            len: peer.name.len(),
            data: peer.name.as_mut_ptr(),
        };
        peer
    } else {
        &mut s.peers[index]
    };
    let peer_name = peer.name.clone();
    let log = ptr::addr_of_mut!(s.quiet_log);
    let handlers = (Some(on_read as _), Some(on_write as _));
    // SAFETY: the peer and the log live in the subscriber until
    // exit_process; the handlers take a connection whose data is the
    // subscriber.
    let opened =
        unsafe { peers::connect(peer, log, sub.cast(), handlers, CONNECT_TIMEOUT_MS as _) };
    let Some(opened) = opened else {
        let name = String::from_utf8_lossy(&peer_name).into_owned();
        // SAFETY: `sub` is this worker's subscriber; `s` is not used after.
        unsafe { run(sub, Event::Failed(Trouble::CannotConnect(name))) };
        return;
    };
    (s.conn, s.connecting) = (opened.conn, opened.connecting);
    if s.connecting {
        return;
    }
    // SAFETY: `sub` is this worker's subscriber, with this connection; `s`
    // is not used after.
    unsafe { connected(sub) };
}

/// The connection is open: with the tier's TLS, its handshake first; the
/// steps hear `Connected` once the server may be spoken to.
///
/// # Safety
/// `sub` must be this worker's subscriber, with a connection just opened.
unsafe fn connected(sub: *mut Subscriber) {
    if !tls::channel_tls() {
        // SAFETY: `sub` is this worker's subscriber (this function's contract).
        return unsafe { run(sub, Event::Connected) };
    }
    // SAFETY: the connection is open and ours, without TLS yet; the
    // handler takes a connection whose data is the subscriber.
    match unsafe {
        tls::start_handshake((*sub).conn, Some(handshake_done), CONNECT_TIMEOUT_MS as _)
    } {
        // SAFETY: `sub` is this worker's subscriber (this function's contract).
        Ok(true) => unsafe { handshaken(sub) },
        Ok(false) => {}
        // SAFETY: `sub` is this worker's subscriber (this function's contract).
        Err(why) => unsafe { run(sub, Event::Failed(Trouble::Tls(why))) },
    }
}

/// nginx's end of a TLS handshake that had to wait.
unsafe extern "C" fn handshake_done(c: *mut ngx_connection_t) {
    // SAFETY: the connection's data is the subscriber (connect).
    unsafe { handshaken((*c).data.cast()) }
}

/// The handshake ended: the connection's events are the subscriber's
/// again, and the steps hear whether it may be used.
///
/// # Safety
/// `sub` must be this worker's subscriber, whose connection's handshake ended.
unsafe fn handshaken(sub: *mut Subscriber) {
    // SAFETY: the connection is open and ours (connect), its events live.
    let result = unsafe {
        let c = (*sub).conn;
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        tls::handshake_result(c)
    };
    let event = match result {
        Ok(()) => Event::Connected,
        Err(why) => Event::Failed(Trouble::Tls(why)),
    };
    // SAFETY: `sub` is this worker's subscriber (this function's contract).
    unsafe { run(sub, event) };
}

unsafe extern "C" fn on_retry(ev: *mut ngx_event_t) {
    // SAFETY: the retry event's data is the subscriber (init_process).
    unsafe { run((*ev).data.cast(), Event::Timer) }
}

unsafe extern "C" fn on_watch(ev: *mut ngx_event_t) {
    // SAFETY: the watch event's data is the subscriber (init_process).
    unsafe { run((*ev).data.cast(), Event::Watch) }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: the connection's data is the subscriber (connect); nginx
    // calls the handler with the connection's write event.
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        let sub = (*c).data.cast::<Subscriber>();
        if (*ev).timedout() != 0 {
            run(sub, Event::Failed(Trouble::ConnectTimedOut));
            return;
        }
        if (*ev).timer_set() != 0 {
            ngx_del_timer(ev);
        }
        if (*sub).connecting {
            (*sub).connecting = false;
            connected(sub);
            return;
        }
        send(sub);
    }
}

/// Sends what is left of the bytes the steps asked to send.
///
/// # Safety
/// `sub` must be this worker's subscriber, with a connection.
unsafe fn send(sub: *mut Subscriber) {
    // SAFETY: the connection is open and ours (connect).
    unsafe {
        let s = &mut *sub;
        let c = s.conn;
        while s.sent < s.out.len() {
            let Some(send) = (*c).send else {
                return run(sub, Event::Failed(Trouble::CannotSend));
            };
            let rest = &mut s.out[s.sent..];
            let n = send(c, rest.as_mut_ptr(), rest.len());
            if n == NGX_AGAIN as isize {
                if ngx_handle_write_event((*c).write, 0) != NGX_OK as ngx_int_t {
                    run(sub, Event::Failed(Trouble::CannotWaitToSend));
                }
                return;
            }
            if n <= 0 {
                return run(sub, Event::Failed(Trouble::RefusedOrReset));
            }
            s.sent += n as usize;
        }
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: nginx runs the handler with the read event of the connection
    // `connect` made, whose data is this worker's subscriber.
    let (c, sub) = unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        (c, (*c).data.cast::<Subscriber>())
    };
    // SAFETY: `c` is that live connection.
    if unsafe { (*c).close() } != 0 {
        // Graceful shutdown: closed for good.
        // SAFETY: `sub` is this worker's subscriber.
        unsafe { close(sub) };
        return;
    }
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // SAFETY: `c` is live: only `close` closes it, after which this
        // loop ends (`conn` is null).
        let Some(recv) = (unsafe { (*c).recv }) else {
            // SAFETY: `sub` is this worker's subscriber.
            return unsafe { run(sub, Event::Failed(Trouble::CannotRead)) };
        };
        // SAFETY: `c` is live (above); `chunk` is room for its length.
        let n = unsafe { recv(c, chunk.as_mut_ptr(), chunk.len()) };
        let event = match n {
            n if n == NGX_AGAIN as isize => break,
            0 => Event::Failed(Trouble::ClosedByServer),
            n if n < 0 => Event::Failed(Trouble::RefusedOrReset),
            n => Event::Received(&chunk[..n as usize]),
        };
        let received = matches!(event, Event::Received(_));
        // SAFETY: `sub` is this worker's subscriber; no reference into it
        // is held.
        unsafe { run(sub, event) };
        // The steps closed it (something unexpected came).
        // SAFETY: `sub` is this worker's subscriber, alive until
        // exit_process; one word of it is read.
        if !received || unsafe { (*sub).conn }.is_null() {
            return;
        }
    }
    // SAFETY: `ev` is the live connection's read event (above).
    if unsafe { ngx_handle_read_event(ev, 0) } != NGX_OK as ngx_int_t {
        // SAFETY: `sub` is this worker's subscriber.
        unsafe { run(sub, Event::Failed(Trouble::CannotWaitToRead)) };
    }
}

/// A purge the steps applied (another gateway's purge, or this one's):
/// the token's entries leave this gateway's zones.
fn revoked(purge: &Purge) {
    // SAFETY: a worker's cycle is set up before any of its events run; the
    // main conf lives as long as the cycle.
    let Some(main) = (unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }) else {
        return;
    };
    match (purge.pushed, main.ssf.as_ref()) {
        (None, _) => {
            zone::purge_tag_everywhere(main, &purge.tag);
        }
        // A revocation pushed to another gateway: on this one's list too.
        (Some(pushed), Some(receiver)) => {
            // SAFETY: the receiver's zone was declared by its directive and
            // initialised by nginx before any worker event runs.
            let revoked = unsafe {
                revocations::revoke(
                    receiver.zone.cast(),
                    &purge.tag,
                    pushed.at_ms,
                    pushed.keep_until_ms,
                )
            };
            // The subject's cache entries go too (those the index names).
            if revoked {
                revocations::drop_entries(main, receiver, &purge.tag, now_ms());
            }
        }
        // No list here: nothing checks it.
        (Some(_), None) => {}
    }
}

/// Closes the connection, if any, and drops its watch and what it had
/// left to send.
///
/// # Safety
/// `sub` must be this worker's subscriber.
unsafe fn close(sub: *mut Subscriber) {
    // SAFETY: the connection is ours; ngx_close_connection removes its
    // timers and events; the watch is the subscriber's own event, in the
    // timer tree only while timer_set is on.
    unsafe {
        let s = &mut *sub;
        if !s.conn.is_null() {
            tls::close(s.conn);
            s.conn = ptr::null_mut();
        }
        s.connecting = false;
        s.out.clear();
        s.sent = 0;
        let watch = ptr::addr_of_mut!(s.watch);
        if (*watch).timer_set() != 0 {
            ngx_del_timer(watch);
        }
    }
}
