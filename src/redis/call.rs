//! A call to Redis, as the request flow makes it: an in-memory subrequest
//! to the internal location with `auth_oauth2_token_redis_pass`, whose
//! content handler (`redis/upstream.rs`) sends the pipeline and reads the
//! replies into the call; the post-subrequest handler hands them over.
//!
//! The call lives in the request pool and is found from the subrequest
//! through `post_subrequest` (its handler is [`call_done`]): the module's
//! context slot of the subrequest belongs to the ACCESS/PREACCESS code.
//!
//! A failed call is logged here ([`note_failure`]): at most one line per
//! kind of failure every 10 s per worker, never per request.

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_http_post_subrequest_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_log_t,
    ngx_pool_cleanup_add, ngx_str_t, ngx_uint_t, NGX_AGAIN, NGX_HTTP_BAD_GATEWAY,
    NGX_HTTP_GATEWAY_TIME_OUT, NGX_HTTP_SUBREQUEST_BACKGROUND, NGX_HTTP_SUBREQUEST_IN_MEMORY,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_LOG_ERR, NGX_OK,
};
use ngx::http::HttpModuleMainConf;

use super::deadline::{self, Deadline};
pub use super::failure::Failure;
use super::failure::{self, KINDS, LOG_INTERVAL_S};
use crate::metrics::Catalogue;
use crate::module::Module;
use crate::redis::resp::Reply;
use crate::resilience::log_gate::LogGate;

// The plain codes `Failure::of_ending` reads are nginx's.
const _: () = assert!(
    failure::BAD_GATEWAY == NGX_HTTP_BAD_GATEWAY as isize
        && failure::GATEWAY_TIME_OUT == NGX_HTTP_GATEWAY_TIME_OUT as isize
);

/// Called once per call, from the post-subrequest handler, with the parent
/// request (for waited calls nginx then runs the parent's phase handler
/// again) and the caller's `data`. `Ok` holds one reply per command of the
/// caller, in order; an `-ERR` among them is a `Reply::Error` (see
/// [`error_reply`]). A `Failure` was already logged ([`note_failure`]).
pub type Done = unsafe fn(
    parent: *mut ngx_http_request_t,
    data: *mut c_void,
    result: Result<Vec<Reply>, Failure>,
);

/// One call's state, in the request pool.
pub struct Call {
    /// The caller's commands, RESP-encoded.
    pub(super) commands: Vec<u8>,
    /// How many replies they ask for.
    pub(super) count: usize,
    done: Option<Done>,
    data: *mut c_void,
    /// What the upstream made of the replies (set by `redis/upstream.rs`).
    pub(super) outcome: Option<Result<Vec<Reply>, Failure>>,
    reported: bool,
    /// When the call gives up, and whether it did.
    pub(super) deadline: Deadline,
}

/// Starts a call: `commands` (RESP, `count` commands) after the
/// configured `AUTH`/`SELECT`, through the internal location `uri` (a
/// location of this server with `auth_oauth2_token_redis_pass`).
///
/// Waited (`background == false`): return `NGX_AGAIN` from the phase
/// handler; `done` runs when the replies are in, then nginx runs the phase
/// handler again. Background: the client's request never waits for it (a
/// write to the Redis tier); `done` may be `None`.
///
/// # Safety
/// `r` must be a live request that is not an in-memory subrequest; `data`
/// must stay valid until `done` runs (request-pool memory does).
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    uri: &[u8],
    commands: &[u8],
    count: usize,
    background: bool,
    done: Option<Done>,
    data: *mut c_void,
) -> Result<(), ()> {
    let call = Call {
        commands: commands.to_vec(),
        count,
        done,
        data,
        outcome: None,
        reported: false,
        deadline: Deadline::new(),
    };
    // SAFETY: r is live; the call, the post-subrequest record and the URI
    // are allocated in its pool, which every subrequest shares and which
    // outlives them; the call is written only after both allocations
    // succeeded, and the cleanup drops it with the pool.
    unsafe {
        let pool = (*r).pool;
        let p = ngx::ffi::ngx_palloc(pool, size_of::<Call>()).cast::<Call>();
        let cleanup = ngx_pool_cleanup_add(pool, 0);
        let ps = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_post_subrequest_t>())
            .cast::<ngx_http_post_subrequest_t>();
        let mut uri = ngx_str_t::from_bytes(pool, uri).ok_or(())?;
        if p.is_null() || cleanup.is_null() || ps.is_null() {
            return Err(());
        }
        p.write(call);
        (*cleanup).handler = Some(drop_call);
        (*cleanup).data = p.cast();
        (*ps).handler = Some(call_done);
        (*ps).data = p.cast();

        let mut flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
        if background {
            flags |= NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t;
        }
        let mut sr: *mut ngx_http_request_t = ptr::null_mut();
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags)
            != NGX_OK as ngx_int_t
        {
            // Never started: nobody will call done.
            (*p).reported = true;
            return Err(());
        }
        Ok(())
    }
}

