//! Sender-constrained tokens, nginx side: the request's `DPoP` headers
//! (read once, kept across internal redirects, withheld from the
//! upstream), its URI as the proof must name it, the client certificate of
//! its connection (or a trusted front's `Client-Cert` header, withheld from
//! the upstream too), and the replay store; `oauth/dpop/binding.rs` decides.
//! Runs in the verdict stage, whatever gave the verdict (introspection, a
//! verified JWT, a cache hit), so a cached verdict is checked again. With
//! the Redis tier, a proof this gateway's store had not seen is recorded
//! for the fleet too, in a stage of its own ([`fleet`]): a proof replayed
//! at another gateway is refused; when Redis fails, this gateway's store
//! alone decides (logged, counted).

use core::cell::RefCell;
use core::ptr::NonNull;

use ngx::ffi::{ngx_str_t, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN};

use crate::conf::LocationConf;
use crate::handler::ctx::{FleetCheck, Outcome, RequestCtx, Stage};
use crate::handler::redis_tier::{self, Tier};
use crate::metrics::{self, dpop::DpopIds};
use crate::nginx::req::{ngx_str, now_ms, Req};
use crate::oauth::bearer;
use crate::oauth::cache::CacheKey;
use crate::oauth::carriers::HeaderEdit;
use crate::oauth::challenge::BearerError;
use crate::oauth::cnf::Confirmation;
use crate::oauth::dpop::binding::{self, BindingRefusal, Scheme};
use crate::oauth::dpop::client_cert;
use crate::oauth::dpop::htu;
use crate::oauth::dpop::proof::{self, ProofRequest};
use crate::redis::failure::{Failure, KINDS, LOG_INTERVAL_S};
use crate::redis::replay::FleetReplay;
use crate::resilience::log_gate::LogGate;
use crate::shm::table::Remembered;
use crate::shm::zone::ShmZone;

/// The request's `DPoP` headers as the client sent them, and the proof this
/// request recorded in the replay store (so that the check after an
/// internal redirect does not take its own proof for a replay).
#[repr(C)]
#[derive(Clone, Copy)]
struct SavedProof {
    /// First, as `credentials::SavedToken`'s: see [`find_record`].
    tag: u64,
    /// How many `DPoP` headers the client sent.
    count: usize,
    /// The first one's value, in request memory.
    value: ngx_str_t,
    /// The `Client-Cert` headers (RFC 9440) the same way: how many, the first.
    cert_count: usize,
    cert_value: ngx_str_t,
    /// How the token was presented on the first pass: after an internal
    /// redirect the `Authorization` header may hold a phantom or exchanged
    /// token instead.
    scheme: Scheme,
    recorded: [u8; 32],
    has_recorded: bool,
    /// Whether the fleet's store has had its word on `recorded` (it was
    /// new there, or Redis failed and this gateway's store decided).
    fleet_done: bool,
}

const SAVED_PROOF_TAG: u64 = u64::from_be_bytes(*b"dpopprf1");

/// Marks the pool cleanup that holds a request's [`SavedProof`].
unsafe extern "C" fn saved_proof_marker(_data: *mut core::ffi::c_void) {}

/// The record [`record`] made for this request, if any.
fn find_record(req: &Req<'_>) -> Option<NonNull<SavedProof>> {
    req.cleanup_data(Some(saved_proof_marker))
        .map(|data| data.cast::<SavedProof>())
        // SAFETY: the request's cleanups with this handler's address are
        // the module's empty markers (this one's, or the saved token's of
        // `credentials`, which identical code may merge with it: the
        // module's other cleanups run code), whose data are `repr(C)`
        // structs that start with a `u64` tag, written whole when the
        // cleanup was added; the tag says whose it is.
        .find(|&saved| unsafe { (*saved).tag } == SAVED_PROOF_TAG)
        .and_then(NonNull::new)
}

/// The saved proof `saved` (from [`find_record`]), copied out.
fn read_record(saved: NonNull<SavedProof>) -> SavedProof {
    // SAFETY: `saved` is a SavedProof `record` wrote whole into a cleanup
    // of the request's pool, which lives as long as the request; it is
    // only ever copied out or written field by field, never borrowed.
    unsafe { saved.read() }
}

