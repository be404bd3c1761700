//! `auth_oauth2_token_ssf_push`: the Shared Signals receiver's push
//! endpoint (RFC 8935). The transmitter POSTs one SET
//! (`application/secevent+jwt`); the module checks the transmitter's bearer
//! secret when one is configured, verifies the SET (`oauth/ssf/set.rs`),
//! puts its revocations in the list (`shm/zone.rs` `revoke`), records its
//! `jti` (the list's zone is also the replay store) and answers `202`.
//! Every refusal is a `400` with RFC 8935 §2.3's JSON object (`err`,
//! `description`) and changes nothing; a list that cannot be written is a
//! `503` (the transmitter retries).
//!
//! POST        -> read the body (anything else: 405)
//! body read   -> checks (a fetched key set: maybe a subrequest or a wait
//!                first, `ssf_keys.rs`, then the checks again), this
//!                gateway's list; no Redis tier: replay store -> 202 / 400 / 503
//! Redis tier  -> one `ZADD` and `PUBLISH` per revocation on the channel,
//!                then the fleet's replay store's `SET NX PX` of the `jti`,
//!                in one subrequest (`redis/ssf_tell.rs`, shared with the
//!                poll);
//!                its end records the `jti` and sets the status (202, 400
//!                for a replay here or at another gateway, 503 when the
//!                tier failed: the other gateways were not told)

use ngx::ffi::{
    ngx_http_finalize_request, ngx_http_request_t, ngx_int_t, NGX_ERROR, NGX_HTTP_ACCEPTED,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_ERR, NGX_LOG_INFO,
};

use std::rc::Rc;

use super::ssf_apply;
use crate::conf::ssf::SsfReceiver;
use crate::conf::LocationConf;
use crate::metrics::ssf::SsfIds;
use crate::nginx::req::{now_ms, Req};
use crate::oauth::bearer::{self, BearerToken};
use crate::oauth::ssf::set::{self, Accepted, Code, SetError};
use crate::pages::purge::body;
use crate::pages::ssf_keys::{self, Fetched};
use crate::redis::call::{self, Failure};
use crate::redis::replay::FleetReplay;
use crate::redis::resp::Reply;
use crate::redis::ssf_tell::{self, Replies};
use crate::shm::table::Remembered;

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request
    // (ngx_http_core_content_phase).
    unsafe { Req::with(r, |req| super::read_post_body(req, Some(body_read))) }
}

