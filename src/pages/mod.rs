//! Content handlers of other locations (nginx glue): pages the module
//! answers itself instead of checking a token.

pub mod metrics;
pub mod purge;
