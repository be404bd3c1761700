//! The circuit breakers' part of the catalogue: each breaker's state words
//! (shared by the workers, not shown, cleared when a configuration cycle
//! starts) and what the page shows of them: whether it is open, and how
//! many times it opened.

use std::fmt::Write as _;

use super::{label_value, Catalogue, Counters, Family, Series};
use crate::resilience::breaker::Breaker;

/// The state words of a breaker, in the order of [`Breaker`]'s fields; the
/// counter of its openings follows them.
const WORDS: [&str; 5] = [
    "failures",
    "last_failure",
    "open_until",
    "probe",
    "refusal_logged",
];

impl Catalogue {
    /// The series of the circuit breaker of calls of `kind` to `endpoint`
    /// in the server `server` (hex), made on first use: its state words,
    /// then its openings; the id of the first.
    pub fn breaker(&mut self, server: &str, endpoint: &str, kind: &'static str) -> usize {
        let labels = format!(
            "{{server=\"{server}\",endpoint=\"{}\",kind=\"{kind}\"}}",
            label_value(endpoint)
        );
        if let Some(id) = self
            .series
            .iter()
            .position(|s| s.family == Family::BreakerState && s.labels.ends_with(&labels))
        {
            return id;
        }
        let first = self.series.len();
        for word in WORDS {
            self.series.push(Series {
                family: Family::BreakerState,
                labels: format!("{word}{labels}"),
            });
        }
        self.series.push(Series {
            family: Family::BreakerOpenings,
            labels,
        });
        first
    }

    /// Whether series `id` starts again from zero when a configuration
    /// cycle starts: a breaker's state, so that a reload closes it (its
    /// openings, like every counter, are kept).
    pub fn resets_on_reload(&self, id: usize) -> bool {
        self.series
            .get(id)
            .is_some_and(|s| s.family == Family::BreakerState)
    }

    /// `oauth2_token_breaker_open` (from each breaker's `open_until` word)
    /// and `oauth2_token_breaker_openings_total`.
    pub(super) fn render_breakers(&self, out: &mut String, value: &impl Fn(usize) -> u64) {
        let series = || self.series.iter().enumerate();
        let name = "oauth2_token_breaker_open";
        let _ = writeln!(
            out,
            "# HELP {name} Whether the circuit breaker refuses calls (open or half open).\n# TYPE {name} gauge"
        );
        for (id, s) in series().filter(|(_, s)| s.family == Family::BreakerState) {
            if let Some(labels) = s.labels.strip_prefix("open_until") {
                let _ = writeln!(out, "{name}{labels} {}", u8::from(value(id) != 0));
            }
        }
        let name = "oauth2_token_breaker_openings_total";
        let _ = writeln!(
            out,
            "# HELP {name} Times the circuit breaker opened from closed.\n# TYPE {name} counter"
        );
        for (id, s) in series().filter(|(_, s)| s.family == Family::BreakerOpenings) {
            let _ = writeln!(out, "{name}{} {}", s.labels, value(id));
        }
    }
}

impl Counters {
    /// The circuit breaker whose series start at `first`.
    pub fn breaker(&self, first: usize) -> Option<Breaker<'_>> {
        Some(Breaker {
            failures: self.slot(first)?,
            last_failure_ms: self.slot(first + 1)?,
            open_until_ms: self.slot(first + 2)?,
            probe_ms: self.slot(first + 3)?,
            refusal_logged_s: self.slot(first + 4)?,
            openings: self.slot(first + WORDS.len())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU64;

    use super::*;
    use crate::resilience::breaker::{BreakerConf, Health};

    #[test]
    fn a_breaker_shows_its_state_and_openings_and_resets_its_words_only() {
        let mut c = Catalogue::new();
        let ep = c.endpoint("/_i", "introspection");
        let first = c.breaker("00ff", "/_i", "introspection");
        assert_eq!(c.breaker("00ff", "/_i", "introspection"), first);
        let other = c.breaker("00ff", "/_i", "exchange");
        assert_ne!(other, first);
        let slots: &'static [AtomicU64] =
            Vec::leak((0..c.len()).map(|_| AtomicU64::new(0)).collect());
        let counters = Counters::new(slots.iter().map(Some).collect());
        let conf = BreakerConf {
            failures: 1,
            window_ms: 1_000,
            open_ms: 2_000,
        };
        let breaker = counters.breaker(first).unwrap();
        breaker.report(&conf, 5_000, Health::Busy(100_000_000));
        let text = c.render(|id| counters.get(id), &[]);
        for line in [
            "# TYPE oauth2_token_breaker_open gauge",
            "oauth2_token_breaker_open{server=\"00ff\",endpoint=\"/_i\",kind=\"introspection\"} 1",
            "oauth2_token_breaker_open{server=\"00ff\",endpoint=\"/_i\",kind=\"exchange\"} 0",
            "# TYPE oauth2_token_breaker_openings_total counter",
            "oauth2_token_breaker_openings_total{server=\"00ff\",endpoint=\"/_i\",kind=\"introspection\"} 1",
            "oauth2_token_breaker_openings_total{server=\"00ff\",endpoint=\"/_i\",kind=\"exchange\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("refusal_logged") && !text.contains("open_until"));
        let resets: Vec<usize> = (0..c.len()).filter(|id| c.resets_on_reload(*id)).collect();
        let words = WORDS.len();
        let expected: Vec<usize> = (first..first + words).chain(other..other + words).collect();
        assert_eq!(resets, expected);
        assert!(!c.resets_on_reload(first + words), "openings are kept");
        assert!(!c.resets_on_reload(ep.count()));
    }
}
