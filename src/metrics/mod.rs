//! What the module counts, and the Prometheus text it shows: plain Rust.
//! Every series is known from the configuration (zone names, endpoint URIs,
//! fixed outcome and result names), never from requests, so the number of
//! series is bounded. A series has an id, its index in the [`Catalogue`];
//! the values live in shared memory (`shm/counters.rs`).

use core::sync::atomic::{AtomicU64, Ordering};

mod breaker;
mod label;
pub(crate) use label::label_value;
pub mod dpop;
pub mod jwt;
pub mod ssf;
pub mod ssf_poll;

use crate::oauth::idp_reply::{IdpReply, Transport};
use std::collections::HashMap;
use std::fmt::Write as _;
pub mod channel;

/// Why a checked request ended as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    NoToken,
    InvalidRequest,
    InvalidToken,
    Audience,
    InsufficientScope,
    StepUp,
    Denied,
    IdpError,
    IdpTimeout,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 11] = [
        Outcome::Allowed,
        Outcome::NoToken,
        Outcome::InvalidRequest,
        Outcome::InvalidToken,
        Outcome::Audience,
        Outcome::InsufficientScope,
        Outcome::StepUp,
        Outcome::Denied,
        Outcome::IdpError,
        Outcome::IdpTimeout,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::NoToken => "no_token",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::InvalidToken => "invalid_token",
            Outcome::Audience => "audience",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::StepUp => "insufficient_user_authentication",
            Outcome::Denied => "denied",
            Outcome::IdpError => "idp_error",
            Outcome::IdpTimeout => "idp_timeout",
            Outcome::Error => "error",
        }
    }
}

/// The phase a check ran in (subrequests run in PREACCESS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Access,
    Preaccess,
}

/// A cache look-up's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    Hit,
    Miss,
    Expired,
    Bypass,
    /// An answer past its time served because the IdP failed.
    Stale,
    /// A miss of this zone that the Redis tier answered; the
    /// look-up is counted as a miss too.
    SharedHit,
}

impl LookupResult {
    const ALL: [LookupResult; 6] = [
        LookupResult::Hit,
        LookupResult::Miss,
        LookupResult::Expired,
        LookupResult::Bypass,
        LookupResult::Stale,
        LookupResult::SharedHit,
    ];

    fn name(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Expired => "expired",
            LookupResult::Bypass => "bypass",
            LookupResult::Stale => "stale",
            LookupResult::SharedHit => "shared_hit",
        }
    }
}

/// Why a call to the Redis tier gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFailure {
    Connect,
    Timeout,
    Protocol,
    ErrorReply,
    Undecryptable,
    Internal,
    Tls,
    Redirect,
}

impl SharedFailure {
    const ALL: [SharedFailure; 8] = [
        SharedFailure::Connect,
        SharedFailure::Timeout,
        SharedFailure::Protocol,
        SharedFailure::ErrorReply,
        SharedFailure::Undecryptable,
        SharedFailure::Internal,
        SharedFailure::Tls,
        SharedFailure::Redirect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SharedFailure::Connect => "connect",
            SharedFailure::Timeout => "timeout",
            SharedFailure::Protocol => "protocol",
            SharedFailure::ErrorReply => "error_reply",
            SharedFailure::Undecryptable => "undecryptable",
            SharedFailure::Internal => "internal",
            SharedFailure::Tls => "tls",
            SharedFailure::Redirect => "redirect",
        }
    }
}

/// What became of one IdP call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// The IdP answered with a status of this class (2, 3, 4 or 5).
    Status(u8),
    /// No answer: connection refused or reset.
    Unreachable,
    Timeout,
    /// An answer cut short.
    Unreadable,
    TooLarge,
}

impl CallResult {
    /// What became of a call whose answer nginx saw as `reply`, read up to
    /// `limit` bytes.
    pub fn of(reply: &IdpReply<'_>, limit: usize) -> CallResult {
        match reply.transport(limit) {
            Err(Transport::Timeout) => CallResult::Timeout,
            Err(Transport::Unreachable) => CallResult::Unreachable,
            Err(Transport::Incomplete) => CallResult::Unreadable,
            Err(Transport::TooLarge(_)) => CallResult::TooLarge,
            Ok(()) => CallResult::Status((reply.status / 100).clamp(2, 5) as u8),
        }
    }

