//! nginx glue that every room uses: the module's own subrequests.

pub mod subrequest;
