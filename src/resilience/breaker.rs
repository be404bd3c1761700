//! A circuit breaker per IdP endpoint, shared by all workers: after
//! `failures` consecutive failures (no answer, a timeout, a 5xx) within
//! `window`, the endpoint is not called for `open`; then one probe goes
//! through, and its success closes the breaker. An IdP that answers 503
//! with `Retry-After` opens it for that long, but never longer than `open`:
//! one answer must not lock every user out for as long as it likes. A 429
//! is neither a success nor a failure: the IdP is up and limits the
//! gateway's rate, which a flood of junk tokens can bring about, and the
//! breaker must not turn that into a refusal of every user.
//!
//! The state is six atomic words (in shared memory, `shm/counters.rs`);
//! every step is one atomic operation, so a worker that dies between two
//! leaves a state the next one reads sensibly (a probe that never reports is
//! forgotten after `open`). Times are ms since the epoch; every sum
//! saturates, and an opening longer than `open` (a clock set back, a word
//! written by a worker of an older configuration) is cut to `open`.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::resilience::log_gate;

/// Seconds between two error-log lines about requests an open breaker
/// refused, per endpoint, across the workers.
pub const REFUSAL_LOG_INTERVAL_S: u64 = 10;

/// `auth_oauth2_token_breaker failures=N window=TIME open=TIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConf {
    pub failures: u64,
    pub window_ms: u64,
    pub open_ms: u64,
}

impl BreakerConf {
    /// The directive's arguments after its name.
    pub fn parse(
        args: &[&[u8]],
        parse_time_ms: fn(&[u8]) -> Option<i64>,
    ) -> Result<BreakerConf, String> {
        let mut conf = BreakerConf {
            failures: 5,
            window_ms: 10_000,
            open_ms: 30_000,
        };
        for arg in args {
            let text = String::from_utf8_lossy(arg);
            let time = |v: &[u8]| {
                parse_time_ms(v)
                    .filter(|ms| *ms > 0)
                    .map(|ms| ms as u64)
                    .ok_or_else(|| format!("has an invalid time in \"{text}\""))
            };
            if let Some(v) = arg.strip_prefix(b"failures=") {
                conf.failures = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("has an invalid count in \"{text}\""))?;
            } else if let Some(v) = arg.strip_prefix(b"window=") {
                conf.window_ms = time(v)?;
            } else if let Some(v) = arg.strip_prefix(b"open=") {
                conf.open_ms = time(v)?;
            } else {
                return Err(format!("has an unknown parameter \"{text}\""));
            }
        }
        Ok(conf)
    }

    /// How long a 503 with `Retry-After: seconds` opens the breaker: that
    /// long, at least 1 s, at most `open`.
    pub fn busy_ms(&self, seconds: u64) -> u64 {
        seconds.saturating_mul(1000).max(1000).min(self.open_ms)
    }
}

/// Whether a request may call the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// The breaker was open and this call is the one probe.
    Probe,
    /// Open: do not call; the client may retry after this many seconds.
    Refuse {
        retry_after_s: u64,
    },
}

/// What an IdP call showed of the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// 503 with `Retry-After`: this many seconds (capped by `busy_ms`).
    Busy(u64),
    /// 429: the IdP answered, and limits the rate of the gateway's calls.
    /// Neither a success nor a failure: the count of failures stays as it
    /// is, an open breaker stays open, and a probe that got it lets the next
    /// request probe.
    Throttled,
}

impl Health {
    /// What a finished call shows: `answered` when a complete answer with
    /// a 2xx-4xx status came back, its `status`, and its `Retry-After` in
    /// seconds. A complete 429 is throttled, whatever its `Retry-After`; a
    /// 503 with `Retry-After` is busy for that long; any other complete
    /// answer is up, anything else down.
    pub fn of(answered: bool, status: usize, retry_after: Option<u64>) -> Health {
        match (answered, status, retry_after) {
            (true, 429, _) => Health::Throttled,
            (_, 503, Some(seconds)) => Health::Busy(seconds),
            (true, _, _) => Health::Up,
            (false, _, _) => Health::Down,
        }
    }
}

/// What a report changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened { for_ms: u64 },
    Closed,
}

/// The breaker's shared state: six words (ms since the epoch, or counts).
/// All but `openings` start again from zero when a configuration cycle
/// starts (`shm/counters.rs`): a reload closes every breaker.
pub struct Breaker<'a> {
    pub failures: &'a AtomicU64,
    pub last_failure_ms: &'a AtomicU64,
    /// 0 when closed; else until when it is open (then half open).
    pub open_until_ms: &'a AtomicU64,
    pub probe_ms: &'a AtomicU64,
    /// When a refused request was last logged (s; see [`log_gate::allow_shared`]).
    pub refusal_logged_s: &'a AtomicU64,
    /// How many times it opened from closed (a counter, kept across reloads).
    pub openings: &'a AtomicU64,
}

