//! `Req`'s methods over the request's header lists: look-ups, headers
//! added, `Authorization` replaced in place, the list rebuilt without the
//! headers a location withholds.

use core::ptr::{self, NonNull};

use ngx::ffi::{ngx_list_init, ngx_list_part_t, ngx_list_push, ngx_list_t, ngx_table_elt_t};

use crate::nginx::req::{bytes, ngx_str, Req};
use crate::oauth::carriers::HeaderEdit;

impl<'r> Req<'r> {
    /// The value of the `Authorization` header nginx accepted (one: a second
    /// is a 400 before any module runs).
    pub fn authorization(&self) -> Option<&'r [u8]> {
        let h = self.read(|r| r.headers_in.authorization);
        // SAFETY: nginx's pointer is null or an element of the header list,
        // in request memory, as is its value.
        (!h.is_null()).then(|| unsafe { bytes((*h).value) })
    }

    /// The host the client named: its `Host` header (nginx's pointer to
    /// the one it accepts), else the server name nginx took for it.
    pub fn host(&self) -> &'r [u8] {
        let h = self.read(|r| r.headers_in.host);
        match h.is_null() {
            // SAFETY: nginx sets `server` from the request line's host or
            // the Host header (request memory), or leaves it empty.
            true => self.read(|r| unsafe { bytes(r.headers_in.server) }),
            // SAFETY: nginx's pointer is an element of the header list, in
            // request memory, as is its value.
            false => unsafe { bytes((*h).value) },
        }
    }

    /// nginx's pointer to the `Authorization` header is dropped (the header
    /// left the list, or its value no longer names the client).
    pub fn forget_authorization(&mut self) {
        self.write(|r| r.headers_in.authorization = ptr::null_mut());
    }

    /// The values of every request header named `name` (ASCII
    /// case-insensitive), up to `N` of them, and how many there were in all.
    pub fn header_values<const N: usize>(&self, name: &[u8]) -> ([&'r [u8]; N], usize) {
        let list = self.read(|r| ptr::addr_of!(r.headers_in.headers));
        // SAFETY: the request's header list is initialised and lives in its pool.
        unsafe { values_in(list, name) }
    }

    /// [`Req::header_values`] for each of `names`, in one walk of the list.
    pub fn header_values_of<const N: usize, const K: usize>(
        &self,
        names: [&[u8]; K],
    ) -> [([&'r [u8]; N], usize); K] {
        let list = self.read(|r| ptr::addr_of!(r.headers_in.headers));
        // SAFETY: the request's header list is initialised and lives in its pool.
        unsafe { values_of(list, names) }
    }

    /// As [`Req::header_values`], for the response's headers (a finished
    /// subrequest's answer).
    pub fn response_header_values<const N: usize>(&self, name: &[u8]) -> ([&'r [u8]; N], usize) {
        let list = self.read(|r| ptr::addr_of!(r.headers_out.headers));
        // SAFETY: the response's header list is initialised (nginx makes it
        // with the request) and lives in its pool, as do its keys and values.
        unsafe { values_in(list, name) }
    }

    /// Calls `f` with the value of each request header named `name`, in
    /// order, until it returns `Some`.
    pub fn find_header<T>(
        &self,
        name: &[u8],
        mut f: impl FnMut(&'r [u8]) -> Option<T>,
    ) -> Option<T> {
        let list = self.read(|r| ptr::addr_of!(r.headers_in.headers));
        // SAFETY: the request's header list is initialised and lives in its
        // pool, as do its keys and values.
        unsafe { elements(list) }
            .filter(|h| h.0.eq_ignore_ascii_case(name))
            .find_map(|(_, value)| f(value))
    }

    /// Appends a request header; `key` is a static string and `lowcase`
    /// its lower-case form.
    pub fn push_header(
        &mut self,
        key: &'static [u8],
        lowcase: &'static [u8],
        value: &'r [u8],
    ) -> Option<NonNull<ngx_table_elt_t>> {
        let list = self.write(|r| ptr::addr_of_mut!(r.headers_in.headers));
        // SAFETY: the request's header list is initialised, in its pool;
        // the value is request memory or static.
        unsafe { push(list, key, lowcase, value) }
    }

    /// Appends a response header, as [`Req::push_header`].
    pub fn push_response_header(
        &mut self,
        key: &'static [u8],
        lowcase: &'static [u8],
        value: &'r [u8],
    ) -> Option<NonNull<ngx_table_elt_t>> {
        let list = self.write(|r| ptr::addr_of_mut!(r.headers_out.headers));
        // SAFETY: the response's header list is initialised, in the
        // request's pool; the value is request memory or static.
        unsafe { push(list, key, lowcase, value) }
    }

    /// Appends `WWW-Authenticate: value` to the response, and makes it the
    /// one nginx knows by name.
    pub fn set_www_authenticate(&mut self, value: &'r [u8]) -> Option<()> {
        let h = self.push_response_header(b"WWW-Authenticate", b"www-authenticate", value)?;
        self.write(|r| r.headers_out.www_authenticate = h.as_ptr());
        Some(())
    }

    /// Points the request's `Authorization` header at `value`, editing the
    /// element in place so every reader (proxy, fastcgi, `$http_authorization`)
    /// sees the new value; adds the header if the client sent none.
    pub fn set_authorization(&mut self, value: &'r [u8]) -> Option<()> {
        let list = self.write(|r| ptr::addr_of_mut!(r.headers_in.headers));
        // SAFETY: the header list is the live request's; its elements are
        // only changed in place, never moved.
        let found = unsafe { element_ptrs(list) }.find(|&h| {
            // SAFETY: `h` is an element of that list, its key in request memory.
            unsafe { bytes((*h).key) }.eq_ignore_ascii_case(b"Authorization")
        });
        let h = match found {
            Some(h) => {
                // SAFETY: `h` is an element of that list.
                unsafe { (*h).value = ngx_str(value) };
                h
            }
            None => self
                .push_header(b"Authorization", b"authorization", value)?
                .as_ptr(),
        };
        self.write(|r| r.headers_in.authorization = h);
        Some(())
    }

    /// Gives a subrequest a header list of its own: it starts as a shallow
    /// copy of its parent's, whose elements any in-place edit would change
    /// for the parent too.
    pub fn detach_headers(&mut self) -> Option<()> {
        self.edit_headers(|_, _| HeaderEdit::Keep)
    }

    /// Rebuilds the request's header list with what `edit` makes of each
    /// header (key, value), so that what nginx sends upstream (proxy,
    /// fastcgi, grpc all walk this list) has the change. Typed pointers
    /// such as `headers_in.host` keep pointing at the old elements, which
    /// stay valid; a rewritten value goes to the old element too, for their
    /// readers. A header rewritten to nothing leaves the list.
    pub fn edit_headers(
        &mut self,
        mut edit: impl FnMut(&'r [u8], &'r [u8]) -> HeaderEdit,
    ) -> Option<()> {
        let pool = self.pool();
        let headers = self.write(|r| ptr::addr_of_mut!(r.headers_in.headers));
        // SAFETY: the list is the live request's, initialised; it is read
        // as a whole before it is initialised again in place (its `last`
        // pointer refers to its own first part).
        let old = unsafe { ptr::read(headers) };
        let nalloc = old.nalloc.max(1);
        // SAFETY: `headers` is the request's list, its pool the request's.
        if unsafe { ngx_list_init(headers, pool, nalloc, size_of::<ngx_table_elt_t>()) } != 0 {
            // Out of memory: the old list stays, whole.
            // SAFETY: `headers` is the request's list, written back as it was.
            unsafe { ptr::write(headers, old) };
            return None;
        }
        let mut failed = false;
        // SAFETY: the old list's parts live in the request pool; they are
        // read, and their elements changed in place, never freed.
        for h in unsafe { element_ptrs(&old) } {
            // SAFETY: `h` is an element of the old list.
            let (key, value) = unsafe { (bytes((*h).key), bytes((*h).value)) };
            let keep = match edit(key, value) {
                HeaderEdit::Keep => true,
                HeaderEdit::Remove => false,
                HeaderEdit::Rewrite(rest) => {
                    match self.pool_copy(&rest) {
                        // SAFETY: `h` is an element of the old list, in the pool.
                        Some(value) => unsafe { (*h).value = ngx_str(value) },
                        None => failed = true,
                    }
                    !rest.is_empty()
                }
            };
            if !keep {
                continue;
            }
            // SAFETY: `headers` is the request's new list.
            let copy = unsafe { ngx_list_push(headers) }.cast::<ngx_table_elt_t>();
            if copy.is_null() {
                // SAFETY: `headers` is the request's list, written back as it was.
                unsafe { ptr::write(headers, old) };
                return None;
            }
            // SAFETY: `copy` is room for one element, `h` an element.
            unsafe { ptr::copy_nonoverlapping(h, copy, 1) };
        }
        (!failed).then_some(())
    }
}

/// The elements of an `ngx_table_elt_t` list, part after part.
///
/// # Safety
/// `list` is an initialised header list whose parts live for as long as
/// the iterator is used.
unsafe fn element_ptrs(list: *const ngx_list_t) -> impl Iterator<Item = *mut ngx_table_elt_t> {
    // SAFETY: `list` is an initialised list (this function's contract),
    // whose first part is inside it.
    let mut part: *const ngx_list_part_t = unsafe { ptr::addr_of!((*list).part) };
    let mut i = 0;
    core::iter::from_fn(move || loop {
        if part.is_null() {
            return None;
        }
        // SAFETY: `part` is a part of the list, its `elts` room for `nelts` elements.
        let (elts, nelts, next) = unsafe { ((*part).elts, (*part).nelts, (*part).next) };
        if i < nelts {
            i += 1;
            // SAFETY: `i - 1 < nelts`.
            return Some(unsafe { elts.cast::<ngx_table_elt_t>().add(i - 1) });
        }
        part = next;
        i = 0;
    })
}

/// The (key, value) of each element of a request's header list.
///
/// # Safety
/// `list` is an initialised header list whose parts live for as long as
/// the iterator is used, its keys and values in memory of `'r`.
unsafe fn elements<'r>(list: *const ngx_list_t) -> impl Iterator<Item = (&'r [u8], &'r [u8])> {
    // SAFETY: `list` is an initialised list whose parts outlive the
    // iterator (this function's contract).
    unsafe { element_ptrs(list) }.map(|h| {
        // SAFETY: `h` is an element of the list; its key and value live for 'r.
        unsafe { (bytes((*h).key), bytes((*h).value)) }
    })
}

/// The values of the headers of `list` named `name` (ASCII
/// case-insensitive), up to `N`, and how many there were in all.
///
/// # Safety
/// `list` is an initialised header list in memory of `'r`, with its keys
/// and values.
unsafe fn values_in<'r, const N: usize>(
    list: *const ngx_list_t,
    name: &[u8],
) -> ([&'r [u8]; N], usize) {
    // SAFETY: `list` is an initialised list in memory of 'r, keys and values
    // too (this function's contract).
    let [found] = unsafe { values_of(list, [name]) };
    found
}

/// [`values_in`] for each of `names`, in one walk of `list`.
///
/// # Safety
/// `list` is an initialised header list in memory of `'r`, with its keys
/// and values.
unsafe fn values_of<'r, const N: usize, const K: usize>(
    list: *const ngx_list_t,
    names: [&[u8]; K],
) -> [([&'r [u8]; N], usize); K] {
    let mut found = [([&[][..]; N], 0); K];
    // SAFETY: `list` is an initialised list in memory of 'r, keys and values
    // too (this function's contract).
    for (key, value) in unsafe { elements(list) } {
        let Some(i) = names.iter().position(|name| key.eq_ignore_ascii_case(name)) else {
            continue;
        };
        let (values, count) = &mut found[i];
        if *count < N {
            values[*count] = value;
        }
        *count += 1;
    }
    found
}

/// Appends a header to `list`. The element's other fields are zeroed, so
/// this works with or without the `next` field that nginx 1.23 added.
///
/// # Safety
/// `list` is an initialised `ngx_table_elt_t` list of a live request, and
/// `value` lives as long as the request.
unsafe fn push(
    list: *mut ngx_list_t,
    key: &'static [u8],
    lowcase: &'static [u8],
    value: &[u8],
) -> Option<NonNull<ngx_table_elt_t>> {
    // SAFETY: `list` is an initialised list of a live request (this
    // function's contract); ngx_list_push returns room for one element or null.
    let h = NonNull::new(unsafe { ngx_list_push(list) }.cast::<ngx_table_elt_t>())?;
    let elt = ngx_table_elt_t {
        hash: header_hash(lowcase),
        key: ngx_str(key),
        value: ngx_str(value),
        lowcase_key: lowcase.as_ptr().cast_mut(),
        // SAFETY: the rest of an element is plain data, idle when zeroed.
        ..unsafe { core::mem::zeroed() }
    };
    // SAFETY: `h` is room for one element.
    unsafe { h.write(elt) };
    Some(h)
}

/// nginx's `ngx_hash_key` over a lower-case header name, as modules like
/// proxy use to look headers up.
fn header_hash(lowcase: &[u8]) -> usize {
    lowcase.iter().fold(0usize, |h, &c| {
        h.wrapping_mul(31).wrapping_add(usize::from(c))
    })
}
