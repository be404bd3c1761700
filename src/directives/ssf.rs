//! The Shared Signals receiver's directives: `auth_oauth2_token_ssf_receiver`
//! (http level: the stream, the transmitter's keys read now or where they
//! are fetched, the revocation
//! list's zone, the bearer secret read now) and `auth_oauth2_token_ssf_push`
//! (a location: the push endpoint).

use super::call::{args_of, handler};
use crate::conf::ssf::{self, KeySource, KeysArg, SsfReceiver};
use crate::conf::{secret_from_file_contents, MainConf};
use crate::oauth::ssf::set::Stream;
use crate::shm::{counters, zone};

handler!(set_ssf_receiver: MainConf, |c| {
    if c.conf.ssf.is_some() {
        return Err("is duplicate".into());
    }
    let args = args_of(c);
    let parsed = ssf::parse(&args)?;
    if parsed.zone_name == counters::ZONE_NAME.as_bytes() {
        return Err("cannot use the zone name of the module's metrics".into());
    }
    // SAFETY: nginx sets its page size before it parses any configuration.
    if let Some(error) = unsafe { zone::zone_size_error(parsed.zone_size) } {
        return Err(format!("zone is {error}"));
    }
    let keys = match parsed.keys {
        KeysArg::File(file) => {
            let (name, keys) = c.key_set_file(file)?;
            KeySource::File { name, keys }
        }
        KeysArg::Request(uri) => KeySource::Fetched { uri },
    };
    let bearer_sha256 = match parsed.bearer_file {
        Some(file) => {
            let secret = secret_from_file_contents(&c.read_secret_file("bearer_file", file)?);
            if secret.len() < 16 {
                return Err("has a \"bearer_file\" of fewer than 16 bytes".into());
            }
            Some(openssl::sha::sha256(&secret))
        }
        None => None,
    };
    // SAFETY: cf is the configuration being parsed (see `Call`).
    let zone = unsafe { super::dpop::replay_zone(c.cf, &parsed.zone_name, parsed.zone_size) }
        .ok_or("cannot use this zone (see the message above)")?;
    let index_zone = match parsed.index_size {
        Some(size) => {
            // SAFETY: nginx sets its page size before it parses any configuration.
            if let Some(error) = unsafe { zone::zone_size_error(size) } {
                return Err(format!("index is {error}"));
            }
            let name = [&parsed.zone_name[..], b"_index"].concat();
            // SAFETY: cf is the configuration being parsed (see `Call`).
            let zone = unsafe { super::dpop::replay_zone(c.cf, &name, size) }
                .ok_or("cannot use the index's zone (see the message above)")?;
            Some(zone)
        }
        None => None,
    };
    let metrics = c.conf.metrics.ssf();
    // Tokens' marks are read from now on (and are part of cache keys).
    c.conf.claims.marks = true;
    c.conf.ssf = Some(SsfReceiver {
        zone,
        stream: Stream {
            issuer: parsed.issuer,
            audience: parsed.audience,
            max_age_s: parsed.max_age_ms / 1000,
        },
        keys,
        token_lifetime_ms: parsed.token_lifetime_ms,
        bearer_sha256,
        certificates: parsed.certificates,
        index_zone,
        metrics,
    });
    Ok(())
});

// `auth_oauth2_token_ssf_push;` (location): the location is the receiver's
// push endpoint (RFC 8935).
handler!(set_ssf_push, |c| {
    if c.conf.ssf_push_page {
        return Err("is duplicate".into());
    }
    if c.main_conf()?.ssf.is_none() {
        return Err("needs \"auth_oauth2_token_ssf_receiver\" in the http block before it".into());
    }
    c.conf.ssf_push_page = true;
    c.set_content_handler(Some(crate::pages::ssf_push::handler))
});
