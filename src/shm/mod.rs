//! State shared by all workers: the cache tables in nginx shared memory.
//! `table.rs` is the table itself, plain Rust over any slab allocator, so
//! that its crash recovery is tested without nginx; `zone.rs` puts it in a
//! zone's slab pool behind the zone's lock; `revocations.rs` is the Shared
//! Signals receiver's list in such a zone.

#[cfg(not(any(test, feature = "logic-only")))]
pub mod counters;
#[cfg(not(any(test, feature = "logic-only")))]
pub mod revocations;
pub mod table;
#[cfg(not(any(test, feature = "logic-only")))]
pub mod zone;
