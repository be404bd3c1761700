//! nginx glue of the configuration: the `auth_oauth2_token_*` directive
//! table and its `set` handlers, which decode nginx's arguments and hand
//! them to the plain parsers of `conf/`.

pub mod server;

use core::ffi::{c_char, c_void};
use core::ptr;
use std::os::unix::ffi::OsStrExt;

use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_add_variable,
    ngx_http_compile_complex_value, ngx_http_compile_complex_value_t, ngx_http_complex_value_t,
    ngx_http_get_variable_pt, ngx_http_handler_pt, ngx_http_upstream_add, ngx_shared_memory_add,
    ngx_str_t, ngx_uint_t, ngx_url_t, NGX_CONF_1MORE, NGX_CONF_2MORE, NGX_CONF_FLAG,
    NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_HTTP_VAR_NOCACHEABLE,
    NGX_LOG_EMERG,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::conf::{
    cache_args, is_valid_endpoint, parse_error_status, redis_args, require_args,
    secret_from_file_contents, CacheConf, Challenge, ClientAuth, LocationConf, MainConf, Phase,
    RedisTier, Requirement, SecretSource, Situation, Template,
};
use crate::module::Module;
use crate::oauth::claim_rule::{ClaimCheck, ClaimRule};
use crate::oauth::client_auth::{Alg, AssertionKey};
use crate::oauth::verdict::AudienceRule;
use crate::oauth::{carriers, challenge, scope};
use crate::redis::fleet::{FleetKey, FleetKeys};
use crate::redis::resp;
use crate::resilience::breaker::BreakerConf;
use crate::shm::{counters, zone};

type Handler =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

