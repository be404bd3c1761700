//! The token check (ACCESS phase, or PREACCESS with auth_oauth2_token_phase):
//! one small state machine around the IdP subrequests.
//!
//! first call  -> the token from the configured sources (none or malformed:
//!                refuse), carriers withheld from the upstream, a context
//!                whose stage is Introspect (or Exchange, exchange-only)
//! Jwt         -> a JWT access token checked here (`jwt`, no IdP call):
//!                refused: 401; verified: Verdict (or Introspect, when the
//!                location introspects too, as an opaque token does)
//! Introspect  -> cache, another request's IdP call, or our own (`flow`):
//!                NGX_AGAIN until the answer is in, then Verdict
//! Verdict     -> inactive: 401; IdP failure: 502/503/504; the binding
//!                (DPoP proof, certificate): 401; a proof new to this
//!                gateway with the Redis tier: FleetReplay; else Requirements
//! FleetReplay -> the proof recorded for the fleet (`SET NX`): NGX_AGAIN
//!                until Redis answers; used before: 401; else Requirements
//! Requirements-> scopes, require rules, claims: 403/401/status; phantom:
//!                the JWT goes upstream; exchange configured: Exchange;
//!                else NGX_OK
//! Exchange    -> the same flow for the token endpoint; the issued token
//!                goes upstream; invalid_grant: 401; invalid_target/scope:
//!                403; else 502/504
//!
//! nginx calls the handler again when a subrequest finishes or a waiting
//! request is woken; every call runs the stage the context names.

pub mod credentials;
pub mod ctx;
pub mod dpop;
pub mod exchange;
pub mod flow;
pub mod idp_call;
pub mod inflight;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod question;
pub mod redis_tier;
pub mod refusal;
pub mod upstream;
pub mod variables;
pub mod verdict;

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_HTTP_OPTIONS, NGX_OK,
};

use crate::conf::{LocationConf, Phase};
use crate::handler::ctx::{Outcome, RequestCtx, Stage};
use crate::metrics::{self, Catalogue};
use crate::nginx::req::Req;
use crate::nginx::subrequest;
use crate::oauth::bearer::{BearerToken, Malformed};
use crate::oauth::carriers::TokenSource;
use crate::oauth::challenge::BearerError;

/// The ACCESS-phase entry point (the default phase).
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a phase handler with a live request
    // (ngx_http_core_run_phases), which it frees only after the call.
    unsafe { Req::with(r, |req| run_in(Some(Phase::Access), req)) }
}

/// The PREACCESS-phase entry point, for `auth_oauth2_token_phase preaccess`,
/// and for subrequests: nginx skips the ACCESS phase for them, so a
/// protected location reached by `auth_request`, SSI or `mirror` is checked
/// here, whatever phase it names (the module's own IdP calls are not).
/// PREACCESS's checker treats NGX_OK as "skip the rest of the phase", so a
/// pass is NGX_DECLINED here, letting limit_req and friends run after us.
pub unsafe extern "C" fn preaccess_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a phase handler with a live request
    // (ngx_http_core_run_phases), which it frees only after the call.
    unsafe { Req::with(r, preaccess) }
}

fn preaccess(req: &mut Req<'_>) -> ngx_int_t {
    let phase = match req.is_main() {
        true => Some(Phase::Preaccess),
        false if subrequest::is_ours(req) => return NGX_DECLINED as ngx_int_t,
        false => None,
    };
    match run_in(phase, req) {
        rc if rc == NGX_OK as ngx_int_t => NGX_DECLINED as ngx_int_t,
        rc => rc,
    }
}

/// Runs the check when the location has one for `phase` (any phase: `None`).
fn run_in(phase: Option<Phase>, req: &mut Req<'_>) -> ngx_int_t {
    match req.location_conf() {
        // A location that serves RFC 9728 metadata is public: clients read
        // it before they have a token, whatever the blocks around it check.
        Some(conf)
            if phase.is_none_or(|phase| conf.phase() == phase)
                && conf.resource_metadata.is_none()
                && (conf.introspection_enabled()
                    || conf.exchange_enabled()
                    || conf.jwt_enabled()) =>
        {
            check(phase, req, conf)
        }
        _ => NGX_DECLINED as ngx_int_t,
    }
}

