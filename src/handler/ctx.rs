//! The state of one request's token check, kept in the request's pool as
//! this module's context. Its fields are private: this file is the only one
//! that writes them, through transitions named for what happens
//! (`start_looking`, `wait_for_leader`, `ask_idp`, `answered` ...); the
//! stages, the in-flight table and the variable getters call those.

use ngx::ffi::{ngx_event_t, ngx_shm_zone_t, ngx_str_t};

use crate::metrics::{self, EndpointIds};
use crate::oauth::cache::{CacheKey, Mark};
use crate::oauth::call::CallFailure;
use crate::oauth::challenge::BearerError;
use crate::oauth::exchange::{ExchangeFailure, IssuedToken};
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
pub use crate::redis::fleet::TierEntry;
use crate::resilience::breaker::BreakerConf;

/// What introspection said, and what the token endpoint issued.
pub type Introspected = Result<IntrospectionResult, IdpFailure>;
pub type Exchanged = Result<IssuedToken, ExchangeFailure>;

pub struct RequestCtx {
    /// The client's token, in request memory (header, args or pool copy).
    token: ngx_str_t,
    stage: Stage,
    introspection: Slot<Introspected>,
    exchange: Slot<Exchanged>,
    /// What the cache said, for `$oauth2_token_cache_status`.
    cache_status: Option<CacheStatus>,
    /// Posted to resume this request while it waits for another; made (in
    /// the request pool) only when it waits, which few do.
    wake: *mut ngx_event_t,
    /// Whether the pool cleanup that takes this request out of the
    /// in-flight table is registered.
    leaves_on_cleanup: bool,
    /// The IdP call under way, for the metrics and the circuit breaker.
    call: Option<CallStart>,
    /// How long this request's IdP calls took (`$oauth2_token_idp_duration`)
    /// and the last one's status (`$oauth2_token_idp_status`).
    idp_micros: Option<u64>,
    idp_status: Option<u16>,
    /// The thumbprint of the key of a DPoP proof that held
    /// (`$oauth2_token_dpop_jkt`), and the SHA-256 of the client
    /// certificate a binding was checked against (`$oauth2_token_cert_thumbprint`).
    proof_jkt: Option<[u8; 32]>,
    certificate: Option<[u8; 32]>,
}

impl RequestCtx {
    /// `token` must live in request memory, as long as the context.
    pub fn new(token: &[u8], stage: Stage) -> RequestCtx {
        RequestCtx {
            token: ngx_str_t {
                len: token.len(),
                data: token.as_ptr().cast_mut(),
            },
            stage,
            introspection: Slot::default(),
            exchange: Slot::default(),
            cache_status: None,
            wake: core::ptr::null_mut(),
            leaves_on_cleanup: false,
            call: None,
            idp_micros: None,
            idp_status: None,
            proof_jkt: None,
            certificate: None,
        }
    }

    /// The client's token.
    pub fn token(&self) -> &[u8] {
        // SAFETY: `token` points at request memory (`new`'s contract), which
        // lives as long as the context, itself in the request pool.
        unsafe { core::slice::from_raw_parts(self.token.data, self.token.len) }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The handler moves the check on to `stage`.
    pub fn enter(&mut self, stage: Stage) {
        self.stage = stage;
    }

    pub fn introspection(&self) -> &Slot<Introspected> {
        &self.introspection
    }

    pub fn introspection_mut(&mut self) -> &mut Slot<Introspected> {
        &mut self.introspection
    }

    pub fn exchange(&self) -> &Slot<Exchanged> {
        &self.exchange
    }

    pub fn exchange_mut(&mut self) -> &mut Slot<Exchanged> {
        &mut self.exchange
    }

    /// The introspected token's claims, when it is active.
    pub fn active_claims(&self) -> Option<&crate::oauth::introspection::TokenClaims> {
        match self.introspection.answer() {
            Some(Ok(IntrospectionResult::Active(claims))) => Some(claims),
            _ => None,
        }
    }

    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.cache_status
    }

    /// What a look-up found. A request sent back by a vanished leader keeps
    /// the status of its first look-up, unless it now hits.
    pub fn looked_up(&mut self, status: CacheStatus) {
        if self.cache_status.is_none() || status == CacheStatus::Hit {
            self.cache_status = Some(status);
        }
    }

