//! Subrequests to the IdP (introspection and token exchange): a POST built
//! from scratch (no client header reaches the IdP), answered into memory,
//! and one callback per kind of question that turns nginx's view of the
//! answer into the question's answer.

use std::borrow::Cow;

use ngx::ffi::ngx_int_t;

use std::time::Instant;

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{CallStart, RequestCtx};
use crate::handler::question::{IdpCall, Question};
use crate::handler::redis_tier::{self, TierPlace};
use crate::metrics::CallResult;
use crate::nginx::req::{now_ms, Req};
use crate::nginx::subrequest;
use crate::oauth::cache::flow::{self, Refreshing};
use crate::oauth::client_auth;
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::{ClaimPaths, MAX_PHANTOM_RESPONSE_BYTES};
use crate::oauth::trace_context;
use crate::resilience::breaker::{Breaker, Health, Transition, REFUSAL_LOG_INTERVAL_S};
use crate::shm::zone::ShmZone;

/// Why an IdP call could not be made; either way the request ends with
/// NGX_ERROR (500), as the gateway, not the IdP, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallNotMade {
    /// nginx could not allocate the subrequest or its parts.
    NoMemory,
    /// The client assertion could not be signed (logged where it failed).
    NoAssertion,
}

/// Starts a POST of `body` to the internal location `endpoint`; `on_done`
/// gets the answer, and `data`, when the subrequest finishes.
fn start<T: 'static>(
    req: &mut Req<'_>,
    call: IdpCall,
    endpoint: &[u8],
    body: &[u8],
    authorization: &[u8],
    background: bool,
    (data, on_done): (T, fn(&mut Req<'_>, &mut T, ngx_int_t)),
) -> Result<(), CallNotMade> {
    let mut sr = subrequest::start(req, endpoint, background, data, on_done)
        .map_err(|()| CallNotMade::NoMemory)?;
    let no_memory = CallNotMade::NoMemory;
    subrequest::make_post(&mut sr, body).ok_or(no_memory)?;
    let form = b"application/x-www-form-urlencoded";
    sr.push_header(b"Content-Type", b"content-type", form)
        .ok_or(no_memory)?;
    sr.push_header(b"Accept", b"accept", call.accept())
        .ok_or(no_memory)?;
    // Empty with client_secret_post: the credentials are in the body.
    if !authorization.is_empty() {
        let value = sr.pool_copy(authorization).ok_or(no_memory)?;
        sr.push_header(b"Authorization", b"authorization", value)
            .ok_or(no_memory)?;
    }
    pass_trace_context(req, &mut sr).ok_or(no_memory)?;
    // A phantom answer may carry a 64 KiB JWT: its buffer is sized for the
    // largest answer we accept.
    if let IdpCall::PhantomIntrospection = call {
        subrequest::make_room_for_answer(&mut sr, MAX_PHANTOM_RESPONSE_BYTES).ok_or(no_memory)?;
    }
    Ok(())
}

/// The client's W3C trace context (`traceparent`, `tracestate`) goes to the
/// IdP too, so a trace does not stop at the gateway, but only as far as
/// `oauth/trace_context.rs` finds it valid: one `traceparent` of the
/// grammar, and a `tracestate` of the grammar and size only with it (the
/// lines a client split it into joined into one). Whatever is not valid is
/// left out; the request goes on. Nothing else of the client's reaches the
/// IdP. `None`: out of memory.
fn pass_trace_context<'r>(client: &Req<'r>, sr: &mut Req<'r>) -> Option<()> {
    // More lines than a valid list can have are enough to refuse it.
    const LINES: usize = trace_context::MAX_TRACESTATE_MEMBERS + 1;
    let (parents, parent_count) = client.header_values::<2>(b"traceparent");
    let (states, state_count) = client.header_values::<LINES>(b"tracestate");
    let forward = trace_context::to_forward(
        &parents[..parent_count.min(2)],
        &states[..state_count.min(LINES)],
    );
    let Some(forward) = forward else {
        return Some(());
    };
    sr.push_header(b"traceparent", b"traceparent", forward.traceparent)?;
    let state = match forward.tracestate {
        None => return Some(()),
        Some(Cow::Borrowed(value)) => value,
        Some(Cow::Owned(joined)) => sr.pool_copy(&joined)?,
    };
    sr.push_header(b"tracestate", b"tracestate", state)?;
    Some(())
}

