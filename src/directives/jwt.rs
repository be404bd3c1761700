//! JWT access tokens checked at the gateway: `jwt` (which turns the check
//! on), `jwt_issuer`, `jwt_keys_file` (a JWK Set, read and checked now),
//! `jwt_keys_request` (the internal location of a JWK Set to fetch),
//! `jwt_secret_file` (HS256), `jwt_algorithms`, `jwt_leeway` and `jwt_typ`.
//! The caches, `jwt_cache` and `jwt_keys_cache`, are with the other caches
//! (`cache.rs`).

use super::call::{args_of, flag, handler, set_once, Call};
use crate::conf::jwt::{keys_from_file, parse_issuer, parse_keys_request, parse_leeway};
use crate::conf::{cache_args, secret_from_file_contents};
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jwk::Jwk;

handler!(set_jwt, |c| set_once(&mut c.conf.jwt.on, flag(c.arg)?));

// `auth_oauth2_token_jwt_issuer ISSUER [keys=FILE] [algorithms=A,B];`,
// once per issuer: a key file of its own is read now, as the block's is.
handler!(set_jwt_issuer, |c| {
    let read = |file: &[u8]| c.key_set_file(file);
    let issuer = parse_issuer(&args_of(c), read)?;
    c.conf.jwt.add_issuer(issuer)
});

handler!(set_jwt_keys_file, |c| {
    let keys = c.key_set_file(c.arg)?;
    set_once(&mut c.conf.jwt.keys_file, keys)
});

handler!(set_jwt_keys_request, |c| {
    let uri = parse_keys_request(c.arg)?;
    set_once(&mut c.conf.jwt.keys_request, uri)
});

impl<C> Call<'_, C> {
    /// A JWK Set file (relative to nginx's prefix), read and checked: its
    /// name as resolved, and its keys.
    pub(super) fn key_set_file(&self, arg: &[u8]) -> Result<(String, Vec<Jwk>), String> {
        let path = self.full_name(arg)?;
        let shown = path.to_string_lossy().into_owned();
        let contents = std::fs::read(&path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
        let keys = keys_from_file(&contents).map_err(|e| format!("\"{shown}\" {e}"))?;
        Ok((shown, keys))
    }
}

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