    const ALL: [CallResult; 8] = [
        CallResult::Status(2),
        CallResult::Status(3),
        CallResult::Status(4),
        CallResult::Status(5),
        CallResult::Unreachable,
        CallResult::Timeout,
        CallResult::Unreadable,
        CallResult::TooLarge,
    ];

    fn name(self) -> &'static str {
        match self {
            CallResult::Status(2) => "2xx",
            CallResult::Status(3) => "3xx",
            CallResult::Status(4) => "4xx",
            CallResult::Status(_) => "5xx",
            CallResult::Unreachable => "unreachable",
            CallResult::Timeout => "timeout",
            CallResult::Unreadable => "unreadable",
            CallResult::TooLarge => "too_large",
        }
    }

    fn index(self) -> usize {
        match self {
            CallResult::Status(class @ 2..=5) => usize::from(class) - 2,
            CallResult::Status(_) => 3,
            CallResult::Unreachable => 4,
            CallResult::Timeout => 5,
            CallResult::Unreadable => 6,
            CallResult::TooLarge => 7,
        }
    }
}

/// The upper bounds of the IdP latency histogram, in microseconds (1 ms to 10 s).
pub const BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The histogram buckets an IdP call of `micros` falls in: its own and every
/// larger one (Prometheus buckets are cumulative), plus +Inf.
pub fn buckets_of(micros: u64) -> impl Iterator<Item = usize> {
    let first = BUCKETS_US
        .iter()
        .position(|&le| micros <= le)
        .unwrap_or(BUCKETS_US.len());
    first..=BUCKETS_US.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Requests,
    SharedFailures,
    CacheLookups,
    CoalescedWaits,
    IdpRequests,
    IdpDuration,
    /// Not shown: the state words of a circuit breaker (`breaker.rs`).
    BreakerState,
    BreakerOpenings,
    Channel,
    Jwt,
    KeySetKeys,
    KeySetFetchedAt,
    Dpop,
    Ssf,
    SsfPoll,
}

#[derive(Debug, Clone)]
struct Series {
    family: Family,
    /// `{…}` with the series' labels (`Channel`: name and labels).
    labels: String,
}

/// The series of one cache zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneIds {
    base: usize,
}

impl ZoneIds {
    pub fn lookup(self, result: LookupResult) -> usize {
        self.base + result as usize
    }

    pub fn coalesced_wait(self) -> usize {
        self.base + LookupResult::ALL.len()
    }
}

/// The series of one IdP endpoint and kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointIds {
    base: usize,
}

impl EndpointIds {
    pub fn result(self, result: CallResult) -> usize {
        self.base + result.index()
    }

    /// Bucket `i` of [`buckets_of`]; the last is +Inf.
    pub fn bucket(self, i: usize) -> usize {
        self.base + CallResult::ALL.len() + i
    }

    /// The sum of the calls' durations, in microseconds.
    pub fn sum_us(self) -> usize {
        self.bucket(BUCKETS_US.len() + 1)
    }

    pub fn count(self) -> usize {
        self.bucket(BUCKETS_US.len() + 2)
    }
}

/// The gauges of one zone, read when the page is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneGauges {
    pub entries: u64,
    pub bytes_used: u64,
    pub size_bytes: u64,
    pub evictions: u64,
    pub refused: u64,
}

/// Every series the configuration defines, in id order.
#[derive(Debug, Clone)]
pub struct Catalogue {
    series: Vec<Series>,
    zones: HashMap<String, ZoneIds>,
    endpoints: HashMap<(String, &'static str), EndpointIds>,
}

/// The phases' label values, in `Phase` order.
const PHASES: [&str; 2] = ["access", "preaccess"];

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::new()
    }
}

impl Catalogue {
    /// The global series (requests by phase and outcome, shared tier failures) take the first ids.
    pub fn new() -> Catalogue {
        let mut series = Vec::new();
        for phase in PHASES {
            for outcome in Outcome::ALL {
                series.push(Series {
                    family: Family::Requests,
                    labels: format!("{{phase=\"{phase}\",outcome=\"{}\"}}", outcome.name()),
                });
            }
        }
        for kind in SharedFailure::ALL {
            series.push(Series {
                family: Family::SharedFailures,
                labels: format!("{{kind=\"{}\"}}", kind.name()),
            });
        }
        Catalogue {
            series,
            zones: HashMap::new(),
            endpoints: HashMap::new(),
        }
    }

