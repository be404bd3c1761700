//! `ngx_http_auth_oauth2_token_module`: OAuth 2.0 token introspection,
//! exchange and phantom tokens in nginx's ACCESS phase. This file only
//! registers the module with nginx.
//!
//! The decision logic (token parsing, form encoding, what an IdP answer
//! means, claim rules, configuration rules) lives in plain Rust modules with
//! no nginx types, unit-tested by `cargo test` and measured by
//! `make bench-micro`. The nginx glue is left out of those builds (the
//! `logic-only` feature for the benchmarks): their executables have no nginx
//! to resolve the symbols against.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod conf;
pub mod metrics;
pub mod oauth;
pub mod redis;
pub mod resilience;
pub mod shm;

// The glue, behind one gate: `glue.rs` declares its folders (directives,
// handler, module, nginx, pages), imported back here so that their paths stay
// `crate::handler::...`. `registration` below is the module nginx loads;
// a new glue folder goes into `glue.rs`, not here (at most four `cfg`s).
#[cfg(not(any(test, feature = "logic-only")))]
mod glue;
#[cfg(not(any(test, feature = "logic-only")))]
use glue::{directives, handler, module, nginx, pages};

#[cfg(not(any(test, feature = "logic-only")))]
pub mod registration {
    use core::ffi::{c_char, c_void};
    use core::ptr;

    use ngx::core::NGX_CONF_ERROR;
    use ngx::ffi::{
        ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_module_t,
        ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE, ngx_int_t,
        ngx_module_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_MODULE, NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK,
    };
    use ngx::http::{HttpModule, HttpModuleMainConf, NgxHttpCoreModule};