/// The record of a main request that sent `DPoP` or `Client-Cert`
/// headers, made on its first pass (`withhold`, with the `token` found,
/// before any check), when they are read and removed from what goes
/// upstream; later calls use [`find_record`]. `Ok(None)`: the request sent
/// none (no record is made, so a bearer request costs one walk of its
/// headers); `Err`: no memory.
fn record(req: &mut Req<'_>, token: &[u8]) -> Result<Option<NonNull<SavedProof>>, ()> {
    if let Some(saved) = find_record(req) {
        return Ok(Some(saved));
    }
    // One walk over the headers for both names.
    let [([value], count), ([cert], cert_count)] =
        req.header_values_of::<1, 2>([b"DPoP", b"Client-Cert"]);
    if count == 0 && cert_count == 0 {
        return Ok(None);
    }
    // Header values live in request memory, which the new list does not
    // free: the values stay valid. A `Client-Cert` header never reaches the
    // upstream, whoever sent it.
    req.edit_headers(|key, _| {
        match key.eq_ignore_ascii_case(b"DPoP") || key.eq_ignore_ascii_case(b"Client-Cert") {
            true => HeaderEdit::Remove,
            false => HeaderEdit::Keep,
        }
    })
    .ok_or(())?;
    let scheme = header_scheme(req, token);
    let c = req.add_cleanup(size_of::<SavedProof>()).ok_or(())?;
    let saved = SavedProof {
        tag: SAVED_PROOF_TAG,
        count,
        value: ngx_str(value),
        cert_count,
        cert_value: ngx_str(cert),
        scheme,
        recorded: [0; 32],
        has_recorded: false,
        fleet_done: false,
    };
    // SAFETY: `c` is the cleanup just added, whose data is room for a
    // SavedProof (nginx aligns pool data to a word, SavedProof's alignment).
    let saved = unsafe {
        (*c.as_ptr()).handler = Some(saved_proof_marker);
        let data = (*c.as_ptr()).data.cast::<SavedProof>();
        data.write(saved);
        data
    };
    Ok(NonNull::new(saved))
}

/// Reads and withholds the `DPoP` and `Client-Cert` headers on a main
/// request's first pass (`begin`, with the `token` found), so that the
/// upstream never gets them; a subrequest's headers are its parent's.
pub fn withhold(req: &mut Req<'_>, token: &[u8]) -> Option<()> {
    match req.is_main() {
        true => record(req, token).ok().map(|_| ()),
        false => Some(()),
    }
}

/// How the client presented its token: from its `Authorization` header,
/// unless that no longer says DPoP and the first pass recorded the scheme.
pub fn scheme(req: &Req<'_>, token: &[u8]) -> Scheme {
    let from_header = header_scheme(req, token);
    // The header may have changed since (phantom, exchange): the record,
    // when there is one, says what the client sent.
    if from_header != Scheme::Dpop && req.is_main() {
        if let Some(saved) = find_record(req) {
            return read_record(saved).scheme;
        }
    }
    from_header
}

/// The scheme of the `Authorization` header, if that is where the token
/// came from.
fn header_scheme(req: &Req<'_>, token: &[u8]) -> Scheme {
    match req.authorization() {
        Some(value) if contains(value, token) => {
            match bearer::is_dpop_scheme(value.trim_ascii_start()) {
                true => Scheme::Dpop,
                false => Scheme::Bearer,
            }
        }
        _ => Scheme::Other,
    }
}

/// Whether `token` is a slice of `value`'s memory (the token found there).
fn contains(value: &[u8], token: &[u8]) -> bool {
    let range = value.as_ptr_range();
    !token.is_empty() && range.contains(&token.as_ptr()) && token.len() <= value.len()
}

/// What [`check`] found when the binding held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Nothing more to check.
    Held,
    /// The proof is new to this gateway: the fleet's store must say so
    /// too (`Stage::FleetReplay`, [`fleet`]).
    AskFleet,
}

