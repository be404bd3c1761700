//! A circuit breaker per IdP endpoint, shared by all workers: after
//! `failures` consecutive failures (no answer, a timeout, a 5xx) within
//! `window`, the endpoint is not called for `open`; then one probe goes
//! through, and its success closes the breaker. An IdP that answers 429 or
//! 503 with `Retry-After` opens it for that long.
//!
//! The state is four atomic words (in shared memory, `shm/counters.rs`);
//! every step is one atomic operation, so a worker that dies between two
//! leaves a state the next one reads sensibly (a probe that never reports is
//! forgotten after `open`).

use core::sync::atomic::{AtomicU64, Ordering};

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
    /// 429 or 503 with `Retry-After`: this many seconds.
    Busy(u64),
}

impl Health {
    /// What a finished call shows: `answered` when a complete answer with
    /// a 2xx-4xx status came back, its `status`, and its `Retry-After` in
    /// seconds. A 429 or 503 with `Retry-After` is busy for that long; a 429
    /// without one counts as a failure; any other answer is up.
    pub fn of(answered: bool, status: usize, retry_after: Option<u64>) -> Health {
        match (answered, status, retry_after) {
            (true, 429, None) => Health::Down,
            (_, 429 | 503, Some(seconds)) => Health::Busy(seconds),
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

/// The breaker's shared state: four words (ms since the epoch, or counts).
pub struct Breaker<'a> {
    pub failures: &'a AtomicU64,
    pub last_failure_ms: &'a AtomicU64,
    pub open_until_ms: &'a AtomicU64,
    pub probe_ms: &'a AtomicU64,
}

impl Breaker<'_> {
    pub fn admit(&self, conf: &BreakerConf, now_ms: u64) -> Admit {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Admit::Call;
        }
        if now_ms < open_until {
            return Admit::Refuse {
                retry_after_s: (open_until - now_ms).div_ceil(1000),
            };
        }
        // Half open: one probe at a time; one that never reported (its
        // worker died) is forgotten after `open`.
        let probe = self.probe_ms.load(Ordering::Acquire);
        if probe != 0 && now_ms.saturating_sub(probe) < conf.open_ms {
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

    pub fn report(&self, conf: &BreakerConf, now_ms: u64, health: Health) -> Transition {
        let was_open = self.open_until_ms.load(Ordering::Acquire) != 0;
        match health {
            Health::Up => {
                self.failures.store(0, Ordering::Release);
                if was_open {
                    self.open_until_ms.store(0, Ordering::Release);
                    self.probe_ms.store(0, Ordering::Release);
                    return Transition::Closed;
                }
                Transition::None
            }
            Health::Busy(seconds) => {
                let for_ms = seconds.saturating_mul(1000).max(1000);
                self.open_until_ms.store(now_ms + for_ms, Ordering::Release);
                self.probe_ms.store(0, Ordering::Release);
                match was_open {
                    true => Transition::None,
                    false => Transition::Opened { for_ms },
                }
            }
            Health::Down => {
                let last = self.last_failure_ms.swap(now_ms, Ordering::AcqRel);
                let count = match now_ms.saturating_sub(last) > conf.window_ms {
                    true => {
                        self.failures.store(1, Ordering::Release);
                        1
                    }
                    false => self.failures.fetch_add(1, Ordering::AcqRel) + 1,
                };
                // A failed probe, or the N-th failure in a row: open.
                if was_open || count >= conf.failures {
                    self.open_until_ms
                        .store(now_ms + conf.open_ms, Ordering::Release);
                    self.probe_ms.store(0, Ordering::Release);
                    if !was_open {
                        return Transition::Opened {
                            for_ms: conf.open_ms,
                        };
                    }
                }
                Transition::None
            }
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
        assert_eq!(Health::of(true, 429, None), Health::Down);
        assert_eq!(Health::of(true, 429, Some(5)), Health::Busy(5));
        assert_eq!(Health::of(false, 503, Some(7)), Health::Busy(7));
        assert_eq!(Health::of(false, 503, None), Health::Down);
        assert_eq!(Health::of(false, 0, None), Health::Down);
    }

    use super::*;

    const CONF: BreakerConf = BreakerConf {
        failures: 3,
        window_ms: 10_000,
        open_ms: 30_000,
    };

    struct Words([AtomicU64; 4]);

    impl Words {
        fn new() -> Words {
            Words([const { AtomicU64::new(0) }; 4])
        }
        fn breaker(&self) -> Breaker<'_> {
            Breaker {
                failures: &self.0[0],
                last_failure_ms: &self.0[1],
                open_until_ms: &self.0[2],
                probe_ms: &self.0[3],
            }
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
