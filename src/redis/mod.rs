//! nginx glue of the shared cache tier (Redis): the calls the request flow
//! makes, the upstream that carries them, and the revocation channel.
//! The RESP encoding and the keys are plain logic in `oauth/resp.rs` and
//! `oauth/fleet.rs`.

pub mod call;
pub mod deadline;
pub mod failure;
pub mod subscriber;
pub mod upstream;
