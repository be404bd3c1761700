//! TLS to the Redis tier (`auth_oauth2_token_redis_ssl*`): the TLS context
//! made once the http block is parsed, as `proxy_ssl_*` makes one
//! (`ngx_ssl_create`, the client certificate, the trusted CA, a client
//! session cache), handed to the calls' upstream (nginx does their
//! handshakes, and keeps the connections alive), and the handshake of the
//! module's own connections: the revocation channel's
//! (`redis/subscriber.rs`) and, with Sentinel, the sentinels'
//! (`redis/sentinel_watch.rs`).
//!
//! Redis' certificate is checked by the module, not by nginx's
//! `ssl_verify`: for a call, just before its first byte goes out (the
//! upstream's output filter); for the channel, when its handshake ends. A
//! certificate that fails is a miss logged once per 10 s (`redis/call.rs`)
//! rather than nginx's line per call, and nothing (not `AUTH`) is sent to
//! a server that failed.

use core::ffi::{c_void, CStr};
use core::ptr;

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_conf_t, ngx_connection_handler_pt, ngx_connection_t,
    ngx_create_pool, ngx_destroy_pool, ngx_http_complex_value_t, ngx_http_upstream_conf_t,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_msec_t, ngx_pcalloc, ngx_pool_cleanup_add,
    ngx_ssl_certificate, ngx_ssl_check_host, ngx_ssl_cleanup_ctx, ngx_ssl_client_session_cache,
    ngx_ssl_create, ngx_ssl_create_connection, ngx_ssl_handshake, ngx_ssl_shutdown, ngx_ssl_t,
    ngx_ssl_trusted_certificate, ngx_str_t, ngx_uint_t, NGX_SSL_TLSv1_2, NGX_SSL_TLSv1_3, SSL_ctrl,
    SSL_get_verify_result, TLSEXT_NAMETYPE_host_name, X509_verify_cert_error_string, NGX_AGAIN,
    NGX_OK, NGX_SSL_BUFFER, NGX_SSL_CLIENT, SSL_CTRL_SET_TLSEXT_HOSTNAME, X509_V_OK,
};
use ngx::http::HttpModuleMainConf;

use crate::conf::redis_tls::{self, RedisTls, TierTls};
use crate::conf::{LocationConf, MainConf};
use crate::module::Module;

/// `init_main_conf`'s part: [`setup`], its error logged naming the
/// directive.
///
/// # Safety
/// As [`setup`].
pub(super) unsafe fn init(cf: *mut ngx_conf_t, main: &mut MainConf) -> *mut core::ffi::c_char {
    // SAFETY: as this function's contract.
    match unsafe { setup(cf, main) } {
        Ok(()) => ptr::null_mut(),
        Err(message) => {
            ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "{message}");
            ngx::core::NGX_CONF_ERROR
        }
    }
}