    use crate::conf::{checks, LocationConf};
    use crate::directives;
    use crate::handler::{self, variables};
    use crate::module::Module;

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the configuration being parsed.
        unsafe { variables::register(cf) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the http configuration, whose main confs
        // (ours, the core module's) exist by now.
        let (main, cmcf) = unsafe {
            (
                Module::main_conf_mut(&*cf),
                NgxHttpCoreModule::main_conf_mut(&*cf),
            )
        };
        let (Some(main), Some(cmcf)) = (main, cmcf) else {
            return NGX_ERROR as ngx_int_t;
        };
        // SAFETY: `cf` is the http configuration, fully parsed.
        main.error_variable = unsafe { variables::error_variable_index(cf) };
        // SAFETY: `cf` is the http configuration, fully parsed: the core
        // module's variables are all declared.
        unsafe { directives::warn_undefined_require_variables(cf, main) };
        // SAFETY: `cf` is the http configuration and `main` its MainConf,
        // alive with the cycle.
        if unsafe { crate::shm::counters::declare(cf, main) }.is_none() {
            return NGX_ERROR as ngx_int_t;
        }
        // Registered after the static modules, so within PREACCESS we
        // run before limit_req and limit_conn, which can then use our
        // variables.
        let handlers: [(u32, unsafe extern "C" fn(_) -> _); 2] = [
            (
                ngx_http_phases_NGX_HTTP_PREACCESS_PHASE,
                handler::preaccess_handler,
            ),
            (
                ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
                handler::access_handler,
            ),
        ];
        for (phase, handler) in handlers {
            let list = &mut cmcf.phases[phase as usize].handlers;
            // SAFETY: the phase's handler array is nginx's, initialised
            // for handlers (ngx_http_init_phases ran before postconfiguration).
            let slot = unsafe { ngx_array_push(list) }.cast::<ngx_http_handler_pt>();
            if slot.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            // SAFETY: `slot` is room for one handler in that array.
            unsafe { *slot = Some(handler) };
        }
        NGX_OK as ngx_int_t
    }
    /// Merges a location with its enclosing block; a configuration mistake fails
    /// `nginx -t` with a message naming the directive.
    unsafe extern "C" fn merge_loc_conf(
        cf: *mut ngx_conf_t,
        prev: *mut c_void,
        conf: *mut c_void,
    ) -> *mut c_char {
        // SAFETY: both pointers are LocationConf values made by create_loc_conf.
        let (prev, conf) = unsafe {
            (
                &*prev.cast::<LocationConf>(),
                &mut *conf.cast::<LocationConf>(),
            )
        };
        if let Err(message) = conf.merge(prev) {
            ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{message}");
            return NGX_CONF_ERROR;
        }
        // A location that checks tokens remembers DPoP proofs: in the zone
        // it names, else in the default one (no directive needed).
        if conf.dpop.replay_zone.is_none() && (conf.introspection_enabled() || conf.jwt_enabled()) {
            // SAFETY: nginx calls merge_loc_conf with the configuration
            // being merged in `cf`.
            match unsafe { directives::dpop::default_replay_zone(cf) } {
                Some(zone) => conf.dpop.replay_zone = Some(zone),
                None => return NGX_CONF_ERROR,
            }
        }
        // SAFETY: nginx merges locations server by server, with the
        // server's configuration in cf; the claim lists are complete, as
        // every directive was parsed before the first merge.
        unsafe {
            let server = directives::server::identity(cf);
            let Some(main) = Module::main_conf_mut(&*cf) else {
                return NGX_CONF_ERROR;
            };
            if let Err(message) = checks::shared_cache_needs_redis(conf, main.redis.is_some()) {
                ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{message}");
                return NGX_CONF_ERROR;
            }
            if let Some(warning) = checks::require_not_evaluated(conf, &server.place) {
                ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "{warning}");
            }
            conf.scope_caches(&server.zone, &server.fleet, &main.claims.fingerprint());
            let ssf_location = match (conf.ssf_push_page, conf.ssf_poll_page) {
                (true, _) => Some("auth_oauth2_token_ssf_push"),
                (false, true) => Some("auth_oauth2_token_ssf_poll"),
                (false, false) => None,
            };
            if let (Some(directive), Some(receiver)) = (ssf_location, &main.ssf) {
                let keys_cache = conf.jwt.keys_cache.is_some();
                match crate::conf::ssf::location_keys(receiver, keys_cache, &server.zone, directive)
                {
                    Ok(fetch) => conf.ssf_keys = fetch,
                    Err(message) => {
                        ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{message}");
                        return NGX_CONF_ERROR;
                    }
                }
            }
            // The Redis tier keeps apart at least what the zones do.
            let redis_scopes = checks::shared_cache_knows_whose_answers(conf)
                .map_err(|message| format!("{message} ({})", server.place))
                .and_then(|()| {
                    checks::redis_keeps_apart_what_zones_do(
                        &mut main.tier_scopes,
                        conf,
                        &server.place,
                    )
                });
            if let Err(message) = redis_scopes {
                ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{message}");
                return NGX_CONF_ERROR;
            }
            conf.register_metrics(&mut main.metrics, &server.zone);
        }
        ptr::null_mut()
    }

    /// Each worker's Sentinel watch (with `sentinel=`) and slot map's read
    /// (with `cluster`), then worker 0's revocation channel and Shared
    /// Signals poll.
    unsafe extern "C" fn init_process(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx::ffi::ngx_int_t {
        // SAFETY: nginx calls init_process with the new process's cycle,
        // which both take as such.
        unsafe {
            let rc = crate::redis::sentinel_watch::init_process(cycle);
            if rc != ngx::ffi::NGX_OK as ngx::ffi::ngx_int_t {
                return rc;
            }
            let rc = crate::redis::cluster_start::init_process(cycle);
            if rc != ngx::ffi::NGX_OK as ngx::ffi::ngx_int_t {
                return rc;
            }
            let rc = crate::redis::subscriber::init_process(cycle);
            if rc != ngx::ffi::NGX_OK as ngx::ffi::ngx_int_t {
                return rc;
            }
            crate::pages::ssf_poll::init_process(cycle)
        }
    }

    unsafe extern "C" fn exit_process(cycle: *mut ngx::ffi::ngx_cycle_t) {
        // SAFETY: nginx calls exit_process with the process's cycle, which
        // both take as such.
        unsafe {
            crate::pages::ssf_poll::exit_process(cycle);
            crate::redis::subscriber::exit_process(cycle);
            crate::redis::cluster_start::exit_process(cycle);
            crate::redis::sentinel_watch::exit_process(cycle);
        }
    }

    static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
        preconfiguration: Some(preconfiguration),
        postconfiguration: Some(postconfiguration),
        create_main_conf: Some(Module::create_main_conf),
        init_main_conf: Some(crate::redis::upstream::init_main_conf),
        create_srv_conf: None,
        merge_srv_conf: None,
        create_loc_conf: Some(Module::create_loc_conf),
        merge_loc_conf: Some(merge_loc_conf),
    };

    #[cfg(feature = "export-modules")]
    ngx::ngx_modules!(ngx_http_auth_oauth2_token_module);

    /// Exported by name: `module.rs` refers to it as an extern symbol.
    #[used]
    #[allow(non_upper_case_globals)]
    #[no_mangle]
    pub static mut ngx_http_auth_oauth2_token_module: ngx_module_t = ngx_module_t {
        ctx: ptr::addr_of!(MODULE_CTX) as *mut c_void,
        commands: ptr::addr_of_mut!(directives::COMMANDS) as *mut _,
        type_: NGX_HTTP_MODULE as ngx_uint_t,
        init_process: Some(init_process),
        exit_process: Some(exit_process),
        ..ngx_module_t::default()
    };
}
