//! JOSE for JWT access tokens checked at the gateway (RFC 7515, 7517, 7518,
//! 7638, 8037, 9068), in plain Rust over OpenSSL: no nginx type here.
//!
//! - `alg.rs` — the algorithms verified, the key kind each needs, allow-lists.
//! - `jws.rs` — a compact JWS taken apart (strict base64url, header limits,
//!   `crit`, no `none`).
//! - `key.rs` — a verification key made ready once; signatures checked.
//! - `jwk.rs` — public JWKs and key sets, RFC 7638 thumbprints.
//! - `access_token.rs` — RFC 9068 §4's checks and the refusals' descriptions.
//! - `verify.rs` — all of it for one token, into the module's claims.
//! - `refresh.rs` — when a key set fetched from the issuer is used, refreshed
//!   or fetched again.
//! - `fetched.rs` — what a fetch's answer must be, and how a set is kept.
//! - `properties.rs` — proptests over all of it.
//!
//! `oauth/jwt.rs` is apart: the shape of phantom tokens, which the module
//! forwards without verifying.

pub mod access_token;
pub mod alg;
pub mod fetched;
pub mod jwk;
pub mod jws;
pub mod key;
pub mod refresh;
pub mod verify;

#[cfg(test)]
mod properties;
