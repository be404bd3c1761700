//! The revocation channel's series: whether worker 0 is subscribed (a
//! gauge, 0 or 1) and what became of each message on the channel (a
//! counter per `redis::subscription::Delivery`). They exist only with
//! `auth_oauth2_token_redis`, which makes them ([`Catalogue::channel`]).

use std::fmt::Write as _;

use super::{Catalogue, Counters, Family, Series};
use crate::redis::subscription::Delivery;

/// The gauge's name.
pub const UP: &str = "oauth2_token_revocation_channel_up";
/// The counter's name.
pub const MESSAGES: &str = "oauth2_token_revocation_messages_total";

/// The channel's series: the gauge, then one counter per delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelIds {
    base: usize,
}

impl ChannelIds {
    pub fn up(self) -> usize {
        self.base
    }

    pub fn messages(self, delivery: Delivery) -> usize {
        self.base + 1 + delivery as usize
    }
}

impl Catalogue {
    /// The channel's series, made on first use.
    pub fn channel(&mut self) -> ChannelIds {
        if let Some(ids) = self.channel_ids() {
            return ids;
        }
        let base = self.series.len();
        self.series.push(Series {
            family: Family::Channel,
            labels: UP.to_string(),
        });
        for delivery in Delivery::ALL {
            self.series.push(Series {
                family: Family::Channel,
                labels: format!("{MESSAGES}{{result=\"{}\"}}", delivery.name()),
            });
        }
        ChannelIds { base }
    }

    /// The channel's series, if the configuration has them.
    pub fn channel_ids(&self) -> Option<ChannelIds> {
        let base = self
            .series
            .iter()
            .position(|s| s.family == Family::Channel)?;
        Some(ChannelIds { base })
    }

    /// The channel's families in the Prometheus text, when it has them.
    pub(super) fn render_channel(&self, out: &mut String, value: &dyn Fn(usize) -> u64) {
        let Some(ids) = self.channel_ids() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {UP} Whether this gateway is subscribed to the purge channel (1) or not (0).\n# TYPE {UP} gauge\n{UP} {}",
            value(ids.up()).min(1)
        );
        let _ = writeln!(
            out,
            "# HELP {MESSAGES} Messages on the purge channel, by what became of them.\n# TYPE {MESSAGES} counter"
        );
        for delivery in Delivery::ALL {
            let id = ids.messages(delivery);
            let _ = writeln!(out, "{} {}", self.series[id].labels, value(id));
        }
    }
}

impl Counters {
    /// Sets series `id` (a gauge) to `v`.
    pub fn set(&self, id: usize, v: u64) {
        if let Some(slot) = self.slot(id) {
            slot.store(v, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn the_channel_series_exist_only_when_made_and_render() {
        let mut c = Catalogue::new();
        let plain = c.render(|_| 0, &[]);
        assert!(!plain.contains("revocation"), "{plain}");
        assert_eq!(c.channel_ids(), None);
        let zone = c.zone("tokens");
        let ids = c.channel();
        assert_eq!(c.channel(), ids, "made once");
        assert_eq!(c.channel_ids(), Some(ids));
        assert_ne!(ids.up(), zone.lookup(crate::metrics::LookupResult::Hit));
        let slots: &'static [AtomicU64] =
            Vec::leak((0..c.len()).map(|_| AtomicU64::new(0)).collect());
        let counters = Counters::new(slots.iter().map(Some).collect());
        counters.set(ids.up(), 1);
        counters.add(ids.messages(Delivery::Applied), 3);
        counters.add(ids.messages(Delivery::Stale), 2);
        let text = c.render(|id| counters.get(id), &[]);
        for line in [
            "# TYPE oauth2_token_revocation_channel_up gauge",
            "oauth2_token_revocation_channel_up 1",
            "# TYPE oauth2_token_revocation_messages_total counter",
            "oauth2_token_revocation_messages_total{result=\"applied\"} 3",
            "oauth2_token_revocation_messages_total{result=\"oversized\"} 0",
            "oauth2_token_revocation_messages_total{result=\"unopened\"} 0",
            "oauth2_token_revocation_messages_total{result=\"stale\"} 2",
            "oauth2_token_revocation_messages_total{result=\"replayed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        counters.set(ids.up(), 0);
        assert!(c
            .render(|id| counters.get(id), &[])
            .lines()
            .any(|l| l == "oauth2_token_revocation_channel_up 0"));
        // Distinct identities, so that a reload keeps each its slot.
        let mut names: Vec<_> = (0..c.len()).map(|id| c.name(id)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), c.len());
    }
}
