//! nginx glue that every room uses: the module's own subrequests.

pub mod headers;
pub mod req;
pub mod subrequest;