/// The IdP's `Retry-After`, when it gave one in seconds.
fn retry_after(sr: &Req<'_>) -> Option<u64> {
    match sr.response_header_values::<1>(b"Retry-After") {
        ([value], 1) => std::str::from_utf8(value).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// What nginx saw of the IdP's answer: the finalize code, the status, the
/// content type and the in-memory body.
fn reply_of<'a>(sr: &'a Req<'_>, rc: ngx_int_t) -> IdpReply<'a> {
    IdpReply::new(rc, sr.status(), subrequest::answer(sr)).with_content_type(sr.content_type())
}

/// The answer to a question of kind `Q` is in: read it into the slot of
/// the request that asked, the subrequest's parent.
fn done<Q: Question>(sr: &mut Req<'_>, _: &mut (), rc: ngx_int_t) {
    let Some(asked) = sr.parent() else {
        return;
    };
    let Some(ctx) = RequestCtx::of(&asked) else {
        return;
    };
    // SAFETY: `ctx` is the asking request's context, in its pool, which
    // outlives the finished subrequest; that request is suspended
    // (NGX_AGAIN), so no other reference to its context is in use.
    let ctx = unsafe { &mut *ctx };
    let main = sr.main_conf();
    let no_paths = ClaimPaths::default();
    let paths = main.map_or(&no_paths, |m| &m.claims);
    let conf = asked.location_conf();
    let call = conf.map_or(IdpCall::Introspection, Q::call);
    let cached = conf.is_some_and(|conf| Q::endpoint(conf, ctx).cache.is_some());
    let reply = reply_of(sr, rc);
    count_call(sr, ctx, main, &reply, call.limit());
    Q::slot(ctx).answered_once(|| {
        let mut answer = Q::interpret(call, reply, paths);
        if cached {
            Q::first_seen(&mut answer, now_ms().div_euclid(1000));
        }
        answer
    });
    forget_jwt_room(sr, call);
}

/// A phantom answer's 128 KiB need not stay with the request until it
/// ends: the answer was copied out of the buffer (the JWT into the context).
fn forget_jwt_room(sr: &mut Req<'_>, call: IdpCall) {
    if let IdpCall::PhantomIntrospection = call {
        subrequest::forget_answer(sr);
    }
}

/// Counts the call that just ended, once, in the metrics, the variables and
/// the endpoint's circuit breaker.
fn count_call(
    sr: &Req<'_>,
    ctx: &mut RequestCtx,
    main: Option<&crate::conf::MainConf>,
    reply: &IdpReply<'_>,
    limit: usize,
) {
    let Some((call, micros)) = ctx.call_ended(reply.status) else {
        return;
    };
    let Some(main) = main else {
        return;
    };
    let result = CallResult::of(reply, limit);
    main.counters.idp_call(call.ids, result, micros);
    let Some((slot, conf)) = call.breaker else {
        return;
    };
    let Some(state) = main.counters.breaker(slot) else {
        return;
    };
    let answered = matches!(result, CallResult::Status(2..=4));
    let retry_after = retry_after(sr);
    let health = Health::of(answered, reply.status, retry_after);
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let log = sr.log();
    let uri = String::from_utf8_lossy(sr.uri());
    match state.report(&conf, now, health) {
        Transition::Opened { for_ms } => {
            let seconds = for_ms / 1000;
            let why = match (health, retry_after) {
                (Health::Busy(_), Some(asked)) if asked.saturating_mul(1000) > for_ms => {
                    format!("503 with Retry-After: {asked}, capped at open")
                }
                (Health::Busy(_), _) => "503 with Retry-After".to_string(),
                _ => format!("{} failed calls in a row", conf.failures),
            };
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_WARN,
                log,
                "auth_oauth2_token: circuit breaker of the IdP endpoint opened for {seconds} s ({why}): \"{uri}\""
            );
        }
        Transition::Closed => {
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_NOTICE,
                log,
                "auth_oauth2_token: circuit breaker of the IdP endpoint closed: \"{uri}\""
            );
        }
        Transition::None => {}
    }
}

/// A request the open breaker of `endpoint` refused: one error-log line
/// per endpoint every `REFUSAL_LOG_INTERVAL_S`, whichever worker refuses
/// (the request's own refusal is not logged again by its verdict).
pub fn log_refusal(req: &Req<'_>, breaker: &Breaker<'_>, endpoint: &Endpoint, retry_after_s: u64) {
    let now_s = u64::try_from(now_ms() / 1000).unwrap_or(0);
    if !breaker.may_log_refusal(now_s) {
        return;
    }
    let log = req.log();
    let uri = String::from_utf8_lossy(endpoint.uri());
    ngx::ngx_log_error!(
        ngx::ffi::NGX_LOG_ERR,
        log,
        "auth_oauth2_token: IdP endpoint \"{uri}\" not asked: its circuit breaker is open (retry in {retry_after_s} s); such refusals are logged once per {REFUSAL_LOG_INTERVAL_S} s"
    );
}

