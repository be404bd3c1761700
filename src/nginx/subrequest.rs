//! Every subrequest the module makes (IdP calls, Redis calls): in memory,
//! waited or in the background, and finished through one post-subrequest
//! handler, which is also how the module knows its own subrequests.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_http_post_subrequest_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_str_t,
    ngx_uint_t, NGX_AGAIN, NGX_HTTP_SUBREQUEST_BACKGROUND, NGX_HTTP_SUBREQUEST_IN_MEMORY,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_OK,
};

/// Runs once, when the subrequest `sr` is finalized with `rc`, with the
/// `data` its caller gave.
pub type OnDone = unsafe fn(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t);

/// What nginx hands back to [`finished`]: the caller's callback and data.
struct Record {
    on_done: OnDone,
    data: *mut c_void,
    reported: bool,
}

/// Starts an in-memory subrequest of `r` to the internal location `uri`.
/// Waited, nginx runs `r`'s phase handler again once `on_done` ran; in the
/// background (after the client's request, as proxy_cache_background_update),
/// the client's request does not wait for it.
///
/// # Safety
/// `r` must be a live request; `data` must stay valid until `on_done` runs
/// (request-pool memory does).
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    uri: &[u8],
    background: bool,
    on_done: OnDone,
    data: *mut c_void,
) -> Result<*mut ngx_http_request_t, ()> {
    // SAFETY: r is live; the record, the post-subrequest record and the URI
    // are in its pool, which the subrequest shares and which outlives it.
    unsafe {
        let pool = (*r).pool;
        let record = ngx::ffi::ngx_palloc(pool, size_of::<Record>()).cast::<Record>();
        let ps = ngx::ffi::ngx_pcalloc(pool, size_of::<ngx_http_post_subrequest_t>())
            .cast::<ngx_http_post_subrequest_t>();
        let mut uri = ngx_str_t::from_bytes(pool, uri).ok_or(())?;
        if record.is_null() || ps.is_null() {
            return Err(());
        }
        record.write(Record {
            on_done,
            data,
            reported: false,
        });
        (*ps).handler = Some(finished);
        (*ps).data = record.cast();
        let mut flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
        if background {
            flags |= NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t;
        }
        let mut sr: *mut ngx_http_request_t = ptr::null_mut();
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags)
            != NGX_OK as ngx_int_t
        {
            return Err(());
        }
        Ok(sr)
    }
}

/// The record of `r`, when `r` is one of the module's subrequests.
///
/// # Safety
/// `r` must be a live request.
unsafe fn record_of(r: *mut ngx_http_request_t) -> Option<*mut Record> {
    // SAFETY: a request's post_subrequest is null or the record its creator
    // gave; ours have `finished` as handler and a Record as data.
    unsafe {
        let ps = (*r).post_subrequest;
        if ps.is_null()
            || (*ps).handler.map(|h| h as *const () as usize)
                != Some(finished as *const () as usize)
        {
            return None;
        }
        Some((*ps).data.cast())
    }
}

/// Whether `r` is one of the module's own subrequests, which the token
/// check leaves alone.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn is_ours(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is a live request (this function's contract), all record_of needs.
    unsafe { record_of(r).is_some() }
}

/// The data of the module's subrequest `r` made with `on_done`.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn data_of(r: *mut ngx_http_request_t, on_done: OnDone) -> Option<*mut c_void> {
    // SAFETY: r is a live request (this function's contract); a record
    // record_of returns is the one `start` wrote into r's pool, alive with it.
    unsafe {
        let record = record_of(r)?;
        ((*record).on_done as usize == on_done as usize).then(|| (*record).data)
    }
}

/// nginx calls this when the subrequest is finalized, possibly more than
/// once (again after an error page): the first call reports.
unsafe extern "C" fn finished(
    sr: *mut ngx_http_request_t,
    data: *mut c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    if rc == NGX_AGAIN as ngx_int_t {
        return rc;
    }
    // SAFETY: `data` is the Record `start` registered with this subrequest,
    // in the pool it shares with its parent.
    unsafe {
        let record = &mut *data.cast::<Record>();
        if !record.reported {
            record.reported = true;
            (record.on_done)(sr, record.data, rc);
        }
    }
    rc
}
