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
    ngx_http_run_posted_requests, ngx_http_test_reading, ngx_pool_cleanup_add, ngx_post_event,
    ngx_posted_events, ngx_rbtree_delete, ngx_rbtree_insert, NGX_OK,
};

use crate::handler::ctx::{Flight, RequestCtx, Role};
use crate::handler::question::Question;
use crate::handler::raw::now_ms;
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::CacheKey;

thread_local! {
    static IN_FLIGHT: RefCell<HashMap<CacheKey, Vec<*mut RequestCtx>>> = RefCell::new(HashMap::new());
}

/// Registers `ctx` for `key`: the first becomes the leader, the others wait
/// for it. `None` when nginx is out of memory; the request is then not in
/// the table.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn join<Q: Question>(
    r: *mut ngx_http_request_t,
    ctx: *mut RequestCtx,
    key: CacheKey,
) -> Option<Role> {
    // SAFETY: r is live and ctx its context (this function's contract); the
    // cleanup and the event live in r's pool, as long as ctx.
    unsafe {
        leave_on_cleanup_registered(r, ctx)?;
        let leads = IN_FLIGHT.with_borrow(|map| !map.contains_key(&key));
        if !leads {
            ensure_wake(r, ctx)?;
            watch_client(r)?;
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
        Q::slot(&mut *ctx).joined(key, role);
        Some(role)
    }
}

/// Gives `ctx` the event that resumes its request, made in `r`'s pool.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
unsafe fn ensure_wake(r: *mut ngx_http_request_t, ctx: *mut RequestCtx) -> Option<()> {
    // SAFETY: guaranteed by the caller; a zeroed event is nginx's idle state.
    unsafe {
        if (*ctx).wake_event().is_null() {
            let wake =
                ngx::ffi::ngx_pcalloc((*r).pool, size_of::<ngx_event_t>()).cast::<ngx_event_t>();
            if wake.is_null() {
                return None;
            }
            (*wake).handler = Some(resume);
            (*wake).data = r.cast();
            (*wake).log = (*(*r).connection).log;
            (*ctx).set_wake_event(wake);
        }
        Some(())
    }
}

/// Resumes the request in `ms` milliseconds (a timer on its wake event),
/// while another worker asks the IdP.
///
/// # Safety
/// `r` must be a live request and `ctx` its context.
pub unsafe fn wake_in(r: *mut ngx_http_request_t, ctx: *mut RequestCtx, ms: u64) -> Option<()> {
    // SAFETY: guaranteed by the caller; the cleanup registered here takes
    // the timer out of nginx's tree if the request goes away first.
    unsafe {
        leave_on_cleanup_registered(r, ctx)?;
        ensure_wake(r, ctx)?;
        watch_client(r)?;
        let ev = (*ctx).wake_event();
        if (*ev).timer_set() == 0 {
            (*ev).timer.key = ngx_current_msec.wrapping_add(ms as ngx::ffi::ngx_msec_t);
            ngx_rbtree_insert(&raw mut ngx_event_timer_rbtree, &raw mut (*ev).timer);
            (*ev).set_timer_set(1);
        }
        Some(())
    }
}

/// Registers, once per request, the pool cleanup that takes the request
/// out of the in-flight table (and its wake timer out of nginx's tree).
///
/// # Safety
/// `r` must be a live request and `ctx` its context, in its pool.
unsafe fn leave_on_cleanup_registered(
    r: *mut ngx_http_request_t,
    ctx: *mut RequestCtx,
) -> Option<()> {
    // SAFETY: guaranteed by the caller; the cleanup runs with the pool,
    // which holds ctx until then.
    unsafe {
        if !(*ctx).leaves_on_cleanup() {
            let cleanup = ngx_pool_cleanup_add((*r).pool, 0);
            if cleanup.is_null() {
                return None;
            }
            (*cleanup).handler = Some(leave_on_cleanup);
            (*cleanup).data = ctx.cast();
            (*ctx).cleanup_registered();
        }
        Some(())
    }
}

/// The leader of `key` has its answer: `deliver` copies it into every
/// waiter, which is then woken.
///
/// # Safety
/// Every context in the table is live (each leaves it in its pool cleanup).
pub unsafe fn finish(key: CacheKey, deliver: impl Fn(*mut RequestCtx)) {
    // SAFETY: every context in the table is live: each registers a pool
    // cleanup (leave_on_cleanup) that takes it out before its pool goes.
    unsafe {
        for waiter in IN_FLIGHT
            .with_borrow_mut(|map| map.remove(&key))
            .unwrap_or_default()
        {
            deliver(waiter);
            wake(waiter);
        }
    }
}

/// The request's pool is going away (answered, or ended by nginx: its
/// client left, a timeout, an error): a mark it still holds for the other
/// workers comes off, so that they ask at once rather than at the mark's
/// deadline; a leader hands the question back to its waiters; a waiter
/// leaves the queue. Either way its wake event must not fire any more.
unsafe extern "C" fn leave_on_cleanup(data: *mut c_void) {
    let ctx = data.cast::<RequestCtx>();
    // SAFETY: `data` is the context that registered this cleanup; cleanups
    // run in reverse order of registration, so before the context is dropped.
    unsafe {
        let ev = (*ctx).wake_event();
        if !ev.is_null() && (*ev).posted() != 0 {
            ngx_delete_posted_event(ev);
        }
        if !ev.is_null() && (*ev).timer_set() != 0 {
            ngx_rbtree_delete(&raw mut ngx_event_timer_rbtree, &raw mut (*ev).timer);
            (*ev).set_timer_set(0);
        }
        // Before the waiters are sent back, so that the first to look again
        // can mark the key itself.
        let now = now_ms();
        for held in (*ctx).abandon_marks().into_iter().flatten() {
            if held.mark.taken_off_at(now) {
                held.zone.release(&held.mark.key);
            }
        }
        let Some(Flight { key, role }) = (*ctx).leave_flight() else {
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
            (*waiter).sent_back();
            wake(waiter);
        }
    }
}

/// Posts the waiter's event; nginx then runs its phases again.
///
/// # Safety
/// `ctx` must be a live context.
unsafe fn wake(ctx: *mut RequestCtx) {
    // SAFETY: the event lives in the request pool; the posted queue is nginx's.
    unsafe {
        if !(*ctx).wake_event().is_null() {
            ngx_post_event((*ctx).wake_event(), &raw mut ngx_posted_events);
        }
    }
}

/// Handler of a waiter's wake event: the request stops watching its client
/// (see [`watch_client`]) and runs its phases again, which brings it back to
/// the phase handler, and whatever that posted.
unsafe extern "C" fn resume(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the request whose context owns this event; a posted
    // event is removed when the request's pool goes, so the request is live.
    unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        let c = (*r).connection;
        (*r).read_event_handler = Some(ngx_http_block_reading);
        if let Some(handler) = (*r).write_event_handler {
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
///
/// # Safety
/// `r` must be a live request.
unsafe fn watch_client(r: *mut ngx_http_request_t) -> Option<()> {
    // SAFETY: r is live (the caller's contract), and so its connection and
    // the connection's read event; nginx's posted queue is this worker's.
    unsafe {
        if r != (*r).main {
            // Not reached (only main requests wait), and a subrequest is not
            // the one that reads the client's connection.
            return Some(());
        }
        let rev = (*(*r).connection).read;
        if (*rev).ready() != 0 {
            ngx_post_event(rev, &raw mut ngx_posted_events);
        } else if ngx_handle_read_event(rev, 0) != NGX_OK as ngx::ffi::ngx_int_t {
            return None;
        }
        (*r).read_event_handler = Some(ngx_http_test_reading);
        Some(())
    }
}
