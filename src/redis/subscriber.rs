//! The revocation channel: worker 0 of each gateway subscribes to
//! `<prefix>purge` on the Redis tier and drops the token of every message
//! from this gateway's zones (`shm/zone.rs`). One non-blocking connection,
//! outside any request; reconnected with a backoff (100 ms doubling to 5 s, the next server
//! each time) after any failure; every timer is cancelable, so a graceful
//! shutdown never waits for it.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_del_timer,
    ngx_event_connect_peer, ngx_event_get_peer, ngx_event_t, ngx_handle_read_event,
    ngx_handle_write_event, ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t, ngx_int_t,
    ngx_log_t, ngx_peer_connection_t, ngx_str_t, sockaddr, socklen_t, NGX_AGAIN, NGX_LOG_CRIT,
    NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use crate::module::Module;
use crate::redis::fleet;
use crate::redis::resp::{self, Parsed, Reply};
use crate::shm::zone;

const FIRST_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 5000;
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// A reply larger than this is not a purge message: the channel is reset.
const MAX_PENDING: usize = 1 << 20;

/// One Redis server: its address, copied out of the upstream.
struct Peer {
    sockaddr: Vec<u8>,
    socklen: socklen_t,
    name: Vec<u8>,
    name_str: ngx_str_t,
}

enum Stage {
    /// Waiting for this many `+OK` (AUTH, SELECT).
    Preamble(usize),
    /// Waiting for the subscription's confirmation.
    Subscribing,
    Subscribed,
}

struct Subscriber {
    peers: Vec<Peer>,
    next_peer: usize,
    /// AUTH/SELECT and SUBSCRIBE, RESP-encoded.
    hello: Vec<u8>,
    preamble_replies: usize,
    channel: Vec<u8>,
    conn: *mut ngx_connection_t,
    sent: usize,
    pending: Vec<u8>,
    stage: Stage,
    backoff_ms: u64,
    retry: ngx_event_t,
    /// The cycle's log, for our own lines.
    log: *mut ngx_log_t,
    /// A copy at `crit`, for the connection: nginx's own line per failed
    /// attempt would repeat every few seconds during an outage.
    quiet_log: ngx_log_t,
    /// The outage was logged; the next subscription is logged as its end.
    down_logged: bool,
    subscribed_once: bool,
}

/// This worker's subscriber (worker 0 only), made by `init_process`.
static SUBSCRIBER: AtomicPtr<Subscriber> = AtomicPtr::new(ptr::null_mut());

/// `init_process`: worker 0 subscribes when the shared tier is configured.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_process in the new process with its cycle;
    // the main conf lives as long as the cycle; the subscriber is leaked
    // into SUBSCRIBER and freed by exit_process.
    unsafe {
        let process = ngx::ffi::ngx_process as u32;
        if (process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE)
            || ngx::ffi::ngx_worker != 0
        {
            return NGX_OK as ngx_int_t;
        }
        let Some(tier) = Module::main_conf(&*cycle).and_then(|m| m.redis.as_ref()) else {
            return NGX_OK as ngx_int_t;
        };
        let log = (*cycle).log;
        let peers = peers_of(tier.upstream.cast());
        if peers.is_empty() {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "auth_oauth2_token: revocation channel: the Redis upstream has no usable server"
            );
            return NGX_OK as ngx_int_t;
        }
        let channel = tier.channel();
        let mut hello = tier.preamble.clone();
        resp::command(&mut hello, &[b"SUBSCRIBE", &channel]);
        let mut quiet_log = *log;
        quiet_log.log_level = NGX_LOG_CRIT as ngx::ffi::ngx_uint_t;
        let sub = Box::into_raw(Box::new(Subscriber {
            peers,
            next_peer: 0,
            hello,
            preamble_replies: tier.preamble_replies,
            channel,
            conn: ptr::null_mut(),
            sent: 0,
            pending: Vec::new(),
            stage: Stage::Subscribing,
            backoff_ms: FIRST_BACKOFF_MS,
            retry: core::mem::zeroed(),
            log,
            quiet_log,
            down_logged: false,
            subscribed_once: false,
        }));
        for peer in &mut (*sub).peers {
            peer.name_str = ngx_str_t {
                len: peer.name.len(),
                data: peer.name.as_mut_ptr(),
            };
        }
        let retry = ptr::addr_of_mut!((*sub).retry);
        (*retry).data = sub.cast();
        (*retry).handler = Some(on_retry);
        (*retry).log = log;
        (*retry).set_cancelable(1);
        SUBSCRIBER.store(sub, Ordering::Relaxed);
        connect(sub);
    }
    NGX_OK as ngx_int_t
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

