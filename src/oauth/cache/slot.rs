//! One question to an IdP endpoint and where it stands, in plain data: a
//! request's slot for it, changed only through transitions named for what
//! happens (`start_looking`, `wait_for_leader`, `ask_idp`, `answered` ...).
//! The cache flow (`flow.rs`) drives it; nginx's glue keeps one per
//! question in the request's context.

use crate::oauth::cache::{CacheKey, Mark};
pub use crate::redis::fleet::TierEntry;

/// One question to an IdP endpoint and where it stands: answered from the
/// cache, from the Redis tier, by another request of this worker, or by
/// the IdP itself.
#[derive(Debug)]
pub struct Slot<A, Z> {
    answer: Option<A>,
    /// A cached answer past its time, served if the IdP fails
    /// (`stale_if_error`) before the reader's stale window ends (ms).
    stale: Option<(A, i64)>,
    flow: Flow,
    /// This request's place in the worker's in-flight table, if any.
    flight: Option<Flight>,
    /// What the Redis tier said, and where the answer lives there.
    tier: TierRead,
    tier_names: Option<TierNames>,
    /// When this request asked the IdP (and so stores the answer).
    asked_at_ms: Option<i64>,
    /// The token's purge cutoff in the zone when the last look-up missed:
    /// a later one (a purge since) voids what the request got from then on.
    cutoff_at_look: Option<i64>,
    /// The key this request marked for the other workers, until its answer
    /// is settled or the request goes away: either takes the mark off.
    mark: Option<HeldMark<Z>>,
    /// Whether the zone held an answer to this question past its time,
    /// which a new answer replaces.
    replaces_old: bool,
}

impl<A, Z> Default for Slot<A, Z> {
    fn default() -> Slot<A, Z> {
        Slot {
            answer: None,
            stale: None,
            flow: Flow::Look,
            flight: None,
            tier: TierRead::NotAsked,
            tier_names: None,
            asked_at_ms: None,
            cutoff_at_look: None,
            mark: None,
            replaces_old: false,
        }
    }
}

/// What a leader does once its question is answered.
pub struct Settled<Z> {
    /// The Redis tier's entry that answered, to store in the zone as it is.
    pub from_tier: Option<TierEntry>,
    /// When the IdP was asked, if it was (its answer is stored, here and in the Redis tier).
    pub asked_at_ms: Option<i64>,
    /// The mark this request held for the other workers: taken off when
    /// the answer is not stored (an answer stored replaces it).
    pub mark: Option<HeldMark<Z>>,
    /// Whether the zone held an answer past its time for the question.
    pub replaces_old: bool,
}

/// A mark this request made in a cache zone (`Z`: the glue's handle of the
/// zone) for the other workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldMark<Z> {
    pub zone: Z,
    pub mark: Mark,
}

impl<A: Clone, Z: Copy> Slot<A, Z> {
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
    /// `true` when it is such a look again, which is not counted twice. A
    /// stale answer is kept only if this look-up finds it.
    pub fn start_looking(&mut self) -> bool {
        self.asked_at_ms = None;
        self.cutoff_at_look = None;
        self.stale = None;
        let again = self.flow == Flow::WaitingForWorker;
        if !again {
            self.tier = TierRead::NotAsked;
            self.tier_names = None;
            self.replaces_old = false;
        }
        again
    }

    /// The look-up missed while the token's cutoff was `cutoff`.
    pub fn missed_at_cutoff(&mut self, cutoff: Option<i64>) {
        self.cutoff_at_look = cutoff;
    }

    /// The cutoff the look-up saw, if the slot holds what a purge since
    /// would void: an IdP's answer, or a stale one.
    pub fn cutoff_at_look(&self) -> Option<Option<i64>> {
        let from_look = self.asked_at_ms.is_some() || self.stale.is_some();
        from_look.then_some(self.cutoff_at_look)
    }

    /// Whether the answer is the IdP's, to a call this request made.
    pub fn asked_idp(&self) -> bool {
        self.asked_at_ms.is_some()
    }

    /// The stale answer may not stand in for a failure any more (the token
    /// was purged since it was read).
    pub fn forget_stale(&mut self) {
        self.stale = None;
    }

    /// The token was purged since the look-up: what the slot holds goes,
    /// and the question starts again (as the same leader). The mark it held
    /// is handed back, to take off before it looks again.
    pub fn start_over(&mut self) -> Option<HeldMark<Z>> {
        self.answer = None;
        self.stale = None;
        self.asked_at_ms = None;
        self.tier = TierRead::NotAsked;
        self.tier_names = None;
        // A look again, as after another worker's call: not counted twice,
        // and an old entry the first look found is still replaced by what
        // the IdP says now.
        self.flow = Flow::WaitingForWorker;
        self.mark.take()
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

    /// A cached answer past its time, kept in case the IdP fails before
    /// `until_ms`.
    pub fn keep_stale(&mut self, answer: A, until_ms: i64) {
        self.stale = Some((answer, until_ms));
        self.replaces_old = true;
    }

    /// The zone held an answer past its time, no longer to be served.
    pub fn found_expired(&mut self) {
        self.replaces_old = true;
    }

    /// A failed answer gives way to the stale one, if there is one whose
    /// window has not ended by `now_ms` (the IdP may have taken long).
    pub fn serve_stale(&mut self, failed: impl Fn(&A) -> bool, now_ms: i64) -> bool {
        if !self.answer.as_ref().is_some_and(failed) {
            return false;
        }
        match self.stale.take() {
            Some((stale, until_ms)) if now_ms < until_ms => {
                self.answer = Some(stale);
                true
            }
            _ => false,
        }
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
    pub fn claimed(&mut self, zone: Z, mark: Mark) {
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
    pub fn settle(&mut self, served_stale: bool) -> Settled<Z> {
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

    /// The request goes away before its answer is settled: the mark it
    /// still holds for the other workers, to take off.
    pub fn abandon_mark(&mut self) -> Option<HeldMark<Z>> {
        self.mark.take()
    }

    /// The leader of this waiter's question went away without an answer:
    /// the waiter looks again.
    pub fn sent_back(&mut self) {
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
