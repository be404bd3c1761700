//! `Req`: the request nginx handed to one of the module's entry points
//! (a phase handler, a content handler, a variable getter, a
//! post-subrequest handler, an upstream callback, an event handler). The
//! one `unsafe` step is making it ([`Req::with`]): the entry point's
//! SAFETY line names the nginx contract that keeps the request alive. What
//! the glue does with a request (its pool, its context, its arguments,
//! directive values) is a safe method here; its headers are `headers.rs`'s.
//!
//! `'r` is the request's lifetime. Bytes that live as long as the request
//! (its pool, its header values, its arguments) come out as `&'r [u8]`, and
//! what is stored in the request (a header's value) must be `&'r` too:
//! request memory or static data. [`Req::with`] hands the entry point's
//! code a `Req` whose `'r` it cannot name, so that no local value can pass
//! for request memory.
//!
//! A `Req` holds a raw pointer, never a `&mut ngx_http_request_t`: nginx
//! reaches the same request through its own pointers whenever the module
//! calls it (a variable getter runs inside `evaluate`), and no Rust
//! reference to the whole request is held across such a call.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use foreign_types::ForeignTypeRef;

use ngx::ffi::{
    ngx_connection_t, ngx_http_complex_value, ngx_http_event_handler_pt, ngx_http_request_body_t,
    ngx_http_request_t, ngx_http_upstream_t, ngx_int_t, ngx_log_t, ngx_palloc, ngx_pnalloc,
    ngx_pool_cleanup_add, ngx_pool_cleanup_pt, ngx_pool_cleanup_t, ngx_pool_t, ngx_str_t,
    ngx_uint_t, sockaddr_in, sockaddr_in6, AF_INET, AF_INET6, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

use crate::conf::{LocationConf, MainConf, Template};
use crate::module::Module;

/// A live request of nginx, for the lifetime `'r`. Not `Copy`: an entry
/// point makes one and lends it out.
pub struct Req<'r> {
    r: NonNull<ngx_http_request_t>,
    /// Invariant in `'r`: a `Req` cannot be taken for one of a shorter life,
    /// whose `&'r` values a local could then stand for.
    life: PhantomData<fn(&'r ()) -> &'r ()>,
}

/// The type this module keeps in a request's context slot.
///
/// # Safety
/// Implemented by one type only: the slot's contents are read back as it.
pub unsafe trait ModuleCtx: Sized {}

impl<'r> Req<'r> {
    /// Runs `f` with the request nginx handed to an entry point.
    ///
    /// # Safety
    /// `r` is a live request of nginx, and stays so while `f` runs (nginx
    /// frees a request only after the calls into the module that concern
    /// it return); what `f` stores in it, its pool keeps until it ends.
    pub unsafe fn with<T>(
        r: *mut ngx_http_request_t,
        f: impl for<'a> FnOnce(&mut Req<'a>) -> T,
    ) -> T {
        // SAFETY: `r` is live (this function's contract), so not null.
        f(&mut unsafe { Req::from_raw(r) })
    }

    /// A `Req` for the lifetime its caller names.
    ///
    /// # Safety
    /// `r` is a live request for the whole of `'r`, and `'r` is no local's
    /// lifetime (a caller generic over `'r`); entry points use [`Req::with`].
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Req<'r> {
        Req {
            // SAFETY: a live request is not null (this function's contract).
            r: unsafe { NonNull::new_unchecked(r) },
            life: PhantomData,
        }
    }

    /// The request, for nginx's functions.
    pub fn as_ptr(&self) -> *mut ngx_http_request_t {
        self.r.as_ptr()
    }

    /// Reads fields of the request. Within `nginx/` only, where no closure
    /// reaches another `Req` (`main`, `parent`) of the same request.
    pub(super) fn read<T>(&self, fields: impl FnOnce(&ngx_http_request_t) -> T) -> T {
        // SAFETY: the request is live (`Req`'s invariant); the reference
        // lasts for this call, in which nothing else reaches the request.
        fields(unsafe { self.r.as_ref() })
    }

    /// Changes fields of the request; within `nginx/` only, as `read`.
    pub(super) fn write<T>(&mut self, fields: impl FnOnce(&mut ngx_http_request_t) -> T) -> T {
        // SAFETY: the request is live (`Req`'s invariant); the reference
        // lasts for this call, in which nothing else reaches the request
        // (`&mut self` is borrowed, and nginx is not called).
        fields(unsafe { self.r.as_mut() })
    }

    /// The request whose subrequest this is, or itself: it outlives its
    /// subrequests.
    pub fn main(&self) -> Req<'r> {
        let main = self.read(|r| r.main);
        // SAFETY: nginx sets `main` of every request, to the main request,
        // which lives until all its subrequests ended.
        unsafe { Req::from_raw(main) }
    }

    pub fn is_main(&self) -> bool {
        self.read(|r| ptr::eq(r.main, r))
    }

    /// The request that made this subrequest.
    pub fn parent(&self) -> Option<Req<'r>> {
        let parent = self.read(|r| r.parent);
        // SAFETY: a subrequest's parent lives until the subrequest ended.
        (!parent.is_null()).then(|| unsafe { Req::from_raw(parent) })
    }

    pub fn method(&self) -> ngx_uint_t {
        self.read(|r| r.method)
    }

    /// Whether nginx redirected the request internally (index, try_files,
    /// error_page, ...).
    pub fn is_internal(&self) -> bool {
        self.read(|r| r.internal() != 0)
    }

    pub fn connection(&self) -> *mut ngx_connection_t {
        self.read(|r| r.connection)
    }

    /// The method's name as the client sent it (`GET`, `POST`, ...).
    pub fn method_name(&self) -> &'r [u8] {
        // SAFETY: nginx points `method_name` into the request line, in
        // request memory (or at a static name for a subrequest).
        self.read(|r| unsafe { bytes(r.method_name) })
    }

    /// Whether the client's connection is over TLS.
    pub fn over_tls(&self) -> bool {
        // SAFETY: a live request's connection is live; its `ssl` is null
        // unless the connection is over TLS.
        self.read(|r| unsafe { !(*r.connection).ssl.is_null() })
    }

    /// The address of the connection's peer (the client, or a front that
    /// stands before nginx), when it is an IP address.
    pub fn peer_addr(&self) -> Option<IpAddr> {
        // SAFETY: a live request's connection is live.
        let sa = self.read(|r| unsafe { (*r.connection).sockaddr });
        if sa.is_null() {
            return None;
        }
        // SAFETY: a live connection's `sockaddr` is nginx's copy of the
        // peer's address (`socklen` bytes): a socket address of the family
        // it names, at least that family's structure long.
        unsafe {
            match u32::from((*sa).sa_family) {
                AF_INET => {
                    let sin = &*sa.cast::<sockaddr_in>();
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                AF_INET6 => {
                    let sin6 = &*sa.cast::<sockaddr_in6>();
                    Some(IpAddr::V6(Ipv6Addr::from(
                        sin6.sin6_addr.__in6_u.__u6_addr8,
                    )))
                }
                _ => None,
            }
        }
    }

    /// The SHA-256 of the client certificate this connection presented
    /// (its DER, as received), when it is over TLS and the client sent one.
    /// Read from OpenSSL's own copy: nothing is encoded or parsed again.
    pub fn client_certificate_sha256(&self) -> Option<[u8; 32]> {
        if !self.over_tls() {
            return None;
        }
        // SAFETY: a live request's connection is live and over TLS (its
        // `ssl` is set, checked above); its `connection` is the SSL object.
        let ssl = self.read(|r| unsafe { (*(*r.connection).ssl).connection });
        if ssl.is_null() {
            return None;
        }
        // SAFETY: `ssl` is nginx's SSL object of this live connection, made
        // by the same libssl the openssl crate calls; it is borrowed for this
        // call only, during which nginx does not use it.
        let ssl = unsafe { openssl::ssl::SslRef::from_ptr(ssl.cast()) };
        let certificate = ssl.peer_certificate()?;
        let digest = certificate
            .digest(openssl::hash::MessageDigest::sha256())
            .ok()?;
        digest.as_ref().try_into().ok()
    }

    /// The connection's log, for `ngx_log_error!`.
    pub fn log(&self) -> *mut ngx_log_t {
        // SAFETY: a live request's connection is live.
        self.read(|r| unsafe { (*r.connection).log })
    }

    pub fn pool(&self) -> *mut ngx_pool_t {
        self.read(|r| r.pool)
    }

    pub fn main_conf(&self) -> Option<&'static MainConf> {
        // SAFETY: the request is live; the reference lasts for the call.
        Module::main_conf(unsafe { self.r.as_ref() })
    }

    pub fn location_conf(&self) -> Option<&'static LocationConf> {
        // SAFETY: the request is live; the reference lasts for the call.
        Module::location_conf(unsafe { self.r.as_ref() })
    }

    /// The upstream the request's content handler made (null: none).
    pub fn upstream(&self) -> *mut ngx_http_upstream_t {
        self.read(|r| r.upstream)
    }

    /// One more reference to the main request, as a content handler that
    /// answers later (an upstream) takes; finalizing with NGX_DONE drops it.
    pub fn add_main_reference(&mut self) {
        self.main().write(|main| main.set_count(main.count() + 1));
    }

    /// What nginx runs when the client's connection can be read.
    pub fn set_read_handler(&mut self, handler: ngx_http_event_handler_pt) {
        self.write(|r| r.read_event_handler = handler);
    }

    /// What nginx runs when the request is resumed (posted, or its
    /// connection can be written).
    pub fn set_write_handler(&mut self, handler: ngx_http_event_handler_pt) {
        self.write(|r| r.write_event_handler = handler);
    }

    pub fn write_handler(&self) -> ngx_http_event_handler_pt {
        self.read(|r| r.write_event_handler)
    }

    /// The body nginx read (null: none, or not read).
    pub fn request_body(&self) -> *mut ngx_http_request_body_t {
        self.read(|r| r.request_body)
    }

    /// Asks nginx to read the body into one buffer.
    pub fn want_body_in_one_buffer(&mut self) {
        self.write(|r| r.set_request_body_in_single_buf(1));
    }

    /// Sets the response's status, length and (static) content type.
    pub fn set_response(
        &mut self,
        status: ngx_uint_t,
        length: usize,
        content_type: Option<&'static str>,
    ) {
        self.write(|r| {
            r.headers_out.status = status;
            r.headers_out.content_length_n = length as i64;
            if let Some(content_type) = content_type {
                r.headers_out.content_type = ngx_str(content_type.as_bytes());
                r.headers_out.content_type_len = content_type.len();
            }
        });
    }

    /// The response is its header only (HEAD, or made so).
    pub fn set_header_only(&mut self) {
        self.write(|r| r.set_header_only(1));
    }

    pub fn is_header_only(&self) -> bool {
        self.read(|r| r.header_only() != 0)
    }

    /// The response status set so far (0: none).
    pub fn status(&self) -> ngx_uint_t {
        self.read(|r| r.headers_out.status)
    }

    pub fn set_status(&mut self, status: ngx_uint_t) {
        self.write(|r| r.headers_out.status = status);
    }

    /// The response's `Content-Type` (a finished subrequest's answer).
    pub fn content_type(&self) -> &'r [u8] {
        // SAFETY: nginx keeps the value in request memory (or static).
        self.read(|r| unsafe { bytes(r.headers_out.content_type) })
    }

    /// What nginx runs when this subrequest is finalized (null: nothing).
    pub fn post_subrequest(&self) -> *mut ngx::ffi::ngx_http_post_subrequest_t {
        self.read(|r| r.post_subrequest)
    }

    /// The URI the request is for now (after rewrites).
    pub fn uri(&self) -> &'r [u8] {
        // SAFETY: nginx keeps the URI in request memory.
        self.read(|r| unsafe { bytes(r.uri) })
    }

    /// The query string, without `?`.
    pub fn args(&self) -> &'r [u8] {
        // SAFETY: the arguments point into request memory (nginx's, or a
        // pool copy of `set_args`).
        self.read(|r| unsafe { bytes(r.args) })
    }

    /// The request line's URI, as the client sent it.
    pub fn unparsed_uri(&self) -> &'r [u8] {
        // SAFETY: the request line lives in request memory (nginx's, or a
        // pool copy of `set_unparsed_uri`).
        self.read(|r| unsafe { bytes(r.unparsed_uri) })
    }

    /// Replaces the query string (`$args`).
    pub fn set_args(&mut self, args: &'r [u8]) {
        let args = match args.is_empty() {
            true => ngx_str_t::empty(),
            false => ngx_str(args),
        };
        self.write(|r| r.args = args);
    }

    /// Replaces the request line's URI (`$request_uri`).
    pub fn set_unparsed_uri(&mut self, uri: &'r [u8]) {
        self.write(|r| r.unparsed_uri = ngx_str(uri));
    }

    // ---- the pool ----------------------------------------------------------

    /// `bytes` copied into the request pool.
    pub fn pool_copy(&self, bytes: &[u8]) -> Option<&'r [u8]> {
        self.pool_concat(&[bytes])
    }

    /// `parts` one after the other in the request pool.
    pub fn pool_concat(&self, parts: &[&[u8]]) -> Option<&'r [u8]> {
        let len = parts.iter().map(|p| p.len()).sum();
        // SAFETY: the pool is the live request's.
        let data = unsafe { ngx_pnalloc(self.pool(), len) }.cast::<u8>();
        if data.is_null() {
            return None;
        }
        let mut at = 0;
        for part in parts {
            // SAFETY: `data` has room for `len` bytes, the parts' sum.
            unsafe { ptr::copy_nonoverlapping(part.as_ptr(), data.add(at), part.len()) };
            at += part.len();
        }
        // SAFETY: `len` bytes written above, in the pool, which lives with
        // the request.
        Some(unsafe { core::slice::from_raw_parts(data, len) })
    }

    /// Zeroed pool memory for one `T` (nginx's structures are idle when
    /// zeroed, as `ngx_pcalloc` makes them).
    pub fn pool_zeroed<T>(&self) -> Option<NonNull<T>> {
        // SAFETY: the pool is the live request's.
        NonNull::new(unsafe { ngx::ffi::ngx_pcalloc(self.pool(), size_of::<T>()) }.cast())
    }

    /// Moves `value` into the request pool; it is dropped when the pool is
    /// destroyed (by a cleanup, only when it needs dropping). (ngx 0.5.1's
    /// `Pool::allocate` writes the value before checking the allocation.)
    pub fn keep<T>(&mut self, value: T) -> Option<NonNull<T>> {
        self.keep_made(|| value)
    }

    /// [`Req::keep`] for the value `make` returns, made once there is room
    /// for it: written in place, not made first and then copied.
    pub fn keep_made<T>(&mut self, make: impl FnOnce() -> T) -> Option<NonNull<T>> {
        const { assert!(core::mem::align_of::<T>() <= NGX_ALIGNMENT) };
        let pool = self.pool();
        // SAFETY: the pool is the live request's.
        let p = NonNull::new(unsafe { ngx_palloc(pool, size_of::<T>()) }.cast::<T>())?;
        if !core::mem::needs_drop::<T>() {
            // SAFETY: `p` is room for a T, aligned to NGX_ALIGNMENT (checked above).
            unsafe { p.write(make()) };
            return Some(p);
        }
        let cleanup = self.add_cleanup(0)?;
        // SAFETY: `p` is room for a T, aligned to NGX_ALIGNMENT (checked
        // above); the cleanup is the one just added, which drops the value
        // once, as the pool goes.
        unsafe {
            p.write(make());
            (*cleanup.as_ptr()).handler = Some(drop_value::<T>);
            (*cleanup.as_ptr()).data = p.as_ptr().cast();
        }
        Some(p)
    }

    /// A new pool cleanup with `size` bytes of data; the caller sets its
    /// handler (none: the cleanup does nothing).
    pub fn add_cleanup(&mut self, size: usize) -> Option<NonNull<ngx_pool_cleanup_t>> {
        // SAFETY: the pool is the live request's.
        NonNull::new(unsafe { ngx_pool_cleanup_add(self.pool(), size) })
    }

    /// The data of each pool cleanup registered with `handler`, latest
    /// first. Another function may share `handler`'s address (identical
    /// code is merged): the data says whose a cleanup is.
    pub fn cleanup_data(
        &self,
        handler: ngx_pool_cleanup_pt,
    ) -> impl Iterator<Item = *mut c_void> + '_ {
        let wanted = handler.map(|h| h as usize);
        // SAFETY: the pool is the live request's.
        let mut c = unsafe { (*self.pool()).cleanup };
        core::iter::from_fn(move || loop {
            if c.is_null() {
                return None;
            }
            // SAFETY: `c` is a node of the pool's cleanup list, nginx's,
            // each in the pool, the last one's `next` null.
            let (h, data, next) = unsafe { ((*c).handler, (*c).data, (*c).next) };
            c = next;
            if wanted.is_some() && h.map(|h| h as usize) == wanted {
                return Some(data);
            }
        })
    }

    // ---- the module's context -----------------------------------------------

    /// This module's context of the request, if one was set.
    pub fn module_ctx<T: ModuleCtx>(&self) -> Option<NonNull<T>> {
        let index = Module::module().ctx_index;
        // SAFETY: `ctx` is nginx's array of one slot per http module, and
        // `ctx_index` is this module's; only `set_module_ctx` writes the
        // slot, with the one `ModuleCtx` type.
        NonNull::new(self.read(|r| unsafe { *r.ctx.add(index) }).cast())
    }

    /// Moves `value` into the pool (see [`Req::keep`]) as this module's
    /// context of the request.
    pub fn set_module_ctx<T: ModuleCtx>(&mut self, make: impl FnOnce() -> T) -> Option<NonNull<T>> {
        let p = self.keep_made(make)?;
        let index = Module::module().ctx_index;
        // SAFETY: `ctx` is nginx's array of one slot per http module, and
        // `ctx_index` is this module's; `p` is a `ModuleCtx`, the one type
        // `module_ctx` reads back.
        self.write(|r| unsafe { *r.ctx.add(index) = p.as_ptr().cast() });
        Some(p)
    }

    // ---- directive values ---------------------------------------------------

    /// A directive's value for this request (empty when unset); the bytes
    /// live in the request's pool. nginx runs variable getters meanwhile.
    pub fn evaluate(&mut self, template: Option<Template>) -> Option<&'r [u8]> {
        let Some(Template(cv)) = template else {
            return Some(&[]);
        };
        let mut value = ngx_str_t::empty();
        // SAFETY: the request is live; `cv` is an ngx_http_complex_value_t
        // the directive compiled, which lives with the configuration.
        let rc = unsafe { ngx_http_complex_value(self.as_ptr(), cv.cast(), &mut value) };
        if rc != NGX_OK as ngx_int_t {
            return None;
        }
        // SAFETY: nginx evaluated the value into the request's pool (or
        // into the directive's own bytes, which outlive it).
        Some(unsafe { bytes(value) })
    }

    /// Sets the indexed variable `index` (one nginx made at configuration,
    /// not computed by a getter) to `value`.
    pub fn set_variable(&mut self, index: usize, value: &'static str) {
        // SAFETY: `variables` holds a slot for every indexed variable, and
        // `index` is one nginx gave; the value is static.
        self.write(|r| unsafe {
            let v = &mut *r.variables.add(index);
            v.set_len(value.len() as u32);
            v.data = value.as_ptr().cast_mut();
            v.set_valid(1);
            v.set_no_cacheable(0);
            v.set_not_found(0);
        });
    }
}

