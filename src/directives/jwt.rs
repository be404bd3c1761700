//! JWT access tokens checked at the gateway: `jwt` (which turns the check
//! on), `jwt_issuer`, `jwt_keys_file` (a JWK Set, read and checked now),
//! `jwt_secret_file` (HS256), `jwt_algorithms`, `jwt_leeway` and `jwt_typ`.
//! The cache, `jwt_cache`, is with the other caches (`cache.rs`).

use super::call::{args_of, flag, handler, set_once, utf8};
use crate::conf::jwt::{keys_from_file, parse_leeway};
use crate::conf::{cache_args, secret_from_file_contents};
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jwk::Jwk;

handler!(set_jwt, |c| set_once(&mut c.conf.jwt.on, flag(c.arg)?));

handler!(set_jwt_issuer, |c| {
    if c.arg.is_empty() || c.arg.iter().any(|b| b.is_ascii_control()) {
        return Err("needs an issuer identifier without control characters".into());
    }
    set_once(&mut c.conf.jwt.issuer, utf8(c.arg)?)
});

handler!(set_jwt_keys_file, |c| {
    let path = c.full_name(c.arg)?;
    let shown = path.to_string_lossy().into_owned();
    let contents = std::fs::read(&path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    let keys = keys_from_file(&contents).map_err(|e| format!("\"{shown}\" {e}"))?;
    set_once(&mut c.conf.jwt.keys_file, (shown, keys))
});

handler!(set_jwt_secret_file, |c| {
    let contents = c.read_secret_file("", c.arg)?;
    let secret = Jwk::secret(&secret_from_file_contents(&contents), None)
        .map_err(|e| format!("holds a secret that cannot be an HS256 key: {e}"))?;
    set_once(&mut c.conf.jwt.secret, secret)
});

handler!(set_jwt_algorithms, |c| {
    let algorithms = Algorithms::parse(args_of(c))?;
    set_once(&mut c.conf.jwt.algorithms, algorithms)
});

handler!(set_jwt_leeway, |c| {
    let leeway = parse_leeway(cache_args::parse_time_ms(c.arg))?;
    set_once(&mut c.conf.jwt.leeway_s, leeway)
});

handler!(set_jwt_typ, |c| {
    let relaxed = match c.arg {
        b"strict" => false,
        b"relaxed" => true,
        _ => return Err("takes \"strict\" or \"relaxed\"".into()),
    };
    set_once(&mut c.conf.jwt.typ_relaxed, relaxed)
});
