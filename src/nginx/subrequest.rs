//! Every subrequest the module makes (IdP calls, Redis calls): in memory,
//! waited or in the background, and finished through one post-subrequest
//! handler, which is also how the module knows its own subrequests.

use core::any::TypeId;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_create_temp_buf, ngx_http_post_subrequest_t,
    ngx_http_request_body_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init,
    ngx_pfree, ngx_table_elt_t, ngx_uint_t, NGX_AGAIN, NGX_HTTP_GET, NGX_HTTP_POST,
    NGX_HTTP_SUBREQUEST_BACKGROUND, NGX_HTTP_SUBREQUEST_IN_MEMORY, NGX_HTTP_SUBREQUEST_WAITED,
    NGX_OK,
};

use crate::nginx::req::{ngx_str, Req};

/// The caller's callback, with its value, as `finished` runs it.
type Deliver = Box<dyn FnOnce(&mut Req<'_>, ngx_int_t)>;

/// What nginx hands back to [`finished`]: the caller's callback, and the
/// value it gave, found again by [`data_of`].
struct Record {
    /// Taken when the subrequest is reported finished.
    on_done: Option<Deliver>,
    /// The caller's value, a `kind` in the request's pool.
    data: NonNull<c_void>,
    kind: TypeId,
}

/// Starts an in-memory subrequest of `req` to the internal location `uri`,
/// and returns it. `data` is kept in `req`'s pool (dropped with it), and
/// `on_done` gets it when the subrequest is finalized, with its code.
/// Waited, nginx runs `req`'s phase handler again once `on_done` ran; in
/// the background (after the client's request, as
/// proxy_cache_background_update), the client's request does not wait for it.
pub fn start<'r, T: 'static>(
    req: &mut Req<'r>,
    uri: &[u8],
    background: bool,
    data: T,
    on_done: fn(&mut Req<'_>, &mut T, ngx_int_t),
) -> Result<Req<'r>, ()> {
    let uri = req.pool_copy(uri).ok_or(())?;
    let data = req.keep(data).ok_or(())?;
    let deliver = move |sr: &mut Req<'_>, rc: ngx_int_t| {
        // SAFETY: `data` is a T kept in the pool the subrequest shares with
        // `req`, which is destroyed after the subrequest is finalized; while
        // nginx runs its post-subrequest handler, no other callback of the
        // subrequest (the only other users of `data`) runs.
        on_done(sr, unsafe { &mut *data.as_ptr() }, rc)
    };
    let record = req
        .keep(Record {
            on_done: Some(Box::new(deliver)),
            data: data.cast(),
            kind: TypeId::of::<T>(),
        })
        .ok_or(())?;
    let ps = req.pool_zeroed::<ngx_http_post_subrequest_t>().ok_or(())?;
    // SAFETY: `ps` is zeroed room in the request's pool, which the
    // subrequest shares and which outlives it.
    unsafe {
        (*ps.as_ptr()).handler = Some(finished);
        (*ps.as_ptr()).data = record.as_ptr().cast();
    }
    let mut flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
    if background {
        flags |= NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t;
    }
    let mut uri = ngx_str(uri);
    let mut sr: *mut ngx_http_request_t = ptr::null_mut();
    // SAFETY: the request is live (`Req`); the URI and the post-subrequest
    // record are in its pool.
    let rc = unsafe {
        ngx_http_subrequest(
            req.as_ptr(),
            &mut uri,
            ptr::null_mut(),
            &mut sr,
            ps.as_ptr(),
            flags,
        )
    };
    if rc != NGX_OK as ngx_int_t {
        return Err(());
    }
    // SAFETY: nginx made `sr`, a subrequest of `req`, in its pool: it lives
    // as long as `req` does, and is not freed before it ran.
    Ok(unsafe { Req::from_raw(sr) })
}

/// Turns the fresh subrequest `sr` into a POST of `body` with no header:
/// its `headers_in` was a shallow copy of the client's, replaced wholesale
/// instead of edited (the caller then adds its own).
pub fn make_post(sr: &mut Req<'_>, body: &[u8]) -> Option<()> {
    let pool = sr.pool();
    without_client_headers(sr, NGX_HTTP_POST as ngx_uint_t, b"POST", body.len())?;
    let data = sr.pool_copy(body)?;
    let rb = sr.pool_zeroed::<ngx_http_request_body_t>()?.as_ptr();
    let buf = sr.pool_zeroed::<ngx_buf_t>()?.as_ptr();
    // SAFETY: the pool is the live subrequest's.
    let chain = unsafe { ngx_alloc_chain_link(pool) };
    if chain.is_null() {
        return None;
    }
    // SAFETY: `rb`, `buf` and `chain` are zeroed or fresh room in the
    // subrequest's pool; `data` holds the body there.
    unsafe {
        let start = data.as_ptr().cast_mut();
        (*buf).pos = start;
        (*buf).start = start;
        (*buf).last = start.add(data.len());
        (*buf).end = (*buf).last;
        (*buf).set_memory(1);
        (*buf).set_last_buf(1);
        (*chain).buf = buf;
        (*chain).next = ptr::null_mut();
        (*rb).bufs = chain;
    }
    sr.write(|sr| sr.request_body = rb);
    Some(())
}

/// Turns the fresh subrequest `sr` into a GET with no header and no body
/// (nginx made it a GET, but with the client's headers and body).
pub fn make_get(sr: &mut Req<'_>) -> Option<()> {
    without_client_headers(sr, NGX_HTTP_GET as ngx_uint_t, b"GET", 0)?;
    sr.write(|sr| sr.request_body = ptr::null_mut());
    Some(())
}