/// The check of a location that has one for `phase`. Out of line: every
/// request passes through both phase handlers, and one the location does
/// not check costs only the look at its conf, not this function's frame.
#[inline(never)]
fn check(phase: Option<Phase>, req: &mut Req<'_>, conf: &'static LocationConf) -> ngx_int_t {
    let outcome = match RequestCtx::of(req) {
        Some(ctx) => run_stages(req, conf, ctx),
        None => match begin(req, conf) {
            Ok(ctx) => run_stages(req, conf, ctx),
            Err(outcome) => outcome,
        },
    };
    let counted = match phase {
        Some(Phase::Access) => metrics::Phase::Access,
        _ => metrics::Phase::Preaccess,
    };
    if let (Some(outcome), Some(main)) = (outcome.counted_as(), req.main_conf()) {
        main.counters.add(Catalogue::request(counted, outcome), 1);
    }
    match outcome {
        Outcome::Next(_) | Outcome::Error => NGX_ERROR as ngx_int_t,
        Outcome::Again => NGX_AGAIN as ngx_int_t,
        Outcome::Pass => NGX_OK as ngx_int_t,
        Outcome::Unchecked => NGX_DECLINED as ngx_int_t,
        Outcome::Refuse(error) => refusal::refuse(req, conf, error),
        Outcome::Deny(status) => refusal::deny(req, status),
        Outcome::Fail {
            timeout,
            status,
            retry_after,
        } => refusal::fail(req, conf, timeout, status, retry_after),
    }
}

/// Runs the stage the context names, and the next, until one decides.
/// `ctx` is the request's context (`RequestCtx::of`).
fn run_stages<'r, 'c: 'r>(
    req: &mut Req<'r>,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'c> {
    loop {
        // SAFETY: `ctx` is the request's context, in its pool (made by
        // `RequestCtx::attach`); the stage is copied out, no reference kept.
        let stage = unsafe { (*ctx).stage() };
        let outcome = match stage {
            Stage::Jwt => jwt::run(req, conf, ctx),
            Stage::Introspect => introspect::run(req, conf, ctx),
            Stage::Verdict => verdict::run(req, conf, ctx),
            Stage::FleetReplay => dpop::fleet(req, conf, ctx),
            Stage::Requirements => verdict::requirements(req, conf, ctx),
            Stage::Exchange => exchange::run(req, conf, ctx),
        };
        match outcome {
            // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
            // lasts for this call, which reaches no nginx code (no variable
            // getter reads the context meanwhile).
            Outcome::Next(stage) => unsafe { (*ctx).enter(stage) },
            decided => return decided,
        }
    }
}

/// The first call for a request: finds the token, withholds the carriers,
/// and makes the context. `Err` is the answer when there is nothing to check.
///
/// A subrequest shares its parent's header elements and pool: it gets a
/// header list of its own before anything is withheld or replaced, and
/// neither remembers nor looks for a token remembered across redirects.
fn begin<'c>(req: &mut Req<'_>, conf: &'c LocationConf) -> Result<*mut RequestCtx, Outcome<'c>> {
    let sources = conf
        .token_source
        .as_deref()
        .unwrap_or(credentials::DEFAULT_SOURCES);
    let subrequest = !req.is_main();
    // After an internal redirect the check runs again, with the token the
    // first pass found: the request may no longer carry it.
    let remembered = match subrequest {
        true => None,
        false => credentials::saved(req),
    };
    let (found, source, saved) = match remembered {
        Some(token) => (BearerToken::Present(token), None, true),
        None => {
            let (found, source) = credentials::find(req, sources);
            (found, source, false)
        }
    };
    let is_options = req.method() == NGX_HTTP_OPTIONS as usize;
    let token = match found {
        BearerToken::Missing if conf.passes_preflight() && is_options => {
            return Err(Outcome::Unchecked);
        }
        BearerToken::Missing => return Err(Outcome::Refuse(BearerError::NoToken)),
        BearerToken::Malformed(why) => {
            let error = match why {
                Malformed::DuplicateHeader => BearerError::InvalidRequest(why.description()),
                _ => BearerError::InvalidTokenBecause(why.description()),
            };
            return Err(Outcome::Refuse(error));
        }
        BearerToken::Present(token) => token,
    };
    let withholds = sources.iter().any(|s| *s != TokenSource::Bearer);
    let changes_request = withholds || conf.phantom_enabled() || conf.exchange_enabled();
    if subrequest && changes_request && req.detach_headers().is_none() {
        return Err(Outcome::Error);
    }
    if withholds {
        // After a redirect the carriers this location names go too; the
        // Authorization header stays as the first pass left it.
        let used = source.unwrap_or(&TokenSource::Bearer);
        // `token` points at memory withhold() leaves alone.
        if upstream::withhold(req, sources, used).is_none() {
            return Err(Outcome::Error);
        }
    }
    // The DPoP headers never go upstream; the proof check reads them from
    // the request's record, across internal redirects too.
    if dpop::withhold(req, token).is_none() {
        return Err(Outcome::Error);
    }
    // Remember the token when this pass changes what the request carries.
    if !saved && !subrequest && changes_request && credentials::save(req, token).is_none() {
        return Err(Outcome::Error);
    }
    let stage = match (conf.jwt_enabled(), conf.introspection_enabled()) {
        (true, _) => Stage::Jwt,
        (false, true) => Stage::Introspect,
        (false, false) => Stage::Exchange,
    };
    // The ctx lives in the request's pool, as the subrequest callback and
    // the wake event need.
    RequestCtx::attach(req, token, stage).ok_or(Outcome::Error)
}
