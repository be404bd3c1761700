//! When a JWK Set fetched from the issuer (its `jwks_uri`, through an
//! internal location) is used, refreshed, or fetched again: the decision of
//! one request, over the state every worker shares. Plain data in, one
//! decision out; the glue keeps the state in shared memory, makes the fetch
//! and applies the transitions below.
//!
//! What it promises (unit tests and proptests below):
//! - a token whose `kid` the set lacks fetches the set again at most once per
//!   `unknown_kid_interval_ms`, however many such tokens arrive: a flood of
//!   random `kid`s costs one IdP call per interval, never one per token;
//! - one fetch at a time (the others wait for it, or go on with the set in hand);
//! - a set in hand keeps verifying while the endpoint fails, up to `stale_ms`
//!   past its lifetime; then requests get 503, never 401 (the token may be fine);
//! - a set is refreshed in the background before it goes stale, and its
//!   lifetime follows the endpoint's `Cache-Control: max-age` within bounds.

/// How a location treats its issuer's key set (all in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A set lives at least this long, whatever `Cache-Control` says.
    pub min_ttl_ms: i64,
    /// ... and at most this long.
    pub max_ttl_ms: i64,
    /// Without `max-age`.
    pub default_ttl_ms: i64,
    /// From what share of its lifetime (percent) a use refreshes the set in
    /// the background.
    pub refresh_pct: u8,
    /// At most one fetch per interval for tokens with an unknown `kid`.
    pub unknown_kid_interval_ms: i64,
    /// After a failed fetch, the next one waits this long.
    pub retry_ms: i64,
    /// How long past its lifetime a set still verifies while fetches fail.
    pub stale_ms: i64,
}

impl Default for RefreshPolicy {
    fn default() -> RefreshPolicy {
        RefreshPolicy {
            min_ttl_ms: 60_000,
            max_ttl_ms: 86_400_000,
            default_ttl_ms: 600_000,
            refresh_pct: 80,
            unknown_kid_interval_ms: 30_000,
            retry_ms: 5_000,
            stale_ms: 86_400_000,
        }
    }
}

/// What every worker knows of the set (plain data for shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetState {
    /// When the set in hand was fetched; `None`: none yet.
    pub fetched_ms: Option<i64>,
    /// Until when it is fresh.
    pub fresh_until_ms: i64,
    /// When a fetch last started, whatever became of it.
    pub last_attempt_ms: Option<i64>,
    /// A fetch is under way until then (the fetching worker's deadline).
    pub fetching_until_ms: Option<i64>,
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Verify with the set in hand.
    Use,
    /// Verify with the set in hand, and fetch it again in the background
    /// (this request starts the fetch: [`SetState::started`]).
    UseAndRefresh,
    /// Fetch the set now and wait for it (no usable set, or the token's
    /// `kid` is unknown and the interval allows a fetch).
    FetchAndWait,
    /// Another worker is fetching: wait for it, then decide again.
    Wait,
    /// The token's `kid` is not in the set, which was fetched within the
    /// interval: 401, no key.
    UnknownKey,
    /// No set fresh enough, and none can be fetched now: 503.
    Unavailable,
}

impl SetState {
    /// A fetch starts at `now_ms` and may take until `deadline_ms`.
    pub fn started(&mut self, now_ms: i64, deadline_ms: i64) {
        self.last_attempt_ms = Some(now_ms);
        self.fetching_until_ms = Some(deadline_ms);
    }

    /// The fetch brought a set that lives `lifetime_ms`.
    pub fn fetched(&mut self, now_ms: i64, lifetime_ms: i64) {
        self.fetched_ms = Some(now_ms);
        self.fresh_until_ms = now_ms.saturating_add(lifetime_ms);
        self.fetching_until_ms = None;
    }

    /// The fetch failed (or brought no usable set): the set in hand stays.
    pub fn failed(&mut self) {
        self.fetching_until_ms = None;
    }

