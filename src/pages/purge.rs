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

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_http_send_header, ngx_http_send_special, ngx_int_t, ngx_str_t,
    ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_BAD_REQUEST, NGX_HTTP_LAST, NGX_HTTP_NOT_ALLOWED,
    NGX_HTTP_OK, NGX_HTTP_POST, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use crate::handler::raw::{now_ms, push_header};
use crate::module::Module;
use crate::oauth::cache::key::token_tag;
use crate::oauth::purge::token_of_form;
use crate::redis::call::{self, Failure};
use crate::redis::purge;
use crate::redis::resp::Reply;
use crate::shm::zone;

/// The location's content handler.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request; the Allow
    // value is static.
    unsafe {
        if (*r).method != NGX_HTTP_POST as usize {
            let allow = ngx_str_t {
                len: 4,
                data: b"POST".as_ptr().cast_mut(),
            };
            if push_header(&mut (*r).headers_out.headers, b"Allow", b"allow", allow).is_none() {
                return NGX_ERROR as ngx_int_t;
            }
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        (*r).set_request_body_in_single_buf(1);
        let rc = ngx_http_read_client_request_body(r, Some(body_read));
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        NGX_DONE as ngx_int_t
    }
}

/// The body is in: purge here, then in the Redis tier.
///
/// # Safety
/// Called by nginx with the live request whose body was read.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: r is live; its body buffers live in its pool.
    unsafe {
        let log = (*(*r).connection).log;
        let Some(body) = body(r) else {
            return ngx_http_finalize_request(r, NGX_HTTP_BAD_REQUEST as ngx_int_t);
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
                return ngx_http_finalize_request(r, NGX_HTTP_BAD_REQUEST as ngx_int_t);
            }
        };
        let (Some(main), Some(conf)) = (Module::main_conf(&*r), Module::location_conf(&*r)) else {
            return ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
        };
        let tag = token_tag(&token);
        let removed = zone::purge_tag_everywhere(main, &tag);
        ngx::ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "auth_oauth2_token: purge removed {removed} cached answers from this gateway's zones"
        );
        let (Some(uri), Some(redis)) = (conf.shared_cache_uri(), main.redis.as_ref()) else {
            return ngx_http_finalize_request(r, respond(r, NGX_HTTP_OK as usize));
        };
        let commands = purge::commands(
            &redis.keys,
            &redis.prefix,
            &redis.channel(),
            &token,
            &tag,
            now_ms(),
        );
        (*r).headers_out.status = 0;
        (*r).write_event_handler = Some(resume);
        if call::start(
            r,
            uri,
            &commands,
            purge::REPLIES,
            false,
            Some(tier_done),
            ptr::null_mut(),
        )
        .is_err()
        {
            ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
        }
    }
}

/// The Redis tier's answer: 200 when both commands succeeded.
///
/// # Safety
/// Called by `redis::call` with the live purge request.
unsafe fn tier_done(
    r: *mut ngx_http_request_t,
    _data: *mut c_void,
    result: Result<Vec<Reply>, Failure>,
) {
    // SAFETY: r is the live purge request.
    unsafe {
        let log = (*(*r).connection).log;
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
        (*r).headers_out.status = match failed {
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
    }
}

/// nginx resumes the purge request when the subrequest ends (and maybe on
/// other write events before: then there is no status yet).
///
/// # Safety
/// Called by nginx with the live purge request.
unsafe extern "C" fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: r is the live purge request.
    unsafe {
        let status = (*r).headers_out.status;
        if status == 0 {
            return;
        }
        ngx_http_finalize_request(r, respond(r, status));
    }
}

/// Answers with `status` and no body.
///
/// # Safety
/// `r` must be a live request in its content phase.
unsafe fn respond(r: *mut ngx_http_request_t, status: usize) -> ngx_int_t {
    // SAFETY: as required above.
    unsafe {
        if status != NGX_HTTP_OK as usize {
            return status as ngx_int_t;
        }
        (*r).headers_out.status = status;
        (*r).headers_out.content_length_n = 0;
        (*r).set_header_only(1);
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
            return rc;
        }
        ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t)
    }
}

/// The request body, if it is in memory (a purge body is a few bytes; one
/// that went to a file is refused).
///
/// # Safety
/// `r` must be a live request whose body was read.
unsafe fn body(r: *mut ngx_http_request_t) -> Option<Vec<u8>> {
    // SAFETY: the chain and its buffers live in r's pool.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut cl: *mut ngx_chain_t = (*rb).bufs;
        while !cl.is_null() {
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
        Some(out)
    }
}