/// The servers of the upstream (round-robin's view, which every balancer
/// shares): primary servers, then backups; `down` ones left out.
///
/// # Safety
/// `uscf` must be an initialised upstream of the running cycle.
unsafe fn peers_of(uscf: *mut ngx_http_upstream_srv_conf_t) -> Vec<Peer> {
    let mut peers = Vec::new();
    // SAFETY: round-robin's init made peer.data a peers list (primary,
    // then `next` for backups) whose entries live as long as the cycle;
    // the addresses are copied out.
    unsafe {
        if uscf.is_null() {
            return peers;
        }
        let mut list = (*uscf).peer.data.cast::<ngx_http_upstream_rr_peers_t>();
        while !list.is_null() {
            let mut peer = (*list).peer;
            while !peer.is_null() {
                if (*peer).down == 0 && !(*peer).sockaddr.is_null() {
                    let len = (*peer).socklen as usize;
                    let addr = core::slice::from_raw_parts((*peer).sockaddr.cast::<u8>(), len);
                    peers.push(Peer {
                        sockaddr: addr.to_vec(),
                        socklen: (*peer).socklen,
                        name: (*peer).name.as_bytes().to_vec(),
                        name_str: ngx_str_t::empty(),
                    });
                }
                peer = (*peer).next;
            }
            list = (*list).next;
        }
    }
    peers
}

fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

/// Opens a connection to the next server and starts the conversation.
///
/// # Safety
/// `sub` must be this worker's subscriber, without a connection.
unsafe fn connect(sub: *mut Subscriber) {
    // SAFETY: the subscriber lives until exit_process; the peer's address
    // and name live in it; nginx owns the connection it returns.
    unsafe {
        if exiting() {
            return;
        }
        let s = &mut *sub;
        let index = s.next_peer % s.peers.len();
        s.next_peer = s.next_peer.wrapping_add(1);
        let peer = &mut s.peers[index];
        let mut pc: ngx_peer_connection_t = core::mem::zeroed();
        pc.sockaddr = peer.sockaddr.as_mut_ptr().cast::<sockaddr>();
        pc.socklen = peer.socklen;
        pc.name = ptr::addr_of_mut!(peer.name_str);
        pc.get = Some(ngx_event_get_peer);
        pc.log = ptr::addr_of_mut!(s.quiet_log);
        pc.tries = 1;
        let rc = ngx_event_connect_peer(&mut pc);
        if pc.connection.is_null() || (rc != NGX_OK as ngx_int_t && rc != NGX_AGAIN as ngx_int_t) {
            if !pc.connection.is_null() {
                ngx_close_connection(pc.connection);
            }
            let name = String::from_utf8_lossy(&s.peers[index].name).into_owned();
            fail(sub, &format!("cannot connect to {name}"));
            return;
        }
        let c = pc.connection;
        s.conn = c;
        s.sent = 0;
        s.pending.clear();
        s.stage = match s.preamble_replies {
            0 => Stage::Subscribing,
            n => Stage::Preamble(n),
        };
        (*c).data = sub.cast();
        (*c).log = ptr::addr_of_mut!(s.quiet_log);
        (*(*c).read).log = (*c).log;
        (*(*c).write).log = (*c).log;
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        (*(*c).read).set_cancelable(1);
        (*(*c).write).set_cancelable(1);
        // A graceful shutdown closes it like an idle keepalive connection.
        (*c).set_idle(1);
        if rc == NGX_AGAIN as ngx_int_t {
            ngx_add_timer((*c).write, CONNECT_TIMEOUT_MS as ngx::ffi::ngx_msec_t);
            return;
        }
        send(sub);
    }
}

unsafe extern "C" fn on_retry(ev: *mut ngx_event_t) {
    // SAFETY: the retry event's data is the subscriber (init_process).
    unsafe { connect((*ev).data.cast()) }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: the connection's data is the subscriber (connect); nginx
    // calls the handler with the connection's write event.
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        let sub = (*c).data.cast::<Subscriber>();
        if (*ev).timedout() != 0 {
            fail(sub, "connect timed out");
            return;
        }
        if (*ev).timer_set() != 0 {
            ngx_del_timer(ev);
        }
        send(sub);
    }
}

/// Sends what is left of the hello.
///
/// # Safety
/// `sub` must be this worker's subscriber, with a connection.
unsafe fn send(sub: *mut Subscriber) {
    // SAFETY: the connection is open and ours (connect).
    unsafe {
        let s = &mut *sub;
        let c = s.conn;
        while s.sent < s.hello.len() {
            let Some(send) = (*c).send else {
                fail(sub, "cannot send");
                return;
            };
            let rest = &mut s.hello[s.sent..];
            let n = send(c, rest.as_mut_ptr(), rest.len());
            if n == NGX_AGAIN as isize {
                if ngx_handle_write_event((*c).write, 0) != NGX_OK as ngx_int_t {
                    fail(sub, "cannot wait to send");
                }
                return;
            }
            if n <= 0 {
                fail(sub, "connection refused or reset");
                return;
            }
            s.sent += n as usize;
        }
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: as for on_write.
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        let sub = (*c).data.cast::<Subscriber>();
        if (*c).close() != 0 {
            // Graceful shutdown: closed for good.
            close(sub);
            return;
        }
        let mut chunk = [0u8; 4096];
        loop {
            let Some(recv) = (*c).recv else {
                fail(sub, "cannot read");
                return;
            };
            let n = recv(c, chunk.as_mut_ptr(), chunk.len());
            if n == NGX_AGAIN as isize {
                break;
            }
            if n == 0 {
                fail(sub, "closed by the server");
                return;
            }
            if n < 0 {
                fail(sub, "connection refused or reset");
                return;
            }
            let s = &mut *sub;
            s.pending.extend_from_slice(&chunk[..n as usize]);
            if s.pending.len() > MAX_PENDING {
                fail(sub, "a reply too large for a purge message");
                return;
            }
            if !replies(sub) {
                return;
            }
        }
        if ngx_handle_read_event(ev, 0) != NGX_OK as ngx_int_t {
            fail(sub, "cannot wait to read");
        }
    }
}

