//! The state of one request's token check, kept in the request's pool
//! as this module's context. Data only: the stage files act on it, and the
//! variable getters read it.

use ngx::ffi::{ngx_event_t, ngx_str_t};

use crate::metrics::{self, EndpointIds};
use crate::oauth::cache::{CacheKey, Lifetime};
use crate::oauth::challenge::BearerError;
use crate::oauth::exchange::{ExchangeFailure, IssuedToken};
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
use crate::resilience::breaker::BreakerConf;

pub struct RequestCtx {
    /// The client's token, in request memory (header, args or pool copy).
    pub token: ngx_str_t,
    /// Where the check stands.
    pub stage: Stage,
    /// The IdP's introspection verdict, once known (from the IdP, the cache
    /// or the request that asked for this one).
    pub introspection: Option<Result<IntrospectionResult, IdpFailure>>,
    /// The token endpoint's answer, once known.
    pub exchange: Option<Result<IssuedToken, ExchangeFailure>>,
    /// Cached answers past their time, served if the IdP fails (`stale_if_error`).
    pub stale_introspection: Option<Result<IntrospectionResult, IdpFailure>>,
    pub stale_exchange: Option<Result<IssuedToken, ExchangeFailure>>,
    /// What the cache said, for `$oauth2_token_cache_status`.
    pub cache_status: Option<CacheStatus>,
    /// The shared tier's answer to the current question, if it was asked.
    pub shared: SharedRead,
    /// Where the current question's answer is in the shared tier, once asked.
    pub shared_names: Option<SharedNames>,
    /// This request's place in the worker's in-flight table, if any.
    pub flight: Option<Flight>,
    /// Posted by the leading request to resume this one; made (in the
    /// request pool) only when this request waits, which few do.
    pub wake: *mut ngx_event_t,
    /// Whether the pool cleanup that takes this request out of the in-flight
    /// table is registered.
    pub leaves_on_cleanup: bool,
    /// Whether this request asked the IdP for the current question (and so
    /// stores the answer), and marked its key for the other workers.
    pub asked_idp: bool,
    pub claimed: bool,
    /// The IdP call under way, for the metrics and the circuit breaker.
    pub call: Option<CallStart>,
    /// How long this request's IdP calls took (`$oauth2_token_idp_duration`)
    /// and the last one's status (`$oauth2_token_idp_status`).
    pub idp_micros: Option<u64>,
    pub idp_status: Option<u16>,
}

/// An IdP call's series and when it started.
#[derive(Debug, Clone, Copy)]
pub struct CallStart {
    pub ids: EndpointIds,
    pub started: std::time::Instant,
    /// The endpoint's circuit breaker: its first state slot and parameters.
    pub breaker: Option<(usize, BreakerConf)>,
}

impl RequestCtx {
    pub fn new(token: &[u8], stage: Stage) -> RequestCtx {
        RequestCtx {
            token: ngx_str_t {
                len: token.len(),
                data: token.as_ptr().cast_mut(),
            },
            stage,
            introspection: None,
            exchange: None,
            stale_introspection: None,
            stale_exchange: None,
            cache_status: None,
            shared: SharedRead::NotAsked,
            shared_names: None,
            flight: None,
            wake: core::ptr::null_mut(),
            leaves_on_cleanup: false,
            asked_idp: false,
            claimed: false,
            call: None,
            idp_micros: None,
            idp_status: None,
        }
    }

    /// The client's token.
    pub fn token<'r>(&self) -> &'r [u8] {
        // SAFETY: `token` points at request memory that outlives the ctx.
        unsafe { core::slice::from_raw_parts(self.token.data, self.token.len) }
    }
}

/// Where a request's check stands; the handler runs the stage it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Finding the introspection verdict.
    Introspect(Flow),
    /// The verdict is known: check what the location asks of the token.
    Verdict,
    /// Trading the token for one meant for the upstream.
    Exchange(Flow),
}

impl Stage {
    /// The cache flow of the stage that asks the IdP.
    pub fn flow(self) -> Option<Flow> {
        match self {
            Stage::Introspect(flow) | Stage::Exchange(flow) => Some(flow),
            Stage::Verdict => None,
        }
    }

