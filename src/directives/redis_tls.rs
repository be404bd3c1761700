//! `auth_oauth2_token_redis_ssl*`: TLS to the Redis tier, in the location
//! with `auth_oauth2_token_redis_pass` (`conf/redis_tls.rs`). Files are
//! checked for reading now; nginx loads them when the http block is parsed
//! (`redis/tls.rs`), which is also where the values are checked together.

use std::os::unix::ffi::OsStrExt;

use super::call::{args_of, flag, handler, set_once, Call};
use crate::conf::redis_tls;
use crate::conf::LocationConf;

/// Notes this location for the checks made once the http block is parsed
/// (each needs `auth_oauth2_token_redis_pass`).
fn noted(c: &mut Call<'_, LocationConf>) -> Result<(), String> {
    let conf: *mut LocationConf = c.conf;
    let list = &mut c.main_conf()?.redis_tls_locations;
    if !list.contains(&conf.cast()) {
        list.push(conf.cast());
    }
    Ok(())
}

/// The file `arg` resolved against nginx's prefix, once it is known to be
/// readable; its name as a full path.
fn readable_file(c: &Call<'_, LocationConf>) -> Result<Vec<u8>, String> {
    let path = c.full_name(c.arg)?;
    std::fs::File::open(&path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.to_string_lossy()))?;
    Ok(path.as_os_str().as_bytes().to_vec())
}

handler!(set_redis_ssl, |c| {
    set_once(&mut c.conf.redis_tls.enabled, flag(c.arg)?)?;
    noted(c)
});

handler!(set_redis_ssl_verify, |c| {
    set_once(&mut c.conf.redis_tls.verify, flag(c.arg)?)?;
    noted(c)
});

handler!(set_redis_ssl_verify_depth, |c| {
    set_once(
        &mut c.conf.redis_tls.verify_depth,
        redis_tls::parse_depth(c.arg)?,
    )?;
    noted(c)
});

handler!(set_redis_ssl_trusted_certificate, |c| {
    let file = readable_file(c)?;
    set_once(&mut c.conf.redis_tls.trusted_certificate, file)?;
    noted(c)
});

handler!(set_redis_ssl_name, |c| {
    set_once(&mut c.conf.redis_tls.name, redis_tls::parse_name(c.arg)?)?;
    noted(c)
});

handler!(set_redis_ssl_server_name, |c| {
    set_once(&mut c.conf.redis_tls.server_name, flag(c.arg)?)?;
    noted(c)
});

handler!(set_redis_ssl_certificate, |c| {
    let file = readable_file(c)?;
    set_once(&mut c.conf.redis_tls.certificate, file)?;
    noted(c)
});

// The key is a secret: read as one (a warning when others may read it),
// then dropped; nginx loads it into the TLS context.
handler!(set_redis_ssl_certificate_key, |c| {
    drop(c.read_secret_file("", c.arg)?);
    let file = c.full_name(c.arg)?.as_os_str().as_bytes().to_vec();
    set_once(&mut c.conf.redis_tls.certificate_key, file)?;
    noted(c)
});

handler!(set_redis_ssl_protocols, |c| {
    let protocols = redis_tls::parse_protocols(&args_of(c))?;
    set_once(&mut c.conf.redis_tls.protocols, protocols)?;
    noted(c)
});
