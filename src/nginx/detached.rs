//! A request with no client, for work a worker does on its own (the Shared
//! Signals poll, Redis Cluster's slot map read at start): a connection of
//! the module's own, with no socket, and a
//! main request on it in a server block, from which the module's usual
//! subrequest (`nginx/subrequest.rs`) goes to an internal location, so the
//! call has what every IdP call has (`proxy_pass`, TLS and its checks,
//! timeouts, keepalive, resolver). ngx 0.5.1 has no such thing; this is
//! what nginx's own HTTP code needs of a connection that is never read
//! nor written: a log whose data is the request's log context, its events
//! marked active (the upstream otherwise adds them to epoll, which a
//! connection without a socket cannot be), `TCP_NODELAY` marked off (set on
//! the client's connection by an upstream without buffering, such as the
//! Redis location's), a pool, and a loopback address for the variables that
//! read it.
//!
//! nginx ends such a request itself only when its subrequest fails with an
//! error that terminates the main request (out of memory, an answer larger
//! than its buffer): it then frees the request and destroys the
//! connection's pool (`ngx_http_close_connection`, which also logs
//! "connection already closed" at `alert` for the socket it does not
//! have). [`Detached::finish`] tells the two cases apart by the
//! connection's `destroyed` flag and frees what is left.

use core::ptr;

use ngx::ffi::{
    ngx_connection_t, ngx_create_pool, ngx_destroy_pool, ngx_event_t, ngx_http_conf_ctx_t,
    ngx_http_connection_t, ngx_http_create_request, ngx_http_free_request, ngx_http_log_ctx_t,
    ngx_http_request_t, ngx_http_run_posted_requests, ngx_log_t, ngx_str_t, sockaddr, sockaddr_in,
    socklen_t,
};

/// The connection's parts, where they stay until [`Detached::finish`].
struct Parts {
    conn: ngx_connection_t,
    read: ngx_event_t,
    write: ngx_event_t,
    log: ngx_log_t,
    log_ctx: ngx_http_log_ctx_t,
    hc: ngx_http_connection_t,
    addr: sockaddr_in,
}

const LOOPBACK: &[u8] = b"127.0.0.1";

/// One request with no client, and its connection. Its parts are a leaked
/// box (nginx keeps pointers into them) taken back by [`Detached::finish`];
/// a `Detached` never finished leaks them.
pub struct Detached {
    parts: *mut Parts,
    request: *mut ngx_http_request_t,
}