unsafe extern "C" fn drop_call(data: *mut c_void) {
    // SAFETY: `data` is the Call `start` wrote; the pool runs each cleanup
    // once; its deadline leaves the timer tree before its memory goes.
    unsafe {
        let call = data.cast::<Call>();
        deadline::disarm(ptr::addr_of_mut!((*call).deadline));
        ptr::drop_in_place(call);
    }
}

/// The call a subrequest makes, when it is one of ours.
///
/// # Safety
/// `r` must be a live request.
pub(super) unsafe fn of(r: *mut ngx_http_request_t) -> Option<*mut Call> {
    // SAFETY: a request's post_subrequest is null or the record its
    // creator gave; ours carries a Call (checked by the handler pointer).
    unsafe {
        let ps = (*r).post_subrequest;
        if ps.is_null()
            || (*ps).handler.map(|h| h as *const () as usize)
                != Some(call_done as *const () as usize)
        {
            return None;
        }
        Some((*ps).data.cast())
    }
}

/// Whether `r` is one of the module's Redis subrequests, which are never
/// checked themselves.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn is_redis_call(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { of(r).is_some() }
}

/// nginx calls this when the subrequest is finalized, possibly more than
/// once (again after an error page): the first call reports.
unsafe extern "C" fn call_done(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    if rc == NGX_AGAIN as ngx_int_t {
        return rc;
    }
    // SAFETY: `data` is the Call `start` registered with this subrequest,
    // in the pool it shares with its parent; sr is the finished subrequest.
    unsafe {
        let call = &mut *data.cast::<Call>();
        if call.reported {
            return rc;
        }
        call.reported = true;
        deadline::disarm(&mut call.deadline);
        let status = (*sr).headers_out.status;
        let result = match call.outcome.take() {
            Some(outcome) => outcome,
            None => Err(Failure::of_ending(call.deadline.passed, rc, status)),
        };
        if let Err(failure) = &result {
            note_failure((*(*sr).connection).log, failure);
        }
        if let Some(done) = call.done {
            done((*sr).parent, call.data, result);
        }
    }
    rc
}

thread_local! {
    /// This worker's gate (nginx runs the module on one thread per worker).
    static GATE: RefCell<LogGate<KINDS>> = RefCell::new(LogGate::default());
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts `failure` in `oauth2_token_shared_cache_failures_total` and logs
/// it at `error`, unless a line about the same kind was logged by this
/// worker in the last 10 s.
pub fn note_failure(log: *mut ngx_log_t, failure: &Failure) {
    // SAFETY: a worker's cycle is set up before any request or event runs;
    // the main conf lives as long as the cycle.
    if let Some(main) = unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) } {
        main.counters
            .add(Catalogue::shared_failure(failure.metric()), 1);
    }
    let allowed = GATE.with(|gate| {
        gate.borrow_mut()
            .allow(failure.slot(), now_s(), LOG_INTERVAL_S)
    });
    if !allowed || log.is_null() {
        return;
    }
    ngx::ngx_log_error!(NGX_LOG_ERR, log, "{}", failure.log_line());
}

/// The failure an `-ERR` reply to the caller's own commands stands for,
/// `None` for any other reply: `note_failure(log, &f)` logs it.
pub fn error_reply(reply: &Reply) -> Option<Failure> {
    Failure::of_reply(reply)
}