    pub fn request(phase: Phase, outcome: Outcome) -> usize {
        phase as usize * Outcome::ALL.len() + outcome as usize
    }

    pub fn shared_failure(kind: SharedFailure) -> usize {
        PHASES.len() * Outcome::ALL.len() + kind as usize
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The identity of series `id` across reloads: its family and labels.
    pub fn name(&self, id: usize) -> String {
        let s = &self.series[id];
        format!("{:?}{}", s.family, s.labels)
    }

    /// The series of the cache zone `name`, made on first use.
    pub fn zone(&mut self, name: &str) -> ZoneIds {
        if let Some(ids) = self.zones.get(name) {
            return *ids;
        }
        let ids = ZoneIds {
            base: self.series.len(),
        };
        let zone = label_value(name);
        for result in LookupResult::ALL {
            self.series.push(Series {
                family: Family::CacheLookups,
                labels: format!("{{zone=\"{zone}\",result=\"{}\"}}", result.name()),
            });
        }
        self.series.push(Series {
            family: Family::CoalescedWaits,
            labels: format!("{{zone=\"{zone}\"}}"),
        });
        self.zones.insert(name.to_string(), ids);
        ids
    }

    /// The series of calls of `kind` ("introspection", "exchange") to the
    /// internal location `endpoint`, made on first use.
    pub fn endpoint(&mut self, endpoint: &str, kind: &'static str) -> EndpointIds {
        if let Some(ids) = self.endpoints.get(&(endpoint.to_string(), kind)) {
            return *ids;
        }
        let ids = EndpointIds {
            base: self.series.len(),
        };
        let labels = format!("endpoint=\"{}\",kind=\"{kind}\"", label_value(endpoint));
        for result in CallResult::ALL {
            self.series.push(Series {
                family: Family::IdpRequests,
                labels: format!("{{{labels},result=\"{}\"}}", result.name()),
            });
        }
        for le in BUCKETS_US
            .iter()
            .map(|us| seconds(*us))
            .chain(["+Inf".to_string()])
        {
            self.series.push(Series {
                family: Family::IdpDuration,
                labels: format!("_bucket{{{labels},le=\"{le}\"}}"),
            });
        }
        for suffix in ["_sum", "_count"] {
            self.series.push(Series {
                family: Family::IdpDuration,
                labels: format!("{suffix}{{{labels}}}"),
            });
        }
        self.endpoints.insert((endpoint.to_string(), kind), ids);
        ids
    }

    /// The Prometheus text exposition (version 0.0.4): `value` gives each
    /// series' counter, `zones` each zone's gauges.
    pub fn render(&self, value: impl Fn(usize) -> u64, zones: &[(String, ZoneGauges)]) -> String {
        let mut out = String::with_capacity(128 * self.series.len() + 512);
        let family = |out: &mut String, f: Family, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, s) in self
                .series
                .iter()
                .enumerate()
                .filter(|(_, s)| s.family == f)
            {
                let v = value(id);
                let _ = match (f, s.labels.starts_with("_sum")) {
                    (Family::IdpDuration, true) => {
                        writeln!(out, "{name}{} {}", s.labels, seconds(v))
                    }
                    _ => writeln!(out, "{name}{} {v}", s.labels),
                };
            }
        };
        family(
            &mut out,
            Family::Requests,
            "oauth2_token_requests_total",
            "counter",
            "Requests checked, by phase and outcome.",
        );
        family(
            &mut out,
            Family::SharedFailures,
            "oauth2_token_shared_cache_failures_total",
            "counter",
            "Calls to the shared tier (Redis) that gave no answer, by kind; each was a miss.",
        );
        family(
            &mut out,
            Family::CacheLookups,
            "oauth2_token_cache_lookups_total",
            "counter",
            "Cache look-ups, by zone and result.",
        );
        family(
            &mut out,
            Family::CoalescedWaits,
            "oauth2_token_coalesced_waits_total",
            "counter",
            "Requests that waited for another request's IdP call instead of asking.",
        );
        family(
            &mut out,
            Family::IdpRequests,
            "oauth2_token_idp_requests_total",
            "counter",
            "IdP calls, by internal location, kind and result (status class or failure).",
        );
        family(
            &mut out,
            Family::IdpDuration,
            "oauth2_token_idp_request_duration_seconds",
            "histogram",
            "How long IdP calls took.",
        );
        self.render_breakers(&mut out, &value);
        let gauges: [ZoneFamily; 5] = [
            (
                "oauth2_token_cache_entries",
                "gauge",
                "Entries in the cache zone.",
                |g| g.entries,
            ),
            (
                "oauth2_token_cache_used_bytes",
                "gauge",
                "Bytes of the zone in use.",
                |g| g.bytes_used,
            ),
            (
                "oauth2_token_cache_size_bytes",
                "gauge",
                "Size of the zone.",
                |g| g.size_bytes,
            ),
            (
                "oauth2_token_cache_evictions_total",
                "counter",
                "Entries evicted to make room.",
                |g| g.evictions,
            ),
            (
                "oauth2_token_cache_refused_total",
                "counter",
                "Entries not stored: too large, or no room could be made.",
                |g| g.refused,
            ),
        ];
        self.render_channel(&mut out, &value);
        self.render_jwt(&mut out, &value);
        self.render_key_sets(&mut out, &value);
        self.render_dpop(&mut out, &value);
        self.render_ssf(&mut out, &value);
        self.render_ssf_poll(&mut out, &value);
        for (name, kind, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (zone, g) in zones {
                let _ = writeln!(out, "{name}{{zone=\"{}\"}} {}", label_value(zone), get(g));
            }
        }
        out
    }
}

