//! `auth_oauth2_token_redis_pass`: the content handler of the internal
//! location, an nginx upstream in the manner of `memcached_pass`. It sends
//! the tier's `AUTH`/`SELECT` and the call's commands, reads the replies
//! into the call (`redis/call.rs`) and answers the subrequest with an empty
//! 200, so nothing reaches the client. Connections are kept alive by the
//! upstream's `keepalive` when the replies ended exactly where they should.

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_conf_t, ngx_create_temp_buf, ngx_http_request_t,
    ngx_http_upstream_conf_t, ngx_http_upstream_create, ngx_http_upstream_init,
    ngx_http_upstream_resolved_t, ngx_http_upstream_t, ngx_int_t, ngx_pcalloc, ngx_pnalloc,
    ngx_str_t, ngx_uint_t, NGX_AGAIN, NGX_CONF_BITMASK_SET, NGX_DONE, NGX_ERROR,
    NGX_HTTP_BAD_GATEWAY, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_FOUND,
    NGX_HTTP_UPSTREAM_FT_ERROR, NGX_HTTP_UPSTREAM_FT_OFF, NGX_HTTP_UPSTREAM_FT_TIMEOUT,
    NGX_HTTP_UPSTREAM_INVALID_HEADER, NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::HttpModule;

use super::call::{self, Call, Failure};
use super::cluster_peer;
use super::cluster_route;
use super::deadline;
use super::peers::Peer;
use super::sentinel_watch;
use super::{tls, tls_call};
use crate::conf::{LocationConf, MainConf, RedisLocation, RedisTier};
use crate::module::Module;
use crate::nginx::req::Req;
use crate::redis::resp::{Progress, Reply};

/// The content handler of a location with `auth_oauth2_token_redis_pass`.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request
    // (ngx_http_core_content_phase).
    unsafe { Req::with(r, start_upstream) }
}

fn start_upstream(req: &mut Req<'_>) -> ngx_int_t {
    // Only the module's own calls: a client (or another module's
    // subrequest) finds nothing here.
    let Some(call) = call::of(req) else {
        return NGX_HTTP_NOT_FOUND as ngx_int_t;
    };
    let Some(loc) = req.location_conf() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let conf = match loc.redis.pass {
        Some(uc) if !uc.is_null() => uc.cast::<ngx_http_upstream_conf_t>(),
        _ => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    };
    // SAFETY: the request is live (`Req`).
    if unsafe { ngx_http_upstream_create(req.as_ptr()) } != NGX_OK as ngx_int_t {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    let u = req.upstream();
    // SAFETY: `u` is the upstream nginx just made in the request's pool;
    // `conf` is the upstream conf `init_main_conf` made for this location,
    // which lives with the configuration.
    unsafe {
        // A Redis that is down fails every call: the module says so once per
        // interval (`redis/failure.rs`), and nginx's own lines about the
        // connection (connect, recv, send errors and their timeouts) go to
        // `info`; timeouts are the module's deadline (`redis/deadline.rs`).
        // "no live upstreams" stays at `error`, written by nginx's upstream
        // code to the request's log.
        (*u).peer
            .set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_INFO);
        (*u).schema = ngx_str_t {
            len: 8,
            data: c"redis://".as_ptr().cast::<u8>().cast_mut(),
        };
        (*u).output.tag = Module::module() as *const _ as *mut c_void;
        (*u).conf = conf;
        (*u).create_request = Some(create_request);
        (*u).reinit_request = Some(reinit_request);
        (*u).process_header = Some(process_header);
        (*u).abort_request = Some(abort_request);
        (*u).finalize_request = Some(finalize_request);
        (*u).input_filter_init = Some(filter_init);
        (*u).input_filter = Some(filter);
        (*u).input_filter_ctx = req.as_ptr().cast();
        if loc.redis_tls.on() {
            tls_call::use_on(u);
        }
    }
    // With Sentinel, the call goes to the primary the sentinels named; none
    // yet: no connection, a miss (which asks them again).
    if req
        .main_conf()
        .and_then(|m| m.redis.as_ref())
        .is_some_and(|t| t.sentinel.is_some())
        && aim_at_primary(req, u).is_err()
    {
        return NGX_HTTP_BAD_GATEWAY as ngx_int_t;
    }
    // With Redis Cluster, to the slot's primary or where a redirection
    // sent it (else to the seeds, which redirect).
    // SAFETY: the call lives in the request's pool; nginx runs one
    // callback of a request at a time, so no other reference to it is in use.
    // A node among the upstream's servers is picked by its balancer
    // (`redis/cluster_peer.rs`), which keeps connections alive.
    if let Some(node) = cluster_route::target(unsafe { call.as_ref() }.hop.as_ref()) {
        // SAFETY: the upstream of the location's conf is the tier's,
        // initialised when the configuration was loaded.
        let server = unsafe { cluster_peer::index_of((*conf).upstream, node) };
        if server.is_none() && aim_at(req, u, &Peer::of(node)).is_err() {
            return NGX_HTTP_BAD_GATEWAY as ngx_int_t;
        }
        // SAFETY: as above; no other reference to the call is in use.
        unsafe { (*call.as_ptr()).server = server };
    }
    let (ms, fails_over) = (loc.redis.deadline_ms(), loc.redis.fails_over_on_deadline());
    // SAFETY: the call's deadline is in the request's pool, where the call
    // stays until the pool goes (`call::start`).
    unsafe {
        deadline::arm(
            req,
            ptr::addr_of_mut!((*call.as_ptr()).deadline),
            ms,
            fails_over,
        )
    };
    req.add_main_reference();
    // SAFETY: the request is live, its upstream made and set up above.
    unsafe { ngx_http_upstream_init(req.as_ptr()) };
    NGX_DONE as ngx_int_t
}