/// Checks every location's `auth_oauth2_token_redis_ssl*` and, when the
/// tier uses TLS, makes its context and gives it to every location with
/// `auth_oauth2_token_redis_pass` (whose upstream confs exist). `Err`
/// fails `nginx -t` with its text.
///
/// # Safety
/// `cf` must be the configuration being parsed; `main`'s location lists
/// hold `LocationConf`s of it, its passes' upstream confs made.
unsafe fn setup(cf: *mut ngx_conf_t, main: &mut MainConf) -> Result<(), String> {
    // SAFETY: the lists hold LocationConfs of this configuration (the
    // function's contract), alive in its pool.
    let conf_of = |p: &*mut c_void| unsafe { &*p.cast::<LocationConf>() };
    for loc in main.redis_tls_locations.iter().map(conf_of) {
        if loc.redis.pass.is_none() {
            return Err("\"auth_oauth2_token_redis_ssl*\" directives need \"auth_oauth2_token_redis_pass\" in the same location".into());
        }
        loc.redis_tls.check()?;
    }
    let passes: Vec<&LocationConf> = main.redis_passes.iter().map(conf_of).collect();
    let Some(setting) = redis_tls::tier_setting(passes.iter().map(|l| &l.redis_tls))? else {
        return Ok(());
    };
    let Some(tier) = main.redis.as_ref() else {
        return Ok(());
    };
    // SAFETY: cf is the configuration being parsed (this function's
    // contract).
    let ssl = unsafe { context(cf, setting)? };
    let name = match &setting.name {
        Some(name) => name.clone(),
        // SAFETY: the tier's upstream was made by ngx_http_upstream_add
        // and lives with the configuration.
        None => unsafe {
            (*tier.upstream.cast::<ngx_http_upstream_srv_conf_t>())
                .host
                .as_bytes()
                .to_vec()
        },
    };
    // The calls' name is the channel's (with Sentinel, nginx would take the
    // primary's address instead).
    // SAFETY: cf is the configuration being parsed (this function's
    // contract); the value lives in its pool.
    let ssl_name = unsafe { constant(cf, &name)? };
    for loc in &passes {
        let Some(uc) = loc.redis.pass.filter(|uc| !uc.is_null()) else {
            continue;
        };
        // SAFETY: init_main_conf made this location's upstream conf in the
        // configuration pool.
        let uc = unsafe { &mut *uc.cast::<ngx_http_upstream_conf_t>() };
        uc.ssl = ssl;
        uc.ssl_session_reuse = 1;
        uc.ssl_name = ssl_name;
        uc.ssl_server_name = ngx::ffi::ngx_flag_t::from(setting.sends_server_name());
        // The module checks the certificate itself (`checked_writer`).
        uc.ssl_verify = 0;
    }
    main.redis_tls = Some(TierTls {
        ssl: ssl.cast(),
        name,
        server_name: setting.sends_server_name(),
        verify: setting.verifies(),
    });
    Ok(())
}

/// The TLS context of `setting`, in the configuration's pool (freed with it).
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn context(cf: *mut ngx_conf_t, setting: &RedisTls) -> Result<*mut ngx_ssl_t, String> {
    let protocols = setting.protocols.unwrap_or_default();
    let bits = if protocols.tls1_2 { NGX_SSL_TLSv1_2 } else { 0 }
        | if protocols.tls1_3 { NGX_SSL_TLSv1_3 } else { 0 };
    // nginx's loaders take file names as C strings (a NUL after `len`).
    let pool = |s: &[u8]| {
        let with_nul = [s, b"\0"].concat();
        // SAFETY: cf is the configuration being parsed; the copy is in its pool.
        let mut name =
            unsafe { ngx_str_t::from_bytes((*cf).pool, &with_nul) }.ok_or("cannot allocate")?;
        name.len -= 1;
        Ok::<_, String>(name)
    };
    // SAFETY: cf is the configuration being parsed (this function's
    // contract); the context and its cleanup live in its pool, as
    // ngx_http_proxy_set_ssl keeps proxy_ssl's.
    unsafe {
        let ssl = ngx_pcalloc((*cf).pool, size_of::<ngx_ssl_t>()).cast::<ngx_ssl_t>();
        if ssl.is_null() {
            return Err("cannot allocate".into());
        }
        (*ssl).log = (*cf).log;
        if ngx_ssl_create(ssl, bits as ngx_uint_t, ptr::null_mut()) != NGX_OK as ngx_int_t {
            return Err(
                "\"auth_oauth2_token_redis_ssl\": cannot make a TLS context (see above)".into(),
            );
        }
        let cln = ngx_pool_cleanup_add((*cf).pool, 0);
        if cln.is_null() {
            ngx_ssl_cleanup_ctx(ssl.cast());
            return Err("cannot allocate".into());
        }
        (*cln).handler = Some(ngx_ssl_cleanup_ctx);
        (*cln).data = ssl.cast();
        if let (Some(cert), Some(key)) = (&setting.certificate, &setting.certificate_key) {
            let (mut cert_s, mut key_s) = (pool(cert)?, pool(key)?);
            if ngx_ssl_certificate(cf, ssl, &mut cert_s, &mut key_s, ptr::null_mut())
                != NGX_OK as ngx_int_t
            {
                return Err(format!(
                    "\"auth_oauth2_token_redis_ssl_certificate\" \"{}\" or its key cannot be loaded (see above)",
                    String::from_utf8_lossy(cert)
                ));
            }
        }
        if let (true, Some(ca)) = (setting.verifies(), &setting.trusted_certificate) {
            let mut ca_s = pool(ca)?;
            if ngx_ssl_trusted_certificate(cf, ssl, &mut ca_s, setting.depth() as ngx_int_t)
                != NGX_OK as ngx_int_t
            {
                return Err(format!(
                    "\"auth_oauth2_token_redis_ssl_trusted_certificate\" \"{}\" cannot be loaded (see above)",
                    String::from_utf8_lossy(ca)
                ));
            }
        }
        if ngx_ssl_client_session_cache(cf, ssl, 1) != NGX_OK as ngx_int_t {
            return Err("\"auth_oauth2_token_redis_ssl\": cannot keep TLS sessions".into());
        }
        Ok(ssl)
    }
}

