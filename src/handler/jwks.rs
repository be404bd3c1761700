//! The keys of an issuer whose JWK Set is fetched from an internal location
//! (`auth_oauth2_token_jwt_keys_request`): one set per gateway, in the keys
//! zone (`auth_oauth2_token_jwt_keys_cache`), which every worker reads and
//! which outlives reloads; each worker keeps the keys of the set it last
//! read, made ready once, and reads the zone again only when a token names
//! a `kid` it lacks or the set is due for a refresh.
//!
//! What a request does is `oauth/jose/refresh.rs`'s decision over what the
//! zone holds: the set (with when it was fetched and until when it is
//! fresh), a mark while a worker fetches, and when the last fetch started.
//! A fetch is a GET with no header of the client's; its answer, checked by
//! `oauth/jose/fetched.rs`, replaces the set, a failure leaves it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ngx::ffi::{ngx_int_t, NGX_LOG_INFO, NGX_LOG_WARN};

use crate::conf::jwt::KeysCache;
use crate::handler::inflight;
use crate::metrics::jwt::{FetchResult, JwtIds, KeySetIds};
use crate::nginx::req::{now_ms, Req};
use crate::nginx::subrequest;
use crate::oauth::cache::flow::CacheZone;
use crate::oauth::cache::{CacheKey, Lifetime};
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::jose::alg::Algorithms;
use crate::oauth::jose::fetched::{self, FetchFailure, StoredSet};
use crate::oauth::jose::jwk::{Jwk, MAX_JWKS_BYTES};
use crate::oauth::jose::jws::Header;
use crate::oauth::jose::refresh::{self, Decision, RefreshPolicy, SetState};
use crate::oauth::jose::verify::{self, KeysFetch};
use crate::shm::table::{At, Claim, Lookup};
use crate::shm::zone::{self, ShmZone};

/// How long a fetch holds the others back before they may try again (a
/// worker that died while fetching holds them no longer).
const FETCH_DEADLINE_MS: i64 = 10_000;

/// How often a request waiting for another worker's fetch looks again.
const WAIT_POLL_MS: u64 = 20;

/// The keys a request may verify with, or why there are none.
pub enum Keys {
    Ready(Rc<[Jwk]>),
    /// A fetch (this request's or another's) is under way: NGX_AGAIN.
    Again,
    /// The token's `kid` is in no set, and the set was fetched lately.
    Unknown,
    /// No set fresh enough, and none can be fetched now: 503.
    Unavailable,
    /// nginx could not start the fetch or a timer (out of memory).
    Error,
}

/// The set a worker holds, as it read it from the zone or fetched it.
#[derive(Clone)]
struct Held {
    fetched_ms: i64,
    fresh_until_ms: i64,
    keys: Rc<[Jwk]>,
    /// The zone's count of changes (`ShmZone::changes`) when this worker
    /// last found this set to be the zone's newest: while the count stays,
    /// no other worker stored a set, and this one is used without the
    /// zone's lock. `None`: look in the zone first.
    seen: Option<u64>,
}

thread_local! {
    /// This worker's sets, by their name in the zone.
    static HELD: RefCell<HashMap<CacheKey, Held>> = RefCell::new(HashMap::new());
}

/// What a fetch needs once its answer is in.
struct Fetch {
    zone: ShmZone,
    set_key: CacheKey,
    fetching_key: CacheKey,
    refresh: RefreshPolicy,
    algorithms: Algorithms,
    metrics: Option<JwtIds>,
    gauges: Option<KeySetIds>,
}

