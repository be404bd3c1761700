//! The Shared Signals receiver's series: deliveries by result, the events
//! of accepted SETs by type, the tokens the revocation list refused, and
//! the list's size (a gauge, set when the metrics page is read).
//! They exist with `auth_oauth2_token_ssf_receiver` ([`Catalogue::ssf`]).

use std::fmt::Write as _;

use super::{Catalogue, Family, Series};
use crate::oauth::ssf::set::{Code, EventType};

/// The counters' names.
pub const DELIVERIES: &str = "oauth2_token_ssf_deliveries_total";
pub const EVENTS: &str = "oauth2_token_ssf_events_total";
pub const REFUSED: &str = "oauth2_token_ssf_tokens_refused_total";
/// The gauge's name.
pub const REVOCATIONS: &str = "oauth2_token_ssf_revocations";

/// What became of a push: accepted, refused with an RFC 8935 error code,
/// or not taken (`unavailable`: a 503).
pub const RESULTS: [&str; 8] = [
    "accepted",
    "invalid_request",
    "invalid_key",
    "invalid_issuer",
    "invalid_audience",
    "authentication_failed",
    "access_denied",
    "unavailable",
];

/// The series' ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsfIds {
    base: usize,
}

impl SsfIds {
    /// The delivery counter of `result` (one of [`RESULTS`]).
    pub fn delivery(self, result: &str) -> usize {
        self.base + RESULTS.iter().position(|r| *r == result).unwrap_or(0)
    }

    /// The delivery counter of a refusal.
    pub fn refusal(self, code: Code) -> usize {
        self.delivery(code.err())
    }

    /// The counter of accepted events of `event`'s type.
    pub fn event(self, event: EventType) -> usize {
        let i = EventType::ALL.iter().position(|e| *e == event).unwrap_or(0);
        self.base + RESULTS.len() + i
    }

    /// The counter of tokens the list refused.
    pub fn refused(self) -> usize {
        self.base + RESULTS.len() + EventType::ALL.len()
    }

    /// The gauge of the revocations the list holds.
    pub fn revocations(self) -> usize {
        self.refused() + 1
    }
}

impl Catalogue {
    /// The receiver's series, made on first use.
    pub fn ssf(&mut self) -> SsfIds {
        if let Some(ids) = self.ssf_ids() {
            return ids;
        }
        let base = self.series.len();
        for result in RESULTS {
            self.series.push(Series {
                family: Family::Ssf,
                labels: format!("{{result=\"{result}\"}}"),
            });
        }
        for event in EventType::ALL {
            self.series.push(Series {
                family: Family::Ssf,
                labels: format!("{{type=\"{}\"}}", event.label()),
            });
        }
        for _ in ["refused", "revocations"] {
            self.series.push(Series {
                family: Family::Ssf,
                labels: String::new(),
            });
        }
        SsfIds { base }
    }

    fn ssf_ids(&self) -> Option<SsfIds> {
        let base = self.series.iter().position(|s| s.family == Family::Ssf)?;
        Some(SsfIds { base })
    }

    /// The receiver's families in the Prometheus text, when configured.
    pub(super) fn render_ssf(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let Some(ids) = self.ssf_ids() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {DELIVERIES} SETs delivered to the Shared Signals receiver (pushed or polled), by result.\n# TYPE {DELIVERIES} counter"
        );
        for result in RESULTS {
            let id = ids.delivery(result);
            let _ = writeln!(out, "{DELIVERIES}{} {}", self.series[id].labels, value(id));
        }
        let _ = writeln!(
            out,
            "# HELP {EVENTS} Events of accepted SETs, by type (other: not acted on).\n# TYPE {EVENTS} counter"
        );
        for event in EventType::ALL {
            let id = ids.event(event);
            let _ = writeln!(out, "{EVENTS}{} {}", self.series[id].labels, value(id));
        }
        let _ = writeln!(
            out,
            "# HELP {REFUSED} Tokens refused by the revocation list.\n# TYPE {REFUSED} counter"
        );
        let _ = writeln!(out, "{REFUSED} {}", value(ids.refused()));
        let _ = writeln!(
            out,
            "# HELP {REVOCATIONS} Revocations the list holds on this gateway.\n# TYPE {REVOCATIONS} gauge"
        );
        let _ = writeln!(out, "{REVOCATIONS} {}", value(ids.revocations()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_event_and_the_refusals_have_a_series_of_their_own() {
        let mut catalogue = Catalogue::default();
        let ids = catalogue.ssf();
        assert_eq!(catalogue.ssf(), ids);
        let mut all: Vec<usize> = RESULTS.iter().map(|r| ids.delivery(r)).collect();
        all.extend(EventType::ALL.iter().map(|e| ids.event(*e)));
        all.push(ids.refused());
        all.push(ids.revocations());
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert_eq!(ids.refusal(Code::InvalidKey), ids.delivery("invalid_key"));
        let mut text = String::new();
        catalogue.render_ssf(&mut text, &|id| id as u64);
        let other = ids.event(EventType::Other);
        assert!(text.contains(&format!(
            "oauth2_token_ssf_events_total{{type=\"other\"}} {other}\n"
        )));
        assert!(text.contains(&format!(
            "oauth2_token_ssf_tokens_refused_total {}\n",
            ids.refused()
        )));
        assert!(text.contains(&format!(
            "# TYPE oauth2_token_ssf_revocations gauge\noauth2_token_ssf_revocations {}\n",
            ids.revocations()
        )));
    }
}