/// Gives `sr` the method `method` and an empty header list in place of
/// the shallow copy of the client's that nginx gave it.
fn without_client_headers(
    sr: &mut Req<'_>,
    method: ngx_uint_t,
    name: &'static [u8],
    content_length: usize,
) -> Option<()> {
    let pool = sr.pool();
    sr.write(|sr| {
        sr.method = method;
        sr.method_name = ngx_str(name);
        // SAFETY: an all-zero `headers_in` is nginx's empty one (requests
        // are pcalloc'ed); the list is initialised just below.
        sr.headers_in = unsafe { core::mem::zeroed() };
        sr.headers_in.content_length_n = content_length as i64;
        sr.headers_in.keep_alive_n = -1;
    });
    let headers = sr.write(|sr| ptr::addr_of_mut!(sr.headers_in.headers));
    // SAFETY: `headers` is the subrequest's list, `pool` its pool.
    match unsafe { ngx_list_init(headers, pool, 4, size_of::<ngx_table_elt_t>()) } {
        rc if rc == NGX_OK as ngx_int_t => Some(()),
        _ => None,
    }
}

/// nginx reads an in-memory subrequest's answer into a buffer of
/// `subrequest_output_buffer_size` (4 or 8 KiB by default) and ends the
/// whole client request when it overflows. A buffer of `size` bytes put in
/// place first is filled instead ([`forget_answer`] frees it).
pub fn make_room_for_answer(sr: &mut Req<'_>, size: usize) -> Option<()> {
    let pool = sr.pool();
    // SAFETY: the pool is the live subrequest's.
    let (buf, chain) = unsafe { (ngx_create_temp_buf(pool, size), ngx_alloc_chain_link(pool)) };
    if buf.is_null() || chain.is_null() {
        return None;
    }
    // SAFETY: `chain` is a fresh link of the subrequest's pool.
    unsafe {
        (*chain).buf = buf;
        (*chain).next = ptr::null_mut();
    }
    sr.write(|sr| sr.out = chain);
    Some(())
}

/// The body of a finished in-memory subrequest's answer (one buffer in
/// `sr->out`), while `sr` is not changed.
pub fn answer<'a>(sr: &'a Req<'_>) -> &'a [u8] {
    let out = sr.read(|sr| sr.out);
    // SAFETY: `out` is null or the chain nginx filled with the answer, in
    // the subrequest's pool; its buffer stays until `forget_answer`, which
    // takes `sr` mutably.
    unsafe {
        if out.is_null() || (*out).buf.is_null() || (*(*out).buf).pos.is_null() {
            return &[];
        }
        let b = (*out).buf;
        core::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize)
    }
}

/// Frees a large answer's buffer before the request ends (it was read,
/// and nothing reads `sr->out` once it is null). The buffer is usually the
/// one [`make_room_for_answer`] made, but need not be (nginx may have put
/// its own in place): ngx_pfree frees only a large allocation of this pool
/// it finds, and leaves anything else alone.
pub fn forget_answer(sr: &mut Req<'_>) {
    let (out, pool) = sr.read(|sr| (sr.out, sr.pool));
    // SAFETY: `out` is null or the subrequest's chain, in its pool, as is
    // its buffer.
    unsafe {
        if !out.is_null() && !(*out).buf.is_null() && !(*(*out).buf).start.is_null() {
            ngx_pfree(pool, (*(*out).buf).start.cast());
        }
    }
    sr.write(|sr| sr.out = ptr::null_mut());
}

/// The record of `req`, when it is one of the module's subrequests.
fn record_of(req: &Req<'_>) -> Option<NonNull<Record>> {
    let ps = req.post_subrequest();
    if ps.is_null() {
        return None;
    }
    // SAFETY: a request's post_subrequest is null or the record its creator
    // gave, in request memory.
    let (handler, data) = unsafe { ((*ps).handler, (*ps).data) };
    // Ours have `finished` as handler and a Record as data.
    let ours = handler.map(|h| h as *const () as usize) == Some(finished as *const () as usize);
    ours.then(|| NonNull::new(data.cast())).flatten()
}

/// Whether `req` is one of the module's own subrequests, which the token
/// check leaves alone.
pub fn is_ours(req: &Req<'_>) -> bool {
    record_of(req).is_some()
}

/// The value the module's subrequest `req` was started with, when it is a
/// `T`: in the pool the subrequest shares with its parent.
pub fn data_of<T: 'static>(req: &Req<'_>) -> Option<NonNull<T>> {
    let record = record_of(req)?;
    // SAFETY: a record `record_of` returns is the one `start` kept in the
    // pool the subrequest shares with its parent; two words are read.
    let (kind, data) = unsafe { ((*record.as_ptr()).kind, (*record.as_ptr()).data) };
    (kind == TypeId::of::<T>()).then(|| data.cast())
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
    // SAFETY: `data` is the Record `start` kept with this subrequest, in
    // the pool it shares with its parent; nothing else refers to it now.
    let on_done = unsafe { (*data.cast::<Record>()).on_done.take() };
    if let Some(on_done) = on_done {
        // SAFETY: nginx calls a post-subrequest handler with the live
        // subrequest (ngx_http_finalize_request).
        unsafe { Req::with(sr, |sr| on_done(sr, rc)) };
    }
    rc
}