/// Appends this gateway's client credentials to an IdP request body: the
/// static form of post and mutual TLS, or a freshly signed assertion.
fn add_client_credentials(
    req: &Req<'_>,
    conf: &LocationConf,
    body: &mut Vec<u8>,
) -> Result<(), CallNotMade> {
    body.extend_from_slice(&conf.client_credentials_form);
    if let Some(key) = &conf.assertion_key {
        // A fresh assertion for every call: its jti is never sent twice.
        let client_id = conf.client_id.as_deref().unwrap_or_default();
        let audience = conf.assertion_audience.as_deref().unwrap_or_default();
        let now = ngx::ffi::ngx_timeofday().sec;
        let signed = client_auth::new_jti().and_then(|jti| {
            client_auth::assertion(
                key,
                &String::from_utf8_lossy(client_id),
                audience,
                &jti,
                now,
            )
        });
        match signed {
            Ok(assertion) => body.extend(client_auth::assertion_form(client_id, &assertion)),
            Err(e) => {
                ngx::ngx_log_error!(ngx::ffi::NGX_LOG_ERR, req.log(), "auth_oauth2_token: {e}");
                return Err(CallNotMade::NoAssertion);
            }
        }
    }
    Ok(())
}

/// A cache entry refreshed in the background (`post_refresh`): what its
/// answer is stored as, and how the answer is read.
pub struct Refresh {
    pub refreshing: Refreshing<ShmZone>,
    pub call: IdpCall,
    /// The Redis tier the answer updates too, if the location has one.
    pub tier: Option<TierPlace>,
}

/// Asks the IdP again for an entry that is late in its life, after the
/// client's request (a background subrequest of the main request `req`);
/// the answer replaces the entry, a failure leaves it as it is.
pub fn post_refresh<Q: Question>(
    req: &mut Req<'_>,
    conf: &LocationConf,
    endpoint: &Endpoint,
    mut body: Vec<u8>,
    refresh: Refresh,
) -> Result<(), CallNotMade> {
    add_client_credentials(req, conf, &mut body)?;
    let call = refresh.call;
    let authorization = &conf.client_authorization;
    let uri = endpoint.uri();
    let done = (
        refresh,
        refresh_done::<Q> as fn(&mut Req<'_>, &mut Refresh, ngx_int_t),
    );
    start(req, call, uri, &body, authorization, true, done)
}

/// Stores a background refresh's answer when it is one to keep.
fn refresh_done<Q: Question>(sr: &mut Req<'_>, refresh: &mut Refresh, rc: ngx_int_t) {
    let now = now_ms();
    let no_paths = ClaimPaths::default();
    let paths = sr.main_conf().map_or(&no_paths, |m| &m.claims);
    let answer = Q::interpret(refresh.call, reply_of(sr, rc), paths);
    let update = flow::refreshed::<Q, _>(&refresh.refreshing, answer, now);
    if let (Some(place), Some(mut main)) = (&refresh.tier, sr.parent()) {
        redis_tier::refreshed(&mut main, place, update, now);
    }
    forget_jwt_room(sr, refresh.call);
}

/// Sends `body` to the IdP's internal location as this gateway's client:
/// credentials in the Authorization header (basic) or the body (post). The
/// answer goes to the request's context.
pub fn post_question<Q: Question>(
    req: &mut Req<'_>,
    conf: &LocationConf,
    endpoint: &Endpoint,
    mut body: Vec<u8>,
) -> Result<(), CallNotMade> {
    let ctx = RequestCtx::of(req).ok_or(CallNotMade::NoMemory)?;
    add_client_credentials(req, conf, &mut body)?;
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
    // lasts for this call, which reaches no nginx code.
    unsafe {
        (*ctx).call_started(CallStart {
            ids: endpoint.metrics,
            started: Instant::now(),
            breaker: endpoint.breaker.zip(conf.breaker),
        })
    };
    let (call, uri, authorization) = (Q::call(conf), endpoint.uri(), &conf.client_authorization);
    start(req, call, uri, &body, authorization, false, ((), done::<Q>))
}