/// A directive of `location` blocks only (content handlers, the Redis location).
const fn location_directive(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_HTTP_LOC_CONF | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

const fn directive(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (ANY_LEVEL | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

/// A directive of the http block, kept in the `MainConf`.
const fn http_only(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_HTTP_MAIN_CONF | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 48] = [
    directive(
        ngx_string!("auth_oauth2_token_introspect"),
        NGX_CONF_FLAG,
        set_introspect,
    ),
    directive(
        ngx_string!("auth_oauth2_token_introspect_endpoint"),
        NGX_CONF_TAKE1,
        set_introspect_endpoint,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_id"),
        NGX_CONF_TAKE1,
        set_client_id,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_secret"),
        NGX_CONF_TAKE1,
        set_client_secret,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_secret_file"),
        NGX_CONF_TAKE1,
        set_client_secret_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_realm"),
        NGX_CONF_TAKE1,
        set_realm,
    ),
    directive(
        ngx_string!("auth_oauth2_token_introspect_cache"),
        NGX_CONF_1MORE,
        set_introspect_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_exchange"),
        NGX_CONF_FLAG,
        set_exchange,
    ),
    directive(
        ngx_string!("auth_oauth2_token_token_endpoint"),
        NGX_CONF_TAKE1,
        set_token_endpoint,
    ),
    directive(
        ngx_string!("auth_oauth2_token_audience"),
        NGX_CONF_TAKE1,
        set_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_scope"),
        NGX_CONF_TAKE1,
        set_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_resource"),
        NGX_CONF_TAKE1,
        set_resource,
    ),
    directive(
        ngx_string!("auth_oauth2_token_requested_token_type"),
        NGX_CONF_TAKE1,
        set_requested_token_type,
    ),
    directive(
        ngx_string!("auth_oauth2_token_breaker"),
        NGX_CONF_1MORE,
        set_breaker,
    ),
    directive(
        ngx_string!("auth_oauth2_token_cache_vary"),
        NGX_CONF_TAKE1,
        set_cache_vary,
    ),
    directive(
        ngx_string!("auth_oauth2_token_exchange_cache"),
        NGX_CONF_1MORE,
        set_exchange_cache,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_scope"),
        NGX_CONF_1MORE,
        set_require_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_audience"),
        NGX_CONF_1MORE,
        set_require_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_auth"),
        NGX_CONF_TAKE1,
        set_client_auth,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_assertion_audience"),
        NGX_CONF_TAKE1,
        set_client_assertion_audience,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_key_file"),
        NGX_CONF_TAKE1,
        set_client_key_file,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_key_id"),
        NGX_CONF_TAKE1,
        set_client_key_id,
    ),
    directive(
        ngx_string!("auth_oauth2_token_client_assertion_alg"),
        NGX_CONF_TAKE1,
        set_client_assertion_alg,
    ),
    directive(
        ngx_string!("auth_oauth2_token_pass_options"),
        NGX_CONF_FLAG,
        set_pass_options,
    ),
    directive(
        ngx_string!("auth_oauth2_token_phase"),
        NGX_CONF_TAKE1,
        set_phase,
    ),
    directive(
        ngx_string!("auth_oauth2_token_www_authenticate"),
        NGX_CONF_TAKE1,
        set_www_authenticate,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require"),
        NGX_CONF_1MORE,
        set_require,
    ),
    directive(
        ngx_string!("auth_oauth2_token_phantom"),
        NGX_CONF_FLAG,
        set_phantom,
    ),
    directive(
        ngx_string!("auth_oauth2_token_source"),
        NGX_CONF_1MORE,
        set_source,
    ),
    directive(
        ngx_string!("auth_oauth2_token_require_claim"),
        NGX_CONF_2MORE,
        set_require_claim,
    ),
    directive(
        ngx_string!("auth_oauth2_token_status"),
        NGX_CONF_TAKE2,
        set_status,
    ),
    // Curity's phantom token module (2.0), mapped onto ours.
    directive(
        ngx_string!("phantom_token"),
        NGX_CONF_FLAG,
        set_curity_phantom_token,
    ),
    directive(
        ngx_string!("phantom_token_introspection_endpoint"),
        NGX_CONF_TAKE1,
        set_introspect_endpoint,
    ),
    directive(
        ngx_string!("phantom_token_realm"),
        NGX_CONF_TAKE1,
        set_realm,
    ),
    directive(
        ngx_string!("phantom_token_scopes"),
        NGX_CONF_TAKE1,
        set_curity_scopes,
    ),
    directive(
        ngx_string!("phantom_token_scope"),
        NGX_CONF_TAKE1,
        set_curity_scope,
    ),
    directive(
        ngx_string!("auth_oauth2_token_shared_cache"),
        NGX_CONF_TAKE1,
        set_shared_cache,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_purge"),
        NGX_CONF_NOARGS,
        set_purge,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_metrics"),
        NGX_CONF_NOARGS,
        set_metrics,
    ),
    http_only(
        ngx_string!("auth_oauth2_token_claim_set"),
        NGX_CONF_TAKE2,
        set_claim_set,
    ),
    http_only(
        ngx_string!("auth_oauth2_token_redis"),
        NGX_CONF_1MORE,
        set_redis,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_pass"),
        NGX_CONF_NOARGS,
        set_redis_pass,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_connect_timeout"),
        NGX_CONF_TAKE1,
        set_redis_connect_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_send_timeout"),
        NGX_CONF_TAKE1,
        set_redis_send_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_read_timeout"),
        NGX_CONF_TAKE1,
        set_redis_read_timeout,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_next_upstream"),
        NGX_CONF_1MORE,
        set_redis_next_upstream,
    ),
    location_directive(
        ngx_string!("auth_oauth2_token_redis_buffer_size"),
        NGX_CONF_TAKE1,
        set_redis_buffer_size,
    ),
    ngx_command_t::empty(),
];

/// What a handler needs from nginx's call: the directive's name, its first
/// argument, and this block's configuration (a `LocationConf`, or the
/// `MainConf` for http-only directives). A `Call` exists only while nginx
/// runs the directive's handler, so `cf` is the configuration being parsed
/// for as long as it lives.
struct Call<'a, C> {
    cf: *mut ngx_conf_t,
    name: &'a [u8],
    arg: &'a [u8],
    args: &'a [ngx_str_t],
    conf: &'a mut C,
}

/// Runs `body` with the directive decoded; its `Err` is logged naming the
/// directive and fails the configuration.
///
/// # Safety
/// Arguments must be the ones nginx passes to a directive's `set` handler, for
/// a directive of this module whose `conf` slot holds a `LocationConf`.
unsafe fn run<C>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    body: impl FnOnce(&mut Call<'_, C>) -> Result<(), String>,
) -> *mut c_char {
    // SAFETY: nginx passes the directive's arguments in cf->args (name first,
    // then the values its type allows), the command being
    // parsed, and the block's conf of the type the command's `conf` offset
    // names (LocationConf, or MainConf for NGX_HTTP_MAIN_CONF_OFFSET).
    let mut call = unsafe {
        let args = core::slice::from_raw_parts(
            (*(*cf).args).elts as *const ngx_str_t,
            (*(*cf).args).nelts,
        );
        Call {
            cf,
            name: (*cmd).name.as_bytes(),
            arg: args.get(1).map_or(&[][..], |a| a.as_bytes()),
            args: &args[1..],
            conf: &mut *conf.cast::<C>(),
        }
    };
    match body(&mut call) {
        Ok(()) => ptr::null_mut(),
        Err(message) => {
            let name = String::from_utf8_lossy(call.name);
            ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{name}\" directive {message}");
            NGX_CONF_ERROR
        }
    }
}

/// Defines a directive's `set` handler: decodes nginx's arguments with
/// [`run`] and hands the closure a [`Call`] of the block's `LocationConf`
/// (or of the conf type given after the name).
macro_rules! handler {
    ($name:ident, |$c:ident| $body:expr) => {
        handler!($name: LocationConf, |$c| $body);
    };
    ($name:ident: $conf:ty, |$c:ident| $body:expr) => {
        unsafe extern "C" fn $name(
            cf: *mut ngx_conf_t,
            cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            let body = |$c: &mut Call<'_, $conf>| -> Result<(), String> { $body };
            // SAFETY: nginx calls this as the `set` handler of a directive
            // in COMMANDS, whose conf slot holds a `$conf`.
            unsafe { run(cf, cmd, conf, body) }
        }
    };
}

impl<C> Call<'_, C> {
    /// Compiles `arg` as a value that may hold nginx variables.
    fn template(&self, arg: &[u8]) -> Result<Template, String> {
        // SAFETY: cf is the configuration being parsed (see `Call`).
        unsafe { template(self.cf, arg) }
    }

    /// The file name `arg` relative to nginx's prefix, as nginx resolves it.
    fn full_name(&self, arg: &[u8]) -> Result<std::path::PathBuf, String> {
        let mut path = ngx_str_t {
            len: arg.len(),
            data: arg.as_ptr().cast_mut(),
        };
        // SAFETY: cf is the configuration being parsed (see `Call`); `path`
        // points at the argument, and nginx replaces it with a copy in the
        // cycle pool.
        if unsafe { ngx_conf_full_name((*self.cf).cycle, &mut path, 1) } != 0 {
            return Err("cannot resolve the file name".into());
        }
        Ok(std::ffi::OsStr::from_bytes(path.as_bytes()).into())
    }

    /// Declares (or finds) the shared zone of a cache directive.
    fn cache_zone(&mut self, parsed: cache_args::CacheArgs) -> Result<CacheConf, String> {
        let zone_name = String::from_utf8_lossy(&parsed.zone_name).into_owned();
        if zone_name == counters::ZONE_NAME {
            return Err(format!(
                "cannot use the zone name \"{zone_name}\": the module's metrics use it"
            ));
        }
        // SAFETY: nginx sets its page size before it parses any configuration.
        let min_size = unsafe { zone::min_zone_size() };
        if parsed.zone_size < min_size {
            return Err(format!(
                "zone \"{}\" is too small: at least {min_size} bytes",
                String::from_utf8_lossy(&parsed.zone_name),
            ));
        }
        // SAFETY: cf is the configuration being parsed (see `Call`). The name
        // is copied into the configuration pool, which lives as long as the
        // cycle that keeps a pointer to it; the zone returned by nginx is
        // ours to set up until the cycle initialises it.
        unsafe {
            let cf = self.cf;
            let mut name =
                ngx_str_t::from_bytes((*cf).pool, &parsed.zone_name).ok_or("cannot allocate")?;
            let tag = Module::module() as *const _ as *mut c_void;
            let shm_zone = ngx_shared_memory_add(cf, &mut name, parsed.zone_size, tag);
            if shm_zone.is_null() {
                return Err("cannot use this zone (see the message above)".into());
            }
            (*shm_zone).init.get_or_insert(zone::init_zone);
            let main = self.main_conf()?;
            if !main.zones.iter().any(|(name, _)| *name == zone_name) {
                main.zones.push((zone_name.clone(), shm_zone.cast()));
            }
            Ok(CacheConf {
                zone: shm_zone.cast(),
                policy: parsed.policy,
                metrics: main.metrics.zone(&zone_name),
            })
        }
    }

    /// Defines the variable `$name`, read by `get` with `data`.
    fn add_variable(
        &self,
        name: &[u8],
        get: ngx_http_get_variable_pt,
        data: usize,
    ) -> Result<(), String> {
        let mut name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr().cast_mut(),
        };
        // SAFETY: cf is the configuration being parsed (see `Call`); nginx
        // copies the name, and the variable it returns is ours to fill.
        unsafe {
            let var =
                ngx_http_add_variable(self.cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t);
            if var.is_null() {
                return Err("cannot define the variable (see the message above)".into());
            }
            (*var).get_handler = get;
            (*var).data = data;
        }
        Ok(())
    }

    /// Makes `handler` the content handler of this location.
    fn set_content_handler(&self, handler: ngx_http_handler_pt) -> Result<(), String> {
        // SAFETY: cf is the configuration being parsed (see `Call`), in a
        // location, whose core location conf is nginx's.
        unsafe {
            let clcf = NgxHttpCoreModule::location_conf_mut(&*self.cf)
                .ok_or("cannot find the location's configuration")?;
            clcf.handler = handler;
        }
        Ok(())
    }

    /// This module's http-level configuration.
    fn main_conf(&mut self) -> Result<&mut MainConf, String> {
        // SAFETY: cf is the configuration being parsed (see `Call`), inside
        // the http block, whose main conf of this module is a MainConf.
        unsafe { Module::main_conf_mut(&*self.cf) }
            .ok_or("cannot find the http configuration".into())
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err("is duplicate".into());
    }
    *slot = Some(value);
    Ok(())
}

