//! The Shared Signals receiver's polls (`auth_oauth2_token_ssf_poll`), by
//! result. The SETs a poll brings are counted with the pushed ones
//! (`metrics/ssf.rs`).

use std::fmt::Write as _;

use super::{Catalogue, Family, Series};

pub const POLLS: &str = "oauth2_token_ssf_polls_total";

/// What became of a poll: answered (`ok`), no answer (`unavailable`: the
/// transmitter cannot be reached, timed out or answered 5xx), refused by
/// the transmitter (`refused`: a 4xx, such as a wrong bearer token), or an
/// answer that is not a poll answer (`malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    Ok,
    Unavailable,
    Refused,
    Malformed,
}

impl PollResult {
    pub const ALL: [PollResult; 4] = [
        PollResult::Ok,
        PollResult::Unavailable,
        PollResult::Refused,
        PollResult::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PollResult::Ok => "ok",
            PollResult::Unavailable => "unavailable",
            PollResult::Refused => "refused",
            PollResult::Malformed => "malformed",
        }
    }
}

/// The series' ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollIds {
    base: usize,
}

impl PollIds {
    pub fn poll(self, result: PollResult) -> usize {
        self.base + result as usize
    }
}

impl Catalogue {
    /// The polls' series, made on first use.
    pub fn ssf_poll(&mut self) -> PollIds {
        if let Some(ids) = self.ssf_poll_ids() {
            return ids;
        }
        let base = self.series.len();
        for result in PollResult::ALL {
            self.series.push(Series {
                family: Family::SsfPoll,
                labels: format!("{{result=\"{}\"}}", result.label()),
            });
        }
        PollIds { base }
    }

    pub fn ssf_poll_ids(&self) -> Option<PollIds> {
        let base = self
            .series
            .iter()
            .position(|s| s.family == Family::SsfPoll)?;
        Some(PollIds { base })
    }

    /// The polls' family in the Prometheus text, when configured.
    pub(super) fn render_ssf_poll(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let Some(ids) = self.ssf_poll_ids() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {POLLS} Polls of the Shared Signals transmitter, by result.\n# TYPE {POLLS} counter"
        );
        for result in PollResult::ALL {
            let id = ids.poll(result);
            let _ = writeln!(out, "{POLLS}{} {}", self.series[id].labels, value(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_a_series_of_its_own() {
        let mut catalogue = Catalogue::default();
        assert!(catalogue.ssf_poll_ids().is_none());
        let ids = catalogue.ssf_poll();
        assert_eq!(catalogue.ssf_poll(), ids);
        let all: std::collections::HashSet<_> =
            PollResult::ALL.iter().map(|r| ids.poll(*r)).collect();
        assert_eq!(all.len(), PollResult::ALL.len());
        let mut text = String::new();
        catalogue.render_ssf_poll(&mut text, &|id| id as u64 + 7);
        let refused = ids.poll(PollResult::Refused) + 7;
        assert!(text.contains(&format!(
            "oauth2_token_ssf_polls_total{{result=\"refused\"}} {refused}\n"
        )));
    }
}
