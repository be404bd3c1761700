//! At most one log line per kind of trouble per interval: a Redis that is
//! down fails every request, and the error log must not repeat it for each.
//! [`LogGate`] is one worker's; [`allow_shared`] is one word that every
//! worker shares (in shared memory), for trouble every worker sees at once.

use core::sync::atomic::{AtomicU64, Ordering};

/// When each of `N` kinds was last let through (seconds).
#[derive(Debug)]
pub struct LogGate<const N: usize> {
    last: [Option<u64>; N],
}

impl<const N: usize> Default for LogGate<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogGate<N> {
    /// Every kind let through the first time (usable in a `static`).
    pub const fn new() -> Self {
        LogGate { last: [None; N] }
    }

    /// Whether a line of `kind` may be logged at `now_s`: the first time,
    /// and then once `interval_s` has passed since the last one let through.
    /// A kind out of range is always let through.
    pub fn allow(&mut self, kind: usize, now_s: u64, interval_s: u64) -> bool {
        let Some(last) = self.last.get_mut(kind) else {
            return true;
        };
        match *last {
            // A clock set back does not silence a kind until it catches up.
            Some(at) if (at..at.saturating_add(interval_s)).contains(&now_s) => false,
            _ => {
                *last = Some(now_s);
                true
            }
        }
    }
}

/// Whether a line may be logged at `now_s` when `last` (0: never) holds
/// when one was last let through, by any process sharing the word: the
/// first time, then once `interval_s` has passed. Of processes asking at
/// the same moment, one is let through. A clock set back does not silence
/// the line until it catches up.
pub fn allow_shared(last: &AtomicU64, now_s: u64, interval_s: u64) -> bool {
    let at = last.load(Ordering::Acquire);
    if at != 0 && (at..at.saturating_add(interval_s)).contains(&now_s) {
        return false;
    }
    last.compare_exchange(at, now_s.max(1), Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval() {
        const GATE: LogGate<2> = LogGate::new();
        let mut gate = GATE;
        assert!(gate.allow(0, 100, 10));
        assert!(!gate.allow(0, 105, 10));
        assert!(gate.allow(1, 105, 10), "another kind has its own interval");
        assert!(!gate.allow(0, 109, 10));
        assert!(gate.allow(0, 110, 10));
        assert!(!gate.allow(0, 110, 10));
        assert!(gate.allow(7, 110, 10), "out of range: never silenced");
        assert!(
            gate.allow(0, 50, 10),
            "a clock set back lets a line through"
        );
        assert!(!gate.allow(0, 59, 10));
    }

    #[test]
    fn one_line_per_interval_across_processes() {
        let word = AtomicU64::new(0);
        assert!(allow_shared(&word, 100, 10));
        assert!(!allow_shared(&word, 100, 10), "another worker, same moment");
        assert!(!allow_shared(&word, 109, 10));
        assert!(allow_shared(&word, 110, 10));
        assert!(allow_shared(&word, 50, 10), "a clock set back");
        assert!(!allow_shared(&word, 55, 10));
    }
}