fn utf8(arg: &[u8]) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| "value is not valid UTF-8".into())
}

fn flag(arg: &[u8]) -> Result<bool, String> {
    match arg {
        a if a.eq_ignore_ascii_case(b"on") => Ok(true),
        a if a.eq_ignore_ascii_case(b"off") => Ok(false),
        _ => Err("takes \"on\" or \"off\"".into()),
    }
}

fn endpoint(arg: &[u8]) -> Result<Vec<u8>, String> {
    if !is_valid_endpoint(arg) {
        return Err(
            "needs the URI of an internal location (or its name), like /_oauth2_introspect".into(),
        );
    }
    Ok(arg.to_vec())
}

/// Compiles the argument as a value that may hold nginx variables.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn template(cf: *mut ngx_conf_t, arg: &[u8]) -> Result<Template, String> {
    if arg.is_empty() {
        return Err("needs a non-empty value".into());
    }
    // SAFETY: the complex value and the copied source live in the
    // configuration pool; ccv is zeroed as nginx's own modules do.
    unsafe {
        let cv = ngx::ffi::ngx_pcalloc((*cf).pool, size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        let mut value = ngx_str_t::from_bytes((*cf).pool, arg).ok_or("cannot allocate")?;
        if cv.is_null() {
            return Err("cannot allocate".into());
        }
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = &mut value;
        ccv.complex_value = cv;
        if ngx_http_compile_complex_value(&mut ccv) != 0 {
            return Err("has an invalid variable reference".into());
        }
        Ok(Template(cv.cast()))
    }
}

