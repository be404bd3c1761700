//! Caches of IdP answers: what the key is, how long an entry may live, the
//! compact form an entry takes in shared memory, and how long a worker's
//! mark on a key it asks about holds the others back. Plain Rust; the
//! shared-memory table itself is in `shm/`.

pub mod entry;
pub mod flow;
pub mod key;
pub mod kinds;
pub mod mark;
pub mod policy;
pub mod slot;

pub use entry::{CachedExchange, CachedIntrospection};
pub use key::CacheKey;
pub use mark::Mark;
pub use policy::{CachePolicy, Lifetime};
