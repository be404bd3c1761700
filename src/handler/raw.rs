//! Small, checked operations on an `ngx_http_request_t` that the stages
//! share: module context, pool copies, directive values, headers.

use core::ptr;

use core::ffi::c_void;

use ngx::ffi::{
    ngx_http_complex_value, ngx_http_request_t, ngx_int_t, ngx_list_init, ngx_list_push,
    ngx_list_t, ngx_palloc, ngx_pool_cleanup_add, ngx_str_t, ngx_table_elt_t, NGX_OK,
};
use ngx::http::{list_iterator, HttpModule};

use crate::conf::Template;
use crate::module::Module;

/// This module's context of `r`, if one was set.
///
/// # Safety
/// `r` must be a live request whose context slot for this module is null or
/// holds a `T` set with [`create_ctx`].
pub unsafe fn ctx<T>(r: *mut ngx_http_request_t) -> Option<*mut T> {
    // SAFETY: ctx is an array of ngx_http_max_module slots and ctx_index is ours.
    let slot = unsafe { *(*r).ctx.add(Module::module().ctx_index) };
    (!slot.is_null()).then_some(slot.cast())
}

/// A shared view of this module's context of `r`, for readers such as the
/// variable getters, which nginx may call while the handler is running.
///
/// # Safety
/// As for [`ctx`].
pub unsafe fn ctx_ref<'r, T>(r: *mut ngx_http_request_t) -> Option<&'r T> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*(*r).ctx.add(Module::module().ctx_index))
            .cast::<T>()
            .cast_const()
            .as_ref()
    }
}

/// Moves `value` into the request pool, dropped when the pool is
/// destroyed, and makes it this module's context of `r`. (ngx 0.5.1's
/// `Pool::allocate` writes the value before checking the allocation.)
///
/// # Safety
/// `r` must be a live request; `T` must be the only type used as this
/// module's context.
pub unsafe fn create_ctx<T>(r: *mut ngx_http_request_t, value: T) -> Option<*mut T> {
    const { assert!(core::mem::align_of::<T>() <= NGX_ALIGNMENT) };
    // SAFETY: ngx_palloc returns memory aligned to NGX_ALIGNMENT (checked
    // above) or null; the value is written only after both allocations
    // succeeded, and the cleanup drops it when the pool goes.
    unsafe {
        let pool = (*r).pool;
        let p = ngx_palloc(pool, size_of::<T>()).cast::<T>();
        if p.is_null() {
            return None;
        }
        let cleanup = ngx_pool_cleanup_add(pool, 0);
        if cleanup.is_null() {
            return None;
        }
        p.write(value);
        (*cleanup).handler = Some(drop_value::<T>);
        (*cleanup).data = p.cast();
        *(*r).ctx.add(Module::module().ctx_index) = p.cast();
        Some(p)
    }
}

/// nginx's word alignment for pool allocations (`NGX_ALIGNMENT`).
const NGX_ALIGNMENT: usize = size_of::<core::ffi::c_ulong>();

unsafe extern "C" fn drop_value<T>(data: *mut c_void) {
    // SAFETY: `data` is the value create_ctx wrote; the pool runs each
    // cleanup once.
    unsafe { ptr::drop_in_place(data.cast::<T>()) };
}

/// Evaluates a directive value for this request (empty when unset); the
/// bytes live in the request's pool.
///
/// # Safety
/// `r` must be a live request; `template` a value compiled by the directive.
pub unsafe fn evaluate<'r>(
    r: *mut ngx_http_request_t,
    template: Option<Template>,
) -> Option<&'r [u8]> {
    let Some(Template(cv)) = template else {
        return Some(&[]);
    };
    let mut value = ngx_str_t::empty();
    // SAFETY: nginx evaluates the value into memory of r's pool.
    unsafe {
        if ngx_http_complex_value(r, cv.cast(), &mut value) != NGX_OK as ngx_int_t {
            return None;
        }
        Some(if value.len == 0 {
            &[]
        } else {
            core::slice::from_raw_parts(value.data, value.len)
        })
    }
}

/// Copies `bytes` into the request pool.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn pool_str(r: *mut ngx_http_request_t, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: ngx_str_t::from_bytes copies into memory of the request's pool.
    unsafe { ngx_str_t::from_bytes((*r).pool, bytes) }
}

