//! Redis Sentinel's glue (`auth_oauth2_token_redis ... sentinel=NAME`):
//! every worker keeps one connection to a sentinel of the tier's upstream
//! (the sentinels), whose steps are the plain `redis/sentinel.rs`, and
//! knows from it where the primary is. Every call of the tier goes there
//! (`redis/upstream.rs` sets the upstream's address to it), and so does
//! worker 0's revocation channel (`redis/subscriber.rs`); a call that finds
//! no connection, or a `-READONLY` reply (a primary demoted to replica),
//! asks again ([`reask`], from `redis/call.rs`). Every timer is
//! cancelable, so a graceful shutdown never waits for it.

use core::cell::{Cell, RefCell};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t,
    ngx_handle_read_event, ngx_handle_write_event, ngx_int_t, ngx_log_t, NGX_AGAIN, NGX_LOG_CRIT,
    NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};

use super::peers::{self, peers_of, Peer};
use super::tls;
use ngx::http::HttpModuleMainConf;

use crate::module::Module;
use crate::redis::sentinel::{Action, Event, Note, Watch};

const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 4096;

struct Watcher {
    /// The sentinels.
    peers: Vec<Peer>,
    steps: Watch,
    conn: *mut ngx_connection_t,
    connecting: bool,
    out: Vec<u8>,
    sent: usize,
    retry: ngx_event_t,
    /// The steps' deadline for the sentinel's answers.
    watch: ngx_event_t,
    log: *mut ngx_log_t,
    /// A copy at `crit` for the connection (nginx's own line per failed
    /// attempt would repeat during an outage; ours say what happened).
    quiet_log: ngx_log_t,
}

/// This worker's watcher, made by `init_process` when the tier has `sentinel=`.
static WATCHER: AtomicPtr<Watcher> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    /// The primary's address as nginx takes it (nginx runs the module on
    /// one thread per worker).
    static PRIMARY: RefCell<Option<Peer>> = const { RefCell::new(None) };
}