impl Breaker<'_> {
    pub fn admit(&self, conf: &BreakerConf, now_ms: u64) -> Admit {
        let mut open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Admit::Call;
        }
        let longest = now_ms.saturating_add(conf.open_ms);
        if open_until > longest {
            // Longer than this configuration ever opens it: cut to `open`
            // from now (another worker may have cut or closed it first).
            open_until = match self.open_until_ms.compare_exchange(
                open_until,
                longest,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => longest,
                Err(0) => return Admit::Call,
                Err(current) => current.min(longest),
            };
        }
        if now_ms < open_until {
            return Admit::Refuse {
                retry_after_s: (open_until - now_ms).div_ceil(1000),
            };
        }
        // Half open: one probe at a time; one that never reported (its
        // worker died, or the clock moved by more than `open`) is forgotten
        // after `open`.
        let probe = self.probe_ms.load(Ordering::Acquire);
        if probe != 0 && now_ms.abs_diff(probe) < conf.open_ms {
            return Admit::Refuse { retry_after_s: 1 };
        }
        match self
            .probe_ms
            .compare_exchange(probe, now_ms, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Refuse { retry_after_s: 1 },
        }
    }

    /// Whether the breaker is open or half open (calls are refused but for
    /// one probe).
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    /// Whether a request this breaker refused at `now_s` may be logged: one
    /// line per endpoint every [`REFUSAL_LOG_INTERVAL_S`], across workers.
    pub fn may_log_refusal(&self, now_s: u64) -> bool {
        log_gate::allow_shared(self.refusal_logged_s, now_s, REFUSAL_LOG_INTERVAL_S)
    }

    pub fn report(&self, conf: &BreakerConf, now_ms: u64, health: Health) -> Transition {
        let was_open = self.is_open();
        let transition = match health {
            Health::Up => {
                self.failures.store(0, Ordering::Release);
                if was_open {
                    self.open_until_ms.store(0, Ordering::Release);
                    self.probe_ms.store(0, Ordering::Release);
                    return Transition::Closed;
                }
                Transition::None
            }
            Health::Throttled => {
                if was_open {
                    self.probe_ms.store(0, Ordering::Release);
                }
                Transition::None
            }
            Health::Busy(seconds) => {
                let for_ms = conf.busy_ms(seconds);
                self.open(now_ms, for_ms, was_open)
            }
            Health::Down => {
                let last = self.last_failure_ms.swap(now_ms, Ordering::AcqRel);
                let count = match now_ms.abs_diff(last) > conf.window_ms {
                    true => {
                        self.failures.store(1, Ordering::Release);
                        1
                    }
                    false => self.failures.fetch_add(1, Ordering::AcqRel) + 1,
                };
                // A failed probe, or the N-th failure in a row: open.
                match was_open || count >= conf.failures {
                    true => self.open(now_ms, conf.open_ms, was_open),
                    false => Transition::None,
                }
            }
        };
        if let Transition::Opened { .. } = transition {
            self.openings.fetch_add(1, Ordering::Relaxed);
        }
        transition
    }

    fn open(&self, now_ms: u64, for_ms: u64, was_open: bool) -> Transition {
        self.open_until_ms
            .store(now_ms.saturating_add(for_ms).max(1), Ordering::Release);
        self.probe_ms.store(0, Ordering::Release);
        match was_open {
            true => Transition::None,
            false => Transition::Opened { for_ms },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_of_a_call() {
        use super::Health;
        assert_eq!(Health::of(true, 200, None), Health::Up);
        assert_eq!(Health::of(true, 401, None), Health::Up);
        assert_eq!(Health::of(true, 429, None), Health::Throttled);
        assert_eq!(Health::of(true, 429, Some(5)), Health::Throttled);
        assert_eq!(
            Health::of(false, 429, None),
            Health::Down,
            "a 429 cut short is a failed call"
        );
        assert_eq!(Health::of(false, 503, Some(7)), Health::Busy(7));
        assert_eq!(Health::of(false, 503, None), Health::Down);
        assert_eq!(Health::of(false, 500, Some(7)), Health::Down);
        assert_eq!(Health::of(false, 0, None), Health::Down);
    }

    use super::*;

    const CONF: BreakerConf = BreakerConf {
        failures: 3,
        window_ms: 10_000,
        open_ms: 30_000,
    };

    struct Words([AtomicU64; 6]);

    impl Words {
        fn new() -> Words {
            Words([const { AtomicU64::new(0) }; 6])
        }
        fn breaker(&self) -> Breaker<'_> {
            Breaker {
                failures: &self.0[0],
                last_failure_ms: &self.0[1],
                open_until_ms: &self.0[2],
                probe_ms: &self.0[3],
                refusal_logged_s: &self.0[4],
                openings: &self.0[5],
            }
        }
        fn openings(&self) -> u64 {
            self.0[5].load(Ordering::Relaxed)
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let w = Words::new();
        let b = w.breaker();
        let t = 1_000_000;
        assert_eq!(b.admit(&CONF, t), Admit::Call);
        assert_eq!(b.report(&CONF, t, Health::Down), Transition::None);
        assert_eq!(b.report(&CONF, t + 1, Health::Down), Transition::None);
        assert_eq!(
            b.report(&CONF, t + 2, Health::Down),
            Transition::Opened { for_ms: 30_000 }
        );
        assert_eq!(b.admit(&CONF, t + 3), Admit::Refuse { retry_after_s: 30 });
        assert_eq!(
            b.admit(&CONF, t + 29_500),
            Admit::Refuse { retry_after_s: 1 }
        );
        // Open time over: one probe, the others wait for it.
        assert_eq!(b.admit(&CONF, t + 30_002), Admit::Probe);
        assert_eq!(
            b.admit(&CONF, t + 30_003),
            Admit::Refuse { retry_after_s: 1 }
        );
        assert_eq!(b.report(&CONF, t + 30_010, Health::Up), Transition::Closed);
        assert_eq!(b.admit(&CONF, t + 30_011), Admit::Call);
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_lost_probe_is_forgotten() {
        let w = Words::new();
        let b = w.breaker();
        for i in 0..3 {
            b.report(&CONF, 1_000 + i, Health::Down);
        }
        assert_eq!(b.admit(&CONF, 40_000), Admit::Probe);
        assert_eq!(b.report(&CONF, 40_001, Health::Down), Transition::None);
        assert_eq!(b.admit(&CONF, 40_002), Admit::Refuse { retry_after_s: 30 });
        // A probe whose worker never reported: another goes after `open`.
        assert_eq!(b.admit(&CONF, 70_001), Admit::Probe);
        assert_eq!(b.admit(&CONF, 70_002), Admit::Refuse { retry_after_s: 1 });
        assert_eq!(b.admit(&CONF, 100_002), Admit::Probe);
    }

    #[test]
    fn failures_apart_by_more_than_the_window_do_not_add_up() {
        let w = Words::new();
        let b = w.breaker();
        b.report(&CONF, 0, Health::Down);
        b.report(&CONF, 1, Health::Down);
        assert_eq!(b.report(&CONF, 20_000, Health::Down), Transition::None);
        assert_eq!(b.admit(&CONF, 20_001), Admit::Call);
        b.report(&CONF, 20_002, Health::Up);
        b.report(&CONF, 20_003, Health::Down);
        assert_eq!(
            b.report(&CONF, 20_004, Health::Down),
            Transition::None,
            "a success resets the count"
        );
    }

    #[test]
    fn retry_after_opens_for_that_long() {
        let w = Words::new();
        let b = w.breaker();
        assert_eq!(
            b.report(&CONF, 1_000, Health::Busy(7)),
            Transition::Opened { for_ms: 7_000 }
        );
        assert_eq!(b.admit(&CONF, 1_001), Admit::Refuse { retry_after_s: 7 });
        assert_eq!(b.admit(&CONF, 8_000), Admit::Probe);
        assert_eq!(w.openings(), 1);
    }

    #[test]
    fn retry_after_is_capped_at_open_and_never_overflows() {
        let w = Words::new();
        let b = w.breaker();
        let t = 1_000_000;
        assert_eq!(
            b.report(&CONF, t, Health::Busy(100_000_000)),
            Transition::Opened { for_ms: 30_000 }
        );
        assert_eq!(b.admit(&CONF, t + 1), Admit::Refuse { retry_after_s: 30 });
        assert_eq!(b.admit(&CONF, t + 30_000), Admit::Probe);
        assert_eq!(b.report(&CONF, t + 30_001, Health::Up), Transition::Closed);
        // At the end of time: sums saturate instead of wrapping to "closed".
        for seconds in [0, 1, u64::MAX] {
            let w = Words::new();
            let b = w.breaker();
            b.report(&CONF, u64::MAX - 5, Health::Busy(seconds));
            assert_eq!(b.open_until_ms.load(Ordering::Relaxed), u64::MAX);
            assert!(matches!(b.admit(&CONF, u64::MAX - 4), Admit::Refuse { .. }));
        }
        let w = Words::new();
        let b = w.breaker();
        for i in 0..3 {
            b.report(&CONF, u64::MAX - 10 + i, Health::Down);
        }
        assert_eq!(b.open_until_ms.load(Ordering::Relaxed), u64::MAX);
        // A `Retry-After: 0` still opens for a second, unless `open` is shorter.
        let short = BreakerConf {
            open_ms: 400,
            ..CONF
        };
        assert_eq!(CONF.busy_ms(0), 1_000);
        assert_eq!(short.busy_ms(0), 400);
        assert_eq!(short.busy_ms(u64::MAX), 400);
    }

    #[test]
    fn an_opening_longer_than_open_is_cut_to_open_from_now() {
        // Written by a worker of a configuration with a longer `open`, or
        // before the clock was set back by an hour.
        let w = Words::new();
        let b = w.breaker();
        let t = 10_000_000;
        b.open_until_ms.store(t + 3_600_000, Ordering::Relaxed);
        assert_eq!(b.admit(&CONF, t), Admit::Refuse { retry_after_s: 30 });
        assert_eq!(b.open_until_ms.load(Ordering::Relaxed), t + 30_000);
        assert_eq!(b.admit(&CONF, t + 30_000), Admit::Probe);
        // A probe stamped in the future is forgotten as one in the past.
        let w = Words::new();
        let b = w.breaker();
        b.open_until_ms.store(t, Ordering::Relaxed);
        b.probe_ms.store(t + 3_600_000, Ordering::Relaxed);
        assert_eq!(b.admit(&CONF, t + 1), Admit::Probe);
    }

    #[test]
    fn throttled_answers_neither_open_nor_close_it() {
        let w = Words::new();
        let b = w.breaker();
        for i in 0..1_000 {
            assert_eq!(b.report(&CONF, i, Health::Throttled), Transition::None);
            assert_eq!(b.admit(&CONF, i), Admit::Call);
        }
        // Nor do they reset the count of failures in a row.
        b.report(&CONF, 2_000, Health::Down);
        b.report(&CONF, 2_001, Health::Throttled);
        b.report(&CONF, 2_002, Health::Down);
        assert_eq!(
            b.report(&CONF, 2_003, Health::Down),
            Transition::Opened { for_ms: 30_000 }
        );
        // A probe that got 429: still open, and the next request probes.
        assert_eq!(b.admit(&CONF, 40_000), Admit::Probe);
        assert_eq!(b.report(&CONF, 40_001, Health::Throttled), Transition::None);
        assert!(b.is_open());
        assert_eq!(b.admit(&CONF, 40_002), Admit::Probe);
        assert_eq!(b.report(&CONF, 40_003, Health::Up), Transition::Closed);
        assert!(!b.is_open());
        assert_eq!(w.openings(), 1);
    }

    #[test]
    fn openings_count_each_opening_from_closed() {
        let w = Words::new();
        let b = w.breaker();
        b.report(&CONF, 0, Health::Busy(1));
        b.report(&CONF, 1, Health::Busy(1));
        assert_eq!(w.openings(), 1, "already open");
        assert_eq!(b.admit(&CONF, 2_000), Admit::Probe);
        b.report(&CONF, 2_001, Health::Down);
        assert_eq!(w.openings(), 1, "a failed probe keeps it open");
        assert_eq!(b.admit(&CONF, 40_000), Admit::Probe);
        b.report(&CONF, 40_001, Health::Up);
        b.report(&CONF, 40_002, Health::Busy(1));
        assert_eq!(w.openings(), 2);
    }

    #[test]
    fn refusals_are_logged_once_per_interval_across_workers() {
        let w = Words::new();
        let (one, other) = (w.breaker(), w.breaker());
        assert!(one.may_log_refusal(100));
        assert!(!other.may_log_refusal(100));
        assert!(!one.may_log_refusal(100 + REFUSAL_LOG_INTERVAL_S - 1));
        assert!(other.may_log_refusal(100 + REFUSAL_LOG_INTERVAL_S));
    }

    #[test]
    fn parameters() {
        let time = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()?
                .strip_suffix('s')?
                .parse::<i64>()
                .ok()
                .map(|s| s * 1000)
        };
        let conf = BreakerConf::parse(&[b"failures=2", b"window=5s", b"open=60s"], time).unwrap();
        assert_eq!(
            conf,
            BreakerConf {
                failures: 2,
                window_ms: 5_000,
                open_ms: 60_000
            }
        );
        assert!(BreakerConf::parse(&[b"failures=0"], time).is_err());
        assert!(BreakerConf::parse(&[b"open=x"], time).is_err());
        assert!(BreakerConf::parse(&[b"other=1"], time)
            .unwrap_err()
            .contains("unknown parameter"));
    }
}