impl Detached {
    /// A request in the server block whose configuration context is
    /// `server`, logging to a copy of `log`. `None` when nginx could not
    /// allocate it.
    ///
    /// # Safety
    /// `server` must be a server block's context of the running cycle, and
    /// `log` a live log.
    pub unsafe fn new(server: *mut ngx_http_conf_ctx_t, log: *mut ngx_log_t) -> Option<Detached> {
        // SAFETY: all-zero connections, events, logs, log contexts and
        // http connections are empty ones (nginx pcallocs them); an
        // all-zero sockaddr_in is an address to fill.
        let p: *mut Parts = Box::into_raw(Box::new(unsafe { core::mem::zeroed() }));
        // SAFETY: `p` is the leaked parts, which stay where they are until
        // `finish` takes them back (or until here, when nginx could not
        // make the request); nginx keeps pointers to them in the request
        // and the connection, which `finish` ends first. `log` is live
        // (this function's contract); it is copied.
        unsafe {
            (*p).log = *log;
            let c = ptr::addr_of_mut!((*p).conn);
            (*p).log.data = ptr::addr_of_mut!((*p).log_ctx).cast();
            (*p).log.handler = None;
            (*p).log.action = ptr::null_mut();
            (*p).log_ctx.connection = c;
            (*p).addr.sin_family = libc_af_inet();
            (*p).addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            (*p).hc.conf_ctx = server;
            // Marked active, the events are never added to epoll (the
            // upstream adds the client's otherwise, to see it go away).
            for ev in [ptr::addr_of_mut!((*p).read), ptr::addr_of_mut!((*p).write)] {
                (*ev).data = c.cast();
                (*ev).log = ptr::addr_of_mut!((*p).log);
                (*ev).set_active(1);
            }
            (*c).fd = -1;
            // No socket to set TCP_NODELAY on: an upstream without
            // buffering (the Redis location's) sets it on the client's
            // connection before it reads the answer.
            (*c).set_tcp_nodelay(ngx::ffi::ngx_connection_tcp_nodelay_e_NGX_TCP_NODELAY_DISABLED);
            (*c).read = ptr::addr_of_mut!((*p).read);
            (*c).write = ptr::addr_of_mut!((*p).write);
            (*c).log = ptr::addr_of_mut!((*p).log);
            (*c).data = ptr::addr_of_mut!((*p).hc).cast();
            (*c).sockaddr = ptr::addr_of_mut!((*p).addr).cast::<sockaddr>();
            (*c).socklen = size_of::<sockaddr_in>() as socklen_t;
            (*c).local_sockaddr = (*c).sockaddr;
            (*c).local_socklen = (*c).socklen;
            (*c).addr_text = ngx_str_t {
                len: LOOPBACK.len(),
                data: LOOPBACK.as_ptr().cast_mut(),
            };
            (*c).pool = ngx_create_pool(256, (*c).log);
            if (*c).pool.is_null() {
                drop(Box::from_raw(p));
                return None;
            }
            let r = ngx_http_create_request(c);
            if r.is_null() {
                ngx_destroy_pool((*c).pool);
                drop(Box::from_raw(p));
                return None;
            }
            (*c).data = r.cast();
            // Not a client's request: no access log line when it is freed.
            (*r).set_logged(1);
            // nginx runs it when its waited subrequest ends: nothing to do.
            (*r).write_event_handler = Some(parked);
            Some(Detached {
                parts: p,
                request: r,
            })
        }
    }

    /// The request, for `Req::with` and the subrequest it starts.
    pub fn request(&self) -> *mut ngx_http_request_t {
        self.request
    }

    /// The connection, for [`Detached::run_posted`]: it stays where it is
    /// until `finish`.
    pub fn connection(&self) -> *mut ngx_connection_t {
        // SAFETY: the parts are live until `finish`; only the field's
        // address is taken.
        unsafe { ptr::addr_of_mut!((*self.parts).conn) }
    }

    /// Runs the subrequests just started on `conn` (nginx runs posted
    /// requests after a connection's events; this connection has none).
    /// Their ends may run at once, and reach whoever keeps the `Detached`.
    ///
    /// # Safety
    /// `conn` must be the connection of a `Detached` not finished yet,
    /// with no reference into it in use.
    pub unsafe fn run_posted(conn: *mut ngx_connection_t) {
        // SAFETY: the connection is live until `finish` (this function's
        // contract); nginx stops when it was destroyed.
        unsafe { ngx_http_run_posted_requests(conn) };
    }

    /// Frees the request and the connection's pool, unless nginx did
    /// already. Call it once the subrequest has ended, outside nginx's
    /// handling of it (from a timer).
    pub fn finish(self) {
        // SAFETY: the request and the pool are nginx's, live unless nginx
        // ended the request itself, which sets `destroyed` (above); nothing
        // refers to them, nor to the parts, once the subrequest has ended.
        // The parts were leaked by `new` and are taken back once, here.
        unsafe {
            let c = ptr::addr_of_mut!((*self.parts).conn);
            if (*c).destroyed() == 0 {
                ngx_http_free_request(self.request, 0);
                ngx_destroy_pool((*c).pool);
            }
            drop(Box::from_raw(self.parts));
        }
    }
}

/// The address family of the loopback address the variables see.
fn libc_af_inet() -> u16 {
    ngx::ffi::AF_INET as u16
}

/// The request's write handler: it has nothing to write.
unsafe extern "C" fn parked(_r: *mut ngx_http_request_t) {}
