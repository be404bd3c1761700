//! A Redis call's deadline, kept by the module instead of nginx's upstream
//! timers. When nginx's connect or read timer ends a call, its upstream code
//! logs "upstream timed out" at `error` for each call: a slow Redis would
//! write one line per request. At the deadline the module makes the
//! connection's next read fail instead, which nginx handles as
//! `next_upstream error` and logs at `info`; the call reports a timeout.
//! nginx's own timers stay, [`BACKSTOP_MS`] later, in case this one is lost.

use core::ptr;

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_del_timer, ngx_event_t, ngx_http_request_t, ngx_msec_t,
    ngx_post_event, ngx_posted_events, NGX_ERROR,
};

use crate::nginx::req::Req;

/// How much later than the module's deadline nginx's own timers fire.
pub const BACKSTOP_MS: u64 = 1000;

/// A call's deadline: its timer, its subrequest, how long each try may
/// take, whether a passed deadline may move on to the upstream's next
/// server (`next_upstream timeout`), and whether it passed.
pub struct Deadline {
    ev: ngx_event_t,
    request: *mut ngx_http_request_t,
    ms: u64,
    fails_over: bool,
    pub passed: bool,
}

impl Deadline {
    pub fn new() -> Deadline {
        Deadline {
            // SAFETY: an all-zero ngx_event_t is an idle event (nginx pcallocs them).
            ev: unsafe { core::mem::zeroed() },
            request: ptr::null_mut(),
            ms: 0,
            fails_over: false,
            passed: false,
        }
    }

    /// Takes the deadline out of the timer tree, if it is there.
    pub fn disarm(&mut self) {
        if self.ev.timer_set() != 0 {
            // SAFETY: the event is this deadline's own, in nginx's timer
            // tree while `timer_set` is on.
            unsafe { ngx_del_timer(&mut self.ev) };
        }
    }
}

impl Drop for Deadline {
    /// A deadline leaves the timer tree before its memory goes.
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Arms `deadline`, the one of the Redis subrequest `sr`'s call, `ms` from
/// now (again for another server of the upstream). A deadline that passes
/// fails the read, which nginx treats as an error: moving on to the next
/// server then needs `error` in nginx's mask, and `fails_over` says
/// whether it may.
///
/// # Safety
/// `deadline` is the call's, in the subrequest's pool, where it does not
/// move until it is dropped (which disarms it).
pub unsafe fn arm(sr: &Req<'_>, deadline: *mut Deadline, ms: u64, fails_over: bool) {
    // SAFETY: `deadline` lives, unmoved, in the request pool (this
    // function's contract); the `&mut` lasts for this call.
    let deadline = unsafe { &mut *deadline };
    deadline.disarm();
    deadline.request = sr.as_ptr();
    deadline.ms = ms;
    deadline.fails_over = fails_over;
    deadline.passed = false;
    deadline.ev.handler = Some(passed);
    deadline.ev.data = ptr::from_mut(deadline).cast();
    deadline.ev.log = sr.log();
    // SAFETY: the event stays where it is until it is disarmed (above).
    unsafe { ngx_add_timer(&mut deadline.ev, ms as ngx_msec_t) };
}

/// The deadline passed: the call has timed out; its connection's next read
/// fails, and nginx is made to read now. The next server, if nginx moves on
/// to one, gets a deadline of its own from now (nginx re-initialises a call
/// for the next server only once its request was sent).
unsafe extern "C" fn passed(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the armed Deadline, whose subrequest is alive while
    // it is armed: the upstream's finalize_request, the call's end and the
    // pool's cleanup each disarm it. The peer connection, when there is one,
    // is nginx's live connection.
    unsafe {
        let deadline = (*ev).data.cast::<Deadline>();
        (*deadline).passed = true;
        ngx_add_timer(ev, (*deadline).ms as ngx_msec_t);
        let u = (*(*deadline).request).upstream;
        if u.is_null() || (*u).peer.connection.is_null() {
            return;
        }
        if !(*deadline).fails_over {
            // The read's error ends the call: no server is tried after it.
            (*u).peer.tries = 1;
        }
        let c = (*u).peer.connection;
        (*c).recv = Some(recv_fails);
        let rev = (*c).read;
        (*rev).set_ready(1);
        ngx_post_event(rev, ptr::addr_of_mut!(ngx_posted_events));
    }
}

/// The read of a connection whose call is past its deadline: an error.
unsafe extern "C" fn recv_fails(_c: *mut ngx_connection_t, _buf: *mut u8, _size: usize) -> isize {
    NGX_ERROR as isize
}