/// The body is in; also the write handler that resumes the request when
/// the transmitter's keys were fetched (`pages/ssf_keys.rs`), which checks
/// the SET again.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the body handler with the live request whose
    // body it read (ngx_http_read_client_request_body), and which it
    // keeps until the request is finalized; it calls a write handler with
    // the live request (ngx_http_request_handler, ngx_http_run_posted_requests).
    let rc = unsafe { Req::with(r, receive) };
    if let Some(rc) = rc {
        // SAFETY: nginx keeps the request until it is finalized, here;
        // it is not used after this.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// The delivery's answer, or `None` while the Redis tier is told.
fn receive(req: &mut Req<'_>) -> Option<ngx_int_t> {
    let log = req.log();
    let (Some(main), Some(conf)) = (req.main_conf(), req.location_conf()) else {
        return Some(NGX_ERROR as ngx_int_t);
    };
    let Some(receiver) = main.ssf.as_ref() else {
        return Some(NGX_ERROR as ngx_int_t);
    };
    let accepted = match check(req, conf, receiver) {
        Ok(accepted) => accepted,
        Err(Stop::Refused(error)) => return Some(refuse(req, &error)),
        Err(Stop::Again) => return None,
        Err(Stop::Status(status)) => return Some(respond(req, status)),
    };
    let now = now_ms();
    let Some((pushed, dropped)) = ssf_apply::revoke_all(main, receiver, &accepted, now, log) else {
        return Some(respond(req, NGX_HTTP_SERVICE_UNAVAILABLE as usize));
    };
    let (Some(uri), Some(redis)) = (conf.shared_cache_uri(), main.redis.as_ref()) else {
        let status = record(req, receiver, &accepted, now, dropped);
        return Some(respond(req, status));
    };
    // The other gateways' lists, through the Redis tier's channel, then the
    // fleet's replay store (`redis/ssf_tell.rs`). The `jti` is recorded
    // once they were told, so that a transmitter that retries after a 503
    // is not taken for a replay.
    let mut commands = Vec::new();
    let replies = ssf_apply::tell_fleet(redis, receiver, &accepted, &pushed, now, &mut commands);
    req.set_status(0);
    req.set_write_handler(Some(resume));
    let told = move |req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>| {
        let status = match told_everyone(req, result, replies) {
            FleetReplay::Failed(_) => NGX_HTTP_SERVICE_UNAVAILABLE as usize,
            FleetReplay::Replayed => NGX_HTTP_BAD_REQUEST as usize,
            FleetReplay::New => match req.main_conf().and_then(|main| main.ssf.as_ref()) {
                Some(receiver) => record(req, receiver, &accepted, now, dropped),
                None => NGX_ERROR as usize,
            },
        };
        req.set_status(status);
    };
    let started = call::start(req, uri, &commands, replies.total(), false, told);
    started.err().map(|()| NGX_ERROR as ngx_int_t)
}

/// What the Redis tier said (`ssf_tell::told`): `New`, every gateway
/// was told and the fleet had not seen the SET; `Replayed`, every gateway
/// was told (again) and another gateway (or this one) had accepted the SET
/// before; or `Failed`, logged here.
fn told_everyone(
    req: &Req<'_>,
    result: Result<Vec<Reply>, Failure>,
    replies: Replies,
) -> FleetReplay {
    let log = req.log();
    // A failure of the call was logged by it; refusals are noted here.
    let told = match result {
        Err(failure) => FleetReplay::Failed(failure),
        Ok(got) => {
            let told = ssf_tell::told(&got, replies);
            if let FleetReplay::Failed(failure) = &told {
                call::note_failure(log, failure);
            }
            told
        }
    };
    if matches!(told, FleetReplay::Failed(_)) {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "auth_oauth2_token: SET applied here but the Redis tier was not told: answering 503"
        );
    }
    told
}

/// Records the SET's `jti` (`ssf_apply::record`); the status to answer
/// with.
fn record(
    req: &Req<'_>,
    receiver: &SsfReceiver,
    accepted: &Accepted,
    now: i64,
    dropped: usize,
) -> usize {
    let Some(main) = req.main_conf() else {
        return NGX_ERROR as usize;
    };
    match ssf_apply::record(receiver, accepted, now, req.log(), &main.counters, dropped) {
        Remembered::Seen => NGX_HTTP_BAD_REQUEST as usize,
        Remembered::New | Remembered::Full => NGX_HTTP_ACCEPTED as usize,
    }
}

/// Counts one in the receiver's series `which` picks.
fn count(req: &Req<'_>, which: impl FnOnce(SsfIds) -> usize) {
    if let Some(main) = req.main_conf() {
        if let Some(receiver) = &main.ssf {
            main.counters.add(which(receiver.metrics), 1);
        }
    }
}

/// A refusal: RFC 8935's `400` and its error object.
fn refuse(req: &mut Req<'_>, error: &SetError) -> ngx_int_t {
    count(req, |ids| ids.refusal(error.code));
    ngx::ngx_log_error!(
        NGX_LOG_INFO,
        req.log(),
        "auth_oauth2_token: SET refused: {error}"
    );
    let body = error.body();
    super::send_status(req, 400, "application/json", body.as_bytes())
}