thread_local! {
    /// Called when a primary is learnt (worker 0's revocation channel waits
    /// for the first).
    static ON_PRIMARY: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// `f` runs each time the sentinels name a primary (the first, or a new one).
pub(super) fn on_primary(f: fn()) {
    ON_PRIMARY.with(|c| c.set(Some(f)));
}

/// Copies the primary's address (sockaddr bytes, length, "ip:port") to
/// `f`; `None` while no sentinel has named one.
pub(super) fn with_primary<T>(f: impl FnOnce(Option<&Peer>) -> T) -> T {
    PRIMARY.with(|p| f(p.borrow().as_ref()))
}

/// A call to the primary failed in a way that may mean it moved: the
/// sentinels are asked again (at most every `REASK_MS`).
pub(super) fn reask() {
    let w = WATCHER.load(Ordering::Relaxed);
    if !w.is_null() {
        // SAFETY: `w` is this worker's watcher, alive until exit_process,
        // which clears WATCHER first.
        unsafe { run(w, Event::Reask) };
    }
}

/// `init_process`: every worker watches the primary when the tier has
/// `sentinel=`.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx sets which process this is before it calls init_process.
    let process = unsafe { ngx::ffi::ngx_process as u32 };
    if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: nginx calls init_process in the new process with its cycle,
    // whose main conf and log live as long as it.
    let (main, log) = unsafe { (Module::main_conf(&*cycle), (*cycle).log) };
    let Some(tier) = main.and_then(|m| m.redis.as_ref()) else {
        return NGX_OK as ngx_int_t;
    };
    let Some(name) = tier.sentinel.as_deref() else {
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the tier's upstream was set up by nginx's upstream init
    // before any process started.
    let peers = unsafe { peers_of(tier.upstream.cast()) };
    if peers.is_empty() {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "auth_oauth2_token: sentinel: the Redis upstream has no usable sentinel"
        );
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: `log` is the cycle's, live (above); it is copied.
    let mut quiet_log = unsafe { *log };
    quiet_log.log_level = NGX_LOG_CRIT as ngx::ffi::ngx_uint_t;
    let steps = Watch::new(name, peers.len(), &tier.sentinel_auth);
    let w = Box::into_raw(Box::new(Watcher {
        peers,
        steps,
        conn: ptr::null_mut(),
        connecting: false,
        out: Vec::new(),
        sent: 0,
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        retry: unsafe { core::mem::zeroed() },
        // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
        watch: unsafe { core::mem::zeroed() },
        log,
        quiet_log,
    }));
    // SAFETY: `w` was just leaked, and is freed only by exit_process, which
    // takes the event out of the timer tree first; the peers' names are
    // their Vecs' heap bytes, which stay where they are.
    unsafe {
        for peer in &mut (*w).peers {
            peer.name_str = ngx::ffi::ngx_str_t {
                len: peer.name.len(),
                data: peer.name.as_mut_ptr(),
            };
        }
        let events = [
            (
                ptr::addr_of_mut!((*w).retry),
                on_retry as unsafe extern "C" fn(_),
            ),
            (ptr::addr_of_mut!((*w).watch), on_watch),
        ];
        for (ev, handler) in events {
            (*ev).data = w.cast();
            (*ev).handler = Some(handler);
            (*ev).log = log;
            (*ev).set_cancelable(1);
        }
    }
    WATCHER.store(w, Ordering::Relaxed);
    // SAFETY: `w` is this worker's watcher, leaked just above.
    unsafe { run(w, Event::Timer) };
    NGX_OK as ngx_int_t
}

/// `exit_process`: closes the watch.
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    let w = WATCHER.swap(ptr::null_mut(), Ordering::Relaxed);
    if w.is_null() {
        return;
    }
    // SAFETY: `w` was leaked by init_process in this process and is dropped
    // once, here; its connection and timer go first.
    unsafe {
        close(w);
        let retry = ptr::addr_of_mut!((*w).retry);
        if (*retry).timer_set() != 0 {
            ngx_del_timer(retry);
        }
        drop(Box::from_raw(w));
    }
}

