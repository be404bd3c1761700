//! State shared by all workers: the cache tables in nginx shared memory.

pub mod table;