/// A complex value without variables: `value`, in the configuration's pool.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn constant(
    cf: *mut ngx_conf_t,
    value: &[u8],
) -> Result<*mut ngx_http_complex_value_t, String> {
    // SAFETY: cf is the configuration being parsed; a zeroed complex value
    // with null `lengths` is one nginx reads as its `value` alone.
    unsafe {
        let cv = ngx_pcalloc((*cf).pool, size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        if cv.is_null() {
            return Err("cannot allocate".into());
        }
        (*cv).value = ngx_str_t::from_bytes((*cf).pool, value).ok_or("cannot allocate")?;
        Ok(cv)
    }
}

/// The tier's TLS, when it has one.
fn tier() -> Option<&'static TierTls> {
    // SAFETY: a worker's cycle is set up before any request or event runs;
    // the main conf lives as long as the cycle.
    unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) }?
        .redis_tls
        .as_ref()
}

/// Whether the handshaken connection `c` reached the Redis the tier
/// trusts: `Err` says why not (no secret in it).
///
/// # Safety
/// `c` must be a live connection whose TLS handshake is done.
pub(super) unsafe fn certificate_ok(c: *mut ngx_connection_t) -> Result<(), String> {
    let Some(tls) = tier() else {
        return Ok(());
    };
    if !tls.verify {
        return Ok(());
    }
    // SAFETY: `c` is live with its TLS connection (the function's contract).
    unsafe {
        let rc = SSL_get_verify_result((*(*c).ssl).connection);
        if rc != X509_V_OK as core::ffi::c_long {
            let text = X509_verify_cert_error_string(rc);
            let text = match text.is_null() {
                true => "verify error".into(),
                false => CStr::from_ptr(text).to_string_lossy().into_owned(),
            };
            return Err(format!("{text} ({rc})"));
        }
        let mut name = ngx_str_t {
            len: tls.name.len(),
            data: tls.name.as_ptr().cast_mut(),
        };
        if ngx_ssl_check_host(c, &mut name) != NGX_OK as ngx_int_t {
            return Err(format!(
                "does not match \"{}\"",
                String::from_utf8_lossy(&tls.name)
            ));
        }
    }
    Ok(())
}

/// Whether the module's own connections (the revocation channel's, the
/// sentinels') must use the tier's TLS.
pub(super) fn channel_tls() -> bool {
    tier().is_some()
}

