//! The module's identity: the type nginx-rust's traits hang its
//! configuration on, and the `ngx_module_t` nginx loads (defined in
//! `lib.rs`, reached here by its symbol so that the glue that needs the
//! module's context index does not depend on what the module registers).

use core::ptr;

use ngx::ffi::ngx_module_t;
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

use crate::conf::{LocationConf, MainConf};

pub struct Module;

extern "C" {
    /// `lib.rs`'s `ngx_http_auth_oauth2_token_module`.
    static ngx_http_auth_oauth2_token_module: ngx_module_t;
}

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading it.
        unsafe { &*ptr::addr_of!(ngx_http_auth_oauth2_token_module) }
    }
}

// SAFETY: the main conf slot of this module always holds a MainConf.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

// SAFETY: the location conf slot of this module always holds a LocationConf.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocationConf;
}