/// Checks the binding of the token whose verdict is `cnf`; `Err` is the
/// answer when it does not hold. `ctx` is the request's context
/// (`RequestCtx::of`); no reference to it is held across this call.
pub fn check<'c>(
    req: &mut Req<'_>,
    conf: &'c LocationConf,
    ctx: *mut RequestCtx,
    cnf: &Confirmation,
) -> Result<Checked, Outcome<'c>> {
    // SAFETY: `ctx` is the request's context, in its pool, alive for this
    // call; the token lives in request memory, outside the context, and no
    // `&mut` to the context is held meanwhile.
    let token = unsafe { (*ctx).token() };
    let scheme = scheme(req, token);
    if *cnf == Confirmation::Unbound && !conf.dpop.binding.require_dpop && scheme != Scheme::Dpop {
        return Ok(Checked::Held);
    }
    let certificate = match cnf.x5t_s256() {
        Some(_) => match &conf.dpop.client_cert_from {
            Some(fronts)
                if req
                    .peer_addr()
                    .is_some_and(|ip| client_cert::trusted(fronts, &ip)) =>
            {
                forwarded_certificate(req)
            }
            _ => client_certificate(req),
        },
        None => None,
    };
    if let Some(sha) = certificate {
        // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
        // lasts for this call, which reaches no nginx code, and the caller
        // holds no reference to the context across `check`.
        unsafe { (*ctx).certificate_presented(sha) };
    }
    let proof = || check_proof(req, conf, token);
    let decided = binding::decide(cnf, scheme, conf.dpop.binding, certificate.as_ref(), proof);
    let log = req.log();
    let proof = match decided {
        Ok(None) => return Ok(Checked::Held),
        Ok(Some(proof)) => proof,
        Err(refusal) => {
            ngx::ngx_log_error!(NGX_LOG_INFO, log, "auth_oauth2_token: {refusal}");
            count(req, conf, |ids| match metrics::dpop::counted_as(&refusal) {
                Ok(result) => ids.proof(result),
                Err(reason) => ids.binding(reason),
            });
            if refusal == BindingRefusal::Proof(proof::ProofError::UseNonce)
                && send_nonce(req, conf).is_none()
            {
                return Err(Outcome::Error);
            }
            return Err(Outcome::Refuse(challenge_error(&refusal)));
        }
    };
    // A nonce of the slot before passes; the client gets the current one.
    if proof.nonce_stale && send_nonce(req, conf).is_none() {
        return Err(Outcome::Error);
    }
    // SAFETY: `ctx` is the request's context, in its pool; the `&mut` lasts
    // for this call, which reaches no nginx code, and the caller holds no
    // reference to the context across `check`.
    unsafe { (*ctx).proof_held(proof.jkt) };
    let remembered = remember(req, conf, &proof.replay_id, proof.remember_until_s);
    if remembered == Remembered::New
        && Tier::of(req, conf).is_some()
        && !fleet_done_here(req, &proof.replay_id)
    {
        // Counted once the fleet has said.
        // SAFETY: `ctx` is the request's context, in its pool; the `&mut`
        // lasts for this call, which reaches no nginx code, and the caller
        // holds no reference to the context across `check`.
        unsafe { (*ctx).fleet_wanted(proof.replay_id, proof.remember_until_s) };
        return Ok(Checked::AskFleet);
    }
    let result = match remembered {
        Remembered::New => "valid",
        Remembered::Seen => "replayed",
        Remembered::Full => "store_full",
    };
    count(req, conf, |ids| ids.proof(result));
    match remembered {
        Remembered::New => Ok(Checked::Held),
        Remembered::Seen => {
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: DPoP proof refused: its jti was used before"
            );
            Err(Outcome::Refuse(BearerError::InvalidDpopProof(
                "the DPoP proof was used before",
            )))
        }
        Remembered::Full => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "auth_oauth2_token: the DPoP replay store is full: proof refused (503); make auth_oauth2_token_dpop_replay_zone larger or the window shorter"
            );
            Err(Outcome::Fail {
                timeout: false,
                status: 503,
                retry_after: Some(conf.dpop.proof.window_s.unsigned_abs()),
            })
        }
    }
}

