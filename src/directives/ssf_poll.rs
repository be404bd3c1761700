//! `auth_oauth2_token_ssf_poll [interval=] [max_events=] [return_immediately=]
//! [max_size=] [bearer_file=]` (location): the Shared Signals receiver
//! polls its transmitter (RFC 8936) through this location (its
//! `proxy_pass` names the transmitter's poll endpoint). The bearer file is
//! read now; the server block the location is in is kept, since the poll's
//! request is made in it (`pages/ssf_poll.rs`).

use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};

use super::call::{args_of, handler};
use crate::conf::secret_from_file_contents;
use crate::conf::ssf_poll::{self, SsfPoll};

handler!(set_ssf_poll, |c| {
    let args = args_of(c);
    let parsed = ssf_poll::parse(&args)?;
    let uri = c
        .location_path()
        .filter(|path| path.starts_with(b"/"))
        .ok_or("needs a location with a plain path (not a regex, not a named location)")?;
    let bearer = match parsed.bearer_file {
        Some(file) => {
            let secret = secret_from_file_contents(&c.read_secret_file("bearer_file", file)?);
            if secret.is_empty() || !crate::oauth::bearer::is_b64token(&secret) {
                return Err("has a \"bearer_file\" that is not one bearer token".into());
            }
            Some(secret)
        }
        None => None,
    };
    // SAFETY: cf is the configuration being parsed (see `Call`), inside a
    // server block, whose core server conf is nginx's; its `ctx` is the
    // server's configuration context, which lives as long as the cycle.
    let server = unsafe { NgxHttpCoreModule::server_conf(&*c.cf) }
        .map(|cscf| cscf.ctx.cast())
        .ok_or("cannot find the server block")?;
    let main = c.main_conf()?;
    if main.ssf.is_none() {
        return Err("needs \"auth_oauth2_token_ssf_receiver\" in the http block before it".into());
    }
    if main.ssf_poll.is_some() {
        return Err("is duplicate (one poll per http block)".into());
    }
    main.ssf_poll = Some(SsfPoll {
        uri,
        server,
        interval_ms: parsed.interval_ms,
        max_events: parsed.max_events,
        return_immediately: parsed.return_immediately,
        max_size: parsed.max_size,
        bearer,
    });
    let _ = main.metrics.ssf_poll();
    // With keys_request=, the location fetches the transmitter's keys
    // (named at merge time, `conf/ssf.rs` `location_keys`).
    c.conf.ssf_poll_page = true;
    Ok(())
});
