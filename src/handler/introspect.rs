//! The introspection stage: the IdP's verdict on the client's token (RFC
//! 7662, or a phantom token's JWT), through the cache flow.

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{Introspected, Outcome, RequestCtx, Slot, Stage};
use crate::handler::flow::{self, Step};
use crate::handler::question::{IdpCall, Question};
use crate::nginx::req::Req;
use crate::oauth::cache::key::{introspection_key, policy, KeySecret};
use crate::oauth::cache::CacheKey;
use crate::oauth::form;
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::{self, ClaimPaths, IntrospectionResult};

pub use crate::oauth::cache::kinds::Introspection;

impl Question for Introspection {
    /// The values of `auth_oauth2_token_cache_vary`.
    type Inputs<'r> = &'r [u8];

    fn endpoint<'c>(conf: &'c LocationConf, ctx: &RequestCtx) -> &'c Endpoint {
        let own = ctx.issuer_endpoint();
        own.and_then(|i| conf.issuer_endpoints.get(i))
            .unwrap_or(&conf.introspection)
    }

    fn slot(ctx: &mut RequestCtx) -> &mut Slot<Introspected> {
        ctx.introspection_mut()
    }

    fn reports_cache_status(_conf: &LocationConf) -> bool {
        true
    }

    fn call(conf: &LocationConf) -> IdpCall {
        match conf.phantom_enabled() {
            true => IdpCall::PhantomIntrospection,
            false => IdpCall::Introspection,
        }
    }

    fn read_inputs<'r>(req: &mut Req<'r>, conf: &LocationConf) -> Option<&'r [u8]> {
        req.evaluate(conf.cache_vary)
    }

    fn key(
        conf: &LocationConf,
        endpoint: &Endpoint,
        secret: &KeySecret,
        token: &[u8],
        vary: &&[u8],
    ) -> CacheKey {
        let vary = conf.cache_vary.map(|_| *vary);
        introspection_key(secret, &endpoint.key_scope, token, vary)
    }

    fn fleet_policy(conf: &LocationConf, endpoint: &Endpoint, vary: &&[u8]) -> Vec<u8> {
        match conf.cache_vary {
            Some(_) => policy(&endpoint.tier_scope, &[vary]),
            None => policy(&endpoint.tier_scope, &[]),
        }
    }

    fn body(token: &[u8], _vary: &&[u8]) -> Vec<u8> {
        form::introspection_body(token)
    }

    fn interpret(call: IdpCall, reply: IdpReply<'_>, paths: &ClaimPaths) -> Introspected {
        match call {
            IdpCall::PhantomIntrospection => introspection::interpret_phantom(reply, paths),
            _ => introspection::interpret(reply, paths),
        }
    }

    /// A token without `iat`: issued, for the revocation list, when the
    /// gateway first saw it (now), which its cache entry keeps. Without a
    /// cache nothing remembers it, and the list refuses the token while a
    /// revocation of its subject lasts.
    fn first_seen(answer: &mut Introspected, now_s: i64) {
        if let Ok(IntrospectionResult::Active(claims)) = answer {
            claims.marks.first_seen(now_s);
        }
    }
}

/// Moves the introspection on; the verdict comes next once it is known.
/// `ctx` is the request's context (`RequestCtx::of`).
pub fn run<'r>(
    req: &mut Req<'r>,
    conf: &'r LocationConf,
    ctx: *mut RequestCtx,
) -> Outcome<'static> {
    match flow::step::<Introspection>(req, conf, ctx) {
        Step::Answered => Outcome::Next(Stage::Verdict),
        Step::Again => Outcome::Again,
        Step::Error => Outcome::Error,
    }
}