/// The keys for a token with `header`, of an issuer whose set `fetch` names
/// and which accepts `algorithms`; `metrics`: the JWT series and the set's
/// gauges.
pub fn keys(
    req: &mut Req<'_>,
    cache: &KeysCache,
    fetch: &KeysFetch,
    algorithms: Algorithms,
    header: &Header,
    (metrics, gauges): (Option<JwtIds>, Option<KeySetIds>),
) -> Keys {
    let now = now_ms();
    let policy = cache.refresh;
    let held = HELD.with_borrow(|held| held.get(&fetch.set_key).cloned());
    let known = |held: &Option<Held>| {
        held.as_ref()
            .is_some_and(|h| verify::candidates(&h.keys, header).next().is_some())
    };
    // SAFETY: the keys cache's zone was added by its directive and
    // initialised by nginx before any request ran.
    let zone = unsafe { ShmZone::new(cache.zone.zone.cast()) };
    // A set another worker stored since (a rotation: a key gone) is read
    // at once, not when this worker's copy is due.
    // SAFETY: as above.
    let changes = unsafe { zone::changes_seen(cache.zone.zone.cast()) }.map(|(_, n)| n);
    if let Some(h) = &held {
        if known(&held) && now < refresh_at(h, &policy) && h.seen.is_some() && h.seen == changes {
            return Keys::Ready(h.keys.clone());
        }
    }
    let held = read_zone(zone, fetch, algorithms, held, now, changes);
    let state = shared_state(zone, fetch, held.as_ref(), now);
    let job = || Fetch {
        zone,
        set_key: fetch.set_key,
        fetching_key: fetch.fetching_key,
        refresh: policy,
        algorithms,
        metrics,
        gauges,
    };
    match refresh::decide(&state, &policy, known(&held), now) {
        Decision::Use => held.map_or(Keys::Unavailable, |h| Keys::Ready(h.keys)),
        Decision::UseAndRefresh => {
            if claim(zone, fetch, &policy, now) {
                // A refresh that cannot start is tried again by a later request.
                let _ = start(req, &fetch.uri, true, job());
            }
            held.map_or(Keys::Unavailable, |h| Keys::Ready(h.keys))
        }
        Decision::FetchAndWait if claim(zone, fetch, &policy, now) => {
            match start(req, &fetch.uri, false, job()) {
                Ok(()) => Keys::Again,
                Err(()) => {
                    zone.release(&fetch.fetching_key);
                    Keys::Error
                }
            }
        }
        Decision::FetchAndWait | Decision::Wait => match inflight::wake_after(req, WAIT_POLL_MS) {
            Some(()) => Keys::Again,
            None => Keys::Error,
        },
        Decision::UnknownKey => Keys::Unknown,
        Decision::Unavailable => Keys::Unavailable,
    }
}

/// From when a use of the set fetches it again in the background.
fn refresh_at(held: &Held, policy: &RefreshPolicy) -> i64 {
    let lifetime = (held.fresh_until_ms - held.fetched_ms).max(0);
    held.fetched_ms + lifetime / 100 * i64::from(policy.refresh_pct.min(100))
}

/// The set in the zone, when it is newer than the one this worker holds
/// (whose keys are then made ready); else the one held. Kept as seen at
/// the zone's count `changes`, read before the look-up.
fn read_zone(
    zone: ShmZone,
    fetch: &KeysFetch,
    algorithms: Algorithms,
    held: Option<Held>,
    now: i64,
    changes: Option<u64>,
) -> Option<Held> {
    let newest = newest_in_zone(zone, fetch, algorithms, held, now)?;
    let set = Held {
        seen: changes,
        ..newest
    };
    HELD.with_borrow_mut(|held| held.insert(fetch.set_key, set.clone()));
    Some(set)
}

/// [`read_zone`]'s look-up: the zone's set when it is newer than `held`.
fn newest_in_zone(
    zone: ShmZone,
    fetch: &KeysFetch,
    algorithms: Algorithms,
    held: Option<Held>,
    now: i64,
) -> Option<Held> {
    let held_at = held.as_ref().map(|h| h.fetched_ms);
    let at = every_entry(now);
    // Only a set this worker lacks is copied out of the zone.
    let (found, _) = zone.lookup(&fetch.set_key, at, |entry| {
        let stored = StoredSet::decode(entry)?;
        Some(match Some(stored.fetched_ms) == held_at {
            true => None,
            false => Some((
                stored.fetched_ms,
                stored.fresh_until_ms,
                stored.body.to_vec(),
            )),
        })
    });
    let Lookup::Hit(Some((fetched_ms, fresh_until_ms, body))) = found else {
        return held;
    };
    if held_at.is_some_and(|at| at > fetched_ms) {
        return held;
    }
    // The zone holds only sets a worker checked; one that no longer reads
    // (another version's rules) is ignored like a missing one.
    let Ok(keys) = fetched::keys_of_body(&body, algorithms) else {
        return held;
    };
    Some(Held {
        fetched_ms,
        fresh_until_ms,
        keys: keys.into(),
        seen: None,
    })
}

/// A reader that takes any entry until its writer's end.
fn every_entry(now: i64) -> At {
    At {
        now_ms: now,
        max_ttl_ms: i64::MAX,
        stale_ms: 0,
        refresh_pct: 0,
        refresh_for_ms: 0,
    }
}