handler!(set_introspect, |c| set_once(
    &mut c.conf.introspect,
    flag(c.arg)?
));

handler!(set_exchange, |c| set_once(
    &mut c.conf.exchange,
    flag(c.arg)?
));

handler!(set_token_endpoint, |c| set_once(
    &mut c.conf.token_endpoint,
    endpoint(c.arg)?
));

handler!(set_audience, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.audience, value)
});

handler!(set_scope, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.scope, value)
});

handler!(set_resource, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.resource, value)
});

handler!(set_requested_token_type, |c| {
    if c.arg.is_empty() || c.arg.iter().any(|b| b.is_ascii_whitespace()) {
        return Err("needs a token type URI, like urn:ietf:params:oauth:token-type:jwt".into());
    }
    set_once(&mut c.conf.requested_token_type, c.arg.to_vec())
});

handler!(set_introspect_endpoint, |c| set_once(
    &mut c.conf.introspect_endpoint,
    endpoint(c.arg)?
));

handler!(set_client_id, |c| {
    if c.arg.is_empty() {
        return Err("needs a non-empty client id".into());
    }
    set_once(&mut c.conf.client_id, c.arg.to_vec())
});

fn set_secret(
    conf: &mut LocationConf,
    source: SecretSource,
    secret: Vec<u8>,
) -> Result<(), String> {
    match conf.client_secret {
        Some((existing, _)) if existing == source => Err("is duplicate".into()),
        Some(_) => Err(
            "conflicts with another client secret in this block: use either \"auth_oauth2_token_client_secret\" or \"auth_oauth2_token_client_secret_file\"".into(),
        ),
        None => {
            conf.client_secret = Some((source, secret));
            Ok(())
        }
    }
}

