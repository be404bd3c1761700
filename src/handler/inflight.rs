//! IdP questions in flight in this worker, so that concurrent requests with
//! the same cache key share one IdP call: the first request leads, the others
//! wait and are woken with its answer.
//!
//! The table holds pointers to request contexts. A request that joins it
//! registers a pool cleanup that takes it out again, so no pointer outlives
//! its request; a leader that goes away without an answer sends its waiters
//! back to look again, and a request that goes away holding the key's mark
//! for the other workers takes it off. A request that waits watches its
//! client's connection, so that a client that leaves ends its request (and
//! its place in the queue) at once; see [`watch_client`].

use core::cell::RefCell;
use core::ffi::c_void;
use std::collections::HashMap;

use ngx::ffi::{
    ngx_current_msec, ngx_delete_posted_event, ngx_event_t, ngx_event_timer_rbtree,
    ngx_handle_read_event, ngx_http_block_reading, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_http_test_reading, ngx_post_event, ngx_posted_events,
    ngx_rbtree_delete, ngx_rbtree_insert, NGX_OK,
};

use crate::handler::ctx::{Flight, RequestCtx, Role};
use crate::handler::question::Question;
use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::key::KeyedKeys;
use crate::oauth::cache::CacheKey;

thread_local! {
    /// By key: the keys are keyed hashes already (`KeyedKeys`).
    static IN_FLIGHT: RefCell<HashMap<CacheKey, Vec<*mut RequestCtx>, KeyedKeys>> =
        RefCell::new(HashMap::with_hasher(KeyedKeys::default()));
}

/// Registers the request's context for `key`: the first becomes the
/// leader, the others wait for it. `None` when nginx is out of memory (or
/// the request has no context); the request is then not in the table.
pub fn join_flight<Q: Question>(req: &mut Req<'_>, key: CacheKey) -> Option<Role> {
    let ctx = RequestCtx::of(req)?;
    leave_on_cleanup_registered(req, ctx)?;
    let leads = IN_FLIGHT.with_borrow(|map| !map.contains_key(&key));
    if !leads {
        ensure_wake(req, ctx)?;
        watch_client(req)?;
    }
    let role = IN_FLIGHT.with_borrow_mut(|map| match map.get_mut(&key) {
        Some(waiters) => {
            waiters.push(ctx);
            Role::Waiter
        }
        None => {
            map.insert(key, Vec::new());
            Role::Leader
        }
    });
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
    // lasts for this call, which reaches no nginx code.
    unsafe { Q::slot(&mut *ctx).joined(key, role) };
    Some(role)
}

/// Gives `ctx`, the request's context, the event that resumes the
/// request, made in its pool.
fn ensure_wake(req: &mut Req<'_>, ctx: *mut RequestCtx) -> Option<()> {
    // SAFETY: `ctx` is the request's context, in its pool.
    if !unsafe { (*ctx).wake_event() }.is_null() {
        return Some(());
    }
    let wake = req.pool_zeroed::<ngx_event_t>()?.as_ptr();
    // SAFETY: `wake` is zeroed room in the request's pool (an idle event).
    unsafe {
        (*wake).handler = Some(resume);
        (*wake).data = req.as_ptr().cast();
        (*wake).log = req.log();
    }
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
    // lasts for this call, which reaches no nginx code.
    unsafe { (*ctx).set_wake_event(wake) };
    Some(())
}

/// Resumes the request in `ms` milliseconds (a timer on its wake event),
/// while another worker asks the IdP. `None` when nginx is out of memory.
pub fn wake_after(req: &mut Req<'_>, ms: u64) -> Option<()> {
    let ctx = RequestCtx::of(req)?;
    // The cleanup registered here takes the timer out of nginx's tree if
    // the request goes away first.
    leave_on_cleanup_registered(req, ctx)?;
    ensure_wake(req, ctx)?;
    watch_client(req)?;
    // SAFETY: `ctx` is the request's context, in its pool, whose wake
    // event `ensure_wake` made there.
    let ev = unsafe { (*ctx).wake_event() };
    // SAFETY: `ev` is that event; nginx's timer tree is this worker's.
    unsafe {
        if (*ev).timer_set() == 0 {
            (*ev).timer.key = ngx_current_msec.wrapping_add(ms as ngx::ffi::ngx_msec_t);
            ngx_rbtree_insert(&raw mut ngx_event_timer_rbtree, &raw mut (*ev).timer);
            (*ev).set_timer_set(1);
        }
    }
    Some(())
}