/// Points the upstream `u` at the primary the sentinels named (as nginx
/// does for `proxy_pass` to an address found at run time: `u->resolved`,
/// one address, no `upstream` block and so no `keepalive`). `Err` when no
/// sentinel named one yet, or out of memory.
fn aim_at_primary(req: &Req<'_>, u: *mut ngx_http_upstream_t) -> Result<(), ()> {
    sentinel_watch::with_primary(|primary| aim_at(req, u, primary.ok_or(())?))
}

/// Points the upstream `u` at `primary` (`u->resolved`: one address, no
/// `upstream` block and so no `keepalive`). `Err` when out of memory.
fn aim_at(req: &Req<'_>, u: *mut ngx_http_upstream_t, primary: &Peer) -> Result<(), ()> {
    {
        let pool = req.pool();
        let sa = &primary.sockaddr;
        // Both sockaddr_in and sockaddr_in6 keep the port in bytes 2..4,
        // in network order.
        let port = u16::from_be_bytes([*sa.get(2).ok_or(())?, *sa.get(3).ok_or(())?]);
        // SAFETY: the pool is the live request's; what is allocated in it
        // lives as long as the upstream that points at it.
        unsafe {
            let ur = ngx_pcalloc(pool, size_of::<ngx_http_upstream_resolved_t>())
                .cast::<ngx_http_upstream_resolved_t>();
            let addr = ngx_pnalloc(pool, sa.len()).cast::<u8>();
            let name = ngx_pnalloc(pool, primary.name.len()).cast::<u8>();
            if ur.is_null() || addr.is_null() || name.is_null() {
                return Err(());
            }
            ptr::copy_nonoverlapping(sa.as_ptr(), addr, sa.len());
            ptr::copy_nonoverlapping(primary.name.as_ptr(), name, primary.name.len());
            let text = ngx_str_t {
                len: primary.name.len(),
                data: name,
            };
            // The host is "ip:port", which names no `upstream` block that
            // nginx would pick instead.
            (*ur).host = text;
            (*ur).name = text;
            (*ur).port = port;
            (*ur).naddrs = 1;
            (*ur).sockaddr = addr.cast();
            (*ur).socklen = primary.socklen;
            (*u).resolved = ur;
        }
        Ok(())
    }
}

/// The tier and the call of a Redis subrequest: the call is a raw pointer
/// into the request's pool, made a reference where it is used.
fn parts(req: &Req<'_>) -> Option<(&'static RedisTier, *mut Call)> {
    let tier = req.main_conf()?.redis.as_ref()?;
    Some((tier, call::of(req)?.as_ptr()))
}

unsafe extern "C" fn create_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls an upstream's create_request with the live
    // request whose upstream the handler made (ngx_http_upstream_init_request).
    unsafe { Req::with(r, request_bufs) }
}

/// The upstream's request: the tier's preamble, then the call's commands.
fn request_bufs(req: &mut Req<'_>) -> ngx_int_t {
    let Some((tier, call)) = parts(req) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the call lives in the request's pool; nginx runs one
    // callback of a request at a time, so no other reference to it is in use.
    let call = unsafe { &*call };
    let len = tier.preamble.len() + call.commands.len();
    let pool = req.pool();
    // SAFETY: the pool is the live request's.
    let (b, cl) = unsafe {
        (
            ngx_create_temp_buf(pool, len.max(1)),
            ngx_alloc_chain_link(pool),
        )
    };
    if b.is_null() || cl.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `b` is a fresh buffer of `len` bytes or more, `cl` a fresh
    // link, both in the request's pool; its upstream was made by the handler.
    unsafe {
        for part in [&tier.preamble[..], &call.commands[..]] {
            ptr::copy_nonoverlapping(part.as_ptr(), (*b).last, part.len());
            (*b).last = (*b).last.add(part.len());
        }
        (*b).set_last_buf(1);
        (*cl).buf = b;
        (*cl).next = ptr::null_mut();
        (*req.upstream()).request_bufs = cl;
    }
    NGX_OK as ngx_int_t
}