handler!(set_client_secret, |c| {
    set_secret(c.conf, SecretSource::Inline, c.arg.to_vec())
});

handler!(set_client_secret_file, |c| {
    let path = c.full_name(c.arg)?;
    let contents = std::fs::read(&path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.to_string_lossy()))?;
    set_secret(
        c.conf,
        SecretSource::File,
        secret_from_file_contents(&contents),
    )
});

// `phantom_token on|off` (Curity): a phantom-token introspection whose
// internal location supplies the IdP credentials and headers itself.
handler!(set_curity_phantom_token, |c| {
    let on = flag(c.arg)?;
    set_once(&mut c.conf.introspect, on)?;
    set_once(&mut c.conf.phantom, on)?;
    set_once(&mut c.conf.credentials_in_location, on)
});

fn announced_scopes(arg: &[u8]) -> Result<Vec<String>, String> {
    let text = utf8(arg)?;
    let scopes: Vec<String> = text
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match scopes.iter().find(|s| !scope::is_scope_token(s.as_bytes())) {
        Some(bad) => Err(format!("has an invalid scope \"{bad}\"")),
        None if scopes.is_empty() => Err("needs at least one scope".into()),
        None => Ok(scopes),
    }
}

// `phantom_token_scopes "a b c"` (Curity): scopes the challenge announces.
handler!(set_curity_scopes, |c| {
    let scopes = announced_scopes(c.arg)?.join(" ");
    set_once(&mut c.conf.announced_scopes, scopes)
});

// `phantom_token_scope a` (Curity), once per scope.
handler!(set_curity_scope, |c| {
    let scopes = announced_scopes(c.arg)?;
    c.conf.announced_scope_list.extend(scopes);
    Ok(())
});

handler!(set_realm, |c| {
    if !challenge::is_valid_realm(c.arg) {
        return Err("must not contain quotes, backslashes or control characters".into());
    }
    set_once(&mut c.conf.realm, utf8(c.arg)?)
});