/// Where each series of a cycle's catalogue counts: a slot in shared memory
/// (`shm/counters.rs`) per id, `None` for a series the zone had no room for.
#[derive(Debug, Default)]
pub struct Counters {
    slots: Vec<Option<&'static AtomicU64>>,
}

impl Counters {
    /// `slots` live as long as the process maps the counters zone, which
    /// `shm/counters.rs` vouches for when it makes them.
    pub fn new(slots: Vec<Option<&'static AtomicU64>>) -> Counters {
        Counters { slots }
    }

    /// Adds `n` to series `id`, atomically and without a lock.
    pub fn add(&self, id: usize, n: u64) {
        if let Some(slot) = self.slot(id) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, id: usize) -> u64 {
        self.slot(id).map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    fn slot(&self, id: usize) -> Option<&AtomicU64> {
        self.slots.get(id).copied().flatten()
    }
}

impl Counters {
    /// Counts one IdP call of the endpoint `ids`: its result and duration.
    pub fn idp_call(&self, ids: EndpointIds, result: CallResult, micros: u64) {
        self.add(ids.result(result), 1);
        for bucket in buckets_of(micros) {
            self.add(ids.bucket(bucket), 1);
        }
        self.add(ids.sum_us(), micros);
        self.add(ids.count(), 1);
    }
}

/// A family of per-zone values: name, type, help, and how to read it.
type ZoneFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ZoneGauges) -> u64,
);