    fn fetching(&self, now_ms: i64) -> bool {
        self.fetching_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Whether `interval_ms` has passed since the last fetch started.
    fn quiet_for(&self, interval_ms: i64, now_ms: i64) -> bool {
        self.last_attempt_ms
            .is_none_or(|at| now_ms >= at.saturating_add(interval_ms))
    }
}

/// The decision for a request whose token names a `kid` the set in hand
/// holds (`kid_known`), or not, at `now_ms`.
pub fn decide(state: &SetState, policy: &RefreshPolicy, kid_known: bool, now_ms: i64) -> Decision {
    let fetching = state.fetching(now_ms);
    let usable =
        state.fetched_ms.is_some() && now_ms < state.fresh_until_ms.saturating_add(policy.stale_ms);
    if !usable {
        return match (fetching, state.quiet_for(policy.retry_ms, now_ms)) {
            (true, _) => Decision::Wait,
            (false, true) => Decision::FetchAndWait,
            (false, false) => Decision::Unavailable,
        };
    }
    if !kid_known {
        return match (
            fetching,
            state.quiet_for(policy.unknown_kid_interval_ms, now_ms),
        ) {
            (true, _) => Decision::Wait,
            (false, true) => Decision::FetchAndWait,
            (false, false) => Decision::UnknownKey,
        };
    }
    let fetched = state.fetched_ms.unwrap_or(now_ms);
    let lifetime = state.fresh_until_ms.saturating_sub(fetched).max(0);
    let refresh_at =
        fetched.saturating_add(lifetime / 100 * i64::from(policy.refresh_pct.min(100)));
    match now_ms >= refresh_at && !fetching && state.quiet_for(policy.retry_ms, now_ms) {
        true => Decision::UseAndRefresh,
        false => Decision::Use,
    }
}

/// How long a fetched set lives: the answer's `Cache-Control: max-age`
/// (RFC 9111 §5.2.2.1), within the policy's bounds; `no-store` or
/// `no-cache`, the shortest; without a usable `max-age`, the default.
pub fn lifetime_ms(cache_control: Option<&[u8]>, policy: &RefreshPolicy) -> i64 {
    let clamp = |ms: i64| ms.clamp(policy.min_ttl_ms, policy.max_ttl_ms.max(policy.min_ttl_ms));
    let Some(value) = cache_control else {
        return clamp(policy.default_ttl_ms);
    };
    let mut max_age: Option<i64> = None;
    for directive in value.split(|&b| b == b',') {
        let directive = directive.trim_ascii();
        let (name, arg) = match directive.iter().position(|&b| b == b'=') {
            Some(eq) => (
                directive[..eq].trim_ascii(),
                Some(directive[eq + 1..].trim_ascii()),
            ),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case(b"no-store") || name.eq_ignore_ascii_case(b"no-cache") {
            return policy.min_ttl_ms;
        }
        if !name.eq_ignore_ascii_case(b"max-age") {
            continue;
        }
        let arg = arg.unwrap_or_default();
        let arg = arg
            .strip_prefix(b"\"")
            .and_then(|a| a.strip_suffix(b"\""))
            .unwrap_or(arg);
        let seconds = match arg {
            [] => None,
            digits if digits.iter().all(u8::is_ascii_digit) => Some(
                std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<i64>().ok())
                    .unwrap_or(i64::MAX),
            ),
            _ => None,
        };
        // Given twice, or malformed: the shortest reading (RFC 9111 §4.2.1).
        let seconds = seconds.unwrap_or(0);
        max_age = Some(max_age.map_or(seconds, |m| m.min(seconds)));
    }
    match max_age {
        Some(seconds) => clamp(seconds.saturating_mul(1000)),
        None => clamp(policy.default_ttl_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: RefreshPolicy = RefreshPolicy {
        min_ttl_ms: 60_000,
        max_ttl_ms: 3_600_000,
        default_ttl_ms: 600_000,
        refresh_pct: 80,
        unknown_kid_interval_ms: 30_000,
        retry_ms: 5_000,
        stale_ms: 300_000,
    };

    fn fetched_at(at: i64, lifetime: i64) -> SetState {
        let mut s = SetState::default();
        s.started(at, at + 2_000);
        s.fetched(at, lifetime);
        s
    }

    #[test]
    fn the_first_request_fetches_and_the_others_wait() {
        let mut s = SetState::default();
        assert_eq!(decide(&s, &P, true, 0), Decision::FetchAndWait);
        s.started(0, 2_000);
        assert_eq!(decide(&s, &P, true, 10), Decision::Wait);
        assert_eq!(decide(&s, &P, false, 10), Decision::Wait);
        s.fetched(100, 600_000);
        assert_eq!(decide(&s, &P, true, 200), Decision::Use);
    }

    #[test]
    fn a_failed_first_fetch_is_503_until_the_retry() {
        let mut s = SetState::default();
        s.started(0, 2_000);
        s.failed();
        assert_eq!(decide(&s, &P, true, 1_000), Decision::Unavailable);
        assert_eq!(decide(&s, &P, true, 5_000), Decision::FetchAndWait);
        // A fetch that never reports back stops holding the others at its deadline.
        s.started(5_000, 7_000);
        assert_eq!(decide(&s, &P, true, 6_999), Decision::Wait);
        assert_eq!(decide(&s, &P, true, 7_000), Decision::Unavailable);
        assert_eq!(decide(&s, &P, true, 10_000), Decision::FetchAndWait);
    }

    #[test]
    fn refreshed_in_the_background_before_it_goes_stale() {
        let s = fetched_at(0, 600_000);
        assert_eq!(decide(&s, &P, true, 479_999), Decision::Use);
        assert_eq!(decide(&s, &P, true, 480_000), Decision::UseAndRefresh);
        let mut refreshing = s;
        refreshing.started(480_000, 482_000);
        assert_eq!(
            decide(&refreshing, &P, true, 481_000),
            Decision::Use,
            "one refresh at a time"
        );
    }

    #[test]
    fn a_failing_endpoint_leaves_known_keys_working_up_to_the_bound() {
        let mut s = fetched_at(0, 600_000);
        s.started(600_000, 602_000);
        s.failed();
        assert_eq!(
            decide(&s, &P, true, 601_000),
            Decision::Use,
            "retry backoff"
        );
        assert_eq!(decide(&s, &P, true, 605_000), Decision::UseAndRefresh);
        assert_eq!(decide(&s, &P, true, 899_999), Decision::UseAndRefresh);
        s.started(899_999, 901_000);
        s.failed();
        assert_eq!(
            decide(&s, &P, true, 900_000),
            Decision::Unavailable,
            "past the bound: 503"
        );
        assert_eq!(decide(&s, &P, true, 905_000), Decision::FetchAndWait);
    }

    #[test]
    fn unknown_kids_fetch_at_most_once_per_interval() {
        let mut s = fetched_at(0, 600_000);
        assert_eq!(
            decide(&s, &P, false, 10_000),
            Decision::UnknownKey,
            "fetched 10 s ago"
        );
        assert_eq!(decide(&s, &P, false, 30_000), Decision::FetchAndWait);
        s.started(30_000, 32_000);
        assert_eq!(decide(&s, &P, false, 30_500), Decision::Wait);
        s.fetched(31_000, 600_000);
        assert_eq!(decide(&s, &P, false, 40_000), Decision::UnknownKey);
        assert_eq!(decide(&s, &P, true, 40_000), Decision::Use);
    }

    #[test]
    fn cache_control_within_bounds() {
        let life = |h: &str| lifetime_ms(Some(h.as_bytes()), &P);
        assert_eq!(lifetime_ms(None, &P), 600_000);
        assert_eq!(life("public, max-age=900"), 900_000);
        assert_eq!(life("MAX-AGE = \"120\""), 120_000);
        assert_eq!(life("max-age=5"), 60_000, "at least the minimum");
        assert_eq!(
            life("max-age=99999999999999999999"),
            3_600_000,
            "at most the maximum"
        );
        assert_eq!(
            life("max-age=900, max-age=100"),
            100_000,
            "twice: the shorter"
        );
        assert_eq!(
            life("max-age=abc"),
            60_000,
            "malformed: stale at once, so the shortest"
        );
        assert_eq!(life("no-store"), 60_000);
        assert_eq!(life("private, no-cache"), 60_000);
        assert_eq!(life("public"), 600_000);
        assert_eq!(life(""), 600_000);
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// A request with a known or unknown kid, `dt` ms after the last event.
        Request { dt: i64, kid_known: bool },
        /// The fetch under way ends, well or not.
        FetchEnds { dt: i64, ok: bool },
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec(
            prop_oneof![
                4 => (0..3_000i64, any::<bool>()).prop_map(|(dt, kid_known)| Event::Request { dt, kid_known }),
                1 => (0..3_000i64, any::<bool>()).prop_map(|(dt, ok)| Event::FetchEnds { dt, ok }),
            ],
            0..400,
        )
    }

    proptest! {
        /// However requests and fetch results interleave: fetches caused by
        /// unknown kids are at least the interval apart, at most one fetch
        /// is under way, a set past the stale bound is never used, and 503
        /// comes only when no set is usable.
        #[test]
        fn the_promises_hold_over_any_run(events in events(), first_ok in any::<bool>()) {
            let mut s = SetState::default();
            let mut now = 0i64;
            let mut under_way = false;
            let mut last_kid_fetch: Option<i64> = None;
            if first_ok {
                s = fetched_at(0, 600_000);
            }
            for event in events {
                match event {
                    Event::FetchEnds { dt, ok } => {
                        now += dt;
                        if under_way {
                            under_way = false;
                            match ok {
                                true => s.fetched(now, lifetime_ms(Some(b"max-age=300"), &P)),
                                false => s.failed(),
                            }
                        }
                    }
                    Event::Request { dt, kid_known } => {
                        now += dt;
                        if s.fetching_until_ms.is_some_and(|t| now >= t) {
                            under_way = false;
                            s.failed();
                        }
                        let usable = s.fetched_ms.is_some() && now < s.fresh_until_ms + P.stale_ms;
                        match decide(&s, &P, kid_known, now) {
                            Decision::FetchAndWait | Decision::UseAndRefresh => {
                                prop_assert!(!under_way, "two fetches at once");
                                if usable && !kid_known {
                                    if let Some(last) = last_kid_fetch {
                                        prop_assert!(now - last >= P.unknown_kid_interval_ms);
                                    }
                                    last_kid_fetch = Some(now);
                                }
                                under_way = true;
                                s.started(now, now + 2_000);
                            }
                            Decision::Use => prop_assert!(usable && kid_known),
                            Decision::UnknownKey => prop_assert!(usable && !kid_known),
                            Decision::Unavailable => prop_assert!(!usable),
                            Decision::Wait => prop_assert!(under_way),
                        }
                    }
                }
            }
        }
    }
}