fn args_of<'a, C>(c: &Call<'a, C>) -> Vec<&'a [u8]> {
    c.args.iter().map(|a| a.as_bytes()).collect()
}

handler!(set_introspect_cache, |c| {
    let zone = c.cache_zone(cache_args::parse(&args_of(c))?)?;
    set_once(&mut c.conf.introspect_cache, zone)
});

handler!(set_exchange_cache, |c| {
    let zone = c.cache_zone(cache_args::parse_exchange(&args_of(c))?)?;
    set_once(&mut c.conf.exchange_cache, zone)
});

handler!(set_breaker, |c| {
    let conf = BreakerConf::parse(&args_of(c), cache_args::parse_time_ms)?;
    set_once(&mut c.conf.breaker, conf)
});

handler!(set_cache_vary, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.cache_vary, value)
});

handler!(set_require_scope, |c| {
    let mut scopes = Vec::with_capacity(c.args.len());
    for arg in c.args {
        if !scope::is_scope_token(arg.as_bytes()) {
            return Err(format!(
                "has an invalid scope \"{}\"",
                String::from_utf8_lossy(arg.as_bytes())
            ));
        }
        scopes.push(utf8(arg.as_bytes())?);
    }
    set_once(&mut c.conf.require_scope, scopes)
});

handler!(set_require_audience, |c| {
    let mut accepted = Vec::with_capacity(c.args.len());
    for arg in c.args {
        let value = arg.as_bytes();
        if value.is_empty() || value.iter().any(|b| b.is_ascii_control()) {
            return Err("needs audience values without control characters".into());
        }
        accepted.push(utf8(value)?);
    }
    let index = c.main_conf()?.claims.checked_index("aud");
    set_once(
        &mut c.conf.require_audience,
        AudienceRule { accepted, index },
    )
});

handler!(set_client_auth, |c| {
    let auth = ClientAuth::parse(c.arg).ok_or(
        "takes \"basic\" or \"post\", or \"client_secret_jwt\", \"private_key_jwt\", \"tls_client_auth\" or \"self_signed_tls_client_auth\"",
    )?;
    set_once(&mut c.conf.client_auth, auth)
});

handler!(set_client_assertion_audience, |c| {
    if c.arg.is_empty()
        || c.arg
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("needs the IdP's issuer or endpoint URL".into());
    }
    set_once(&mut c.conf.assertion_audience, utf8(c.arg)?)
});

handler!(set_client_key_file, |c| {
    let path = c.full_name(c.arg)?;
    let pem = std::fs::read(&path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.to_string_lossy()))?;
    // Checked now, so that a wrong file fails here, naming this directive.
    AssertionKey::from_pem(&pem, None, None)?;
    set_once(&mut c.conf.client_key_pem, pem)
});

handler!(set_client_key_id, |c| {
    if c.arg.is_empty()
        || c.arg
            .iter()
            .any(|b| b.is_ascii_control() || *b == b'"' || *b == b'\\')
    {
        return Err("needs a key id without quotes, backslashes or control characters".into());
    }
    set_once(&mut c.conf.client_key_id, utf8(c.arg)?)
});

handler!(set_client_assertion_alg, |c| {
    let alg = Alg::parse(c.arg).ok_or("takes HS256, RS256, PS256, ES256 or EdDSA")?;
    set_once(&mut c.conf.assertion_alg, alg)
});

handler!(set_pass_options, |c| set_once(
    &mut c.conf.pass_options,
    flag(c.arg)?
));

handler!(set_phase, |c| {
    let phase = match c.arg {
        b"access" => Phase::Access,
        b"preaccess" => Phase::Preaccess,
        _ => return Err("takes \"access\" or \"preaccess\"".into()),
    };
    set_once(&mut c.conf.phase, phase)
});

handler!(set_www_authenticate, |c| {
    let challenge = match c.arg {
        b"on" => Challenge::Standard,
        b"off" => Challenge::Off,
        _ => Challenge::Custom(c.template(c.arg)?),
    };
    set_once(&mut c.conf.www_authenticate, challenge)
});

