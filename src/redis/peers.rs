//! The servers of an `upstream` block as the module's own connections (the
//! revocation channel's, the sentinels') take them: addresses copied out of
//! nginx's round-robin peers, each with a name for nginx's log lines.

use ngx::ffi::{ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t, ngx_str_t, socklen_t};

/// One Redis server: its address, copied out of the upstream (or, with
/// Sentinel, the primary's: `redis/sentinel_watch.rs`). `name_str` points at
/// `name` once the peer is where it stays.
pub(super) struct Peer {
    pub(super) sockaddr: Vec<u8>,
    pub(super) socklen: socklen_t,
    pub(super) name: Vec<u8>,
    pub(super) name_str: ngx_str_t,
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