/// Another server of the upstream gets the whole pipeline again, and a
/// deadline of its own; its replies are read from the start.
unsafe extern "C" fn reinit_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls an upstream's reinit_request with the live
    // request (ngx_http_upstream_reinit).
    unsafe { Req::with(r, read_again) };
    NGX_OK as ngx_int_t
}

fn read_again(req: &mut Req<'_>) {
    let Some((_, call)) = parts(req) else {
        return;
    };
    // SAFETY: the call lives in the request's pool; nginx runs one
    // callback of a request at a time, so no other reference to it is in use.
    let call = unsafe { &mut *call };
    call.outcome = None;
    call.replies.clear();
    call.reader.reset();
    call.fed = 0;
    if let Some(loc) = req.location_conf() {
        let (ms, fails_over) = (loc.redis.deadline_ms(), loc.redis.fails_over_on_deadline());
        // SAFETY: the call's deadline is in the request's pool, where the
        // call stays until the pool goes (`call::start`).
        unsafe { deadline::arm(req, &mut call.deadline, ms, fails_over) };
    }
}

/// Reads the replies: the preamble's, which must be `+OK`, then the call's.
/// nginx calls this each time more bytes are in the buffer; the call's
/// reader keeps its place, so only the new bytes are read.
unsafe extern "C" fn process_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls an upstream's process_header with the live
    // request (ngx_http_upstream_process_header).
    unsafe { Req::with(r, read_replies) }
}

fn read_replies(req: &mut Req<'_>) -> ngx_int_t {
    let Some((tier, call)) = parts(req) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the call lives in the request's pool; nginx runs one
    // callback of a request at a time, so no other reference to it is in use.
    let call = unsafe { &mut *call };
    let u = req.upstream();
    // SAFETY: the upstream nginx runs this for; u->buffer holds what was
    // received so far (pos..last within start..end; pos stays where the
    // first reply starts until the last is read).
    let b = unsafe { &mut (*u).buffer };
    // SAFETY: `b` is that buffer, whose `pos..last` is received bytes.
    let received =
        unsafe { core::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize) };
    let wanted = tier.preamble_replies + call.count;
    let mut at = call.fed.min(received.len());
    while call.replies.len() < wanted {
        let (used, progress) = call.reader.read(&received[at..]);
        at += used;
        match progress {
            Progress::Reply(reply) => call.replies.push(reply),
            Progress::More if b.last != b.end => {
                call.fed = at;
                return NGX_AGAIN as ngx_int_t;
            }
            // Garbage, or replies larger than the buffer.
            Progress::More | Progress::Garbage => {
                call.outcome = Some(Err(Failure::Protocol));
                return NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
            }
        }
    }
    call.fed = at;
    let mut replies = core::mem::take(&mut call.replies);
    let own = replies.split_off(tier.preamble_replies);
    if let Some(bad) = replies.iter().find(|reply| !is_ok(reply)) {
        let failure = call::error_reply(bad).unwrap_or(Failure::Protocol);
        call.outcome = Some(Err(failure));
        return NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
    }
    call.outcome = Some(Ok(own));
    // Anything after the replies means the connection is out of step:
    // it is not reused.
    let keepalive = u32::from(at == received.len());
    b.pos = b.last;
    // SAFETY: `u` is the upstream nginx runs this callback for, in the
    // request's pool; u->state is null or set once the upstream connected.
    unsafe {
        (*u).headers_in.status_n = 200;
        (*u).headers_in.content_length_n = 0;
        if !(*u).state.is_null() {
            (*(*u).state).status = 200;
        }
        (*u).set_keepalive(keepalive);
    }
    NGX_OK as ngx_int_t
}

fn is_ok(reply: &Reply) -> bool {
    matches!(reply, Reply::Status(text) if text.as_slice() == b"OK")
}

unsafe extern "C" fn abort_request(_r: *mut ngx_http_request_t) {}

