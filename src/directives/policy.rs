//! What a location asks of a token and how it answers when the token
//! fails: where the token is read (`source`, `phase`, `pass_options`), the
//! requirements (`require_scope`, `require_audience`, `require`,
//! `require_claim`), the refusal (`realm`, `www_authenticate`, `status`),
//! and the claims it exposes as variables (`claim_set`, http level).

use ngx::ffi::{ngx_conf_t, ngx_hash_key_t, ngx_http_variable_t, NGX_LOG_WARN};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use super::call::{args_of, flag, handler, set_once, utf8};
use crate::conf::{
    parse_error_status, require_args, Challenge, MainConf, Phase, Requirement, Situation,
};
use crate::oauth::claim_rule::{ClaimCheck, ClaimRule};
use crate::oauth::verdict::AudienceRule;
use crate::oauth::{carriers, challenge, scope, step_up};

handler!(set_realm, |c| {
    if !challenge::is_valid_realm(c.arg) {
        return Err("must not contain quotes, backslashes or control characters".into());
    }
    set_once(&mut c.conf.realm, utf8(c.arg)?)
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

// `auth_oauth2_token_require_resource URL`: the token's `aud` must name
// this resource (RFC 8707), compared as `oauth/resource.rs` says.
handler!(set_require_resource, |c| {
    if !c.arg.contains(&b'$') && !crate::oauth::resource::is_resource_url(c.arg) {
        return Err(format!(
            "\"{}\" is not an http or https URL without user information or fragment",
            String::from_utf8_lossy(c.arg)
        ));
    }
    let template = c.template(c.arg)?;
    let index = c.main_conf()?.claims.checked_index("aud");
    set_once(&mut c.conf.require_resource, (template, index))
});

// `auth_oauth2_token_require_acr VALUE...`: the token's `acr` must be one
// of these (RFC 9470 step-up), listed in order of preference.
handler!(set_require_acr, |c| {
    let mut accepted = Vec::with_capacity(c.args.len());
    for arg in c.args {
        if !step_up::is_acr_value(arg.as_bytes()) {
            return Err(format!(
                "has an invalid value \"{}\": visible ASCII but quotes and backslashes",
                String::from_utf8_lossy(arg.as_bytes())
            ));
        }
        accepted.push(utf8(arg.as_bytes())?);
    }
    let index = c.main_conf()?.claims.checked_index("acr");
    set_once(
        &mut c.conf.require_acr,
        step_up::AcrRule::new(accepted, index),
    )
});

// `auth_oauth2_token_max_auth_age TIME`: the user authenticated at most
// TIME ago (`auth_time`, RFC 9470 step-up).
handler!(set_max_auth_age, |c| {
    let seconds = crate::conf::cache_args::parse_time_ms(c.arg)
        .filter(|ms| *ms >= 0 && ms % 1000 == 0)
        .ok_or("takes a time in whole seconds (\"300s\", \"5m\", \"1h\")")?
        / 1000;
    let index = c.main_conf()?.claims.checked_index("auth_time");
    let rule = step_up::AgeRule {
        seconds: seconds as u64,
        index,
    };
    set_once(&mut c.conf.max_auth_age, rule)
});

// `auth_oauth2_token_resource_metadata_url URL | off`: the URL of the
// resource's RFC 9728 metadata, in every challenge (RFC 9728 §5.1).
handler!(set_resource_metadata_url, |c| {
    let url = match c.arg {
        b"off" => None,
        arg => {
            if !arg.contains(&b'$') {
                crate::oauth::resource_metadata::check_url(arg)
                    .map_err(|why| format!("\"{}\" {why}", String::from_utf8_lossy(arg)))?;
            }
            Some(c.template(arg)?)
        }
    };
    set_once(&mut c.conf.resource_metadata_url, url)
});

handler!(set_require, |c| {
    let parsed = require_args::parse(&args_of(c))?;
    let mut variables = Vec::with_capacity(parsed.variables.len());
    let source = c.source();
    for variable in parsed.variables {
        variables.push(c.template(variable)?);
        let names = require_args::variable_names(variable);
        let main = c.main_conf()?;
        for name in names {
            main.require_variables.push((name, source.clone()));
        }
    }
    c.conf.require.push(Requirement {
        variables,
        status: parsed.status,
    });
    Ok(())
});

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

/// Once every variable is declared (postconfiguration), a warning for each
/// variable `auth_oauth2_token_require` uses that nothing defines: nginx
/// then refuses it as `unknown "NAME" variable`, naming neither the
/// directive nor where it is written; this line does.
///
/// # Safety
/// `cf` must be the http configuration nginx passes to postconfiguration,
/// and `main` this module's main conf in it.
pub unsafe fn warn_undefined_require_variables(cf: *mut ngx_conf_t, main: &MainConf) {
    // SAFETY: `cf` is the http configuration in postconfiguration (this
    // function's contract): the core module's main conf there holds the
    // declared variables' keys (freed only after postconfiguration) and the
    // prefixed variables; both are read, not changed.
    unsafe {
        let Some(cmcf) = NgxHttpCoreModule::main_conf(&*cf) else {
            return;
        };
        if main.require_variables.is_empty() || cmcf.variables_keys.is_null() {
            return;
        }
        let keys = &(*cmcf.variables_keys).keys;
        let defined: Vec<&[u8]> = match keys.nelts {
            0 => Vec::new(),
            n => core::slice::from_raw_parts(keys.elts.cast::<ngx_hash_key_t>(), n)
                .iter()
                .map(|k| k.key.as_bytes())
                .collect(),
        };
        let prefixes = &cmcf.prefix_variables;
        let prefixed: Vec<&[u8]> = match prefixes.nelts {
            0 => Vec::new(),
            n => core::slice::from_raw_parts(prefixes.elts.cast::<ngx_http_variable_t>(), n)
                .iter()
                .map(|v| v.name.as_bytes())
                .collect(),
        };
        for (name, source) in &main.require_variables {
            if !require_args::is_defined(name, &defined, &prefixed) {
                let name = String::from_utf8_lossy(name);
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    (*cf).log,
                    "\"auth_oauth2_token_require\" directive uses \"${name}\", which no module or directive defines: nginx refuses it as an unknown variable; it is written in {source}"
                );
            }
        }
    }
}