handler!(set_require, |c| {
    let parsed = require_args::parse(&args_of(c))?;
    let mut variables = Vec::with_capacity(parsed.variables.len());
    for variable in parsed.variables {
        variables.push(c.template(variable)?);
    }
    c.conf.require.push(Requirement {
        variables,
        status: parsed.status,
    });
    Ok(())
});

handler!(set_phantom, |c| set_once(&mut c.conf.phantom, flag(c.arg)?));

handler!(set_source, |c| {
    let sources = carriers::parse_sources(&args_of(c))?;
    set_once(&mut c.conf.token_source, sources)
});

handler!(set_require_claim, |c| {
    let rule = ClaimRule::parse(&args_of(c))?;
    let index = c.main_conf()?.claims.checked_index(rule.path());
    c.conf.require_claim.push(ClaimCheck { rule, index });
    Ok(())
});

handler!(set_status, |c| {
    let situation = Situation::parse(c.arg).ok_or_else(|| {
        format!(
            "has an unknown situation \"{}\": use missing, invalid, forbidden, idp_error or idp_timeout",
            String::from_utf8_lossy(c.arg)
        )
    })?;
    let status = parse_error_status(c.args[1].as_bytes())
        .ok_or("has an invalid status: it must be 400-599, excluding 444 and 499")?;
    c.conf.statuses.set(situation, status)
});

// `auth_oauth2_token_metrics;` (location): the location answers with the
// metrics in Prometheus' text format.
handler!(set_metrics, |c| {
    if c.conf.metrics_page {
        return Err("is duplicate".into());
    }
    c.conf.metrics_page = true;
    c.set_content_handler(Some(crate::pages::metrics::handler))
});

// `auth_oauth2_token_shared_cache URI | off;`: this block's caches also
// use the shared tier (Redis) through the internal location at URI.
handler!(set_shared_cache, |c| {
    if c.conf.shared_cache.is_some() {
        return Err("is duplicate".into());
    }
    let uri = match c.arg {
        b"off" => None,
        uri if uri.starts_with(b"/") => Some(uri.to_vec()),
        _ => return Err("needs the URI of an internal location (\"/...\") or \"off\"".into()),
    };
    c.conf.shared_cache = Some(uri);
    Ok(())
});

// `auth_oauth2_token_purge;` (location): the location removes a token's
// cached answers (RFC 7009 request shape), here and in the shared tier.
handler!(set_purge, |c| {
    if c.conf.purge_page {
        return Err("is duplicate".into());
    }
    c.conf.purge_page = true;
    c.set_content_handler(Some(crate::pages::purge::handler))
});

// `auth_oauth2_token_claim_set $variable CLAIM;` (http level): defines the
// variable, which reads the claim at that path of the introspection answer.
handler!(set_claim_set: MainConf, |c| {
    let name = c
        .arg
        .strip_prefix(b"$")
        .filter(|n| !n.is_empty())
        .ok_or("needs a $variable first")?;
    let path = c.args[1].as_bytes();
    if !crate::oauth::claims::is_valid_path(path) {
        return Err(format!(
            "has an invalid claim path \"{}\"",
            String::from_utf8_lossy(path)
        ));
    }
    let path = utf8(path)?;
    let index = c.conf.claims.rendered.len();
    c.add_variable(name, Some(crate::handler::variables::get_claim), index)?;
    c.conf.claims.rendered.push(path);
    Ok(())
});

/// Reads a file named by a directive argument (relative to nginx's prefix).
fn read_file<C>(c: &Call<'_, C>, name: &[u8]) -> Result<Vec<u8>, String> {
    let path = c.full_name(name)?;
    std::fs::read(&path).map_err(|e| format!("cannot read \"{}\": {e}", path.to_string_lossy()))
}

