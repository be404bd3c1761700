//! What a kind of IdP question is: which endpoint it asks, where its
//! answer goes in the context, and what the question and the answer are
//! made of. Introspection and exchange are its implementations; a new kind
//! of call is one more `Endpoint` and one more implementation.

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{RequestCtx, Slot};
use crate::nginx::req::Req;
pub use crate::oauth::cache::flow::Answer;
use crate::oauth::cache::flow::Kind;
use crate::oauth::cache::key::KeySecret;
use crate::oauth::cache::CacheKey;
use crate::oauth::idp_reply::{IdpReply, MAX_RESPONSE_BYTES};
use crate::oauth::introspection::{ClaimPaths, MAX_PHANTOM_RESPONSE_BYTES};

/// One kind of IdP question, on nginx's side: which endpoint is asked,
/// where its answer goes in the context, and what the question is made of
/// (what its answer is made of is its `Kind`).
pub trait Question: Kind + 'static {
    /// What the question is made of beyond the token, evaluated once per
    /// look so that the key and the IdP request agree.
    type Inputs<'r>;

    /// The endpoint asked for this request (`ctx`: its context, which may
    /// name an issuer's own).
    fn endpoint<'c>(conf: &'c LocationConf, ctx: &RequestCtx) -> &'c Endpoint;

    fn slot(ctx: &mut RequestCtx) -> &mut Slot<Answer<Self>>;

    /// Whether this question's cache look-up is what
    /// `$oauth2_token_cache_status` reports.
    fn reports_cache_status(conf: &LocationConf) -> bool;

    /// How the IdP is asked and its answer read.
    fn call(conf: &LocationConf) -> IdpCall;

    /// The question's inputs for this request (directive values evaluated
    /// into its pool).
    fn read_inputs<'r>(req: &mut Req<'r>, conf: &'r LocationConf) -> Option<Self::Inputs<'r>>;

    /// The cache key of this request's question, asked at `endpoint`, in
    /// the zone whose key secret is `secret`.
    fn key(
        conf: &LocationConf,
        endpoint: &Endpoint,
        secret: &KeySecret,
        token: &[u8],
        inputs: &Self::Inputs<'_>,
    ) -> CacheKey;

    /// What names this question's answer, asked at `endpoint`, in its
    /// token's hash in the Redis tier.
    fn fleet_policy(conf: &LocationConf, endpoint: &Endpoint, inputs: &Self::Inputs<'_>)
        -> Vec<u8>;

    /// The request body, before the client's credentials.
    fn body(token: &[u8], inputs: &Self::Inputs<'_>) -> Vec<u8>;

    /// The IdP's answer, read.
    fn interpret(call: IdpCall, reply: IdpReply<'_>, paths: &ClaimPaths) -> Answer<Self>;

    /// An answer a cache zone will keep: what it keeps of this moment.
    fn first_seen(_answer: &mut Answer<Self>, _now_s: i64) {}
}

/// Which IdP call a subrequest makes; decides how its answer is read.
#[derive(Clone, Copy)]
pub enum IdpCall {
    Introspection,
    /// Introspection that asks for a JWT to forward (phantom token).
    PhantomIntrospection,
    Exchange,
}

impl IdpCall {
    /// The media types the call accepts, most wanted first.
    pub fn accept(self) -> &'static [u8] {
        match self {
            IdpCall::PhantomIntrospection => {
                b"application/token-introspection+jwt, application/jwt;q=0.9, application/json;q=0.1"
            }
            IdpCall::Introspection | IdpCall::Exchange => b"application/json",
        }
    }

    /// The largest answer read.
    pub fn limit(self) -> usize {
        match self {
            IdpCall::PhantomIntrospection => MAX_PHANTOM_RESPONSE_BYTES,
            IdpCall::Introspection | IdpCall::Exchange => MAX_RESPONSE_BYTES,
        }
    }
}
