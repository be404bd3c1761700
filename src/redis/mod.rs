//! The Redis tier: the cache level every gateway of a fleet reads and
//! writes between its zones and the IdP, and the revocation channel.
//!
//! Plain (no nginx types; `cargo test`, checked by `scripts/check-layout.pl`):
//! `resp.rs`, the protocol; `fleet.rs`, the names and seals; `failure.rs`,
//! what can go wrong with a call; `purge.rs`, what a purge sends;
//! `write.rs`, what a write of an answer sends and what its replies tell;
//! `tier_read.rs`, which entry of a read answers a question; `replay.rs`,
//! what records a DPoP proof for the fleet and what its replies say;
//! `ssf_tell.rs`, what tells the fleet of a Shared Signals SET applied
//! here and what its replies say;
//! `subscription.rs`, the revocation channel's steps; `sentinel.rs`, where
//! Redis Sentinel says the primary is; `cluster.rs`, Redis Cluster's
//! slots, map and redirections. The nginx glue, left
//! out of `cargo test`, moves the bytes: `call.rs`, `upstream.rs`,
//! `deadline.rs`, `subscriber.rs`, `sentinel_watch.rs`, `peers.rs`, `tls.rs`,
//! `tls_call.rs`, `cluster_route.rs`, `cluster_peer.rs`, `cluster_start.rs`.

pub mod cluster;
pub mod failure;
pub mod fleet;
pub mod purge;
pub mod replay;
pub mod resp;
pub mod sentinel;
pub mod ssf_tell;
pub mod subscription;
pub mod tier_read;
pub mod write;

#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod call;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod cluster_peer;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod cluster_route;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod cluster_start;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod deadline;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod peers;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod sentinel_watch;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod subscriber;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod tls;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod tls_call;
#[cfg(not(any(test, feature = "logic-only")))]
pub(crate) mod upstream;
