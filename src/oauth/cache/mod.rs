//! Cache of introspection results: what the key is, how long an entry may
//! live, and the compact form an entry takes in shared memory. Plain Rust;
//! the shared-memory table itself is in `state/`.

pub mod entry;
pub mod policy;

pub use entry::{CachedExchange, CachedIntrospection};
pub use policy::{CacheKey, CachePolicy};
