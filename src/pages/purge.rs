//! `auth_oauth2_token_purge`: a location that removes every cached answer
//! for one token (RFC 7009's request shape: `POST`, `token=...`), in every
//! policy and both kinds, from this gateway's zones and from the Redis
//! tier, and tells the other gateways (`PUBLISH`), whose subscribers
//! (`redis/subscriber.rs`) drop it from their zones.
//!
//! POST        -> read the body (anything else: 405)
//! body read   -> token (none or malformed: 400); this gateway's zones
//!                purged; no Redis tier: 200
//! Redis tier  -> `DEL` the token's hashes and `PUBLISH` the purge in one
//!                subrequest (`redis/purge.rs`); its end sets the status
//!                (200, or 503 when the tier failed: the other gateways were
//!                not told) and resumes the request

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_http_finalize_request, ngx_http_request_t, ngx_http_send_header,
    ngx_http_send_special, ngx_int_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_BAD_REQUEST, NGX_HTTP_LAST,
    NGX_HTTP_OK, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};

use crate::nginx::req::{now_ms, Req};
use crate::oauth::cache::key::token_tag;
use crate::oauth::purge::token_of_form;
use crate::redis::call::{self, Failure};
use crate::redis::purge;
use crate::redis::resp::Reply;
use crate::shm::zone;

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request
    // (ngx_http_core_content_phase).
    unsafe { Req::with(r, |req| super::read_post_body(req, Some(body_read))) }
}

/// The body is in: purge here, then in the Redis tier.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the body handler with the live request whose
    // body it read (ngx_http_read_client_request_body), and which it
    // keeps until the request is finalized.
    let rc = unsafe { Req::with(r, purge) };
    if let Some(rc) = rc {
        // SAFETY: nginx keeps the request until it is finalized, here;
        // it is not used after this.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// Purges the token of the request's body: the code to finalize the
/// request with, or `None` while the Redis tier is asked.
fn purge(req: &mut Req<'_>) -> Option<ngx_int_t> {
    let log = req.log();
    let Some(body) = body(req) else {
        return Some(NGX_HTTP_BAD_REQUEST as ngx_int_t);
    };
    let token = match token_of_form(&body) {
        Ok(token) => token,
        Err(why) => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: purge refused: {}",
                why.description()
            );
            return Some(NGX_HTTP_BAD_REQUEST as ngx_int_t);
        }
    };
    let (Some(main), Some(conf)) = (req.main_conf(), req.location_conf()) else {
        return Some(NGX_ERROR as ngx_int_t);
    };
    let tag = token_tag(&token);
    let removed = zone::purge_tag_everywhere(main, &tag);
    ngx::ngx_log_error!(
        NGX_LOG_INFO,
        log,
        "auth_oauth2_token: purge removed {removed} cached answers from this gateway's zones"
    );
    let (Some(uri), Some(redis)) = (conf.shared_cache_uri(), main.redis.as_ref()) else {
        return Some(respond(req, NGX_HTTP_OK as usize));
    };
    let commands = purge::commands(
        &redis.keys,
        &redis.prefix,
        &redis.channel(),
        &token,
        &tag,
        now_ms(),
    );
    req.set_status(0);
    req.set_write_handler(Some(resume));
    let started = call::start(req, uri, &commands, purge::REPLIES, false, tier_done);
    started.err().map(|()| NGX_ERROR as ngx_int_t)
}

/// The Redis tier's answer: 200 when both commands succeeded.
fn tier_done(req: &mut Req<'_>, result: Result<Vec<Reply>, Failure>) {
    let log = req.log();
    // A failure of the call was logged by it; refusals are noted here.
    // (The 503's log line keeps its historical words, "shared cache".)
    let failed = match result {
        Err(_) => true,
        Ok(replies) => replies.iter().any(|reply| match reply {
            Reply::Integer(_) => false,
            other => {
                let failure = call::error_reply(other).unwrap_or(Failure::Protocol);
                call::note_failure(log, &failure);
                true
            }
        }),
    };
    let status = match failed {
        false => NGX_HTTP_OK as usize,
        true => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "auth_oauth2_token: purge did not reach the shared cache: answering 503"
            );
            NGX_HTTP_SERVICE_UNAVAILABLE as usize
        }
    };
    req.set_status(status);
}

/// nginx resumes the purge request when the subrequest ends (and maybe on
/// other write events before: then there is no status yet).
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

/// Answers with `status` and no body (the request is in its content phase).
fn respond(req: &mut Req<'_>, status: usize) -> ngx_int_t {
    if status != NGX_HTTP_OK as usize {
        return status as ngx_int_t;
    }
    req.set_response(status, 0, None);
    req.set_header_only();
    // SAFETY: the request is live (`Req`), its response not yet sent.
    let rc = unsafe { ngx_http_send_header(req.as_ptr()) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: the request is live (`Req`), its header sent just above.
    unsafe { ngx_http_send_special(req.as_ptr(), NGX_HTTP_LAST as ngx_uint_t) }
}

/// The request body, if it is in memory (a purge body is a few bytes; one
/// that went to a file is refused).
pub(super) fn body(req: &Req<'_>) -> Option<Vec<u8>> {
    let rb = req.request_body();
    if rb.is_null() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    // SAFETY: nginx read the body: `rb` is its request body, in the pool.
    let mut cl: *mut ngx_chain_t = unsafe { (*rb).bufs };
    while !cl.is_null() {
        // SAFETY: `cl` is a link of that chain, its buffer nginx's, whose
        // `pos..last` holds body bytes when it is in memory.
        unsafe {
            let b: *mut ngx_buf_t = (*cl).buf;
            if (*b).in_file() != 0 && (*b).temporary() == 0 && (*b).memory() == 0 {
                return None;
            }
            let len = (*b).last.offset_from((*b).pos);
            if len > 0 {
                out.extend_from_slice(core::slice::from_raw_parts((*b).pos, len as usize));
            }
            cl = (*cl).next;
        }
    }
    Some(out)
}
