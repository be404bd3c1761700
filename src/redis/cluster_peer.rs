//! Redis Cluster's calls through the upstream's own balancer, so that its
//! `keepalive` serves them: when a call's node (`redis/cluster_route.rs`)
//! is one of the upstream's servers, the call goes through the upstream
//! as any call does, and round robin is made to pick that server by
//! marking every other one tried for this request; keepalive then reuses
//! an idle connection to it. A node that is not one of the servers (or an
//! upstream in a `zone`, whose servers may change under a lock) is reached
//! through `u->resolved` instead (`redis/upstream.rs`), one connection per
//! call.
//!
//! The balancer's per-request init (keepalive's over round robin's, or
//! another) is wrapped when the configuration is loaded: round robin's
//! init keeps the peer data it finds in `u->peer.data` (nginx's own
//! balancers, such as `hash`, rely on this), so the wrapper puts its own
//! there, lets the balancer fill it in, then marks the other servers tried.
//! A balancer that brings its own peer data (`hash`, `random`) leaves ours
//! unused: the call then goes wherever it picks, and a wrong node's
//! `-MOVED` is followed.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::net::SocketAddr;

use ngx::ffi::{
    ngx_http_request_t, ngx_http_upstream_init_peer_pt, ngx_http_upstream_rr_peer_data_t,
    ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_pcalloc, NGX_ERROR,
    NGX_OK,
};

use super::call;
use super::peers::sockaddr_of;
use crate::nginx::req::Req;

/// The balancer's per-request init that [`init_peer`] wraps (an
/// `ngx_http_upstream_init_peer_pt`, as a number; 0: none).
static WRAPPED: AtomicUsize = AtomicUsize::new(0);

/// Wraps the per-request init of the tier's upstream `uscf` (once the
/// upstream module's `init_main_conf` set it).
///
/// # Safety
/// `uscf` must be the tier's upstream, initialised, of the configuration
/// being loaded.
pub(super) unsafe fn wrap(uscf: *mut ngx_http_upstream_srv_conf_t) {
    // SAFETY: `uscf` is an initialised upstream (this function's contract).
    unsafe {
        let Some(init) = (*uscf).peer.init else {
            return;
        };
        if init as usize == init_peer as *const () as usize {
            return;
        }
        WRAPPED.store(init as usize, Ordering::Relaxed);
        (*uscf).peer.init = Some(init_peer);
    }
}

/// The index of `node` among the primary servers of `uscf`, when it is one
/// of them and the servers are not in a shared zone.
///
/// # Safety
/// `uscf` must be an initialised upstream of the running cycle.
pub(super) unsafe fn index_of(
    uscf: *mut ngx_http_upstream_srv_conf_t,
    node: SocketAddr,
) -> Option<usize> {
    let node = sockaddr_of(node);
    let node = node.as_slice();
    // SAFETY: round robin's init made peer.data a peers list whose entries
    // live as long as the cycle; without a zone (`shpool`) nothing changes
    // them at run time.
    unsafe {
        let peers = (*uscf).peer.data.cast::<ngx_http_upstream_rr_peers_t>();
        if peers.is_null() || !(*peers).shpool.is_null() {
            return None;
        }
        let mut peer = (*peers).peer;
        let mut index = 0;
        while !peer.is_null() {
            let len = (*peer).socklen as usize;
            if !(*peer).sockaddr.is_null() && len == node.len() {
                let addr = core::slice::from_raw_parts((*peer).sockaddr.cast::<u8>(), len);
                if addr == node {
                    return Some(index);
                }
            }
            index += 1;
            peer = (*peer).next;
        }
        None
    }
}

/// The upstream's per-request init: the wrapped one, steered to the call's
/// node when it is one of the servers.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    let wrapped = WRAPPED.load(Ordering::Relaxed);
    if wrapped == 0 {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: WRAPPED holds a non-null ngx_http_upstream_init_peer_pt that
    // `wrap` stored (function pointers and usize have one size).
    let wrapped: ngx_http_upstream_init_peer_pt = unsafe { core::mem::transmute(wrapped) };
    let Some(wrapped) = wrapped else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: nginx calls a balancer's init with the live request whose
    // upstream it sets up (ngx_http_upstream_init_request); the call's
    // server was found by the content handler (`redis/upstream.rs`).
    let call = unsafe { Req::with(r, |req| call::of(req)) };
    // SAFETY: the call lives in the request's pool; nginx runs one
    // callback of a request at a time, so no other reference to it is in use.
    let index = call.and_then(|c| unsafe { c.as_ref() }.server);
    let Some(index) = index else {
        // SAFETY: the wrapped init, with what nginx gave this one.
        return unsafe { wrapped(r, us) };
    };
    // SAFETY: `r` is live, its upstream made (u->peer.data still null, as
    // ngx_http_upstream_create left it); the peer data goes in its pool.
    // Round robin's init fills in the peer data it finds there; `tried`
    // then points at a bitmap of at least `number` bits of the primary
    // servers (its `data` word, or an array in the pool).
    unsafe {
        let u = (*r).upstream;
        let rrp = ngx_pcalloc((*r).pool, size_of::<ngx_http_upstream_rr_peer_data_t>())
            .cast::<ngx_http_upstream_rr_peer_data_t>();
        if !rrp.is_null() && (*u).peer.data.is_null() {
            (*u).peer.data = rrp.cast();
        }
        let rc = wrapped(r, us);
        let peers = (*us).peer.data.cast::<ngx_http_upstream_rr_peers_t>();
        if rc != NGX_OK as ngx_int_t
            || rrp.is_null()
            || (*rrp).peers != peers
            || (*rrp).tried.is_null()
        {
            return rc;
        }
        let bits = usize::BITS as usize;
        for i in (0..(*peers).number).filter(|i| *i != index) {
            *(*rrp).tried.add(i / bits) |= 1 << (i % bits);
        }
        rc
    }
}
