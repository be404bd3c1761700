//! What the module does when something it depends on keeps failing, in
//! plain Rust (no nginx types; `cargo test`): stop calling an IdP endpoint
//! that does not answer (the circuit breaker), and stop writing the same
//! error-log line for every request (the log gate).

pub mod breaker;
pub mod log_gate;