/// The fleet stage: records the request's proof in the fleet's store
/// (`redis_tier::record_proof`) and waits for its word; a proof another
/// gateway accepted before is refused as this gateway's replays are. When
/// Redis fails (down, slow, an error, garbage), this gateway's store,
/// which accepted the proof, decides: the request goes on, counted as
/// `valid_local_only` and logged at `warn` (once per kind of failure per
/// 10 s per worker), as the Redis tier's other failures are a miss and
/// not a refusal.
/// `ctx` is the request's context (`RequestCtx::of`).
#[inline(never)]
pub fn fleet<'c>(req: &mut Req<'_>, conf: &'c LocationConf, ctx: *mut RequestCtx) -> Outcome<'c> {
    // SAFETY: `ctx` is the request's context, in its pool, alive for this
    // call; the state is copied out, no reference kept.
    let state = unsafe { (*ctx).fleet().clone() };
    let (replay_id, said) = match state {
        FleetCheck::Wanted { replay_id, until_s } => {
            let tenant = conf.shared_tenant.as_deref().unwrap_or_default();
            let started = match Tier::of(req, conf) {
                Some(tier) => {
                    redis_tier::record_proof(req, &tier, tenant, &replay_id, until_s).is_ok()
                }
                None => false,
            };
            if started {
                // SAFETY: as above; the `&mut` lasts for this call, which
                // reaches no nginx code.
                unsafe { (*ctx).fleet_asked() };
                return Outcome::Again;
            }
            let failure = Failure::Internal(500);
            crate::redis::call::note_failure(req.log(), &failure);
            (replay_id, FleetReplay::Failed(failure))
        }
        // Woken before the reply is in: go on waiting.
        FleetCheck::Asked { .. } => return Outcome::Again,
        FleetCheck::Said { replay_id, said } => (replay_id, said),
        FleetCheck::Unasked => return Outcome::Error,
    };
    let log = req.log();
    match said {
        FleetReplay::New => {
            fleet_done(req, &replay_id);
            count(req, conf, |ids| ids.proof("valid"));
            Outcome::Next(Stage::Requirements)
        }
        FleetReplay::Replayed => {
            count(req, conf, |ids| ids.proof("replayed_fleet"));
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "auth_oauth2_token: DPoP proof refused: its jti was used before at a gateway of the fleet"
            );
            Outcome::Refuse(BearerError::InvalidDpopProof(
                "the DPoP proof was used before",
            ))
        }
        FleetReplay::Failed(failure) => {
            fleet_done(req, &replay_id);
            count(req, conf, |ids| ids.proof("valid_local_only"));
            let allowed = GATE.with(|gate| {
                gate.borrow_mut()
                    .allow(failure.slot(), now_s(), LOG_INTERVAL_S)
            });
            if allowed {
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "auth_oauth2_token: the fleet's DPoP replay store (Redis) gave no answer ({}): proofs are checked against this gateway's replay store only",
                    failure.metric().name()
                );
            }
            Outcome::Next(Stage::Requirements)
        }
    }
}

thread_local! {
    /// This worker's gate for the fleet store's failure lines, one per kind.
    static GATE: RefCell<LogGate<KINDS>> = const { RefCell::new(LogGate::new()) };
}

fn now_s() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

/// Whether this request had the fleet's word on the proof `replay_id`
/// before an internal redirect.
fn fleet_done_here(req: &Req<'_>, replay_id: &[u8; 32]) -> bool {
    let saved = match req.is_main() {
        true => find_record(req),
        false => None,
    };
    saved
        .map(read_record)
        .is_some_and(|saved| saved.has_recorded && saved.recorded == *replay_id && saved.fleet_done)
}

/// The fleet had its word on the proof `replay_id`, which this request
/// recorded: a check after an internal redirect does not ask again.
fn fleet_done(req: &Req<'_>, replay_id: &[u8; 32]) {
    let saved = match req.is_main() {
        true => find_record(req),
        false => None,
    };
    if let Some(saved) = saved {
        if read_record(saved).recorded == *replay_id {
            // SAFETY: `saved` is a SavedProof `record` wrote whole into a
            // cleanup of the request's pool, alive with the request;
            // nothing borrows it (it is only copied out), so the write is
            // the only access.
            unsafe { (*saved.as_ptr()).fleet_done = true };
        }
    }
}

/// Adds one to the series `pick` names, when the location has the series.
fn count(req: &Req<'_>, conf: &LocationConf, pick: impl FnOnce(DpopIds) -> Option<usize>) {
    let Some(id) = conf.dpop.metrics.and_then(pick) else {
        return;
    };
    if let Some(main) = req.main_conf() {
        main.counters.add(id, 1);
    }
}

/// Adds `DPoP-Nonce` with the current nonce to the answer (RFC 9449 §9),
/// whether the request passes or is refused.
fn send_nonce(req: &mut Req<'_>, conf: &LocationConf) -> Option<()> {
    let key = conf.dpop.nonce_key.as_ref()?;
    let nonce = key.issue(now_ms() / 1000);
    let value = req.pool_copy(nonce.as_bytes())?;
    req.push_response_header(b"DPoP-Nonce", b"dpop-nonce", value)
        .map(|_| ())
}