fn exiting() -> bool {
    // SAFETY: plain flags of this process, set by its signal handling
    // between event loop turns.
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

/// Feeds `event` to the steps and carries out what they ask, in order.
///
/// # Safety
/// `w` must be this worker's watcher.
unsafe fn run(w: *mut Watcher, event: Event<'_>) {
    // SAFETY: `w` is this worker's watcher (this function's contract); no
    // reference into it is held across the calls below, which may run the
    // steps again (a connection that fails at once).
    let (actions, log) = unsafe { ((*w).steps.handle(now_ms(), event), (*w).log) };
    for action in actions {
        match action {
            // SAFETY: `w` is this worker's watcher (this function's contract).
            Action::Connect(n) => unsafe { connect(w, n) },
            // SAFETY: `w` is this worker's watcher; the `&mut` ends before `send`.
            Action::Send(bytes) => unsafe {
                let s = &mut *w;
                s.out = bytes;
                s.sent = 0;
                send(w);
            },
            Action::Primary(addr) => {
                PRIMARY.with(|p| *p.borrow_mut() = Some(Peer::of(addr)));
                if let Some(f) = ON_PRIMARY.with(Cell::get) {
                    f();
                }
            }
            Action::Log(note) => {
                let level = match note {
                    Note::Primary { .. } => NGX_LOG_NOTICE,
                    Note::Failed { .. } => NGX_LOG_WARN,
                };
                ngx::ngx_log_error!(level, log, "auth_oauth2_token: {note}");
            }
            // SAFETY: `w` is this worker's watcher (this function's contract).
            Action::Close => unsafe { close(w) },
            // SAFETY: the retry event is the watcher's own, which lives
            // until exit_process (this function's contract).
            Action::RetryAfter(ms) if !exiting() => unsafe {
                ngx_add_timer(ptr::addr_of_mut!((*w).retry), ms as ngx::ffi::ngx_msec_t);
            },
            Action::RetryAfter(_) => {}
            // SAFETY: the watch event is the watcher's own, which lives
            // until exit_process (this function's contract).
            Action::Watch(ms) => unsafe {
                ngx_add_timer(ptr::addr_of_mut!((*w).watch), ms as ngx::ffi::ngx_msec_t);
            },
        }
    }
}

/// Opens a connection to sentinel `n`; the steps hear `Connected` once it
/// is open, `Failed` if it cannot be.
///
/// # Safety
/// `w` must be this worker's watcher, without a connection.
unsafe fn connect(w: *mut Watcher, n: usize) {
    if exiting() {
        return;
    }
    // SAFETY: `w` is this worker's watcher (this function's contract); `s`
    // is not used once `run` is called below.
    let s = unsafe { &mut *w };
    let index = n % s.peers.len();
    let peer = &mut s.peers[index];
    let log = ptr::addr_of_mut!(s.quiet_log);
    let handlers = (Some(on_read as _), Some(on_write as _));
    // SAFETY: the peer and the log live in the watcher until exit_process;
    // the handlers take a connection whose data is the watcher.
    let opened = unsafe { peers::connect(peer, log, w.cast(), handlers, CONNECT_TIMEOUT_MS as _) };
    let Some(opened) = opened else {
        // SAFETY: `w` is this worker's watcher; `s` is not used after.
        unsafe { run(w, Event::Failed("cannot connect".into())) };
        return;
    };
    (s.conn, s.connecting) = (opened.conn, opened.connecting);
    if s.connecting {
        return;
    }
    // SAFETY: `w` is this worker's watcher, with this connection; `s` is
    // not used after.
    unsafe { connected(w) };
}

/// The connection is open: with the tier's TLS, its handshake first; the
/// steps hear `Connected` once the sentinel may be spoken to.
///
/// # Safety
/// `w` must be this worker's watcher, with a connection just opened.
unsafe fn connected(w: *mut Watcher) {
    if !tls::channel_tls() {
        // SAFETY: `w` is this worker's watcher (this function's contract).
        return unsafe { run(w, Event::Connected) };
    }
    // SAFETY: the connection is open and ours, without TLS yet; the
    // handler takes a connection whose data is the watcher.
    match unsafe { tls::start_handshake((*w).conn, Some(handshake_done), CONNECT_TIMEOUT_MS as _) }
    {
        // SAFETY: `w` is this worker's watcher (this function's contract).
        Ok(true) => unsafe { handshaken(w) },
        Ok(false) => {}
        // SAFETY: `w` is this worker's watcher (this function's contract).
        Err(why) => unsafe { run(w, Event::Failed(format!("TLS: {why}"))) },
    }
}

/// nginx's end of a TLS handshake that had to wait.
unsafe extern "C" fn handshake_done(c: *mut ngx_connection_t) {
    // SAFETY: the connection's data is the watcher (connect).
    unsafe { handshaken((*c).data.cast()) }
}

/// The handshake ended: the connection's events are the watcher's again,
/// and the steps hear whether it may be used.
///
/// # Safety
/// `w` must be this worker's watcher, whose connection's handshake ended.
unsafe fn handshaken(w: *mut Watcher) {
    // SAFETY: the connection is open and ours (connect), its events live.
    let result = unsafe {
        let c = (*w).conn;
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        tls::handshake_result(c)
    };
    let event = match result {
        Ok(()) => Event::Connected,
        Err(why) => Event::Failed(format!("TLS: {why}")),
    };
    // SAFETY: `w` is this worker's watcher (this function's contract).
    unsafe { run(w, event) };
}

unsafe extern "C" fn on_retry(ev: *mut ngx_event_t) {
    // SAFETY: the retry event's data is the watcher (init_process).
    unsafe { run((*ev).data.cast(), Event::Timer) }
}

unsafe extern "C" fn on_watch(ev: *mut ngx_event_t) {
    // SAFETY: the watch event's data is the watcher (init_process).
    unsafe { run((*ev).data.cast(), Event::Watch) }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: the connection's data is the watcher (connect); nginx calls
    // the handler with the connection's write event.
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        let w = (*c).data.cast::<Watcher>();
        if (*ev).timedout() != 0 {
            run(w, Event::Failed("connect timed out".into()));
            return;
        }
        if (*ev).timer_set() != 0 {
            ngx_del_timer(ev);
        }
        if (*w).connecting {
            (*w).connecting = false;
            connected(w);
            return;
        }
        send(w);
    }
}

