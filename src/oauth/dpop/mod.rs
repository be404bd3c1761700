//! Sender-constrained tokens at the gateway (RFC 9449 DPoP, RFC 8705
//! certificate-bound tokens), in plain Rust: no nginx type here.
//!
//! - `htu.rs` — a URI normalised (RFC 3986 §6) for the `htu` comparison.
//! - `proof.rs` — a DPoP proof checked as RFC 9449 §4.3 lists it.
//! - `nonce.rs` — stateless server nonces (RFC 9449 §9).
//! - `client_cert.rs` — certificates forwarded by a trusted front (RFC 9440).
//! - `binding.rs` — whether the request holds what its token is bound to.
//! - `properties.rs` — proptests over the proof and the URI normalisation.

pub mod binding;
pub mod client_cert;
pub mod htu;
pub mod nonce;
pub mod proof;

#[cfg(test)]
mod properties;