    /// The same stage at another point of its flow.
    pub fn with_flow(self, flow: Flow) -> Stage {
        match self {
            Stage::Introspect(_) => Stage::Introspect(flow),
            Stage::Exchange(_) => Stage::Exchange(flow),
            Stage::Verdict => Stage::Verdict,
        }
    }
}

/// One question to the IdP, answered from the cache, by another request of
/// this worker, or by the IdP itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Look in the cache; on a miss, join the in-flight table or ask.
    Look,
    /// This request's subrequest to the IdP is under way.
    AskingIdp,
    /// Another request of this worker asks the IdP the same question.
    WaitingForLeader,
    /// Another worker asks it: look again when the timer fires.
    WaitingForWorker,
    /// This request asks the shared tier (Redis) before the IdP.
    AskingShared,
}

/// Where an answer lives in the shared tier: the token's hash and the
/// answer's field in it, under the current key and then the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedNames {
    pub places: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the shared tier said to this request's current question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedRead {
    NotAsked,
    Asking,
    /// An entry of this question, still fresh: its bytes and lifetime.
    Found(Vec<u8>, Lifetime),
    /// Nothing there, or the tier failed: the IdP is asked.
    Missed,
}

/// A request's place in the in-flight table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight {
    pub key: CacheKey,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Asks the IdP, stores the answer and hands it to the waiters.
    Leader,
    Waiter,
    /// Asks the IdP and stores the answer, outside the table: a subrequest,
    /// whose waking is nginx's business (it runs when its parent lets it).
    Alone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    /// Not in this gateway's zone; found in the shared tier.
    HitShared,
    Miss,
    Expired,
    Bypass,
    /// Served from an entry past its time because the IdP failed.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::HitShared => "HIT_SHARED",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Stale => "STALE",
        }
    }
}

/// What a stage decided; the handler turns it into nginx's return code.
#[derive(Debug)]
pub enum Outcome<'c> {
    /// An IdP call (this request's or another's) is under way: NGX_AGAIN.
    Again,
    /// Go on with another stage.
    Next(Stage),
    /// The request may go on to the upstream.
    Pass,
    /// Refused with a status and a `WWW-Authenticate` challenge.
    Refuse(BearerError<'c>),
    /// Refused with the status of an `auth_oauth2_token_require` rule that
    /// has no challenge of its own.
    Deny(u16),
    /// The IdP failed: its status, unless the location chose another.
    Fail {
        timeout: bool,
        status: u16,
        /// Seconds for `Retry-After` (an open circuit breaker).
        retry_after: Option<u64>,
    },
    /// nginx itself failed (out of memory): NGX_ERROR.
    Error,
    /// Nothing to check (a CORS preflight the location lets through).
    Unchecked,
}

impl Outcome<'_> {
    /// How the metrics count a decided request; `None` while undecided.
    pub fn counted_as(&self) -> Option<metrics::Outcome> {
        Some(match self {
            Outcome::Again | Outcome::Next(_) | Outcome::Unchecked => return None,
            Outcome::Pass => metrics::Outcome::Allowed,
            Outcome::Refuse(BearerError::NoToken) => metrics::Outcome::NoToken,
            Outcome::Refuse(BearerError::InvalidRequest(_)) => metrics::Outcome::InvalidRequest,
            Outcome::Refuse(BearerError::InvalidToken | BearerError::InvalidTokenBecause(_)) => {
                metrics::Outcome::InvalidToken
            }
            Outcome::Refuse(BearerError::WrongAudience) => metrics::Outcome::Audience,
            Outcome::Refuse(BearerError::InsufficientScope(_)) => {
                metrics::Outcome::InsufficientScope
            }
            Outcome::Deny(_) => metrics::Outcome::Denied,
            Outcome::Fail { timeout: true, .. } => metrics::Outcome::IdpTimeout,
            Outcome::Fail { timeout: false, .. } => metrics::Outcome::IdpError,
            Outcome::Error => metrics::Outcome::Error,
        })
    }
}
