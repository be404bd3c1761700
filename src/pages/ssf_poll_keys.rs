//! The transmitter's keys for the SETs a poll brought, when the receiver's
//! keys are fetched (`keys_request=`): `pages/ssf_keys.rs`, as the push
//! page uses it (the JWT issuers' machinery, the poll location's keys zone
//! and refresh policy), on a request with no client made for it
//! (`nginx/detached.rs`) in the poll location's server block. A fetch (a
//! subrequest of that request) or a wait for another worker's fetch (a
//! timer) resumes the poll through the request's write handler.

use std::rc::Rc;

use ngx::ffi::{ngx_connection_t, ngx_http_event_handler_pt, ngx_log_t};

use crate::conf::ssf::{KeySource, SsfReceiver};
use crate::conf::LocationConf;
use crate::nginx::detached::Detached;
use crate::nginx::req::Req;
use crate::oauth::jose::jwk::Jwk;
use crate::pages::ssf_keys::{self, Fetched};

/// The keys to check one SET with.
pub enum PollKeys {
    /// The receiver's `keys=` file.
    File,
    /// Of the fetched set (maybe none: the SET's check refuses it).
    Ready(Rc<[Jwk]>),
    /// A fetch or a wait is under way on `flight`'s request, whose
    /// connection is this: run its posted requests; the write handler given
    /// runs when it ends.
    Again(*mut ngx_connection_t),
    /// No set to be had now (or nginx failed): the SET is neither
    /// acknowledged nor refused.
    Unavailable,
}

/// The keys for the SET `set`, the poll location's configuration being
/// `conf`; the request is `flight`'s, made now when there is none (in the
/// server block `server`, logging to `log`).
pub fn keys_for(
    flight: &mut Option<Detached>,
    (server, log): (*mut core::ffi::c_void, *mut ngx_log_t),
    conf: &LocationConf,
    receiver: &SsfReceiver,
    set: &[u8],
    resume: ngx_http_event_handler_pt,
) -> PollKeys {
    let KeySource::Fetched { .. } = receiver.keys else {
        return PollKeys::File;
    };
    if flight.is_none() {
        // SAFETY: the server context was kept by the poll's directive from
        // the running cycle's configuration; the log is the cycle's.
        *flight = unsafe { Detached::new(server.cast(), log) };
    }
    let Some(request) = flight.as_ref().map(Detached::request) else {
        return PollKeys::Unavailable;
    };
    // SAFETY: the request is `flight`'s, alive until it is finished.
    let fetched = unsafe {
        Req::with(request, |req| {
            ssf_keys::fetched(req, conf, receiver, set, resume)
        })
    };
    match fetched {
        None => PollKeys::File,
        Some(Fetched::Ready(keys)) => PollKeys::Ready(keys),
        Some(Fetched::None) => PollKeys::Ready(Rc::from([])),
        Some(Fetched::Again) => match flight.as_ref() {
            Some(flight) => PollKeys::Again(flight.connection()),
            None => PollKeys::Unavailable,
        },
        Some(Fetched::Unavailable | Fetched::Error) => PollKeys::Unavailable,
    }
}
