//! Curity's phantom token module's directive names (2.0), mapped onto
//! ours: `phantom_token`, `phantom_token_scopes`, `phantom_token_scope`
//! (`phantom_token_introspection_endpoint` and `phantom_token_realm` share
//! our handlers, in the table).

use super::call::{flag, handler, set_once, utf8};
use crate::oauth::scope;

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
