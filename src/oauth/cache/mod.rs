//! Caches of IdP answers: what the key is, how long an entry may live, and
//! the compact form an entry takes in shared memory. Plain Rust; the
//! shared-memory table itself is in `shm/`.

pub mod entry;
pub mod key;
pub mod policy;

pub use entry::{CachedExchange, CachedIntrospection};
pub use key::CacheKey;
pub use policy::{CachePolicy, Lifetime};