    /// The answer came from elsewhere than the look-up said (the Redis
    /// tier, or a stale entry standing in for a failed IdP).
    pub fn served_from(&mut self, status: CacheStatus) {
        self.cache_status = Some(status);
    }

    pub fn wake_event(&self) -> *mut ngx_event_t {
        self.wake
    }

    pub fn set_wake_event(&mut self, wake: *mut ngx_event_t) {
        self.wake = wake;
    }

    pub fn leaves_on_cleanup(&self) -> bool {
        self.leaves_on_cleanup
    }

    pub fn cleanup_registered(&mut self) {
        self.leaves_on_cleanup = true;
    }

    /// An IdP call starts: what its end is counted against.
    pub fn call_started(&mut self, call: CallStart) {
        self.call = Some(call);
    }

    /// The call ended with `status` (0: no answer): how long it took, and
    /// what it is counted against; its time and status go to the
    /// variables. `None` when no call was under way.
    pub fn call_ended(&mut self, status: usize) -> Option<(CallStart, u64)> {
        let call = self.call.take()?;
        let micros = u64::try_from(call.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.idp_micros = Some(self.idp_micros.unwrap_or(0).saturating_add(micros));
        if status != 0 {
            self.idp_status = u16::try_from(status).ok();
        }
        Some((call, micros))
    }

    /// A DPoP proof by the key of this thumbprint held.
    pub fn proof_held(&mut self, jkt: [u8; 32]) {
        self.proof_jkt = Some(jkt);
    }

    /// The connection's client certificate, by its SHA-256, was checked.
    pub fn certificate_presented(&mut self, sha256: [u8; 32]) {
        self.certificate = Some(sha256);
    }

    pub fn proof_jkt(&self) -> Option<&[u8; 32]> {
        self.proof_jkt.as_ref()
    }

    pub fn certificate(&self) -> Option<&[u8; 32]> {
        self.certificate.as_ref()
    }

    pub fn idp_micros(&self) -> Option<u64> {
        self.idp_micros
    }

    pub fn idp_status(&self) -> Option<u16> {
        self.idp_status
    }

    /// The marks this request still holds for the other workers (none once
    /// its answers are settled), taken from its questions as its pool goes
    /// away: the request will not store an answer, so they come off.
    pub fn abandon_marks(&mut self) -> [Option<HeldMark>; 2] {
        [self.introspection.mark.take(), self.exchange.mark.take()]
    }

    /// Takes this request out of the question it is in flight for, as its
    /// pool goes away.
    pub fn leave_flight(&mut self) -> Option<Flight> {
        match self.stage {
            Stage::Exchange => self.exchange.flight.take(),
            _ => self.introspection.flight.take(),
        }
    }

    /// The leader of this waiter's question went away without an answer:
    /// the waiter looks again.
    pub fn sent_back(&mut self) {
        match self.stage {
            Stage::Exchange => self.exchange.sent_back(),
            _ => self.introspection.sent_back(),
        }
    }
}

/// Where a request's check stands; the handler runs the stage it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Checking a JWT access token at the gateway (`auth_oauth2_token_jwt_*`).
    Jwt,
    /// Finding the introspection verdict.
    Introspect,
    /// The verdict is known: check what the location asks of the token.
    Verdict,
    /// Trading the token for one meant for the upstream.
    Exchange,
}

/// One question to an IdP endpoint and where it stands: answered from the
/// cache, from the Redis tier, by another request of this worker, or by
/// the IdP itself.
#[derive(Debug)]
pub struct Slot<A> {
    answer: Option<A>,
    /// A cached answer past its time, served if the IdP fails (`stale_if_error`).
    stale: Option<A>,
    flow: Flow,
    /// This request's place in the worker's in-flight table, if any.
    flight: Option<Flight>,
    /// What the Redis tier said, and where the answer lives there.
    tier: TierRead,
    tier_names: Option<TierNames>,
    /// When this request asked the IdP (and so stores the answer).
    asked_at_ms: Option<i64>,
    /// The key this request marked for the other workers, until its answer
    /// is settled or the request goes away: either takes the mark off.
    mark: Option<HeldMark>,
    /// Whether the zone held an answer to this question past its time,
    /// which a new answer replaces.
    replaces_old: bool,
}