/// Registers, once per request, the pool cleanup that takes the request
/// out of the in-flight table (and its wake timer out of nginx's tree);
/// `ctx` is the request's context.
fn leave_on_cleanup_registered(req: &mut Req<'_>, ctx: *mut RequestCtx) -> Option<()> {
    // SAFETY: `ctx` is the request's context, in its pool.
    if unsafe { (*ctx).leaves_on_cleanup() } {
        return Some(());
    }
    let cleanup = req.add_cleanup(0)?;
    // SAFETY: `cleanup` was just added to the request's pool, which holds
    // `ctx` until the cleanup ran (cleanups run before the pool is freed).
    unsafe {
        (*cleanup.as_ptr()).handler = Some(leave_on_cleanup);
        (*cleanup.as_ptr()).data = ctx.cast();
        (*ctx).cleanup_registered();
    }
    Some(())
}

/// The leader of `key` has its answer: `deliver` copies it into every
/// waiter (a live context: each takes itself out of the table in its pool
/// cleanup), which is then woken.
pub fn finish(key: CacheKey, deliver: impl Fn(*mut RequestCtx)) {
    let waiters = IN_FLIGHT.with_borrow_mut(|map| map.remove(&key));
    for waiter in waiters.unwrap_or_default() {
        deliver(waiter);
        // SAFETY: a context in the table is live: it leaves the table in
        // its pool cleanup (`leave_on_cleanup`).
        unsafe { wake(waiter) };
    }
}

/// The request's pool is going away (answered, or ended by nginx: its
/// client left, a timeout, an error): a mark it still holds for the other
/// workers comes off, so that they ask at once rather than at the mark's
/// deadline; a leader hands the question back to its waiters; a waiter
/// leaves the queue. Either way its wake event must not fire any more.
unsafe extern "C" fn leave_on_cleanup(data: *mut c_void) {
    let ctx = data.cast::<RequestCtx>();
    // SAFETY: `data` is the context that registered this cleanup, in the
    // pool that runs it; cleanups run in reverse order of registration,
    // so before the context is dropped. Its wake event, when it has one,
    // is in the same pool.
    let ev = unsafe { (*ctx).wake_event() };
    if !ev.is_null() {
        // SAFETY: `ev` is the context's wake event, in the pool that runs
        // this cleanup; nginx's posted queue and timer tree are this
        // worker's, and hold the event only while its flags say so.
        unsafe {
            if (*ev).posted() != 0 {
                ngx_delete_posted_event(ev);
            }
            if (*ev).timer_set() != 0 {
                ngx_rbtree_delete(&raw mut ngx_event_timer_rbtree, &raw mut (*ev).timer);
                (*ev).set_timer_set(0);
            }
        }
    }
    // Before the waiters are sent back, so that the first to look again
    // can mark the key itself.
    let now = now_ms();
    // SAFETY: `ctx` is the context that registered this cleanup, not yet
    // dropped (above); the `&mut` lasts for the call, which reaches no nginx code.
    for held in unsafe { (*ctx).abandon_marks() }.into_iter().flatten() {
        if held.mark.taken_off_at(now) {
            held.zone.release(&held.mark.key);
        }
    }
    // SAFETY: `ctx` is the context that registered this cleanup, not yet
    // dropped (above); the `&mut` lasts for the call.
    let Some(Flight { key, role }) = (unsafe { (*ctx).leave_flight() }) else {
        return;
    };
    let restart = IN_FLIGHT.with_borrow_mut(|map| match role {
        Role::Leader => map.remove(&key).unwrap_or_default(),
        Role::Waiter => {
            if let Some(waiters) = map.get_mut(&key) {
                waiters.retain(|w| *w != ctx);
            }
            Vec::new()
        }
        Role::Alone => Vec::new(),
    });
    for waiter in restart {
        // SAFETY: a context in the table is live (it leaves the table in
        // its own pool cleanup), and another request's than `ctx`.
        unsafe {
            (*waiter).sent_back();
            wake(waiter);
        }
    }
}

/// Posts the wake event of `ctx`; nginx then runs its phases again.
///
/// # Safety
/// `ctx` is a live context (one of the in-flight table).
unsafe fn wake(ctx: *mut RequestCtx) {
    // SAFETY: `ctx` is live (this function's contract); its event, when it
    // has one, lives in the same pool; the posted queue is this worker's.
    unsafe {
        let ev = (*ctx).wake_event();
        if !ev.is_null() {
            ngx_post_event(ev, &raw mut ngx_posted_events);
        }
    }
}

