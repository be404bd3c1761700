//! The promise model's world: the IdP's knowledge, the requests under way,
//! what each request's flow sees around it (`Around`, an `Env`), and the
//! judge of every answered request.

use std::sync::atomic::AtomicU64;

use proptest::prelude::*;

use crate::oauth::cache::flow::promise::parts::{
    key_of, token_bytes, Gateway, Gw, IdpMode, Op, Redis, Token, BREAKER, FLEET_POLICY, GATEWAYS,
    LOCATIONS, PREFIX, START, TOKENS,
};
use crate::oauth::cache::flow::{
    refreshed, step, Answer, CacheZone, Env, Refreshing, Step, PURGE_CUTOFF_KEEP_MS,
};
use crate::oauth::cache::key::token_tag;
use crate::oauth::cache::kinds::Introspection;
use crate::oauth::cache::slot::{CacheStatus, Role, Slot, TierEntry, TierNames};
use crate::oauth::cache::{CacheKey, CachePolicy};
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::{self, ClaimPaths, IdpFailure, IntrospectionResult};
use crate::redis::fleet::{self, FleetKey, FleetKeys};
use crate::redis::resp;
use crate::redis::write::{self, Expiry};
use crate::redis::{purge, tier_read};
use crate::resilience::breaker::Health;

/// What a waiting request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Tier,
    /// The IdP, asked at `asked_at`, when it would say `said` (an answer
    /// number, or `None`: inactive).
    Idp {
        said: Option<usize>,
    },
    Worker,
}

struct Request {
    gw: usize,
    loc: usize,
    token: usize,
    slot: Slot<Answer<Introspection>, Gw>,
    status: Option<CacheStatus>,
    wait: Option<Wait>,
    /// Whether this request's own call failed (what allows `STALE`).
    call_failed: bool,
    /// The answer this request's own call got: fresh, however long the
    /// IdP took (its age is not the cache's doing).
    own_answer: Option<usize>,
}

pub(super) struct World {
    now: i64,
    tokens: Vec<Token>,
    idp: IdpMode,
    idp_up_since: i64,
    /// The number of the operation under way: what orders events within
    /// one millisecond.
    seq: u64,
    /// Every active answer the IdP gave: its token, when it was asked, and
    /// in which operation.
    answers: Vec<(usize, i64, u64)>,
    /// The operation of each token's last purge.
    purged_in: [u64; TOKENS],
    gateways: Vec<Gateway>,
    redis: Redis,
    keys: FleetKeys,
    waiting: Vec<Request>,
    refreshes: Vec<(Refreshing<Gw>, Option<usize>)>,
    pub(super) passes: [usize; 3],
    /// Entries of the Redis tier that opened but failed the checks of a
    /// fresh answer.
    pub(super) refused_from_tier: usize,
}

impl World {
    pub(super) fn new() -> World {
        let keys = FleetKeys {
            current: FleetKey::from_secret(&[b'k'; 32]).unwrap(),
            old: None,
        };
        World {
            now: START,
            tokens: (0..TOKENS)
                .map(|i| Token {
                    exp_ms: START + 600_000 * (i as i64 + 1),
                    revoked_at: None,
                })
                .collect(),
            idp: IdpMode::Up,
            idp_up_since: START - 3_600_000,
            seq: 0,
            answers: Vec::new(),
            purged_in: [0; TOKENS],
            gateways: (0..GATEWAYS)
                .map(|_| Gateway {
                    breaker: [const { AtomicU64::new(0) }; 6],
                    last_failure: i64::MIN / 2,
                    inactive_since: [i64::MIN; TOKENS],
                })
                .collect(),
            redis: Redis::default(),
            keys,
            waiting: Vec::new(),
            refreshes: Vec::new(),
            passes: [0; 3],
            refused_from_tier: 0,
        }
    }

    /// Seals `entry` at `token`'s names and writes it as the module does.
    pub(super) fn write_sealed(&mut self, token: usize, entry: &TierEntry, now_ms: i64) {
        let names = self.names(token);
        let (slot, field) = &names.places[0];
        let ttl_ms = entry.fresh_until_ms - now_ms;
        if ttl_ms > 0 {
            let place = (slot.as_slice(), field.as_slice());
            let (commands, count) =
                write::entry_commands(Expiry::Extends, &self.keys.current, place, entry, ttl_ms);
            self.redis.run(&commands, count, now_ms);
        }
    }

