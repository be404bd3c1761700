//! The servers of an `upstream` block as the module's own connections (the
//! revocation channel's, the sentinels') take them: addresses copied out of
//! nginx's round-robin peers, each with a name for nginx's log lines; and
//! how such a connection is opened.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_event_connect_peer,
    ngx_event_get_peer, ngx_event_handler_pt, ngx_http_upstream_rr_peers_t,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_log_t, ngx_msec_t, ngx_peer_connection_t,
    ngx_str_t, sockaddr, sockaddr_in, sockaddr_in6, socklen_t, NGX_AGAIN, NGX_OK,
};
use std::net::SocketAddr;

/// A connection [`connect`] opened, and whether it is still connecting (its
/// write event then has the connect timer).
pub(super) struct Opened {
    pub(super) conn: *mut ngx_connection_t,
    pub(super) connecting: bool,
}

/// Opens a connection to `peer` for one of the module's own clients, whose
/// state `data` is: its events log to `log` and call `on_read` and
/// `on_write`, and a graceful shutdown closes it like an idle keepalive
/// connection. `None` when nginx could not open it.
///
/// # Safety
/// `peer`, `log` and `data` must live until the worker exits (nginx keeps
/// pointers to the first two in the connection); the handlers must be
/// ready for events of a connection whose `data` is `data`.
pub(super) unsafe fn connect(
    peer: &mut Peer,
    log: *mut ngx_log_t,
    data: *mut c_void,
    (on_read, on_write): (ngx_event_handler_pt, ngx_event_handler_pt),
    timeout_ms: ngx_msec_t,
) -> Option<Opened> {
    // SAFETY: an all-zero ngx_peer_connection_t is an empty one (nginx
    // pcallocs them).
    let mut pc: ngx_peer_connection_t = unsafe { core::mem::zeroed() };
    pc.sockaddr = peer.sockaddr.as_mut_ptr().cast::<sockaddr>();
    pc.socklen = peer.socklen;
    pc.name = ptr::addr_of_mut!(peer.name_str);
    pc.get = Some(ngx_event_get_peer);
    pc.log = log;
    pc.tries = 1;
    // SAFETY: the address, name and log `pc` points at live until the
    // worker exits (this function's contract); nginx owns the connection
    // it makes.
    let rc = unsafe { ngx_event_connect_peer(&mut pc) };
    let c = pc.connection;
    if c.is_null() || (rc != NGX_OK as ngx_int_t && rc != NGX_AGAIN as ngx_int_t) {
        if !c.is_null() {
            // SAFETY: `c` is the connection nginx just made for `pc`, ours.
            unsafe { ngx_close_connection(c) };
        }
        return None;
    }
    let connecting = rc == NGX_AGAIN as ngx_int_t;
    // SAFETY: `c` is the connection nginx just made, with its read and
    // write events.
    unsafe {
        (*c).data = data;
        (*c).log = log;
        (*(*c).read).log = log;
        (*(*c).write).log = log;
        (*(*c).read).handler = on_read;
        (*(*c).write).handler = on_write;
        (*(*c).read).set_cancelable(1);
        (*(*c).write).set_cancelable(1);
        (*c).set_idle(1);
        if connecting {
            ngx_add_timer((*c).write, timeout_ms);
        }
    }
    Some(Opened {
        conn: c,
        connecting,
    })
}

/// One Redis server: its address, copied out of the upstream (or, with
/// Sentinel, the primary's: `redis/sentinel_watch.rs`). `name_str` points at
/// `name` once the peer is where it stays.
pub(super) struct Peer {
    pub(super) sockaddr: Vec<u8>,
    pub(super) socklen: socklen_t,
    pub(super) name: Vec<u8>,
    pub(super) name_str: ngx_str_t,
}

impl Peer {
    /// The address as nginx's peers hold it.
    pub(super) fn of(addr: SocketAddr) -> Peer {
        let sockaddr = sockaddr_of(addr).as_slice().to_vec();
        Peer {
            socklen: sockaddr.len() as socklen_t,
            sockaddr,
            name: addr.to_string().into_bytes(),
            name_str: ngx::ffi::ngx_str_t::empty(),
        }
    }
}

/// A sockaddr's bytes (sockaddr_in or sockaddr_in6), on the stack.
pub(super) struct SockaddrBytes {
    bytes: [u8; size_of::<sockaddr_in6>()],
    len: usize,
}

impl SockaddrBytes {
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The bytes of `addr` as a sockaddr (sockaddr_in or sockaddr_in6).
pub(super) fn sockaddr_of(addr: SocketAddr) -> SockaddrBytes {
    let mut out = SockaddrBytes {
        bytes: [0; size_of::<sockaddr_in6>()],
        len: 0,
    };
    let mut put = |p: *const u8, len: usize| {
        // SAFETY: `p` points at a local sockaddr of `len` bytes (below),
        // no longer than a sockaddr_in6.
        out.bytes[..len].copy_from_slice(unsafe { core::slice::from_raw_parts(p, len) });
        out.len = len;
    };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is a valid start (memzero).
            let mut sin: sockaddr_in = unsafe { core::mem::zeroed() };
            sin.sin_family = ngx::ffi::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            put(ptr::addr_of!(sin).cast(), size_of::<sockaddr_in>());
        }
        SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is a valid start (memzero).
            let mut sin6: sockaddr_in6 = unsafe { core::mem::zeroed() };
            sin6.sin6_family = ngx::ffi::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.__in6_u.__u6_addr8 = a.ip().octets();
            put(ptr::addr_of!(sin6).cast(), size_of::<sockaddr_in6>());
        }
    }
    out
}

/// The servers of the upstream (round-robin's view, which every balancer
/// shares): primary servers, then backups; `down` ones left out.
///
/// # Safety
/// `uscf` must be an initialised upstream of the running cycle.
pub(super) unsafe fn peers_of(uscf: *mut ngx_http_upstream_srv_conf_t) -> Vec<Peer> {
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