/// Handler of a waiter's wake event: the request stops watching its client
/// (see [`watch_client`]) and runs its phases again, which brings it back to
/// the phase handler, and whatever that posted.
unsafe extern "C" fn resume(ev: *mut ngx_event_t) {
    // SAFETY: nginx runs an event's handler with the event, here a wake
    // event `ensure_wake` made in the pool of the request its `data` names.
    let r = unsafe { (*ev).data.cast::<ngx_http_request_t>() };
    // SAFETY: `r` is live: a posted wake event or its armed timer is taken
    // out of nginx's queue and tree when the request's pool goes
    // (`leave_on_cleanup`), so nginx runs this handler only before.
    let (c, write_handler) = unsafe {
        Req::with(r, |req| {
            req.set_read_handler(Some(ngx_http_block_reading));
            (req.connection(), req.write_handler())
        })
    };
    // SAFETY: what nginx's own ngx_http_request_handler does: the request's
    // write handler with the live request (which it may finalize: `r` is
    // not used after it), then the connection's posted requests (nginx
    // never frees a connection, and checks whether it was closed).
    unsafe {
        if let Some(handler) = write_handler {
            handler(r);
        }
        ngx_http_run_posted_requests(c);
    }
}

/// Makes a request that starts to wait for another's answer (its leader's,
/// or another worker's mark) end when its client closes the connection.
///
/// What nginx 1.28 does (src/http/ in the vendored nginx-src):
/// - The phases of a main request run with `r->read_event_handler =
///   ngx_http_block_reading` (`ngx_http_process_request`), which on epoll
///   and kqueue does nothing: a client's EOF is seen by nobody. An ACCESS
///   (or PREACCESS) handler that returns NGX_AGAIN only stops the phase
///   loop (`ngx_http_core_access_phase`, `ngx_http_core_generic_phase`).
/// - A leader waits for its IdP subrequest: `ngx_http_subrequest` makes the
///   subrequest the connection's active request (`c->data = sr`), whose
///   read events go to the subrequest's handler (`ngx_http_request_handler`
///   runs `c->data`'s), and the proxy's `ngx_http_upstream_init_request`
///   sets `ngx_http_upstream_rd_check_broken_connection` there (the IdP
///   location does not set `proxy_ignore_client_abort`). At the client's
///   EOF it finalizes the subrequest with 499, which terminates the main
///   request (`ngx_http_terminate_request`), whose pool goes, and
///   [`leave_on_cleanup`] runs. (A Redis call sets `ignore_client_abort`: a
///   leader asking the shared tier notices its client at the call's end.)
/// - A waiter has no subrequest: `c->data` is the request itself, still
///   with `ngx_http_block_reading`. It gets `ngx_http_test_reading`, as
///   nginx does for a request it holds back (`ngx_http_core_auth_delay`)
///   and while it writes a response (`ngx_http_set_write_handler`): at EOF
///   (`pending_eof` with EPOLLRDHUP, else a `recv(MSG_PEEK)` of 0, or an
///   error) it logs "client prematurely closed connection" (info) and
///   finalizes the request with 499 (NGX_HTTP_CLIENT_CLOSED_REQUEST):
///   `ngx_http_terminate_request`, then `ngx_http_terminate_handler` closes
///   and frees it, and its pool cleanup takes it out of the queue.
/// - An edge-triggered event loop does not report an EOF again that came
///   while `ngx_http_block_reading` was the handler: as
///   `ngx_http_core_auth_delay` does, a read event already `ready` is
///   posted (the handler looks at it once), otherwise it is (re)armed
///   with `ngx_handle_read_event`.
///
/// Waking ([`resume`]) puts `ngx_http_block_reading` back: what runs next
/// (another subrequest, the upstream, reading the body) sets its own.
/// A client that only half-closes its side is taken as gone, as nginx's
/// proxy does unless `proxy_ignore_client_abort` is on.
///
/// `None` when the read event cannot be armed.
fn watch_client(req: &mut Req<'_>) -> Option<()> {
    if !req.is_main() {
        // Not reached (only main requests wait), and a subrequest is not
        // the one that reads the client's connection.
        return Some(());
    }
    // SAFETY: a live request's connection is live, and so its read event.
    let rev = unsafe { (*req.connection()).read };
    // SAFETY: `rev` is that event; nginx's posted queue is this worker's.
    let armed = unsafe {
        if (*rev).ready() != 0 {
            ngx_post_event(rev, &raw mut ngx_posted_events);
            true
        } else {
            ngx_handle_read_event(rev, 0) == NGX_OK as ngx::ffi::ngx_int_t
        }
    };
    if !armed {
        return None;
    }
    req.set_read_handler(Some(ngx_http_test_reading));
    Some(())
}
