//! What a directive's `set` handler gets from nginx: the decoded call
//! ([`Call`], [`run`], the `handler!` macro that defines a handler), the
//! services nginx gives it (templates, file names, variables, content
//! handlers, the http block's configuration) and the argument helpers every
//! directive family uses.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::os::unix::ffi::OsStrExt;

use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_add_variable,
    ngx_http_compile_complex_value, ngx_http_compile_complex_value_t, ngx_http_complex_value_t,
    ngx_http_get_variable_pt, ngx_http_handler_pt, ngx_str_t, ngx_uint_t, NGX_HTTP_VAR_NOCACHEABLE,
    NGX_LOG_EMERG, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use crate::conf::{MainConf, Template};
use crate::module::Module;

/// What a handler needs from nginx's call: the directive's name, its first
/// argument, and this block's configuration (a `LocationConf`, or the
/// `MainConf` for http-only directives). A `Call` exists only while nginx
/// runs the directive's handler, so `cf` is the configuration being parsed
/// for as long as it lives.
pub(super) struct Call<'a, C> {
    pub(super) cf: *mut ngx_conf_t,
    name: &'a [u8],
    pub(super) arg: &'a [u8],
    pub(super) args: &'a [ngx_str_t],
    pub(super) conf: &'a mut C,
}

/// Runs `body` with the directive decoded; its `Err` is logged naming the
/// directive and fails the configuration.
///
/// # Safety
/// Arguments must be the ones nginx passes to a directive's `set` handler, for
/// a directive of this module whose `conf` slot holds a `LocationConf`.
pub(super) unsafe fn run<C>(
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
/// (or of the conf type given after the name). The handler is visible to
/// `directives/mod.rs`, whose table names it.
macro_rules! handler {
    ($name:ident, |$c:ident| $body:expr) => {
        handler!($name: $crate::conf::LocationConf, |$c| $body);
    };
    ($name:ident: $conf:ty, |$c:ident| $body:expr) => {
        pub(super) unsafe extern "C" fn $name(
            cf: *mut ::ngx::ffi::ngx_conf_t,
            cmd: *mut ::ngx::ffi::ngx_command_t,
            conf: *mut ::core::ffi::c_void,
        ) -> *mut ::core::ffi::c_char {
            let body = |$c: &mut $crate::directives::call::Call<'_, $conf>| -> Result<(), String> {
                $body
            };
            // SAFETY: nginx calls this as the `set` handler of a directive
            // in COMMANDS, whose conf slot holds a `$conf`.
            unsafe { $crate::directives::call::run(cf, cmd, conf, body) }
        }
    };
}
pub(super) use handler;

impl<C> Call<'_, C> {
    /// Compiles `arg` as a value that may hold nginx variables.
    pub(super) fn template(&self, arg: &[u8]) -> Result<Template, String> {
        // SAFETY: cf is the configuration being parsed (see `Call`).
        unsafe { template(self.cf, arg) }
    }

    /// The file name `arg` relative to nginx's prefix, as nginx resolves it.
    pub(super) fn full_name(&self, arg: &[u8]) -> Result<std::path::PathBuf, String> {
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

    /// Reads a file of secrets named by `arg` (relative to nginx's prefix):
    /// a client secret, a private key, a fleet key or a password. A file
    /// that users other than its owner may read or write is read, with a
    /// warning naming the directive (and `param`, a parameter's name) and
    /// the file, never its content.
    pub(super) fn read_secret_file(&self, param: &str, arg: &[u8]) -> Result<Vec<u8>, String> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let path = self.full_name(arg)?;
        let shown = path.to_string_lossy();
        let cannot = |e: std::io::Error| format!("cannot read \"{shown}\": {e}");
        let mut file = std::fs::File::open(&path).map_err(cannot)?;
        let mode = file.metadata().map_err(cannot)?.mode();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(cannot)?;
        if let Some(why) = crate::conf::secret_file_too_open(mode) {
            let name = String::from_utf8_lossy(self.name);
            let param = match param {
                "" => String::new(),
                param => format!(" {param}"),
            };
            ngx::ngx_conf_log_error!(
                NGX_LOG_WARN,
                self.cf,
                "\"{name}\" directive:{param} \"{shown}\" holds secrets, but {why}"
            );
        }
        Ok(contents)
    }

    /// Defines the variable `$name`, read by `get` with `data`.
    pub(super) fn add_variable(
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
    pub(super) fn set_content_handler(&self, handler: ngx_http_handler_pt) -> Result<(), String> {
        // SAFETY: cf is the configuration being parsed (see `Call`), in a
        // location, whose core location conf is nginx's.
        unsafe {
            let clcf = NgxHttpCoreModule::location_conf_mut(&*self.cf)
                .ok_or("cannot find the location's configuration")?;
            clcf.handler = handler;
        }
        Ok(())
    }

    /// The name of the location being parsed, unless it is a regular
    /// expression (whose name is no path).
    pub(super) fn location_path(&self) -> Option<Vec<u8>> {
        // SAFETY: cf is the configuration being parsed (see `Call`), in a
        // location, whose core location conf is nginx's; its name is in the
        // configuration pool.
        unsafe {
            let clcf = NgxHttpCoreModule::location_conf_mut(&*self.cf)?;
            if !clcf.regex.is_null() {
                return None;
            }
            Some(clcf.name.as_bytes().to_vec())
        }
    }

    /// Logs a `[warn]` naming the directive; the configuration still loads.
    pub(super) fn warn(&self, message: &str) {
        let name = String::from_utf8_lossy(self.name);
        ngx::ngx_conf_log_error!(NGX_LOG_WARN, self.cf, "\"{name}\" directive: {message}");
    }

    /// Where the directive is written, as nginx prints it: "FILE:LINE".
    pub(super) fn source(&self) -> String {
        // SAFETY: cf is the configuration being parsed (see `Call`); while a
        // directive's handler runs, nginx's conf_file is the file being read.
        unsafe {
            let file = (*self.cf).conf_file;
            if file.is_null() {
                return String::new();
            }
            let name = String::from_utf8_lossy((*file).file.name.as_bytes());
            format!("{name}:{}", (*file).line)
        }
    }

    /// This module's http-level configuration.
    pub(super) fn main_conf(&mut self) -> Result<&mut MainConf, String> {
        // SAFETY: cf is the configuration being parsed (see `Call`), inside
        // the http block, whose main conf of this module is a MainConf.
        unsafe { Module::main_conf_mut(&*self.cf) }
            .ok_or("cannot find the http configuration".into())
    }
}

pub(super) fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err("is duplicate".into());
    }
    *slot = Some(value);
    Ok(())
}

pub(super) fn utf8(arg: &[u8]) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| "value is not valid UTF-8".into())
}

pub(super) fn flag(arg: &[u8]) -> Result<bool, String> {
    match arg {
        a if a.eq_ignore_ascii_case(b"on") => Ok(true),
        a if a.eq_ignore_ascii_case(b"off") => Ok(false),
        _ => Err("takes \"on\" or \"off\"".into()),
    }
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

pub(super) fn args_of<'a, C>(c: &Call<'a, C>) -> Vec<&'a [u8]> {
    c.args.iter().map(|a| a.as_bytes()).collect()
}