/// Microseconds as seconds, in Prometheus' float text.
fn seconds(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_name_and_distinct() {
        let mut c = Catalogue::new();
        let tokens = c.zone("tokens");
        let introspect = c.endpoint("/_introspect", "introspection");
        assert_eq!(c.zone("tokens"), tokens);
        assert_eq!(c.endpoint("/_introspect", "introspection"), introspect);
        let exchange = c.endpoint("/_introspect", "exchange");
        assert_ne!(exchange, introspect);
        let mut ids = vec![tokens.lookup(LookupResult::Hit), tokens.coalesced_wait()];
        ids.extend([
            introspect.result(CallResult::Status(2)),
            introspect.sum_us(),
            introspect.count(),
        ]);
        ids.extend([
            exchange.bucket(0),
            Catalogue::request(Phase::Preaccess, Outcome::Error),
        ]);
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| *id < c.len()));
        assert_eq!(
            introspect.count() + 1,
            exchange.result(CallResult::Status(2))
        );
    }

    #[test]
    fn buckets_are_cumulative_with_inf() {
        assert_eq!(
            buckets_of(0).collect::<Vec<_>>(),
            (0..=13).collect::<Vec<_>>()
        );
        assert_eq!(buckets_of(1_000).next(), Some(0));
        assert_eq!(buckets_of(1_001).next(), Some(1));
        assert_eq!(buckets_of(20_000_000).collect::<Vec<_>>(), [13]);
    }

    #[test]
    fn renders_the_text_format() {
        let mut c = Catalogue::new();
        let zone = c.zone("to\"k\\ens");
        let ep = c.endpoint("/_i", "introspection");
        let allowed = Catalogue::request(Phase::Access, Outcome::Allowed);
        let timeouts = Catalogue::shared_failure(SharedFailure::Timeout);
        let values = |id: usize| match id {
            id if id == allowed => 7,
            id if id == timeouts => 4,
            id if id == zone.lookup(LookupResult::Hit) => 5,
            id if id == ep.sum_us() => 1_500_250,
            id if id == ep.count() => 3,
            _ => 0,
        };
        let gauges = [(
            "tokens".to_string(),
            ZoneGauges {
                entries: 2,
                size_bytes: 1_048_576,
                ..Default::default()
            },
        )];
        let text = c.render(values, &gauges);
        for line in [
            "# TYPE oauth2_token_requests_total counter",
            "oauth2_token_requests_total{phase=\"access\",outcome=\"allowed\"} 7",
            "oauth2_token_shared_cache_failures_total{kind=\"timeout\"} 4",
            "oauth2_token_shared_cache_failures_total{kind=\"connect\"} 0",
            "oauth2_token_cache_lookups_total{zone=\"to\\\"k\\\\ens\",result=\"hit\"} 5",
            "# TYPE oauth2_token_idp_request_duration_seconds histogram",
            "oauth2_token_idp_request_duration_seconds_bucket{endpoint=\"/_i\",kind=\"introspection\",le=\"0.001\"} 0",
            "oauth2_token_idp_request_duration_seconds_bucket{endpoint=\"/_i\",kind=\"introspection\",le=\"+Inf\"} 0",
            "oauth2_token_idp_request_duration_seconds_sum{endpoint=\"/_i\",kind=\"introspection\"} 1.50025",
            "oauth2_token_idp_request_duration_seconds_count{endpoint=\"/_i\",kind=\"introspection\"} 3",
            "oauth2_token_cache_entries{zone=\"tokens\"} 2",
            "oauth2_token_cache_size_bytes{zone=\"tokens\"} 1048576",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn call_results_from_replies() {
        let r = |rc: isize, status: usize, body: &'static [u8]| IdpReply::new(rc, status, body);
        assert_eq!(CallResult::of(&r(0, 200, b"{}"), 10), CallResult::Status(2));
        assert_eq!(CallResult::of(&r(0, 401, b""), 10), CallResult::Status(4));
        assert_eq!(CallResult::of(&r(0, 503, b""), 10), CallResult::Status(5));
        assert_eq!(CallResult::of(&r(0, 0, b""), 10), CallResult::Unreachable);
        assert_eq!(CallResult::of(&r(504, 0, b""), 10), CallResult::Timeout);
        assert_eq!(CallResult::of(&r(-1, 200, b""), 10), CallResult::Unreadable);
        assert_eq!(
            CallResult::of(&r(0, 200, b"0123456789ab"), 10),
            CallResult::TooLarge
        );
    }

    #[test]
    fn an_idp_call_counts_its_result_buckets_sum_and_count() {
        let mut c = Catalogue::new();
        let ids = c.endpoint("/_i", "introspection");
        let slots: &'static [AtomicU64] =
            Vec::leak((0..c.len()).map(|_| AtomicU64::new(0)).collect());
        let counters = Counters::new(slots.iter().map(Some).collect());
        counters.idp_call(ids, CallResult::Status(2), 3_000);
        counters.idp_call(ids, CallResult::Timeout, 2_000_000);
        assert_eq!(counters.get(ids.result(CallResult::Status(2))), 1);
        assert_eq!(counters.get(ids.result(CallResult::Timeout)), 1);
        assert_eq!(counters.get(ids.bucket(1)), 0, "le=0.0025");
        assert_eq!(counters.get(ids.bucket(2)), 1, "le=0.005");
        assert_eq!(counters.get(ids.bucket(BUCKETS_US.len())), 2, "+Inf");
        assert_eq!(counters.get(ids.sum_us()), 2_003_000);
        assert_eq!(counters.get(ids.count()), 2);
    }

    #[test]
    fn seconds_text() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000), "0.001");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
    }
}