/// The refusal as the client is told it.
fn challenge_error(refusal: &BindingRefusal) -> BearerError<'static> {
    if *refusal == BindingRefusal::Proof(proof::ProofError::UseNonce) {
        return BearerError::UseDpopNonce(refusal.description());
    }
    match (refusal.is_proof_error(), refusal.concerns_dpop()) {
        (true, _) => BearerError::InvalidDpopProof(refusal.description()),
        (false, true) => BearerError::InvalidTokenForDpop(refusal.description()),
        (false, false) => BearerError::InvalidTokenBecause(refusal.description()),
    }
}

/// The request's proof for `token` checked against the request.
fn check_proof(
    req: &Req<'_>,
    conf: &LocationConf,
    token: &[u8],
) -> Result<proof::Proof, proof::ProofError> {
    let (value, count) = match req.is_main() {
        // No memory for the record: no proof, refused.
        true => match find_record(req) {
            Some(saved) => {
                let saved = read_record(saved);
                // SAFETY: `record` took the value from the request's
                // header list: request memory, alive for this call.
                let value =
                    unsafe { core::slice::from_raw_parts(saved.value.data, saved.value.len) };
                (value, saved.count)
            }
            None => (&[][..], 0),
        },
        false => {
            let ([value], count) = req.header_values::<1>(b"DPoP");
            (value, count)
        }
    };
    let headers: Vec<&[u8]> = match count {
        0 => Vec::new(),
        1 => vec![value],
        _ => vec![value, value],
    };
    let uri = match &conf.dpop.origin {
        Some(origin) => htu::request_uri_at(origin, req.unparsed_uri()),
        None => request_uri(req),
    };
    let request = ProofRequest {
        headers: &headers,
        method: req.method_name(),
        uri: uri.as_deref(),
        token,
        now_s: now_ms() / 1000,
        nonce_key: conf.dpop.nonce_key.as_ref(),
    };
    proof::check(&request, &conf.dpop.proof)
}

/// The request's URI as a proof's `htu` must name it, without a configured
/// origin: the scheme of the connection, the `Host` the client sent (else
/// the server's name), the request target as sent.
fn request_uri(req: &Req<'_>) -> Option<String> {
    let scheme = match req.over_tls() {
        true => "https",
        false => "http",
    };
    htu::request_uri(scheme, req.host(), req.unparsed_uri())
}

/// The SHA-256 of the certificate a trusted front forwarded (RFC 9440
/// `Client-Cert`), when it forwarded exactly one.
fn forwarded_certificate(req: &Req<'_>) -> Option<[u8; 32]> {
    if !req.is_main() {
        return None;
    }
    let saved = read_record(find_record(req)?);
    // SAFETY: `record` took the value from the request's header list:
    // request memory, alive for this call.
    let value = unsafe { core::slice::from_raw_parts(saved.cert_value.data, saved.cert_value.len) };
    match saved.cert_count {
        1 => client_cert::from_header(&[value]),
        _ => None,
    }
}

/// The SHA-256 of this connection's client certificate (DER), when the
/// client sent one over TLS.
fn client_certificate(req: &Req<'_>) -> Option<[u8; 32]> {
    req.client_certificate_sha256()
}

/// Records the proof in the location's replay store; a proof this request
/// recorded itself (before an internal redirect) is not a replay.
fn remember(req: &Req<'_>, conf: &LocationConf, replay_id: &[u8; 32], until_s: i64) -> Remembered {
    let Some(store) = conf.dpop.replay_zone else {
        // A location that checks tokens always has a store: fail closed.
        return Remembered::Full;
    };
    let saved = match req.is_main() {
        true => find_record(req),
        false => None,
    };
    let recorded_here = saved
        .map(read_record)
        .is_some_and(|saved| saved.has_recorded && saved.recorded == *replay_id);
    if recorded_here {
        return Remembered::New;
    }
    // SAFETY: a replay zone was added by `auth_oauth2_token_dpop_replay_zone`
    // or, for a checking location that names none, by the merge (lib.rs),
    // with `init_zone` as its init callback, which nginx ran before any
    // request; the zone lives as long as the cycle.
    let zone = unsafe { ShmZone::new(store.cast()) };
    let found = zone.remember(
        &CacheKey(*replay_id),
        until_s.saturating_mul(1000),
        now_ms(),
    );
    if let (Remembered::New, Some(saved)) = (found, saved) {
        // SAFETY: `saved` is a SavedProof `record` wrote whole into a
        // cleanup of the request's pool, alive with the request; nothing
        // borrows it (it is only copied out), so the write is the only access.
        unsafe {
            (*saved.as_ptr()).recorded = *replay_id;
            (*saved.as_ptr()).has_recorded = true;
        }
    }
    found
}
