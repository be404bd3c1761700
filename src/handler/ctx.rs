//! The state of one request's token check, kept in the request's pool as
//! this module's context. Its fields are private: this file is the only one
//! that writes them, through transitions named for what happens
//! (`start_looking`, `wait_for_leader`, `ask_idp`, `answered` ...); the
//! stages, the in-flight table and the variable getters call those.

use ngx::ffi::{ngx_event_t, ngx_str_t};

use crate::metrics::{self, EndpointIds};
use crate::nginx::req::{ngx_str, ModuleCtx, Req};
use crate::oauth::cache::slot;
pub use crate::oauth::cache::slot::{CacheStatus, Flight, Role, TierEntry, TierNames, TierRead};
use crate::oauth::call::CallFailure;
use crate::oauth::challenge::BearerError;
use crate::oauth::exchange::{ExchangeFailure, IssuedToken};
use crate::oauth::introspection::{IdpFailure, IntrospectionResult};
use crate::redis::replay::FleetReplay;
use crate::resilience::breaker::BreakerConf;
use crate::shm::zone::ShmZone;

/// A question's slot in a request's context, and a mark it holds: in a
/// zone of nginx's shared memory.
pub type Slot<A> = slot::Slot<A, ShmZone>;
pub type HeldMark = slot::HeldMark<ShmZone>;

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
    /// The fleet's word on the DPoP proof, with the Redis tier.
    fleet: FleetCheck,
    /// The token's issuer has an introspection endpoint of its own: its
    /// place in `LocationConf::issuer_endpoints`.
    issuer_endpoint: Option<usize>,
}

// SAFETY: the only type this module keeps in a request's context slot.
unsafe impl ModuleCtx for RequestCtx {}

impl RequestCtx {
    /// Makes the context of `req`, in its pool, for the client's `token`
    /// (request memory, or static); `None` when nginx is out of memory.
    pub fn attach<'r>(req: &mut Req<'r>, token: &'r [u8], stage: Stage) -> Option<*mut RequestCtx> {
        req.set_module_ctx(|| RequestCtx {
            token: ngx_str(token),
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
            fleet: FleetCheck::Unasked,
            issuer_endpoint: None,
        })
        .map(|p| p.as_ptr())
    }

    /// The context of `req`, once `attach` made it. A raw pointer: the
    /// variable getters read the context while a stage runs, so no `&mut`
    /// to it is held across a call into nginx.
    pub fn of(req: &Req<'_>) -> Option<*mut RequestCtx> {
        req.module_ctx::<RequestCtx>().map(|p| p.as_ptr())
    }

    /// The client's token.
    pub fn token(&self) -> &[u8] {
        // SAFETY: `attach`, the only constructor, took `token` as `&'r` of
        // the request whose pool holds the context: the bytes outlive it.
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

    /// The proof `replay_id`, kept by this gateway's store until `until_s`,
    /// is to be recorded for the fleet too.
    pub fn fleet_wanted(&mut self, replay_id: [u8; 32], until_s: i64) {
        self.fleet = FleetCheck::Wanted { replay_id, until_s };
    }

    /// The fleet was asked; its reply is not in yet.
    pub fn fleet_asked(&mut self) {
        if let FleetCheck::Wanted { replay_id, .. } = self.fleet {
            self.fleet = FleetCheck::Asked { replay_id };
        }
    }

    /// The fleet's reply (or the failure to get one) is in.
    pub fn fleet_said(&mut self, said: FleetReplay) {
        if let FleetCheck::Wanted { replay_id, .. } | FleetCheck::Asked { replay_id } = self.fleet {
            self.fleet = FleetCheck::Said { replay_id, said };
        }
    }

    pub fn fleet(&self) -> &FleetCheck {
        &self.fleet
    }

    /// The token's issuer asks its own introspection endpoint (`place` in
    /// `LocationConf::issuer_endpoints`).
    pub fn introspect_at(&mut self, place: usize) {
        self.issuer_endpoint = Some(place);
    }

    pub fn issuer_endpoint(&self) -> Option<usize> {
        self.issuer_endpoint
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
        [
            self.introspection.abandon_mark(),
            self.exchange.abandon_mark(),
        ]
    }

    /// Takes this request out of the question it is in flight for, as its
    /// pool goes away.
    pub fn leave_flight(&mut self) -> Option<Flight> {
        match self.stage {
            Stage::Exchange => self.exchange.land(),
            _ => self.introspection.land(),
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
    /// Checking a JWT access token at the gateway (`auth_oauth2_token_jwt on`).
    Jwt,
    /// Finding the introspection verdict.
    Introspect,
    /// The verdict is known: check the token's binding, then what the
    /// location asks of it.
    Verdict,
    /// The DPoP proof held and this gateway's store had not seen it: the
    /// fleet's store (Redis) is asked too.
    FleetReplay,
    /// The binding held: check what the location asks of the token.
    Requirements,
    /// Trading the token for one meant for the upstream.
    Exchange,
}

/// Where the fleet's check of a request's DPoP proof stands
/// (`redis/replay.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetCheck {
    /// Not asked: no proof, no Redis tier, or the proof was recorded by
    /// this request before an internal redirect.
    Unasked,
    /// To ask: the proof's replay name and the end of its window.
    Wanted { replay_id: [u8; 32], until_s: i64 },
    /// Asked, the reply not in yet.
    Asked { replay_id: [u8; 32] },
    /// What the fleet said.
    Said {
        replay_id: [u8; 32],
        said: FleetReplay,
    },
}

/// An IdP call's series and when it started.
#[derive(Debug, Clone, Copy)]
pub struct CallStart {
    pub ids: EndpointIds,
    pub started: std::time::Instant,
    /// The endpoint's circuit breaker: its first state slot and parameters.
    pub breaker: Option<(usize, BreakerConf)>,
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
            Outcome::Refuse(BearerError::InsufficientUserAuthentication { .. }) => {
                metrics::Outcome::StepUp
            }
            Outcome::Deny(_) => metrics::Outcome::Denied,
            Outcome::Fail { timeout: true, .. } => metrics::Outcome::IdpTimeout,
            Outcome::Fail { timeout: false, .. } => metrics::Outcome::IdpError,
            Outcome::Error => metrics::Outcome::Error,
        })
    }
}
