//! The Redis tier's directives: `auth_oauth2_token_redis` (http level:
//! the server, the fleet secrets, the connection's preamble) and the
//! `auth_oauth2_token_redis_*` directives of the location that carries the
//! module's Redis calls.

use core::ptr;

use ngx::ffi::{ngx_http_upstream_add, ngx_str_t, ngx_url_t};
use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};

use super::call::{args_of, handler, set_once, Call};
use crate::conf::{redis_args, secret_from_file_contents, LocationConf, MainConf, RedisTier};
use crate::redis::fleet::{FleetKey, FleetKeys};
use crate::redis::resp;

/// A fleet secret from `key_file=` / `old_key_file=`; the error names the
/// parameter and the file, never the bytes.
fn fleet_key<C>(c: &Call<'_, C>, param: &str, name: &[u8]) -> Result<FleetKey, String> {
    let contents = c.read_secret_file(param, name)?;
    let secret = redis_args::fleet_secret(&contents);
    if secret.len() < 32 {
        return Err(format!(
            "has a \"{param}\" of {} bytes: the fleet secret needs at least 32 (openssl rand -hex 32)",
            secret.len()
        ));
    }
    FleetKey::from_secret(secret).map_err(|e| format!("has an unusable \"{param}\": {e}"))
}

// `auth_oauth2_token_redis SERVER key_file=PATH ...;` (http level): the
// Redis tier. Files are read now; the server is an nginx upstream.
handler!(set_redis: MainConf, |c| {
    if c.conf.redis.is_some() {
        return Err("is duplicate".into());
    }
    let args = args_of(c);
    let parsed = redis_args::parse(&args)?;
    let current = fleet_key(c, "key_file", parsed.key_file)?;
    let old = match parsed.old_key_file {
        Some(name) => Some(fleet_key(c, "old_key_file", name)?),
        None => None,
    };
    let mut preamble = Vec::new();
    let mut preamble_replies = 0;
    if let Some(name) = parsed.password_file {
        let password = secret_from_file_contents(&c.read_secret_file("password_file", name)?);
        if password.is_empty() {
            return Err("has an empty \"password_file\"".into());
        }
        match &parsed.user {
            Some(user) => resp::command(&mut preamble, &[b"AUTH", user, &password]),
            None => resp::command(&mut preamble, &[b"AUTH", &password]),
        }
        preamble_replies += 1;
    }
    if parsed.database != 0 {
        let n = parsed.database.to_string();
        resp::command(&mut preamble, &[b"SELECT", n.as_bytes()]);
        preamble_replies += 1;
    }
    let mut sentinel_auth = Vec::new();
    if let Some(name) = parsed.sentinel_password_file {
        let contents = c.read_secret_file("sentinel_password_file", name)?;
        let password = secret_from_file_contents(&contents);
        if password.is_empty() {
            return Err("has an empty \"sentinel_password_file\"".into());
        }
        resp::command(&mut sentinel_auth, &[b"AUTH", &password]);
    }
    let mut url: ngx_url_t = zeroed_url();
    // SAFETY: cf is the configuration being parsed (see `Call`); the URL
    // is copied into its pool, which outlives the upstream that keeps it.
    let upstream = unsafe {
        url.url = ngx_str_t::from_bytes((*c.cf).pool, parsed.server).ok_or("cannot allocate")?;
        url.set_no_resolve(1);
        ngx_http_upstream_add(c.cf, &mut url, 0)
    };
    if upstream.is_null() {
        return Err("has an invalid server (see the message above)".into());
    }
    // The revocation channel's series (worker 0 subscribes with a tier).
    c.conf.metrics.channel();
    c.conf.redis = Some(RedisTier {
        upstream: upstream.cast(),
        keys: FleetKeys { current, old },
        preamble,
        preamble_replies,
        prefix: parsed.prefix,
        sentinel: parsed.sentinel,
        sentinel_auth,
        cluster: parsed.cluster,
    });
    Ok(())
});

/// A zeroed `ngx_url_t`, as nginx's modules start one.
fn zeroed_url() -> ngx_url_t {
    // SAFETY: ngx_url_t is plain C data for which all-zero is the state
    // nginx's own callers start from (ngx_memzero).
    unsafe { core::mem::zeroed() }
}

// `auth_oauth2_token_redis_pass;` (location): this location carries the
// module's Redis calls; wired to the upstream once the http block is parsed.
handler!(set_redis_pass, |c| {
    if c.conf.redis.pass.is_some() {
        return Err("is duplicate".into());
    }
    c.conf.redis.pass = Some(ptr::null_mut());
    let conf: *mut LocationConf = c.conf;
    // The first one with a plain path (not a regex, not a named location)
    // also takes the worker's own calls: kept with its server block.
    let path = c.location_path().filter(|path| path.starts_with(b"/"));
    // SAFETY: cf is the configuration being parsed (see `Call`), inside a
    // server block, whose core server conf is nginx's; its `ctx` is the
    // server's configuration context, which lives as long as the cycle.
    let server = unsafe { NgxHttpCoreModule::server_conf(&*c.cf) }.map(|cscf| cscf.ctx.cast());
    let main = c.main_conf()?;
    main.redis_passes.push(conf.cast());
    if let (None, Some(path), Some(server)) = (&main.redis_pass_at, path, server) {
        main.redis_pass_at = Some((path, server));
    }
    c.set_content_handler(Some(crate::redis::upstream::handler))
});

handler!(set_redis_connect_timeout, |c| set_once(
    &mut c.conf.redis.connect_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_send_timeout, |c| set_once(
    &mut c.conf.redis.send_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_read_timeout, |c| set_once(
    &mut c.conf.redis.read_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_next_upstream, |c| {
    let next = redis_args::parse_next_upstream(&args_of(c))?;
    set_once(&mut c.conf.redis.next_upstream, next)
});

handler!(set_redis_buffer_size, |c| set_once(
    &mut c.conf.redis.buffer_size,
    redis_args::parse_buffer_size(c.arg)?
));