impl<A> Default for Slot<A> {
    fn default() -> Slot<A> {
        Slot {
            answer: None,
            stale: None,
            flow: Flow::Look,
            flight: None,
            tier: TierRead::NotAsked,
            tier_names: None,
            asked_at_ms: None,
            mark: None,
            replaces_old: false,
        }
    }
}

/// What a leader does once its question is answered.
pub struct Settled {
    /// The Redis tier's entry that answered, to store in the zone as it is.
    pub from_tier: Option<TierEntry>,
    /// When the IdP was asked, if it was (its answer is stored, here and in the Redis tier).
    pub asked_at_ms: Option<i64>,
    /// The mark this request held for the other workers: taken off when
    /// the answer is not stored (an answer stored replaces it).
    pub mark: Option<HeldMark>,
    /// Whether the zone held an answer past its time for the question.
    pub replaces_old: bool,
}

/// A mark this request made in a cache zone for the other workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldMark {
    pub zone: *mut ngx_shm_zone_t,
    pub mark: Mark,
}

impl<A: Clone> Slot<A> {
    pub fn answer(&self) -> Option<&A> {
        self.answer.as_ref()
    }

    pub fn is_answered(&self) -> bool {
        self.answer.is_some()
    }

    pub fn flow(&self) -> Flow {
        self.flow
    }

    pub fn flight(&self) -> Option<Flight> {
        self.flight
    }

    pub fn tier_names(&self) -> Option<&TierNames> {
        self.tier_names.as_ref()
    }

    pub fn tier_read(&self) -> &TierRead {
        &self.tier
    }

    /// A look-up begins (or begins again after another worker's call):
    /// `true` when it is such a look again, which is not counted twice.
    pub fn start_looking(&mut self) -> bool {
        self.asked_at_ms = None;
        let again = self.flow == Flow::WaitingForWorker;
        if !again {
            self.tier = TierRead::NotAsked;
            self.tier_names = None;
            self.replaces_old = false;
        }
        again
    }

    /// The answer is in (cache, Redis tier, IdP, or an open breaker).
    pub fn answered(&mut self, answer: A) {
        self.answer = Some(answer);
    }

    /// The IdP's answer, from the subrequest's callback: nginx may call it
    /// again after an error page, and only the first is kept.
    pub fn answered_once(&mut self, answer: impl FnOnce() -> A) -> bool {
        if self.answer.is_some() {
            return false;
        }
        self.answer = Some(answer());
        true
    }

    /// A cached answer past its time, kept in case the IdP fails.
    pub fn keep_stale(&mut self, answer: A) {
        self.stale = Some(answer);
        self.replaces_old = true;
    }

    /// The zone held an answer past its time, no longer to be served.
    pub fn found_expired(&mut self) {
        self.replaces_old = true;
    }

    /// A failed answer gives way to the stale one, if there is one.
    pub fn serve_stale(&mut self, failed: impl Fn(&A) -> bool) -> bool {
        if !self.answer.as_ref().is_some_and(failed) || self.stale.is_none() {
            return false;
        }
        self.answer = self.stale.take();
        true
    }

    /// A subrequest asks for itself, outside the in-flight table (nginx
    /// runs it when its parent lets it).
    pub fn go_alone(&mut self, key: CacheKey) {
        self.flight = Some(Flight {
            key,
            role: Role::Alone,
        });
    }

    /// The in-flight table made this request the leader or a waiter of `key`.
    pub fn joined(&mut self, key: CacheKey, role: Role) {
        self.flight = Some(Flight { key, role });
    }

    pub fn leads(&self, key: CacheKey) -> bool {
        self.flight
            == Some(Flight {
                key,
                role: Role::Leader,
            })
    }

    pub fn wait_for_leader(&mut self) {
        self.flow = Flow::WaitingForLeader;
    }

    /// Another worker asks: look again when the timer fires.
    pub fn wait_for_worker(&mut self) {
        self.flow = Flow::WaitingForWorker;
    }