/// A fleet secret from `key_file=` / `old_key_file=`; the error names the
/// parameter and the file, never the bytes.
fn fleet_key<C>(c: &Call<'_, C>, param: &str, name: &[u8]) -> Result<FleetKey, String> {
    let contents = read_file(c, name)?;
    let secret = redis_args::fleet_secret(&contents);
    if secret.len() < 32 {
        return Err(format!(
            "has a \"{param}\" of {} bytes: the fleet secret needs at least 32 (openssl rand -hex 32)",
            secret.len()
        ));
    }
    FleetKey::from_secret(secret).map_err(|e| format!("has an unusable \"{param}\": {e}"))
}

// `auth_oauth2_token_redis SERVER key_file=PATH ...;` (http level): the
// shared tier. Files are read now; the server is an nginx upstream.
handler!(set_redis: MainConf, |c| {
    if c.conf.redis.is_some() {
        return Err("is duplicate".into());
    }
    let args = args_of(c);
    let parsed = redis_args::parse(&args)?;
    let current = fleet_key(c, "key_file", parsed.key_file)?;
    let old = match parsed.old_key_file {
        Some(name) => Some(fleet_key(c, "old_key_file", name)?),
        None => None,
    };
    let mut preamble = Vec::new();
    let mut preamble_replies = 0;
    if let Some(name) = parsed.password_file {
        let password = secret_from_file_contents(&read_file(c, name)?);
        if password.is_empty() {
            return Err("has an empty \"password_file\"".into());
        }
        match &parsed.user {
            Some(user) => resp::command(&mut preamble, &[b"AUTH", user, &password]),
            None => resp::command(&mut preamble, &[b"AUTH", &password]),
        }
        preamble_replies += 1;
    }
    if parsed.database != 0 {
        let n = parsed.database.to_string();
        resp::command(&mut preamble, &[b"SELECT", n.as_bytes()]);
        preamble_replies += 1;
    }
    let mut url: ngx_url_t = zeroed_url();
    // SAFETY: cf is the configuration being parsed (see `Call`); the URL
    // is copied into its pool, which outlives the upstream that keeps it.
    let upstream = unsafe {
        url.url = ngx_str_t::from_bytes((*c.cf).pool, parsed.server).ok_or("cannot allocate")?;
        url.set_no_resolve(1);
        ngx_http_upstream_add(c.cf, &mut url, 0)
    };
    if upstream.is_null() {
        return Err("has an invalid server (see the message above)".into());
    }
    c.conf.redis = Some(RedisTier {
        upstream: upstream.cast(),
        keys: FleetKeys { current, old },
        preamble,
        preamble_replies,
        prefix: parsed.prefix,
    });
    Ok(())
});

/// A zeroed `ngx_url_t`, as nginx's modules start one.
fn zeroed_url() -> ngx_url_t {
    // SAFETY: ngx_url_t is plain C data for which all-zero is the state
    // nginx's own callers start from (ngx_memzero).
    unsafe { core::mem::zeroed() }
}

// `auth_oauth2_token_redis_pass;` (location): this location carries the
// module's Redis calls; wired to the upstream once the http block is parsed.
handler!(set_redis_pass, |c| {
    if c.conf.redis.pass.is_some() {
        return Err("is duplicate".into());
    }
    c.conf.redis.pass = Some(ptr::null_mut());
    let conf: *mut LocationConf = c.conf;
    c.main_conf()?.redis_passes.push(conf.cast());
    c.set_content_handler(Some(crate::redis::upstream::handler))
});

handler!(set_redis_connect_timeout, |c| set_once(
    &mut c.conf.redis.connect_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_send_timeout, |c| set_once(
    &mut c.conf.redis.send_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_read_timeout, |c| set_once(
    &mut c.conf.redis.read_timeout_ms,
    redis_args::parse_timeout(c.arg)?
));

handler!(set_redis_next_upstream, |c| {
    let next = redis_args::parse_next_upstream(&args_of(c))?;
    set_once(&mut c.conf.redis.next_upstream, next)
});

handler!(set_redis_buffer_size, |c| set_once(
    &mut c.conf.redis.buffer_size,
    redis_args::parse_buffer_size(c.arg)?
));
