//! What `handler/flow.rs` still reaches here; the helpers that were here
//! are `Req`'s methods (`nginx/req.rs`).

// shim for flow.rs until it takes Req
pub use crate::nginx::req::now_ms;