/// Starts the TLS handshake on a connected connection `c` of the module's
/// own (the revocation channel's, a sentinel's): `Ok(true)` when it finished at once (then ask
/// [`handshake_result`]), `Ok(false)` when `done` will be called with `c`
/// once it ends (or after `timeout_ms`).
///
/// # Safety
/// `c` must be a live, connected connection of the module's own, without TLS.
pub(super) unsafe fn start_handshake(
    c: *mut ngx_connection_t,
    done: ngx_connection_handler_pt,
    timeout_ms: ngx_msec_t,
) -> Result<bool, String> {
    let tls = tier().ok_or("no TLS context")?;
    // SAFETY: `c` is live and ours (the function's contract); the context
    // lives with the cycle's configuration.
    unsafe {
        // nginx keeps a connection's TLS state in its pool, which a
        // connection of the module's own has not (`close` destroys it).
        if (*c).pool.is_null() {
            (*c).pool = ngx_create_pool(256, (*c).log);
            if (*c).pool.is_null() {
                return Err("cannot allocate".into());
            }
        }
        if ngx_ssl_create_connection(
            tls.ssl.cast(),
            c,
            (NGX_SSL_BUFFER | NGX_SSL_CLIENT) as ngx_uint_t,
        ) != NGX_OK as ngx_int_t
        {
            return Err("cannot start TLS".into());
        }
        // RFC 6066: no IP address as a server name.
        let is_ip = std::str::from_utf8(&tls.name)
            .ok()
            .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok() || n.starts_with('['));
        if tls.server_name && !tls.name.is_empty() && !is_ip {
            let mut name = tls.name.clone();
            name.push(0);
            // SSL_set_tlsext_host_name, a macro: OpenSSL copies the name.
            SSL_ctrl(
                (*(*c).ssl).connection,
                SSL_CTRL_SET_TLSEXT_HOSTNAME as core::ffi::c_int,
                TLSEXT_NAMETYPE_host_name as core::ffi::c_long,
                name.as_mut_ptr().cast(),
            );
        }
        match ngx_ssl_handshake(c) {
            rc if rc == NGX_AGAIN as ngx_int_t => {
                (*(*c).ssl).handler = done;
                if (*(*c).read).timer_set() == 0 {
                    ngx_add_timer((*c).read, timeout_ms);
                }
                Ok(false)
            }
            _ => Ok(true),
        }
    }
}

/// How the handshake of `c` ended: `Ok` when it is done and Redis'
/// certificate passes the checks.
///
/// # Safety
/// `c` must be a live connection on which [`start_handshake`] was called.
pub(super) unsafe fn handshake_result(c: *mut ngx_connection_t) -> Result<(), String> {
    // SAFETY: `c` is live (the function's contract); its TLS connection
    // was made by start_handshake.
    unsafe {
        if (*(*c).read).timer_set() != 0 {
            ngx::ffi::ngx_del_timer((*c).read);
        }
        if (*c).ssl.is_null() || (*(*c).ssl).handshaked() == 0 {
            return Err(match (*(*c).read).timedout() != 0 {
                true => "TLS handshake timed out".into(),
                false => "TLS handshake failed".into(),
            });
        }
        certificate_ok(c).map_err(|why| format!("Redis' certificate: {why}"))
    }
}

/// Closes a connection of the module's own, ending its TLS first (without
/// waiting for the server's close_notify), and destroys its pool if
/// [`start_handshake`] made one.
///
/// # Safety
/// `c` must be a live connection of the module's own.
pub(super) unsafe fn close(c: *mut ngx_connection_t) {
    // SAFETY: `c` is live and ours (the function's contract);
    // ngx_ssl_shutdown frees its TLS connection.
    unsafe {
        if !(*c).ssl.is_null() {
            (*(*c).ssl).set_no_wait_shutdown(1);
            (*(*c).ssl).set_no_send_shutdown(1);
            ngx_ssl_shutdown(c);
        }
        let pool = (*c).pool;
        ngx_close_connection(c);
        if !pool.is_null() {
            ngx_destroy_pool(pool);
        }
    }
}