/// Answers with what `record` (or the Redis tier's failure) decided: `202`
/// without a body, `400` for a replay, or nginx's page for the rest.
fn respond(req: &mut Req<'_>, status: usize) -> ngx_int_t {
    match status as u32 {
        NGX_HTTP_ACCEPTED => {
            count(req, |ids| ids.delivery("accepted"));
            super::send_status(req, 202, "text/plain", b"")
        }
        NGX_HTTP_BAD_REQUEST => refuse(req, &set::REPLAYED),
        _ => {
            count(req, |ids| ids.delivery("unavailable"));
            status as ngx_int_t
        }
    }
}

/// nginx resumes the request when the Redis call ends (and maybe on other
/// write events before: then there is no status yet).
unsafe extern "C" fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls a request's write_event_handler with the live
    // request (ngx_http_request_handler, ngx_http_run_posted_requests).
    let rc = unsafe {
        Req::with(r, |req| match req.status() {
            0 => None,
            status => Some(respond(req, status)),
        })
    };
    if let Some(rc) = rc {
        // SAFETY: nginx keeps the request until it is finalized, here;
        // it is not used after this.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// `client_certificate=` and no certificate on the connection.
const NO_CERTIFICATE: SetError = SetError::new(
    Code::AuthenticationFailed,
    "the transmitter presented no client certificate",
);
/// `client_certificate=` and another certificate.
const WRONG_CERTIFICATE: SetError = SetError::new(
    Code::AccessDenied,
    "the transmitter's client certificate is not one accepted here",
);

/// Why the checks stopped.
enum Stop {
    Refused(SetError),
    /// The transmitter's keys are being fetched: `body_read` runs again.
    Again,
    /// No keys to be had (503), or nginx failed (500).
    Status(usize),
}

impl From<SetError> for Stop {
    fn from(error: SetError) -> Stop {
        Stop::Refused(error)
    }
}

/// The checks before anything changes: the transmitter's secret, the
/// media type, the body, the SET (with its keys, maybe fetched first).
fn check(req: &mut Req<'_>, conf: &LocationConf, receiver: &SsfReceiver) -> Result<Accepted, Stop> {
    if let Some(want) = &receiver.bearer_sha256 {
        let (values, count) = req.header_values::<2>(b"authorization");
        let secret = match bearer::from_authorization(&values[..count.min(2)]) {
            BearerToken::Present(secret) => secret,
            _ => return Err(set::NO_CREDENTIALS.into()),
        };
        let got = openssl::sha::sha256(secret);
        if !openssl::memcmp::eq(&got, want) {
            return Err(set::WRONG_CREDENTIALS.into());
        }
    }
    if !receiver.certificates.is_empty() {
        // The client certificate of this TLS connection (the server asks
        // for one with `ssl_verify_client`): its thumbprint must be listed.
        let got = req.client_certificate_sha256().ok_or(NO_CERTIFICATE)?;
        let listed = receiver
            .certificates
            .iter()
            .fold(false, |found, want| found | openssl::memcmp::eq(&got, want));
        if !listed {
            return Err(WRONG_CERTIFICATE.into());
        }
    }
    let (types, count) = req.header_values::<1>(b"content-type");
    if count != 1 || !set::media_type_ok(types[0]) {
        return Err(set::WRONG_MEDIA_TYPE.into());
    }
    let body = body(req).ok_or(set::TOO_LARGE)?;
    let fetched = match ssf_keys::fetched(req, conf, receiver, &body, Some(body_read)) {
        None => None,
        Some(Fetched::Ready(keys)) => Some(keys),
        Some(Fetched::None) => Some(Rc::from([])),
        Some(Fetched::Again) => return Err(Stop::Again),
        Some(Fetched::Unavailable) => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                req.log(),
                "auth_oauth2_token: SET not checked: the transmitter's JWK Set cannot be had"
            );
            return Err(Stop::Status(NGX_HTTP_SERVICE_UNAVAILABLE as usize));
        }
        Some(Fetched::Error) => return Err(Stop::Status(NGX_ERROR as usize)),
    };
    let keys = fetched.as_deref().unwrap_or(receiver.keys.keys());
    let now_s = now_ms().div_euclid(1000);
    Ok(set::verify(&body, keys, &receiver.stream, now_s)?)
}
