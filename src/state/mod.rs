//! State shared by all workers: the shared-memory cache zones.

pub mod zone;