/// Handles every complete reply received; false when the channel failed.
///
/// # Safety
/// `sub` must be this worker's subscriber, with a connection.
unsafe fn replies(sub: *mut Subscriber) -> bool {
    // SAFETY: the subscriber is live; revoked runs in this worker.
    unsafe {
        loop {
            let s = &mut *sub;
            let (reply, used) = match resp::parse(&s.pending, 1) {
                Parsed::Incomplete => return true,
                Parsed::Garbage => {
                    fail(sub, "unreadable replies");
                    return false;
                }
                Parsed::Done { mut replies, used } => match replies.pop() {
                    Some(reply) => (reply, used),
                    None => {
                        fail(sub, "unreadable replies");
                        return false;
                    }
                },
            };
            s.pending.drain(..used);
            if let Reply::Error(text) = &reply {
                let kind = resp::error_kind(text).to_owned();
                fail(sub, &format!("-{kind}"));
                return false;
            }
            match s.stage {
                Stage::Preamble(left) => {
                    if !matches!(&reply, Reply::Status(t) if t.as_slice() == b"OK") {
                        fail(sub, "unexpected reply to AUTH or SELECT");
                        return false;
                    }
                    s.stage = match left {
                        1 => Stage::Subscribing,
                        n => Stage::Preamble(n - 1),
                    };
                }
                Stage::Subscribing => {
                    let confirmed = matches!(&reply, Reply::Array(Some(items))
                        if matches!(items.first(), Some(Reply::Bulk(Some(kind))) if kind.as_slice() == b"subscribe"));
                    if !confirmed {
                        fail(sub, "unexpected reply to SUBSCRIBE");
                        return false;
                    }
                    s.stage = Stage::Subscribed;
                    s.backoff_ms = FIRST_BACKOFF_MS;
                    if s.down_logged {
                        ngx::ngx_log_error!(
                            NGX_LOG_NOTICE,
                            s.log,
                            "auth_oauth2_token: revocation channel subscribed again"
                        );
                    } else if !s.subscribed_once {
                        ngx::ngx_log_error!(
                            NGX_LOG_INFO,
                            s.log,
                            "auth_oauth2_token: revocation channel subscribed"
                        );
                    }
                    s.down_logged = false;
                    s.subscribed_once = true;
                }
                Stage::Subscribed => {
                    if let Some((channel, payload)) = resp::pubsub_message(&reply) {
                        if channel == s.channel.as_slice() {
                            revoked(payload);
                        }
                    }
                }
            }
        }
    }
}

/// A purge message from the channel (another gateway's purge, or this
/// one's): the token's entries leave this gateway's zones.
///
/// # Safety
/// Called by a worker with its cycle set up.
unsafe fn revoked(message: &[u8]) {
    // SAFETY: the cycle is set up (this function's contract).
    let Some(main) = (unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }) else {
        return;
    };
    let Some(redis) = main.redis.as_ref() else {
        return;
    };
    if let Some(tag) = fleet::open_purge(&redis.keys, &redis.channel(), message) {
        zone::purge_tag_everywhere(main, &tag);
    }
}

/// Closes the connection, if any.
///
/// # Safety
/// `sub` must be this worker's subscriber.
unsafe fn close(sub: *mut Subscriber) {
    // SAFETY: the connection is ours; ngx_close_connection removes its
    // timers and events.
    unsafe {
        let s = &mut *sub;
        if !s.conn.is_null() {
            ngx_close_connection(s.conn);
            s.conn = ptr::null_mut();
        }
    }
}

/// The channel failed: close, log once per outage, try again later.
///
/// # Safety
/// `sub` must be this worker's subscriber.
unsafe fn fail(sub: *mut Subscriber, why: &str) {
    // SAFETY: as for close; the retry event is the subscriber's own.
    unsafe {
        close(sub);
        if exiting() {
            return;
        }
        let s = &mut *sub;
        if !s.down_logged {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                s.log,
                "auth_oauth2_token: revocation channel down ({why}); purges from other gateways reach this gateway when its cached entries expire (max_ttl)"
            );
            s.down_logged = true;
        }
        let retry = ptr::addr_of_mut!(s.retry);
        ngx_add_timer(retry, s.backoff_ms as ngx::ffi::ngx_msec_t);
        s.backoff_ms = (s.backoff_ms * 2).min(MAX_BACKOFF_MS);
    }
}
