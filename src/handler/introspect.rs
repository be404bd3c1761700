//! The introspection stage: the IdP's verdict on the client's token (RFC
//! 7662, or a phantom token's JWT), through the cache flow.

use ngx::ffi::ngx_http_request_t;
use ngx::http::HttpModuleMainConf;

use crate::conf::{CacheConf, LocationConf};
use crate::handler::ctx::{Outcome, RequestCtx, Stage};
use crate::handler::flow::{self, Question, Step};
use crate::handler::idp_call::{self, IdpCall};
use crate::module::Module;
use crate::oauth::cache::key::IntrospectionKey;
use crate::oauth::cache::{CacheKey, CachedIntrospection};
use crate::oauth::form;
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};

pub struct Introspection;

impl Question for Introspection {
    type Answer = Result<IntrospectionResult, IdpFailure>;
    type Inputs<'r> = ();

    fn answer(ctx: &mut RequestCtx) -> &mut Option<Self::Answer> {
        &mut ctx.introspection
    }

    fn cache(conf: &LocationConf) -> Option<&CacheConf> {
        conf.introspect_cache.as_ref()
    }

    fn reports_cache_status(_conf: &LocationConf) -> bool {
        true
    }

    unsafe fn inputs(_r: *mut ngx_http_request_t, _conf: &LocationConf) -> Option<()> {
        Some(())
    }

    unsafe fn key(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        token: &[u8],
        _inputs: &(),
    ) -> CacheKey {
        // SAFETY: the main conf exists for every request of the http block.
        let main = unsafe { Module::main_conf(&*r) };
        IntrospectionKey {
            endpoint: conf.introspect_endpoint.as_deref().unwrap_or_default(),
            client_id: conf.client_id.as_deref().unwrap_or_default(),
            token,
            phantom: conf.phantom_enabled(),
            claims: main.map_or(&[][..], |m| &m.claims_fingerprint),
        }
        .digest()
    }

    fn decode(entry: &[u8]) -> Option<Self::Answer> {
        CachedIntrospection::decode(entry).map(Ok)
    }

    fn entry(
        _conf: &LocationConf,
        cache: &CacheConf,
        ctx: &RequestCtx,
        now_ms: i64,
    ) -> Option<(Vec<u8>, i64)> {
        let Some(Ok(result)) = &ctx.introspection else {
            return None;
        };
        let expires = cache.policy.expires_at(result, now_ms)?;
        Some((CachedIntrospection::encode(result), expires))
    }

    unsafe fn ask(
        r: *mut ngx_http_request_t,
        conf: &LocationConf,
        ctx: *mut RequestCtx,
        _inputs: &(),
    ) -> Result<(), ()> {
        let call = match conf.phantom_enabled() {
            true => IdpCall::PhantomIntrospection,
            false => IdpCall::Introspection,
        };
        let endpoint = conf.introspect_endpoint.as_deref().unwrap_or_default();
        // SAFETY: r is the live main request and ctx its context.
        let token = unsafe { (*ctx).token() };
        // SAFETY: as above.
        unsafe {
            idp_call::ask(
                r,
                conf,
                call,
                endpoint,
                form::introspection_body(token),
                ctx,
            )
        }
    }
}

/// Moves the introspection on; the verdict comes next once it is known.
///
/// # Safety
/// `r` must be the live main request and `ctx` its context.
pub unsafe fn run(
    r: *mut ngx_http_request_t,
    conf: &LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'static> {
    // SAFETY: guaranteed by the caller.
    match unsafe { flow::step::<Introspection>(r, conf, ctx) } {
        Step::Answered => Outcome::Next(Stage::Verdict),
        Step::Again => Outcome::Again,
        Step::Error => Outcome::Error,
    }
}
