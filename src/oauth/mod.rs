//! The OAuth 2.0 logic, in plain Rust: no nginx type anywhere below this
//! folder, so all of it runs under `cargo test`, proptest and the fuzzers.
//! The nginx glue (`handler/`, `redis/`, `directives/`, `shm/zone.rs`) calls into it
//! and only moves bytes between nginx's structures and these functions.

mod answer_members;
pub mod bearer;
pub mod cache;
pub mod call;
pub mod carriers;
pub mod challenge;
pub mod claim_rule;
pub mod claims;
pub mod client_auth;
pub mod cnf;
pub mod dpop;
pub mod exchange;
pub mod form;
pub mod idp_reply;
pub mod introspection;
pub mod jose;
pub mod jwt;
pub mod named_claims;
pub mod purge;
pub mod resource;
pub mod resource_metadata;
pub mod scope;
pub mod ssf;
pub mod step_up;
pub mod trace_context;
pub mod verdict;

#[cfg(test)]
mod properties;