/// Sends what is left of the bytes the steps asked to send.
///
/// # Safety
/// `w` must be this worker's watcher, with a connection.
unsafe fn send(w: *mut Watcher) {
    // SAFETY: the connection is open and ours (connect).
    unsafe {
        let s = &mut *w;
        let c = s.conn;
        if c.is_null() {
            return;
        }
        while s.sent < s.out.len() {
            let Some(send) = (*c).send else {
                return run(w, Event::Failed("cannot send".into()));
            };
            let rest = &mut s.out[s.sent..];
            let n = send(c, rest.as_mut_ptr(), rest.len());
            if n == NGX_AGAIN as isize {
                if ngx_handle_write_event((*c).write, 0) != NGX_OK as ngx_int_t {
                    run(w, Event::Failed("cannot wait to send".into()));
                }
                return;
            }
            if n <= 0 {
                return run(w, Event::Failed("connection refused or reset".into()));
            }
            s.sent += n as usize;
        }
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: nginx runs the handler with the read event of the connection
    // `connect` made, whose data is this worker's watcher.
    let (c, w) = unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        (c, (*c).data.cast::<Watcher>())
    };
    // SAFETY: `c` is that live connection.
    if unsafe { (*c).close() } != 0 {
        // Graceful shutdown: closed for good.
        // SAFETY: `w` is this worker's watcher.
        unsafe { close(w) };
        return;
    }
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // SAFETY: `c` is live: only `close` closes it, after which this
        // loop ends (`conn` is no longer `c`).
        let Some(recv) = (unsafe { (*c).recv }) else {
            // SAFETY: `w` is this worker's watcher.
            return unsafe { run(w, Event::Failed("cannot read".into())) };
        };
        // SAFETY: `c` is live (above); `chunk` is room for its length.
        let n = unsafe { recv(c, chunk.as_mut_ptr(), chunk.len()) };
        let event = match n {
            n if n == NGX_AGAIN as isize => break,
            0 => Event::Failed("closed by the sentinel".into()),
            n if n < 0 => Event::Failed("connection refused or reset".into()),
            n => Event::Received(&chunk[..n as usize]),
        };
        let received = matches!(event, Event::Received(_));
        // SAFETY: `w` is this worker's watcher; no reference into it is held.
        unsafe { run(w, event) };
        // The steps closed it, or moved to another sentinel.
        // SAFETY: `w` is this worker's watcher, alive until exit_process;
        // one word of it is read.
        if !received || unsafe { (*w).conn } != c {
            return;
        }
    }
    // SAFETY: `ev` is the live connection's read event (above).
    if unsafe { ngx_handle_read_event(ev, 0) } != NGX_OK as ngx_int_t {
        // SAFETY: `w` is this worker's watcher.
        unsafe { run(w, Event::Failed("cannot wait to read".into())) };
    }
}

/// Closes the connection, if any, and drops its watch and what it had
/// left to send.
///
/// # Safety
/// `w` must be this worker's watcher.
unsafe fn close(w: *mut Watcher) {
    // SAFETY: the connection is ours; ngx_close_connection removes its
    // timers and events; the watch is the watcher's own event, in the
    // timer tree only while timer_set is on.
    unsafe {
        let s = &mut *w;
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