/// The values of every header named `name` (ASCII case-insensitive), up to
/// `N` of them, and how many there were in all.
///
/// # Safety
/// `list` must be an initialised header list of a live request.
pub unsafe fn header_values<'l, const N: usize>(
    list: &'l ngx_list_t,
    name: &[u8],
) -> ([&'l [u8]; N], usize) {
    let mut found = [&[][..]; N];
    let mut count = 0;
    // SAFETY: the caller guarantees the list is a valid header list.
    for (key, value) in unsafe { list_iterator(list) } {
        if key.as_bytes().eq_ignore_ascii_case(name) {
            if count < N {
                found[count] = value.as_bytes();
            }
            count += 1;
        }
    }
    (found, count)
}

/// Appends a header to `list`; `key` must be a static string and `lowcase`
/// its lower-case form. The element's other fields are zeroed, so this works
/// with or without the `next` field that nginx 1.23 added.
///
/// # Safety
/// `list` must be an initialised `ngx_table_elt_t` list allocated from a pool
/// that outlives `value`'s memory use.
pub unsafe fn push_header(
    list: *mut ngx_list_t,
    key: &'static [u8],
    lowcase: &'static [u8],
    value: ngx_str_t,
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: ngx_list_push returns room for one element or null; we
    // initialise every field before anyone reads it.
    unsafe {
        let h = ngx_list_push(list).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return None;
        }
        ptr::write_bytes(h, 0, 1);
        (*h).hash = header_hash(lowcase);
        (*h).key = ngx_str_t {
            len: key.len(),
            data: key.as_ptr().cast_mut(),
        };
        (*h).lowcase_key = lowcase.as_ptr().cast_mut();
        (*h).value = value;
        Some(h)
    }
}

/// nginx's `ngx_hash_key` over a lower-case header name, as modules like
/// proxy use to look headers up.
fn header_hash(lowcase: &[u8]) -> usize {
    lowcase.iter().fold(0usize, |h, &c| {
        h.wrapping_mul(31).wrapping_add(usize::from(c))
    })
}

/// Points the request's `Authorization` header at `value`, editing the
/// element in place so every reader (proxy, fastcgi, `$http_authorization`)
/// sees the new value; adds the header if the client sent none.
///
/// # Safety
/// `r` must be a live request; `value` must live in its pool.
pub unsafe fn set_authorization(r: *mut ngx_http_request_t, value: ngx_str_t) -> Option<()> {
    // SAFETY: the header list belongs to the live request; elements are
    // only modified in place, never moved.
    unsafe {
        let headers = ptr::addr_of_mut!((*r).headers_in.headers);
        let mut part: *mut ngx::ffi::ngx_list_part_t = ptr::addr_of_mut!((*headers).part);
        while !part.is_null() {
            let elts = (*part).elts.cast::<ngx_table_elt_t>();
            for i in 0..(*part).nelts {
                let h = elts.add(i);
                if (*h).key.as_bytes().eq_ignore_ascii_case(b"Authorization") {
                    (*h).value = value;
                    (*r).headers_in.authorization = h;
                    return Some(());
                }
            }
            part = (*part).next;
        }
        let h = push_header(headers, b"Authorization", b"authorization", value)?;
        (*r).headers_in.authorization = h;
        Some(())
    }
}

/// Gives a subrequest a header list of its own: it starts as a shallow copy
/// of its parent's, whose elements any in-place edit would change for the
/// parent too.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn detach_headers(r: *mut ngx_http_request_t) -> Option<()> {
    // SAFETY: guaranteed by the caller.
    unsafe { retain_headers(r, |_| true) }
}

/// Keeps only the request headers `keep` accepts, so that what nginx sends
/// upstream (proxy, fastcgi, grpc all walk this list) lacks the others.
/// The list is rebuilt rather than edited: typed pointers such as
/// `headers_in.host` keep pointing at the old elements, which stay valid.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn retain_headers(
    r: *mut ngx_http_request_t,
    mut keep: impl FnMut(&mut ngx_table_elt_t) -> bool,
) -> Option<()> {
    // SAFETY: the old list's parts live in the request pool and are only
    // read; the new list is initialised in place, as its `last` pointer
    // refers to its own first part.
    unsafe {
        let headers = ptr::addr_of_mut!((*r).headers_in.headers);
        let old = ptr::read(headers);
        let nalloc = old.nalloc.max(1);
        if ngx_list_init(headers, (*r).pool, nalloc, size_of::<ngx_table_elt_t>()) != 0 {
            // Out of memory: put the old list back, whole.
            ptr::write(headers, old);
            return None;
        }
        let mut part: *const ngx::ffi::ngx_list_part_t = &old.part;
        while !part.is_null() {
            let elts = (*part).elts.cast::<ngx_table_elt_t>();
            for i in 0..(*part).nelts {
                let h = &mut *elts.add(i);
                if keep(h) {
                    let copy = ngx_list_push(headers).cast::<ngx_table_elt_t>();
                    if copy.is_null() {
                        ptr::write(headers, old);
                        return None;
                    }
                    ptr::copy_nonoverlapping(h, copy, 1);
                }
            }
            part = (*part).next;
        }
        Some(())
    }
}

/// nginx's cached time, as the zones' entries count it (ms since the epoch).
pub fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}