    /// This request marked the key in `zone` for the other workers: the
    /// mark is taken off when its answer is settled without being stored,
    /// or when the request goes away before (`RequestCtx::abandon_marks`).
    pub fn claimed(&mut self, zone: *mut ngx_shm_zone_t, mark: Mark) {
        self.mark = Some(HeldMark { zone, mark });
    }

    /// The Redis tier is asked where the answer would live.
    pub fn ask_tier(&mut self, names: TierNames) {
        self.tier_names = Some(names);
        self.tier = TierRead::Asking;
        self.flow = Flow::AskingRedis;
    }

    /// What the Redis tier said (from its call's callback).
    pub fn tier_said(&mut self, read: TierRead) {
        self.tier = read;
    }

    /// The IdP is asked now (`now_ms`).
    pub fn ask_idp(&mut self, now_ms: i64) {
        self.flow = Flow::AskingIdp;
        self.asked_at_ms = Some(now_ms);
    }

    /// The leader's question is answered: what it has to store, and the
    /// mark it held, which comes off unless the stored answer replaces it.
    pub fn settle(&mut self, served_stale: bool) -> Settled {
        let from_tier = match core::mem::replace(&mut self.tier, TierRead::NotAsked) {
            TierRead::Found(found) => Some(found),
            _ => None,
        };
        Settled {
            from_tier,
            asked_at_ms: self.asked_at_ms.filter(|_| !served_stale),
            mark: self.mark.take(),
            replaces_old: self.replaces_old,
        }
    }

    /// Leaves the in-flight table's entry (the leader hands it on; a waiter
    /// or a lone subrequest just drops it).
    pub fn land(&mut self) -> Option<Flight> {
        self.flight.take()
    }

    /// A waiter gets its leader's answer.
    pub fn delivered(&mut self, answer: Option<A>) {
        self.answer = answer;
        self.flight = None;
    }

    fn sent_back(&mut self) {
        self.flight = None;
        self.flow = Flow::Look;
    }
}

/// Where a question stands.
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
    /// This request asks the Redis tier before the IdP.
    AskingRedis,
}

/// Where an answer lives in the Redis tier: the token's hash and the
/// answer's field in it, under the current key and then the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierNames {
    pub places: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the Redis tier said to a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierRead {
    NotAsked,
    Asking,
    /// An entry of this question, fresh for this reader.
    Found(TierEntry),
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

/// An IdP call's series and when it started.
#[derive(Debug, Clone, Copy)]
pub struct CallStart {
    pub ids: EndpointIds,
    pub started: std::time::Instant,
    /// The endpoint's circuit breaker: its first state slot and parameters.
    pub breaker: Option<(usize, BreakerConf)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    /// Not in this gateway's zone; found in the Redis tier.
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
    /// The gateway itself failed (nginx out of memory, a client assertion
    /// that could not be signed): NGX_ERROR.
    Error,
    /// Nothing to check (a CORS preflight the location lets through).
    Unchecked,
}

impl Outcome<'_> {
    /// The answer to a request whose IdP call failed: `status` is the
    /// kind's own (a 503 the IdP said, say), the rest comes from the call.
    pub fn failed(status: u16, call: Option<&CallFailure>) -> Outcome<'static> {
        Outcome::Fail {
            timeout: call == Some(&CallFailure::Timeout),
            status,
            retry_after: call.and_then(CallFailure::retry_after),
        }
    }

    /// How the metrics count a decided request; `None` while undecided.
    pub fn counted_as(&self) -> Option<metrics::Outcome> {
        Some(match self {
            Outcome::Again | Outcome::Next(_) | Outcome::Unchecked => return None,
            Outcome::Pass => metrics::Outcome::Allowed,
            Outcome::Refuse(BearerError::NoToken) => metrics::Outcome::NoToken,
            Outcome::Refuse(BearerError::InvalidRequest(_)) => metrics::Outcome::InvalidRequest,
            Outcome::Refuse(
                BearerError::InvalidToken
                | BearerError::InvalidTokenBecause(_)
                | BearerError::InvalidDpopProof(_)
                | BearerError::InvalidTokenForDpop(_)
                | BearerError::UseDpopNonce(_),
            ) => metrics::Outcome::InvalidToken,
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
