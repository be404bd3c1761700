//! `Template`: a directive value that may hold nginx variables, as the
//! plain configuration sees it.

/// A directive value that may contain nginx variables: the compiled
/// `ngx_http_complex_value_t`, opaque to the plain-Rust side.
#[derive(Debug, Clone, Copy)]
pub struct Template(pub *mut core::ffi::c_void);
