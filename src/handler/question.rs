//! What a kind of IdP question is: which endpoint it asks, where its
//! answer goes in the context, and what the question and the answer are
//! made of. Introspection and exchange are its implementations; a new kind
//! of call is one more `Endpoint` and one more implementation.

use ngx::ffi::ngx_http_request_t;

use crate::conf::{Endpoint, LocationConf};
use crate::handler::ctx::{RequestCtx, Slot};
use crate::nginx::req::Req;
use crate::oauth::cache::{CacheKey, CachePolicy, Lifetime};
use crate::oauth::call::{CallFailure, KindFailure};
use crate::oauth::idp_reply::{IdpReply, MAX_RESPONSE_BYTES};
use crate::oauth::introspection::{ClaimPaths, MAX_PHANTOM_RESPONSE_BYTES};

/// One kind of IdP question: which endpoint is asked, where its answer goes
/// in the context, and what the question and its answer are made of.
pub trait Question: 'static {
    type Value: Clone;
    type Failure: KindFailure + From<CallFailure>;
    /// What the question is made of beyond the token, evaluated once per
    /// look so that the key and the IdP request agree.
    type Inputs<'r>;

    fn endpoint(conf: &LocationConf) -> &Endpoint;

    fn slot(ctx: &mut RequestCtx) -> &mut Slot<Answer<Self>>;

    /// Whether this question's cache look-up is what
    /// `$oauth2_token_cache_status` reports.
    fn reports_cache_status(conf: &LocationConf) -> bool;

    /// How the IdP is asked and its answer read.
    fn call(conf: &LocationConf) -> IdpCall;

    /// The question's inputs for this request (directive values evaluated
    /// into its pool).
    fn read_inputs<'r>(req: &mut Req<'r>, conf: &'r LocationConf) -> Option<Self::Inputs<'r>>;

    /// [`Question::read_inputs`] of a raw request.
    ///
    /// # Safety
    /// `r` must be a live request for the whole of `'r`.
    // shim for flow.rs until it takes Req
    unsafe fn inputs<'r>(
        r: *mut ngx_http_request_t,
        conf: &'r LocationConf,
    ) -> Option<Self::Inputs<'r>> {
        // SAFETY: `r` is live for 'r (this function's contract), a lifetime
        // of the caller's, not a local of this function.
        Self::read_inputs(&mut unsafe { Req::from_raw(r) }, conf)
    }

    /// The cache key of this request's question.
    fn key(conf: &LocationConf, token: &[u8], inputs: &Self::Inputs<'_>) -> CacheKey;

    /// What names this question's answer in its token's hash in the Redis
    /// tier, where the server is named by its `server_name`s only.
    fn fleet_policy(conf: &LocationConf, inputs: &Self::Inputs<'_>) -> Vec<u8>;

    /// The request body, before the client's credentials.
    fn body(token: &[u8], inputs: &Self::Inputs<'_>) -> Vec<u8>;

    /// The IdP's answer, read.
    fn interpret(call: IdpCall, reply: IdpReply<'_>, paths: &ClaimPaths) -> Answer<Self>;

    /// The entry to store for `value` and how long it lives, or `None` when
    /// it must not be cached; `subject_exp` is the client token's `exp`,
    /// when introspection told it.
    fn entry(
        policy: &CachePolicy,
        value: &Self::Value,
        subject_exp: Option<i64>,
        now_ms: i64,
    ) -> Option<(Vec<u8>, Lifetime)>;

    /// Whether the IdP said the token is no good (inactive, `invalid_grant`):
    /// then no older answer about it may stand.
    fn says_revoked(answer: &Answer<Self>) -> bool;

    /// A cached entry as a value; `None` if it cannot be read.
    fn decode(entry: &[u8]) -> Option<Self::Value>;

    /// Whether an entry this gateway did not write (the Redis tier's)
    /// passes the checks a fresh answer gets before it reaches headers;
    /// one that does not is a miss.
    fn sound(entry: &[u8]) -> bool;
}

/// What a question's slot holds once answered.
pub type Answer<Q> = Result<<Q as Question>::Value, <Q as Question>::Failure>;

/// Whether `answer` is a failure of the IdP that a stale answer may stand in for.
pub fn may_serve_stale<V, F: KindFailure>(answer: &Result<V, F>) -> bool {
    answer.as_ref().is_err_and(F::allows_stale)
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
