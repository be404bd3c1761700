//! Small, checked operations on an `ngx_http_request_t` that the handler and
//! the variables share: module context, pool copies, headers.

use core::ptr;

use ngx::core::Pool;
use ngx::ffi::{
    ngx_http_request_t, ngx_list_init, ngx_list_push, ngx_list_t, ngx_str_t, ngx_table_elt_t,
};
use ngx::http::{list_iterator, HttpModule};

use crate::Module;

/// This module's context of `r`, if one was set.
///
/// # Safety
/// `r` must be a live request whose context slot for this module is null or
/// holds a `T` set with [`create_ctx`].
pub unsafe fn ctx<'r, T>(r: *mut ngx_http_request_t) -> Option<&'r mut T> {
    // SAFETY: ctx is an array of ngx_http_max_module slots and ctx_index is ours.
    unsafe {
        (*(*r).ctx.add(Module::module().ctx_index))
            .cast::<T>()
            .as_mut()
    }
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

/// Moves `value` into the request pool (dropped when the pool is destroyed)
/// and makes it this module's context of `r`.
///
/// # Safety
/// `r` must be a live request; `T` must be the only type used as this
/// module's context.
pub unsafe fn create_ctx<'r, T>(r: *mut ngx_http_request_t, value: T) -> Option<&'r mut T> {
    // SAFETY: the request pool outlives every use of the request; allocate()
    // registers a cleanup that drops the value with the pool.
    unsafe {
        let p = Pool::from_ngx_pool((*r).pool).allocate(value);
        if p.is_null() {
            return None;
        }
        *(*r).ctx.add(Module::module().ctx_index) = p.cast();
        Some(&mut *p)
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
