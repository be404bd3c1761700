//! The transmitter's keys when they are fetched (`keys_request=` of
//! `auth_oauth2_token_ssf_receiver`): the JWT issuers' machinery
//! (`handler/jwks.rs`), with the push location's keys zone
//! (`auth_oauth2_token_jwt_keys_cache`) and refresh policy. The set is kept
//! once per gateway and outlives reloads; a SET whose `kid` the set lacks
//! fetches it again at most once per `unknown_kid_interval`. The fetch is a
//! subrequest of the push request (or of the poll's own request,
//! `pages/ssf_poll_keys.rs`), and a wait for another worker's fetch a
//! timer: both resume the request through its write handler, which checks
//! the SET again from the start.

use std::rc::Rc;

use ngx::ffi::ngx_http_event_handler_pt;

use crate::conf::ssf::{KeySource, SsfReceiver};
use crate::conf::LocationConf;
use crate::handler::ctx::{RequestCtx, Stage};
use crate::handler::jwks::{self, Keys};
use crate::nginx::req::Req;
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::jose::jws;

/// The keys of a fetched set for one SET.
pub enum Fetched {
    Ready(Rc<[Jwk]>),
    /// A fetch or a wait is under way: the request is resumed later.
    Again,
    /// No key to try (the SET names a `kid` the set, fetched lately, lacks,
    /// or it is no public-key JWS): the SET's check refuses it.
    None,
    /// No set fresh enough, and none can be fetched now.
    Unavailable,
    /// nginx could not start the fetch or a timer.
    Error,
}

/// The fetched keys for the SET in `body`; `None` when the receiver's keys
/// are a file's. `resume` is what nginx runs when the fetch (or the wait)
/// ends.
pub fn fetched(
    req: &mut Req<'_>,
    conf: &LocationConf,
    receiver: &SsfReceiver,
    body: &[u8],
    resume: ngx_http_event_handler_pt,
) -> Option<Fetched> {
    let KeySource::Fetched { .. } = receiver.keys else {
        return None;
    };
    let (Some(fetch), Some(cache)) = (&conf.ssf_keys, &conf.jwt.keys_cache) else {
        return Some(Fetched::Error);
    };
    // Only a public-key JWS may make the set be fetched; anything else is
    // refused by the SET's check without a key.
    let algorithms = Algorithms::asymmetric();
    let header = match jws::parse(body.trim_ascii()) {
        Ok(jws) if algorithms.allows(jws.header.alg) => jws.header,
        _ => return Some(Fetched::None),
    };
    // The waits keep their timer in the request's context (the push
    // location checks no token: none is there unless this makes it).
    if RequestCtx::of(req).is_none() && RequestCtx::attach(req, b"", Stage::Verdict).is_none() {
        return Some(Fetched::Error);
    }
    req.set_write_handler(resume);
    let metrics = (conf.jwt.metrics, None);
    Some(
        match jwks::keys(req, cache, fetch, algorithms, &header, metrics) {
            Keys::Ready(keys) => Fetched::Ready(keys),
            Keys::Again => Fetched::Again,
            Keys::Unknown => Fetched::None,
            Keys::Unavailable => Fetched::Unavailable,
            Keys::Error => Fetched::Error,
        },
    )
}