    /// The token's entries leave the Redis tier (`HDEL` of each name).
    pub(super) fn forget_sealed(&mut self, token: usize) {
        let names = self.names(token);
        let mut commands = Vec::new();
        for (slot, field) in &names.places {
            resp::command(&mut commands, &[b"HDEL", slot, field]);
        }
        self.redis.run(&commands, names.places.len(), self.now);
    }

    pub(super) fn now(&self) -> i64 {
        self.now
    }

    fn names(&self, token: usize) -> TierNames {
        let bytes = token_bytes(token);
        let places = self
            .keys
            .iter()
            .map(|k| {
                (
                    fleet::token_slot(k, PREFIX, &bytes),
                    fleet::entry_field(k, FLEET_POLICY),
                )
            })
            .collect();
        TierNames { places }
    }

    /// What the IdP says now about `token`: the number of a new active
    /// answer, or `None` for inactive.
    fn idp_says(&mut self, token: usize) -> Option<usize> {
        let t = &self.tokens[token];
        let active = self.now < t.exp_ms && t.revoked_at.is_none();
        active.then(|| {
            self.answers.push((token, self.now, self.seq));
            self.answers.len() - 1
        })
    }

    /// The IdP's reply as the subrequest would carry it, read by the real
    /// reader, and what the breaker learns from it.
    fn reply(&self, token: usize, said: Option<usize>) -> (Answer<Introspection>, Health) {
        let exp_s = self.tokens[token].exp_ms / 1000;
        let (status, body, retry_after) = match self.idp {
            IdpMode::Up => match said {
                Some(n) => (
                    200,
                    format!(r#"{{"active":true,"sub":"a{n}","exp":{exp_s}}}"#),
                    None,
                ),
                None => (200, r#"{"active":false}"#.to_string(), None),
            },
            IdpMode::Failing => (500, String::new(), None),
            IdpMode::Busy(s) => (503, String::new(), Some(s)),
            IdpMode::Throttling => (429, String::new(), None),
            IdpMode::Timeout => {
                let failure = IdpFailure::Call(crate::oauth::call::CallFailure::Timeout);
                return (Err(failure), Health::Down);
            }
        };
        let reply = IdpReply {
            finalize_rc: 0,
            status,
            content_type: b"application/json",
            body: body.as_bytes(),
        };
        let answer = introspection::interpret(reply, &ClaimPaths::default());
        (answer, Health::of(true, status, retry_after))
    }

    /// Runs a request's flow as far as it goes; judges it when answered.
    fn run(&mut self, mut request: Request) -> Result<(), TestCaseError> {
        let step = {
            let mut env = Around {
                world: self,
                request: &mut request,
            };
            step(&mut env)
        };
        match step {
            Step::Again => {
                prop_assert!(request.wait.is_some(), "waits for something");
                self.waiting.push(request);
                Ok(())
            }
            Step::Answered => self.judge(&request),
            Step::Error => Err(TestCaseError::fail("the model's gateway never fails")),
        }
    }

    fn judge(&mut self, request: &Request) -> Result<(), TestCaseError> {
        let policy = LOCATIONS[request.loc];
        let token = request.token;
        let answer = request.slot.answer();
        if let (Some(Ok(IntrospectionResult::Inactive)), Some(CacheStatus::Expired)) =
            (answer, request.status)
        {
            let since = &mut self.gateways[request.gw].inactive_since[token];
            *since = (*since).max(self.now);
        }
        let claims = match answer {
            Some(Ok(IntrospectionResult::Active(claims))) => claims,
            other => {
                let t = &self.tokens[token];
                let active = self.now < t.exp_ms && t.revoked_at.is_none();
                // An open breaker refuses until a probe gets through (its
                // own tests); anything else must not refuse a good token.
                let breaker_open = matches!(
                    other,
                    Some(Err(IdpFailure::Call(
                        crate::oauth::call::CallFailure::BreakerOpen(_)
                    )))
                ) && self.gateways[request.gw].breaker().is_open();
                let settled = !breaker_open
                    && self.idp == IdpMode::Up
                    && self.now - self.idp_up_since > 2 * BREAKER.open_ms as i64
                    && self.now - self.gateways[request.gw].last_failure
                        > 2 * BREAKER.open_ms as i64;
                prop_assert!(
                    !(active && settled),
                    "an active token refused while the IdP is up: {other:?}"
                );
                return Ok(());
            }
        };
        let n: usize = claims.sub().unwrap()[1..].parse().unwrap();
        let (answered_token, obtained, asked_in) = self.answers[n];
        let age = self.now - obtained;
        let stale = request.status == Some(CacheStatus::Stale);
        prop_assert_eq!(answered_token, token, "an answer about another token");
        // The IdP's own answer is as of when it was asked; a cached one is
        // never served past `exp`.
        let own = request.own_answer == Some(n);
        let at = if own { obtained } else { self.now };
        prop_assert!(at < self.tokens[token].exp_ms, "served past exp");
        prop_assert!(
            asked_in > self.purged_in[token],
            "served from before a purge"
        );
        prop_assert!(
            obtained >= self.gateways[request.gw].inactive_since[token],
            "served from before an inactive answer that replaced it"
        );
        match stale {
            false if own => {}
            false => prop_assert!(
                age < policy.max_ttl_ms,
                "past the reader's max_ttl: {}",
                age
            ),
            true => {
                prop_assert!(request.call_failed, "STALE without a failed call");
                prop_assert!(
                    age < policy.max_ttl_ms + policy.stale_if_error_ms,
                    "past the reader's stale window: {}",
                    age
                );
            }
        }
        let how = match request.status {
            Some(CacheStatus::Stale) => 1,
            Some(CacheStatus::HitShared) => 2,
            _ => 0,
        };
        self.passes[how] += 1;
        Ok(())
    }

    pub(super) fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        self.seq += 1;
        match op {
            Op::Request { gw, loc, token } => {
                let request = Request {
                    gw: gw.into(),
                    loc: loc.into(),
                    token: token.into(),
                    slot: Slot::default(),
                    status: None,
                    wait: None,
                    call_failed: false,
                    own_answer: None,
                };
                self.run(request)?;
            }
            Op::Deliver { n } => {
                if self.waiting.is_empty() {
                    return Ok(());
                }
                let mut request = self.waiting.remove(usize::from(n) % self.waiting.len());
                match request.wait.take() {
                    Some(Wait::Tier) => {
                        let names = self.names(request.token);
                        let replies = names
                            .places
                            .iter()
                            .map(|(slot, field)| self.redis.hget(slot, field, self.now))
                            .collect();
                        let policy = LOCATIONS[request.loc];
                        let read = tier_read::first_fresh(
                            &self.keys,
                            &policy,
                            &names,
                            replies,
                            self.now,
                            |_| {},
                        );
                        request.slot.tier_said(read);
                    }
                    Some(Wait::Idp { said }) => {
                        let (answer, health) = self.reply(request.token, said);
                        request.call_failed = answer.is_err();
                        request.own_answer = said.filter(|_| answer.is_ok());
                        self.report(request.gw, health);
                        request.slot.answered_once(|| answer);
                    }
                    Some(Wait::Worker) | None => {}
                }
                self.run(request)?;
            }
            Op::Refreshed { n } => {
                if self.refreshes.is_empty() {
                    return Ok(());
                }
                let (refreshing, said) =
                    self.refreshes.remove(usize::from(n) % self.refreshes.len());
                let token = (0..TOKENS).find(|t| key_of(*t) == refreshing.key).unwrap();
                let (answer, health) = self.reply(token, said);
                self.report(refreshing.zone.0, health);
                // The Redis tier gets what the refresh kept, or loses the
                // token's entries, as the glue does (`handler/idp_call.rs`).
                let update = refreshed::<Introspection, _>(&refreshing, answer, self.now);
                if update.forget {
                    self.forget_sealed(token);
                }
                if let Some(entry) = update.write {
                    self.write_sealed(token, &entry, self.now);
                }
            }
            Op::Abandon { n, died } => {
                if self.waiting.is_empty() {
                    return Ok(());
                }
                let mut request = self.waiting.remove(usize::from(n) % self.waiting.len());
                if !died {
                    if let Some(held) = request.slot.abandon_mark() {
                        if held.mark.taken_off_at(self.now) {
                            held.zone.release(&held.mark.key);
                        }
                    }
                }
            }
            Op::Revoke { token } => {
                let t = &mut self.tokens[usize::from(token)];
                t.revoked_at.get_or_insert(self.now);
            }
            Op::Purge { token } => {
                let token = usize::from(token);
                let tag = token_tag(&token_bytes(token));
                let keep = self.now + PURGE_CUTOFF_KEEP_MS;
                for gw in 0..GATEWAYS {
                    Gw(gw).purge_tag(&tag, self.now, keep);
                }
                self.purged_in[token] = self.seq;
                let commands = purge::commands(
                    &self.keys,
                    PREFIX,
                    b"channel",
                    &token_bytes(token),
                    &tag,
                    self.now,
                );
                self.redis.run(&commands, purge::REPLIES, self.now);
            }
            Op::Idp(mode) => {
                if mode == IdpMode::Up && self.idp != IdpMode::Up {
                    self.idp_up_since = self.now;
                }
                self.idp = mode;
            }
            Op::Replay { n } => {
                if let Some((slot, field, value)) = self
                    .redis
                    .written
                    .get(usize::from(n) % self.redis.written.len().max(1))
                    .cloned()
                {
                    let mut commands = Vec::new();
                    resp::command(&mut commands, &[b"HSET", &slot, &field, &value]);
                    resp::command(&mut commands, &[b"PEXPIRE", &slot, b"86400000"]);
                    self.redis.run(&commands, 2, self.now);
                }
            }
            Op::FlushRedis => self.redis.hashes.clear(),
            Op::Reload { gw } => {
                // A new cycle closes the breakers (all but the openings count).
                let gateway = &mut self.gateways[usize::from(gw)];
                for word in &gateway.breaker[..5] {
                    word.store(0, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Op::Advance { ms } => self.now += ms,
        }
        Ok(())
    }

    fn report(&mut self, gw: usize, health: Health) {
        if matches!(health, Health::Down | Health::Busy(_)) {
            self.gateways[gw].last_failure = self.now;
        }
        let gateway = &self.gateways[gw];
        gateway.breaker().report(&BREAKER, self.now as u64, health);
    }
}

/// A request's surroundings in the model.
struct Around<'w> {
    world: &'w mut World,
    request: &'w mut Request,
}

impl Env for Around<'_> {
    type Kind = Introspection;
    type Zone = Gw;

    fn slot(&mut self) -> &mut Slot<Answer<Introspection>, Gw> {
        &mut self.request.slot
    }
    fn now_ms(&self) -> i64 {
        self.world.now
    }
    fn is_subrequest(&self) -> bool {
        false
    }
    fn cache(&self) -> Option<(Gw, CachePolicy)> {
        Some((Gw(self.request.gw), LOCATIONS[self.request.loc]))
    }
    fn prepare(&mut self) -> bool {
        true
    }
    fn key(&mut self) -> Option<CacheKey> {
        Some(key_of(self.request.token))
    }
    fn token_tag(&self) -> [u8; 8] {
        token_tag(&token_bytes(self.request.token))
    }
    fn subject_exp(&mut self) -> Option<i64> {
        None
    }
    fn refresh(&mut self, refreshing: Refreshing<Gw>) {
        let said = self.world.idp_says(self.request.token);
        self.world.refreshes.push((refreshing, said));
    }
    fn looked_up(&mut self, status: CacheStatus, _count: bool) {
        if self.request.status.is_none() || status == CacheStatus::Hit {
            self.request.status = Some(status);
        }
    }
    fn served_from(&mut self, status: CacheStatus) {
        self.request.status = Some(status);
    }
    fn coalesced(&mut self) {}
    fn join(&mut self, key: CacheKey) -> Option<Role> {
        // Every request stands for a worker of its own: the zone's marks
        // coalesce them.
        self.request.slot.joined(key, Role::Leader);
        Some(Role::Leader)
    }
    fn wake_in(&mut self, _ms: u64) -> bool {
        self.request.wait = Some(Wait::Worker);
        true
    }
    fn tier_names(&mut self) -> Option<TierNames> {
        Some(self.world.names(self.request.token))
    }
    fn read_tier(&mut self) -> bool {
        self.request.wait = Some(Wait::Tier);
        true
    }
    fn tier_entry_refused(&mut self) {
        self.world.refused_from_tier += 1;
    }
    fn write_tier(&mut self, entry: &TierEntry, now_ms: i64) {
        self.world.write_sealed(self.request.token, entry, now_ms);
    }
    fn forget_in_tier(&mut self) {
        self.world.forget_sealed(self.request.token);
    }
    fn admit(&mut self) -> Result<(), u64> {
        let gateway = &self.world.gateways[self.request.gw];
        match gateway.breaker().admit(&BREAKER, self.world.now as u64) {
            crate::resilience::breaker::Admit::Refuse { retry_after_s } => {
                self.request.call_failed = true;
                Err(retry_after_s)
            }
            _ => Ok(()),
        }
    }
    fn call_idp(&mut self) -> bool {
        let said = self.world.idp_says(self.request.token);
        self.request.wait = Some(Wait::Idp { said });
        true
    }
    fn hand_over(&mut self, _key: CacheKey, _answer: Option<Answer<Introspection>>) {}
}
