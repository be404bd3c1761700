//! Introspections in flight in this worker, so that concurrent requests for
//! the same uncached token share one IdP call: the first request leads, the
//! others wait and are woken with its outcome.
//!
//! The table holds pointers to request contexts; a context removes itself
//! when its request's pool is destroyed (see `RequestCtx`'s `Drop`), so no
//! pointer outlives its request. A leader that goes away without an outcome
//! sends its waiters back to start over.

use core::cell::RefCell;
use std::collections::HashMap;

use ngx::ffi::{
    ngx_event_t, ngx_http_request_t, ngx_http_run_posted_requests, ngx_post_event,
    ngx_posted_events,
};

use crate::handler::{RequestCtx, Waiting};
use crate::oauth::cache::CacheKey;

thread_local! {
    static IN_FLIGHT: RefCell<HashMap<CacheKey, Vec<*mut RequestCtx>>> = RefCell::new(HashMap::new());
}

pub enum Role {
    Leader,
    Waiter,
}

/// Registers `ctx` for `key`: the first becomes the leader.
pub fn join(key: CacheKey, ctx: *mut RequestCtx) -> Role {
    IN_FLIGHT.with_borrow_mut(|map| match map.get_mut(&key) {
        Some(waiters) => {
            waiters.push(ctx);
            Role::Waiter
        }
        None => {
            map.insert(key, Vec::new());
            Role::Leader
        }
    })
}

/// The leader has its outcome: every waiter gets a copy and is woken.
///
/// # Safety
/// Every pointer in the table must be a live context (guaranteed by `Drop`).
pub unsafe fn finish(key: &CacheKey, ctx: &RequestCtx) {
    for waiter in IN_FLIGHT
        .with_borrow_mut(|map| map.remove(key))
        .unwrap_or_default()
    {
        // SAFETY: see above.
        unsafe {
            (*waiter).outcome = ctx.outcome.clone();
            (*waiter).waiting = Waiting::No;
            wake(waiter);
        }
    }
}

/// A context is going away: a leader hands the work back to its waiters; a
/// waiter leaves the queue.
///
/// # Safety
/// Every pointer in the table must be a live context.
pub unsafe fn leave(key: &CacheKey, ctx: *mut RequestCtx, leader: bool) {
    let restart = IN_FLIGHT.with_borrow_mut(|map| {
        if leader {
            return map.remove(key).unwrap_or_default();
        }
        if let Some(waiters) = map.get_mut(key) {
            waiters.retain(|w| *w != ctx);
        }
        Vec::new()
    });
    for waiter in restart {
        // SAFETY: see above.
        unsafe {
            (*waiter).waiting = Waiting::Restart;
            wake(waiter);
        }
    }
}

/// Posts the waiter's event; nginx then runs its phases again.
///
/// # Safety
/// `ctx` must be a live context; a waiter's `wake` event is set up by
/// `access` as soon as it joins.
unsafe fn wake(ctx: *mut RequestCtx) {
    // SAFETY: the event lives in the request pool; the posted queue is nginx's.
    unsafe {
        if !(*ctx).wake.is_null() {
            ngx_post_event((*ctx).wake, &raw mut ngx_posted_events);
        }
    }
}

/// Handler of a waiter's wake event: re-runs the request's phases, which
/// brings it back to the ACCESS handler, and whatever that posted.
pub unsafe extern "C" fn resume(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the request whose context owns this event; a posted
    // event is removed when the context drops, so the request is live.
    unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        let c = (*r).connection;
        if let Some(handler) = (*r).write_event_handler {
            handler(r);
        }
        ngx_http_run_posted_requests(c);
    }
}