/// nginx's word alignment for pool allocations (`NGX_ALIGNMENT`).
const NGX_ALIGNMENT: usize = size_of::<core::ffi::c_ulong>();

unsafe extern "C" fn drop_value<T>(data: *mut c_void) {
    // SAFETY: `data` is the value `Req::keep` wrote, with this cleanup; the
    // pool runs each cleanup once.
    unsafe { ptr::drop_in_place(data.cast::<T>()) };
}

/// nginx's cached time (ms since the epoch), as the zones' entries count it.
pub fn now_ms() -> i64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec * 1000 + tp.msec as i64
}

/// An `ngx_str_t` of bytes that outlive its use.
pub fn ngx_str(bytes: &[u8]) -> ngx_str_t {
    ngx_str_t {
        len: bytes.len(),
        data: bytes.as_ptr().cast_mut(),
    }
}

/// The bytes of `s`.
///
/// # Safety
/// `s` is empty or points at `len` bytes that live for `'a`.
pub(super) unsafe fn bytes<'a>(s: ngx_str_t) -> &'a [u8] {
    match s.len {
        0 => &[],
        // SAFETY: `s` points at `len` bytes that live for 'a (this
        // function's contract).
        len => unsafe { core::slice::from_raw_parts(s.data, len) },
    }
}