/// The upstream is done with the call: its deadline goes.
unsafe extern "C" fn finalize_request(r: *mut ngx_http_request_t, _rc: ngx_int_t) {
    // SAFETY: nginx calls an upstream's finalize_request with the live
    // request (ngx_http_upstream_finalize_request).
    let call = unsafe { Req::with(r, |req| call::of(req)) };
    if let Some(call) = call {
        // SAFETY: the call lives in the request's pool; no other reference
        // to it is in use while nginx runs this callback.
        unsafe { (*call.as_ptr()).deadline.disarm() };
    }
}

/// The answer has no body: the subrequest ends as soon as its header is in.
unsafe extern "C" fn filter_init(data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes the upstream's input_filter_ctx, which the
    // handler set to the live subrequest, whose upstream is filtering.
    unsafe { (*(*data.cast::<ngx_http_request_t>()).upstream).length = 0 };
    NGX_OK as ngx_int_t
}

/// Bytes past the replies: dropped, and the connection is not reused.
unsafe extern "C" fn filter(data: *mut c_void, _bytes: isize) -> ngx_int_t {
    // SAFETY: nginx passes the upstream's input_filter_ctx, which the
    // handler set to the live subrequest, whose upstream is filtering.
    unsafe {
        let u = (*data.cast::<ngx_http_request_t>()).upstream;
        (*u).set_keepalive(0);
        (*u).length = 0;
    }
    NGX_OK as ngx_int_t
}

/// `init_main_conf`: once the http block is parsed, gives every location
/// with `auth_oauth2_token_redis_pass` its `ngx_http_upstream_conf_t`,
/// pointing at the upstream of `auth_oauth2_token_redis` (which may come
/// after the location in the configuration).
pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's MainConf; each pointer in
    // redis_passes is a LocationConf of this configuration (its pool).
    unsafe {
        let main = &mut *conf.cast::<MainConf>();
        if main.redis_passes.is_empty() {
            return tls::init(cf, main);
        }
        let Some(tier) = main.redis.as_ref() else {
            ngx::ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"auth_oauth2_token_redis_pass\" needs \"auth_oauth2_token_redis\" in the http block"
            );
            return NGX_CONF_ERROR;
        };
        if tier.cluster {
            // The upstream module's init_main_conf ran: its balancer is set.
            cluster_peer::wrap(tier.upstream.cast());
        }
        for &loc in &main.redis_passes {
            let loc = &mut *loc.cast::<LocationConf>();
            let uc = ngx::ffi::ngx_pcalloc((*cf).pool, size_of::<ngx_http_upstream_conf_t>())
                .cast::<ngx_http_upstream_conf_t>();
            if uc.is_null() {
                return NGX_CONF_ERROR;
            }
            fill(&mut *uc, &loc.redis, tier.upstream);
            loc.redis.pass = Some(uc.cast());
        }
        // TLS (`auth_oauth2_token_redis_ssl*`) once every upstream conf is made.
        tls::init(cf, main)
    }
}

/// The upstream settings of a Redis location, as memcached's with our
/// defaults. `uc` comes zeroed from `ngx_pcalloc`: whatever nginx must not
/// do for us (buffering, temp files, passing the client's headers, body or
/// trailers, ranges, intercepting errors, a local address) stays off.
fn fill(uc: &mut ngx_http_upstream_conf_t, conf: &RedisLocation, upstream: *mut c_void) {
    // nginx's timers are the backstop of the module's deadline (`redis/deadline.rs`).
    let timeout = |t: Option<u64>| {
        (t.unwrap_or(RedisLocation::DEFAULT_TIMEOUT_MS) + deadline::BACKSTOP_MS)
            as ngx::ffi::ngx_msec_t
    };
    uc.upstream = upstream.cast();
    uc.connect_timeout = timeout(conf.connect_timeout_ms);
    uc.send_timeout = timeout(conf.send_timeout_ms);
    uc.read_timeout = timeout(conf.read_timeout_ms);
    uc.buffer_size = conf
        .buffer_size
        .unwrap_or(RedisLocation::DEFAULT_BUFFER_SIZE);
    let next = conf.next_upstream.unwrap_or_default();
    let mut mask = NGX_CONF_BITMASK_SET;
    if next.error {
        mask |= NGX_HTTP_UPSTREAM_FT_ERROR;
    }
    if next.timeout {
        // The module's deadline fails a read (an error to nginx): `timeout`
        // moves on after it as after nginx's own timeouts (`redis/deadline.rs`).
        mask |= NGX_HTTP_UPSTREAM_FT_TIMEOUT | NGX_HTTP_UPSTREAM_FT_ERROR;
    }
    if !next.error && !next.timeout {
        mask |= NGX_HTTP_UPSTREAM_FT_OFF;
    }
    uc.next_upstream = mask as ngx_uint_t;
    // A background write to the Redis tier runs on after the client has gone.
    uc.ignore_client_abort = 1;
}