/// What every worker knows of the set: the one in hand, whether a fetch
/// is under way, and when the last one started.
fn shared_state(zone: ShmZone, fetch: &KeysFetch, held: Option<&Held>, now: i64) -> SetState {
    let at = every_entry(now);
    let (attempt, _) = zone.lookup(&fetch.attempt_key, at, |entry| {
        Some(i64::from_be_bytes(*entry.first_chunk::<8>()?))
    });
    let (fetching, _) = zone.lookup(&fetch.fetching_key, at, |_| Some(()));
    SetState {
        fetched_ms: held.map(|h| h.fetched_ms),
        fresh_until_ms: held.map_or(0, |h| h.fresh_until_ms),
        last_attempt_ms: match attempt {
            Lookup::Hit(at) => Some(at),
            _ => None,
        },
        fetching_until_ms: matches!(fetching, Lookup::Pending).then_some(now + 1),
    }
}

/// Whether this request fetches: it marks the set as being fetched (one
/// fetch at a time across workers) and notes when the fetch started.
fn claim(zone: ShmZone, fetch: &KeysFetch, policy: &RefreshPolicy, now: i64) -> bool {
    let at = every_entry(now);
    if zone.claim(&fetch.fetching_key, at, now + FETCH_DEADLINE_MS) == Claim::Taken {
        return false;
    }
    let quiet = policy.unknown_kid_interval_ms.max(policy.retry_ms);
    let life = Lifetime {
        fresh_until: now + quiet,
        stale_until: now + quiet,
    };
    zone.insert(&fetch.attempt_key, &now.to_be_bytes(), life, now, now);
    true
}

/// Starts the GET of the set at the internal location `uri`, waited for by
/// `req` or in the background.
fn start(req: &mut Req<'_>, uri: &str, background: bool, job: Fetch) -> Result<(), ()> {
    let mut sr = subrequest::start(req, uri.as_bytes(), background, job, answered)?;
    subrequest::make_get(&mut sr).ok_or(())?;
    sr.push_header(
        b"Accept",
        b"accept",
        b"application/jwk-set+json, application/json",
    )
    .ok_or(())?;
    // A set may be larger than subrequest_output_buffer_size.
    subrequest::make_room_for_answer(&mut sr, MAX_JWKS_BYTES).ok_or(())
}

/// The fetch's answer is in: a usable set replaces the zone's and this
/// worker's; anything else is logged and leaves them.
fn answered(sr: &mut Req<'_>, job: &mut Fetch, rc: ngx_int_t) {
    let now = now_ms();
    let reply =
        IdpReply::new(rc, sr.status(), subrequest::answer(sr)).with_content_type(sr.content_type());
    let uri = String::from_utf8_lossy(sr.uri()).into_owned();
    let result = match fetched::keys_of(&reply, job.algorithms) {
        Ok(keys) => {
            let (cache_control, n) = sr.response_header_values::<1>(b"Cache-Control");
            let lifetime = refresh::lifetime_ms((n > 0).then_some(cache_control[0]), &job.refresh);
            let stored = StoredSet {
                fetched_ms: now,
                fresh_until_ms: now + lifetime,
                body: reply.body,
            };
            let end = stored.fresh_until_ms.saturating_add(job.refresh.stale_ms);
            let life = Lifetime {
                fresh_until: end,
                stale_until: end,
            };
            let count = keys.len();
            // Seen at no count: the count after the insert may already
            // include another worker's newer set.
            let set = Held {
                fetched_ms: now,
                fresh_until_ms: stored.fresh_until_ms,
                keys: keys.into(),
                seen: None,
            };
            if !job
                .zone
                .insert(&job.set_key, &stored.encode(), life, now, now)
            {
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    sr.log(),
                    "auth_oauth2_token: the JWK Set from \"{uri}\" does not fit in the keys zone; only this worker uses it"
                );
            }
            HELD.with_borrow_mut(|held| held.insert(job.set_key, set));
            if let (Some(ids), Some(main)) = (job.gauges, sr.main_conf()) {
                main.counters.set(ids.keys(), count as u64);
                main.counters
                    .set(ids.fetched_at(), u64::try_from(now / 1000).unwrap_or(0));
            }
            ngx::ngx_log_error!(
                NGX_LOG_INFO,
                sr.log(),
                "auth_oauth2_token: JWK Set fetched from \"{uri}\": {count} keys, fresh for {} s",
                lifetime / 1000
            );
            FetchResult::Fetched
        }
        Err(failure) => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                sr.log(),
                "auth_oauth2_token: {failure} (\"{uri}\"); the keys in hand stay"
            );
            match failure {
                FetchFailure::Call(_) | FetchFailure::Status(_) => FetchResult::Failed,
                FetchFailure::NotASet(_) | FetchFailure::NoUsableKey => FetchResult::Refused,
            }
        }
    };
    if let (Some(ids), Some(main)) = (job.metrics, sr.main_conf()) {
        main.counters.add(ids.fetch(result), 1);
    }
    job.zone.release(&job.fetching_key);
    subrequest::forget_answer(sr);
}
