//! nginx glue that every room uses: the module's own subrequests, and a
//! request with no client to make them from.

pub mod detached;
pub mod headers;
pub mod req;
pub mod subrequest;
